"""Faults caused for real: corrupted artifacts, broken output storage, two runs at once,
random manifests and data files, and reproducibility."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer_core.errors import TrainerError
from trainer_core.manifest import default_manifest, load_manifest
from trainer_core.testing import (
    success_markers,
    tiny_args,
    training_ready_frame,
    training_ready_name,
    write_training_ready,
)

TAG = "ETHUSDT_FW005_SL050_TP100"


def _train(trainer, inputs, out, *extra):
    result = trainer("run", "--pair", "ETHUSDT", "--data", inputs, "--output", out, *tiny_args(), *extra)
    assert result.exit_code == 0, result.output
    return out / "ETHUSDT"


# -- corruption --------------------------------------------------------------------------------


@pytest.mark.slow
def test_verify_finds_truncated_altered_and_half_written_pairs(trainer, inputs, tmp_path):
    out = tmp_path / "out"
    pair = _train(trainer, inputs, out)
    result = trainer("verify", out)
    assert result.exit_code == 0 and "ok      ETHUSDT" in result.output

    model = pair / f"model_{TAG}.keras"
    model.write_bytes(model.read_bytes()[:1000])  # truncated
    history = pair / f"history_{TAG}.csv"
    history.write_text(history.read_text().replace("1,", "9,", 1))  # altered
    (out / "BTCUSDT").mkdir()  # a half-written pair: no _SUCCESS.json
    (out / "BTCUSDT" / "model_BTCUSDT.keras").write_bytes(b"partial")
    result = trainer("verify", out)
    assert result.exit_code == 1
    assert (
        f"FAILED  ETHUSDT: history_{TAG}.csv does not match its checksum; model_{TAG}.keras does not match"
        in result.output
    )
    assert "FAILED  BTCUSDT: no _SUCCESS.json: the run did not complete" in result.output
    assert "0 of 2 pair(s) complete and intact." in result.output

    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\noutput: {out}\npairs: [ETHUSDT, BTCUSDT]\n"
        f"defaults:\n  data: {{path: {inputs}}}\n  labels: {{future_window: 5}}\n"
        "  model: {params: {lstm_units: [4], dense_units: [4]}}\n"
        "  train: {sequence_length: 8, batch_size: 64, verbose: 0, epochs: 1}\n  balance: {min_per_class: 0}\n"
    )
    plan = trainer("batch", manifest, "--dry-run")
    assert (
        f"ETHUSDT        would train: artifact history_{TAG}.csv does not match its checksum" in plan.output
    )
    assert "BTCUSDT        would train: no completed run" in plan.output  # never skipped without the marker


# -- storage faults ----------------------------------------------------------------------------


needs_root = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"), reason="mounting needs root")


@needs_root
def test_read_only_output_fails_before_training(trainer, inputs, tmp_path, mounted_tmpfs):
    with mounted_tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        result = trainer("run", "--pair", "ETHUSDT", "--data", inputs, "--output", ro / "out", *tiny_args())
    assert result.exit_code == 1
    assert "Cannot write to the output" in result.output and "Read-only file system" in result.output
    assert "Epoch" not in result.output and "Model 'lstm'" not in result.output  # nothing was trained


@pytest.mark.slow
@needs_root
def test_full_filesystem_fails_cleanly(trainer, inputs, tmp_path, mounted_tmpfs):
    with mounted_tmpfs(tmp_path / "small", "size=160k") as small:
        result = trainer("run", "--pair", "ETHUSDT", "--data", inputs, "--output", small, *tiny_args())
        assert result.exit_code == 1, result.output
        assert "No space left on device" in result.output
        assert success_markers(small) == []
        assert not (small / "ETHUSDT").exists()
        # what stays is resume state only, in the staging area: nothing that looks like a run
        staging = small / ".trainer-staging" / "ETHUSDT"
        resume_state = ("backup", "logs", "epochs.partial.json", "checkpoint.weights.h5", ".attempt.json")
        leftovers = [p.relative_to(staging) for p in small.rglob("*") if p.is_file()]
        assert all(p.parts[0] in resume_state for p in leftovers), leftovers
        # with space again, the same command completes (resuming or starting over)
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        again = trainer("run", "--pair", "ETHUSDT", "--data", inputs, "--output", small, *tiny_args())
        assert again.exit_code == 0, again.output
        assert success_markers(small) == [small / "ETHUSDT" / "_SUCCESS.json"]
        assert not (small / ".trainer-staging" / "ETHUSDT").exists()


def test_output_that_is_a_file_fails_before_training(trainer, inputs, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    result = trainer("run", "--pair", "ETHUSDT", "--data", inputs, "--output", blocker, *tiny_args())
    assert result.exit_code == 1 and "Cannot write to the output" in result.output
    assert "Epoch" not in result.output
    assert blocker.read_text() == "x"


# -- two runs at once --------------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_of_one_pair_never_mix(tmp_path, write_slow_epochs_plugin):
    write_training_ready(tmp_path / "inputs", "ETHUSDT", rows=800, seed=6)
    module = write_slow_epochs_plugin(tmp_path, 2.0)
    (tmp_path / "m.yaml").write_text(f"version: 1\nplugins: [{module}]\npairs: [ETHUSDT]\n")
    cmd = [
        sys.executable,
        "-m",
        "trainer_core.cli",
        "run",
        "--manifest",
        str(tmp_path / "m.yaml"),
        "--pair",
        "ETHUSDT",
        "--data",
        str(tmp_path / "inputs"),
        "--output",
        str(tmp_path / "out"),
        *tiny_args(epochs=2),
        "--set",
        "train.verbose=2",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tmp_path)}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in first.stdout:
        lines.append(line)
        if line.startswith("Epoch 1/"):
            break
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    rest, _ = first.communicate(timeout=180)
    assert first.returncode == 0, "".join(lines) + rest
    assert second.returncode == 1
    assert "ETHUSDT is being trained into" in second.stderr and f"pid {first.pid}" in second.stderr
    assert "Hint: Wait for it to finish" in second.stderr
    pair = tmp_path / "out" / "ETHUSDT"
    marker = json.loads((pair / "_SUCCESS.json").read_text())
    meta = json.loads((pair / f"metadata_{TAG}.json").read_text())
    assert meta["training"]["completed_epochs"] == 2
    assert set(marker["artifacts"]) == {
        p.relative_to(pair).as_posix() for p in pair.rglob("*") if p.is_file()
    } - {"_SUCCESS.json"}
    assert not (tmp_path / "out" / ".trainer-staging").exists()  # the lock went with the run


# -- reproducibility ---------------------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_same_targets_and_first_epoch_loss(trainer, inputs, tmp_path):
    metas = []
    for name in ("a", "b"):
        pair = _train(trainer, inputs, tmp_path / name)
        metas.append(json.loads((pair / f"metadata_{TAG}.json").read_text()))
    a, b = metas
    assert a["balancing"] == b["balancing"]
    assert a["training"]["history"]["loss"][0] == b["training"]["history"]["loss"][0]
    assert a["reproducibility"]["seed"] == 42 and a["reproducibility"]["not_guaranteed"]
    from trainer_plugins.balancers.undersample import Undersample

    labels = np.random.default_rng(0).integers(0, 3, 5000).astype(np.int8)
    first = Undersample().balance(labels, np.arange(5000), np.random.default_rng(42), {"min_per_class": 0})
    again = Undersample().balance(labels, np.arange(5000), np.random.default_rng(42), {"min_per_class": 0})
    assert np.array_equal(first.indices, again.indices)


# -- fuzzing -----------------------------------------------------------------------------------

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True), st.text(max_size=12)
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
known_keys = st.sampled_from(
    [
        "version",
        "output",
        "plugins",
        "batch",
        "defaults",
        "pairs",
        "train",
        "data",
        "labels",
        "epochs",
        "loader",
        "pair",
        "split",
        "model",
        "params",
    ]
)
manifests = st.dictionaries(known_keys, yaml_values, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=manifests)
def test_fuzz_manifest_shapes(tmp_path, doc):
    import yaml

    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        manifest = load_manifest(path)
        for entry in manifest.pairs:
            manifest.resolve(entry.pair)
    except TrainerError as exc:
        assert exc.message


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=400))
def test_fuzz_manifest_bytes(tmp_path, blob):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(blob)
    try:
        load_manifest(path)
    except TrainerError as exc:
        assert exc.message


def _loaders():
    from trainer_plugins.loaders.ohlcv import OhlcvLoader
    from trainer_plugins.loaders.training_ready import TrainingReadyLoader

    return {"training-ready": TrainingReadyLoader(), "ohlcv": OhlcvLoader()}


def _load(loader_name: str, path: Path):
    spec = default_manifest().resolve(
        "ETHUSDT",
        sets=["labels.future_window=5", f"data.loader={loader_name}"],
        flags={"data.path": str(path)},
    )
    from trainer_core.pipeline import load_pair_data
    from trainer_core.plugins import load_plugins

    _loaders()[loader_name]  # the loader under test is a built-in
    return load_pair_data(spec, load_plugins(entry_points=False))[0]


def _mangle(frame: pl.DataFrame, how: int, data: st.DataObject) -> pl.DataFrame:
    cols = frame.columns
    if how == 0:  # drop a column
        return frame.drop(data.draw(st.sampled_from(cols)))
    if how == 1:  # a column as strings
        c = data.draw(st.sampled_from(cols))
        return frame.with_columns(pl.col(c).cast(pl.String))
    if how == 2:  # a column of random floats, NaN and Inf included
        c = data.draw(st.sampled_from(cols))
        values = data.draw(
            st.lists(
                st.floats(allow_nan=True, allow_infinity=True), min_size=frame.height, max_size=frame.height
            )
        )
        return frame.with_columns(pl.Series(c, values, dtype=pl.Float64))
    if how == 3:  # rows shuffled
        return frame.sample(fraction=1.0, shuffle=True, seed=data.draw(st.integers(0, 100)))
    return frame.head(data.draw(st.integers(0, 3)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_loaders_with_wrong_files(tmp_path, data):
    loader = data.draw(st.sampled_from(["training-ready", "ohlcv"]))
    fmt = data.draw(st.sampled_from(["feather", "parquet", "csv"]))
    kind = data.draw(st.sampled_from(["mangled", "bytes", "truncated"]))
    if loader == "training-ready":
        frame = training_ready_frame(40, seed=1)
        name = training_ready_name("ETHUSDT", ext=fmt)
    else:
        t = np.arange(40) * 60_000 + 1_700_000_000_000
        c = 100 + np.cumsum(np.random.default_rng(1).normal(0, 0.1, 40))
        frame = pl.DataFrame(
            {"timestamp": t, "open": c, "high": c + 0.1, "low": c - 0.1, "close": c, "volume": c * 0 + 5.0}
        )
        name = f"ETHUSDT-1m.{fmt}"
    path = tmp_path / name
    if kind == "bytes":
        path.write_bytes(data.draw(st.binary(max_size=300)))
    else:
        frame = _mangle(frame, data.draw(st.integers(0, 4)), data)
        {"feather": frame.write_ipc, "parquet": frame.write_parquet, "csv": frame.write_csv}[fmt](path)
        if kind == "truncated":
            raw = path.read_bytes()
            path.write_bytes(raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))])
    start = time.monotonic()
    try:
        result = _load(loader, path)
        from trainer_core.data import validate_pair_data

        validate_pair_data(result, "fuzz")
    except TrainerError as exc:
        assert exc.message
    assert time.monotonic() - start < 10


def test_a_lock_left_by_a_dead_holder_is_taken_over(tmp_path):
    import socket

    from trainer_core import artifacts
    from trainer_core.artifacts import ArtifactWriter
    from trainer_core.errors import StorageError

    def lock_with(holder: dict, age: float = 0.0) -> ArtifactWriter:
        out = ArtifactWriter(tmp_path / "out", "ETHUSDT", "tag")
        out.staging_root.mkdir(parents=True, exist_ok=True)
        out.lock_path.write_text(json.dumps(holder))
        if age:
            t = time.time() - age
            os.utime(out.lock_path, (t, t))
        return out

    here = socket.gethostname()
    live_other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = lock_with({"host": here, "pid": live_other.pid, "since": "now"})
        with pytest.raises(StorageError, match="is being trained into"):
            out.prepare({"config_hash": "x"})
        # the same process id on the same host: a restarted container whose trainer is pid 1 again
        out = lock_with({"host": here, "pid": os.getpid(), "since": "earlier"})
        out.prepare({"config_hash": "x"})
        out.discard_outputs()
        # another node stopped refreshing its lock
        out = lock_with(
            {"host": "node-7", "pid": 12345, "since": "long ago"}, age=artifacts.LOCK_STALE_SECONDS + 5
        )
        out.prepare({"config_hash": "x"})
        out.discard_outputs()
        out = lock_with({"host": "node-7", "pid": 12345, "since": "a minute ago"}, age=60)
        with pytest.raises(StorageError, match="pid 12345 on node-7"):
            out.prepare({"config_hash": "x"})
    finally:
        live_other.kill()
        live_other.wait()
