"""Bad input as a new user meets it: one clear message, the right exit code, nothing that looks complete."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from trainer_core.testing import (
    success_markers,
    tiny_args,
    training_ready_frame,
    training_ready_name,
    write_training_ready,
)


def run_with(trainer, tmp_path, data, *extra):
    out = tmp_path / "out"
    result = trainer("run", "--pair", "ETHUSDT", "--data", data, "--output", out, *tiny_args(), *extra)
    assert "Traceback" not in result.output
    assert success_markers(out) == [], "a failed run must leave no _SUCCESS.json"
    return result


def write_frame(tmp_path, frame, name=None):
    folder = tmp_path / "inputs"
    return (
        write_training_ready(folder, "ETHUSDT", frame=frame)
        if name is None
        else _write_named(folder, frame, name)
    )


def _write_named(folder, frame, name):
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_ipc(folder / name)
    return folder / name


def test_missing_folder(trainer, tmp_path):
    result = run_with(trainer, tmp_path, tmp_path / "nope")
    assert result.exit_code == 2
    assert "data path not found" in result.output and "nope" in result.output
    assert "Hint: Pass --data" in result.output


def test_folder_without_the_pairs_file(trainer, tmp_path):
    write_training_ready(tmp_path / "inputs", "BTCUSDT")
    result = run_with(trainer, tmp_path, tmp_path / "inputs")
    assert result.exit_code == 2
    assert "no training-ready file for ETHUSDT" in result.output
    assert "BTCUSDT_TF-1m__FW-005__SL-050__TP-100__training_ready.feather" in result.output


def test_file_name_parameters_disagree_with_the_run(trainer, tmp_path):
    write_training_ready(tmp_path / "inputs", "ETHUSDT", fw=60)
    result = run_with(trainer, tmp_path, tmp_path / "inputs")
    assert result.exit_code == 2
    assert "future_window 60" in result.output and "future_window 5" in result.output
    # the same when the file itself is named
    path = write_training_ready(tmp_path / "inputs2", "ETHUSDT", tp_pct=2.0)
    result = run_with(trainer, tmp_path, path)
    assert result.exit_code == 2
    assert "take_profit_pct 2 but the run uses labels.params.take_profit_pct 1" in result.output


def test_file_of_another_pair(trainer, tmp_path):
    path = write_training_ready(tmp_path / "inputs", "BTCUSDT")
    result = run_with(trainer, tmp_path, path)
    assert result.exit_code == 2
    assert "has pair BTCUSDT but the run uses --pair ETHUSDT" in result.output


def test_missing_and_extra_columns(trainer, tmp_path):
    frame = training_ready_frame(400).drop("volume_change").with_columns(pl.lit(1.0).alias("rsi"))
    result = run_with(trainer, tmp_path, write_frame(tmp_path, frame))
    assert result.exit_code == 2
    assert "missing column(s) volume_change" in result.output and "unexpected column(s) rsi" in result.output


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "Inf"), (None, "NaN")])
def test_nan_and_inf_features(trainer, tmp_path, bad, word):
    frame = training_ready_frame(400)
    values = frame["close_change"].to_list()
    values[123] = bad
    frame = frame.with_columns(pl.Series("close_change", values, dtype=pl.Float32))
    result = run_with(trainer, tmp_path, write_frame(tmp_path, frame))
    assert result.exit_code == 2
    assert f"1 {word} value(s) in column(s) close_change (first at row 123)" in result.output


def test_labels_not_one_hot(trainer, tmp_path):
    frame = training_ready_frame(400)
    lab = frame["label_1"].to_list()
    lab[50] = 1 - lab[50]  # now the row has two ones, or none
    frame = frame.with_columns(pl.Series("label_1", lab, dtype=pl.Int8))
    result = run_with(trainer, tmp_path, write_frame(tmp_path, frame))
    assert result.exit_code == 2
    assert "labels are not one-hot in 1 row(s); row 50" in result.output

    frame = training_ready_frame(400).with_columns(pl.col("label_2").cast(pl.Float64) * 0.5)
    result = run_with(trainer, tmp_path, write_frame(tmp_path, frame))
    assert result.exit_code == 2 and "not one-hot" in result.output


def test_timestamps_out_of_order(trainer, tmp_path):
    frame = training_ready_frame(400)
    ts = frame["timestamp"].to_list()
    ts[200], ts[201] = ts[201], ts[200]
    frame = frame.with_columns(pl.Series("timestamp", ts))
    result = run_with(trainer, tmp_path, write_frame(tmp_path, frame))
    assert result.exit_code == 2
    assert "timestamps are out of order at row 201" in result.output and "Sort the rows" in result.output


def test_duplicated_timestamps(trainer, tmp_path):
    frame = training_ready_frame(400)
    ts = frame["timestamp"].to_list()
    ts[300] = ts[299]
    frame = frame.with_columns(pl.Series("timestamp", ts))
    result = run_with(trainer, tmp_path, write_frame(tmp_path, frame))
    assert result.exit_code == 2
    assert "1 duplicated timestamp(s), first 2024-01-01T04:59:00Z at rows 299 and 300" in result.output


def test_too_few_rows(trainer, tmp_path):
    write_training_ready(tmp_path / "inputs", "ETHUSDT", rows=12)
    result = run_with(trainer, tmp_path, tmp_path / "inputs")
    assert result.exit_code == 2
    assert "12 rows are too few for sequence_length 8" in result.output and "at least" in result.output


def test_empty_and_corrupt_files(trainer, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    path = folder / training_ready_name("ETHUSDT")
    path.write_bytes(b"not an arrow file at all")
    result = run_with(trainer, tmp_path, folder)
    assert result.exit_code == 2 and "Cannot read" in result.output and "Feather" in result.output
    training_ready_frame(0).write_ipc(path)
    result = run_with(trainer, tmp_path, folder)
    assert result.exit_code == 2 and "no rows" in result.output


@pytest.mark.parametrize("pair", ["../x", "ETH.USDT", "a"])
def test_bad_pair_name(trainer, tmp_path, pair):
    result = trainer("run", "--pair", pair, "--output", tmp_path / "out", "--config-test")
    assert result.exit_code == 2
    assert "is not a valid pair name" in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "out").exists()


def test_malformed_manifest(trainer, tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\npairs: [ETHUSDT\n")
    result = trainer("run", "--manifest", manifest, "--pair", "ETHUSDT")
    assert result.exit_code == 2 and "is not valid YAML at line" in result.output
    manifest.write_text("version: 1\npairs: [ETHUSDT]\ndefaults: {train: {epoch: 3}}\n")
    result = trainer("run", "--manifest", manifest, "--pair", "ETHUSDT")
    assert result.exit_code == 2 and "Unknown setting defaults.train.epoch" in result.output


def test_unknown_plugin_names(trainer, tmp_path, inputs):
    result = run_with(trainer, tmp_path, inputs, "--set", "balance.method=smote")
    assert result.exit_code == 2
    assert (
        "Unknown balancer 'smote' (set by balance.method). Known balancers: class-weights, none, undersample"
        in result.output
    )
    result = run_with(trainer, tmp_path, inputs, "--set", "reporters=[metadata, pdf]")
    assert result.exit_code == 2 and "Unknown reporter 'pdf'" in result.output
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nplugins: [no_such_plugin_module]\npairs: [ETHUSDT]\n")
    result = trainer("validate", manifest)
    assert result.exit_code == 2 and "Cannot import plugin module 'no_such_plugin_module'" in result.output


def test_usage_errors_exit_2(trainer, tmp_path):
    result = trainer("run", "--epochs", "3")
    assert result.exit_code == 2 and "--pair" in result.output
    result = trainer("run", "--pair", "ETHUSDT", "--epochs", "0")
    assert result.exit_code == 2


def test_debug_shows_the_traceback(tmp_path):
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "trainer_core.cli",
        "--debug",
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        str(tmp_path / "nope"),
        "--output",
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "DataError" in proc.stderr
    proc = subprocess.run(cmd[:3] + cmd[4:], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_failed_training_exits_1_and_keeps_the_previous_artifacts(trainer, tmp_path, inputs, monkeypatch):
    """A run that fails mid-training leaves the earlier complete artifacts exactly as they were."""
    out = tmp_path / "out"
    ok = trainer("run", "--pair", "ETHUSDT", "--data", inputs, "--output", out, *tiny_args())
    assert ok.exit_code == 0, ok.output
    before = {p.name: p.read_bytes() for p in (out / "ETHUSDT").iterdir() if p.is_file()}

    (tmp_path / "broken_model_plugin.py").write_text(
        """
import keras
from trainer_core import hookimpl

class Explodes(keras.layers.Layer):
    def call(self, x):
        raise RuntimeError("boom")

class Broken:
    def build(self, input_shape, n_classes, params):
        inp = keras.Input(input_shape)
        x = keras.layers.Flatten()(inp)
        return keras.Model(inp, keras.layers.Dense(n_classes, activation="softmax")(x))

    def check(self, params):
        pass

@hookimpl
def trainer_register_model_builders(register):
    register("broken", Broken)

@hookimpl
def trainer_keras_callbacks(spec, pair_dir):
    class Fail(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("disk on fire")
    return [Fail()]
"""
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\nplugins: [broken_model_plugin]\ndefaults: {model: {builder: broken}}\npairs: [ETHUSDT]\n"
    )
    result = trainer(
        "run", "--manifest", manifest, "--pair", "ETHUSDT", "--data", inputs, "--output", out, *tiny_args()
    )
    assert result.exit_code == 1
    assert "training failed: RuntimeError: disk on fire" in result.output
    after = {p.name: p.read_bytes() for p in (out / "ETHUSDT").iterdir() if p.is_file()}
    assert after == before
    marker = json.loads((out / "ETHUSDT" / "_SUCCESS.json").read_text())
    assert set(marker["artifacts"]) >= {n for n in before if n != "_SUCCESS.json"}
