"""The one home of the tests' shared fixtures and markers: tiny seed-format data, an in-process
`trainer` runner, the real candles (marker ``real_candles``), test plugins, servers and mounts.

Tests take what they need as fixtures (never ``from conftest import``); plain helpers a plugin
author could use too (``tiny_args``, ``success_markers``, ``TINY_SETTINGS``) live in
`trainer_core.testing`."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from trainer_core.testing import write_training_ready

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
#: the real candles: ../shared/data/ohlcv beside the checkout, or where TRAINER_SHARED_DATA points
SHARED_DATA = Path(os.environ.get("TRAINER_SHARED_DATA") or REPO.parent / "shared" / "data" / "ohlcv")
#: the colour codes Click's styled output carries
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def pytest_runtest_setup(item):
    """A test marked ``real_candles`` is skipped where ../shared/data/ohlcv is not beside the checkout."""
    if item.get_closest_marker("real_candles") and not SHARED_DATA.exists():
        pytest.skip(f"real candles in {SHARED_DATA} (../shared/data/ohlcv beside the checkout)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real Binance 1-minute candles (tests using it are marked ``real_candles``)."""
    return SHARED_DATA


#: `trainer run` settings for a few days of real 1-minute candles: the ohlcv loader, and moving
#: averages short enough to leave most of the days as rows
REAL_CANDLE_SETTINGS = ("data.loader=ohlcv", "features.ma_short=30", "features.ma_long=120")


#: the tiny search every `trainer tune` test runs, less its ``tune:`` settings beyond the space and folds
TUNE_MANIFEST = """version: 1
output: {out}
defaults:
  data: {{loader: ohlcv, path: {candles}, gaps: split}}
  labels: {{future_window: 10, take_profit_pct: 0.2, stop_loss_pct: 0.2}}
  features: {{ma_short: 30, ma_long: 60}}
  balance: {{method: undersample, min_per_class: 0}}
  model: {{builder: lstm, params: {{lstm_units: [4], dense_units: [4], dropout: 0.1}}}}
  train: {{epochs: {epochs}, batch_size: 128, sequence_length: 8, verbose: 0}}
  resources: {{cpus: 1}}
tune:
  space:
    train.learning_rate: {{log_uniform: [1.0e-4, 1.0e-2]}}
{space}  folds: 2
{tune}
pairs: [{pairs}]
"""


@pytest.fixture
def tune_manifest(tmp_path, shared_data):
    """``tune_manifest(tune, pairs=("ETHUSDT",), epochs=1, space="", candles=True) -> Path``: a
    `trainer tune` manifest of tiny trials (a 4-unit LSTM, 2 inner folds) over 3,000 real candles of
    each pair from the 20,000th on, written to ``tmp_path``; ``tune`` and ``space`` are lines added
    under ``tune:`` and its ``space:``; ``candles=False`` leaves the candle folder absent."""

    def make(tune: str, pairs=("ETHUSDT",), epochs: int = 1, space: str = "", candles: bool = True) -> Path:
        folder = tmp_path / "candles"
        if candles:
            import polars as pl

            folder.mkdir()
            for pair in pairs:
                pl.read_parquet(shared_data / f"{pair}-1m.parquet").slice(20_000, 3000).write_parquet(
                    folder / f"{pair}-1m.parquet"
                )
        text = TUNE_MANIFEST.format(
            out=tmp_path / "out",
            candles=folder,
            epochs=epochs,
            space=space,
            tune=tune,
            pairs=", ".join(pairs),
        )
        manifest = tmp_path / "m.yaml"
        manifest.write_text(text)
        return manifest

    return make


@pytest.fixture
def train_on_real_candles(trainer, tmp_path, shared_data):
    """``train_on_real_candles(days, *settings) -> (frame, candles, result)``: the first ``days`` days
    of the real ETHUSDT candles (from 2025-05-04 15:33) written to ``tmp_path/ETHUSDT-1m.parquet``,
    and a tiny `trainer run` on them into ``tmp_path/out`` with `REAL_CANDLE_SETTINGS`, then
    ``settings`` (``key=value``). Tests using it are marked ``real_candles``."""
    import polars as pl

    from trainer_core.testing import tiny_args

    def train(days: int, *settings: str):
        frame = pl.read_parquet(shared_data / "ETHUSDT-1m.parquet").slice(0, days * 1440)
        candles = tmp_path / "ETHUSDT-1m.parquet"
        frame.write_parquet(candles)
        sets = [arg for setting in (*REAL_CANDLE_SETTINGS, *settings) for arg in ("--set", setting)]
        out = tmp_path / "out"
        result = trainer("run", "--pair", "ETHUSDT", "--data", candles, "--output", out, *sets, *tiny_args())
        return frame, candles, result

    return train


@pytest.fixture
def inputs(tmp_path) -> Path:
    """A folder with one tiny ETHUSDT training-ready file (FW 5, SL 0.5 %, TP 1 %)."""
    folder = tmp_path / "inputs"
    write_training_ready(folder, "ETHUSDT", rows=600, seed=1)
    return folder


@pytest.fixture(scope="session")
def trainer():
    """Invoke the CLI in this process, the plugins' commands included: ``trainer("run", "--pair", ...,
    env={...})`` -> click Result, with ``result.text`` its output without colour codes."""
    from trainer_core.cli import cli

    runner = CliRunner()

    def invoke(*args, env=None):
        result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env)
        result.text = ANSI.sub("", result.output)
        return result

    return invoke


def _write_slow_epochs_plugin(folder: Path, seconds: float, module: str = "slow_epochs") -> str:
    """A plugin module in `folder` whose Keras callback sleeps after every epoch (time to act
    on a run that is training); returns the module name for a manifest's `plugins:`."""
    (folder / f"{module}.py").write_text(
        "import time\nimport keras\nfrom trainer_core import hookimpl\n\n"
        "class Slow(keras.callbacks.Callback):\n"
        f"    def on_epoch_end(self, epoch, logs=None):\n        time.sleep({seconds})\n\n"
        "@hookimpl\ndef trainer_keras_callbacks(spec, pair_dir):\n    return [Slow()]\n"
    )
    return module


@contextmanager
def _mounted_tmpfs(path: Path, options: str):
    """A real tmpfs mounted at ``path`` (e.g. ``size=160k`` or ``ro``) for one block (needs root)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate a server started by a test, killing it when it does not stop in time."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _free_port() -> int:
    """A TCP port on loopback that nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _console_script(name: str) -> str:
    """A console script of this interpreter's environment (the one pytest runs in)."""
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _write_model_builder_plugin(folder: Path, module: str, name: str, body: str) -> str:
    """A plugin module in ``folder`` registering model builder ``name`` whose ``build`` runs ``body``
    (Keras code ending in ``return keras.Model(...)``, with ``input_shape`` and ``n_classes`` in
    scope); returns the module name for a manifest's ``plugins:``."""
    lines = "".join(f"        {line}\n" for line in body.strip().splitlines())
    (folder / f"{module}.py").write_text(
        "import keras\nfrom trainer_core import hookimpl\n\n"
        "class Builder:\n"
        "    def build(self, input_shape, n_classes, params):\n"
        f"{lines}\n"
        f"@hookimpl\ndef trainer_register_model_builders(register):\n    register({name!r}, Builder)\n"
    )
    return module


@pytest.fixture(scope="session")
def force_promote(trainer):
    """``force_promote(out, candidate, data, reason, pair="ETHUSDT")``: `trainer models promote
    --force`, the pair's version ``candidate`` made champion with the gate's evidence measured on
    ``data``; the click Result."""

    def promote(out: Path, candidate: int, data: Path, reason: str, pair: str = "ETHUSDT"):
        return trainer(
            "models",
            "promote",
            out,
            pair,
            "--candidate",
            candidate,
            "--data",
            data,
            "--force",
            "--reason",
            reason,
        )

    return promote


@pytest.fixture(scope="session")
def write_slow_epochs_plugin():
    """``write_slow_epochs_plugin(folder, seconds, module="slow_epochs") -> module``: a plugin whose
    Keras callback sleeps after every epoch (time to act on a run that is training)."""
    return _write_slow_epochs_plugin


@pytest.fixture(scope="session")
def mounted_tmpfs():
    """``with mounted_tmpfs(path, "size=160k"):`` a real tmpfs mounted for one block (needs root)."""
    return _mounted_tmpfs


@pytest.fixture(scope="session")
def stop_process():
    """``stop_process(proc)``: terminate a server a test started, killing it if it does not stop."""
    return _stop_process


@pytest.fixture(scope="session")
def free_port():
    """``free_port() -> int``: a TCP port on loopback that nothing listens on (yet)."""
    return _free_port


@pytest.fixture(scope="session")
def console_script():
    """``console_script(name) -> path``: a console script of the environment pytest runs in; the
    test fails naming the install command when it is missing."""
    return _console_script


#: the keys every test S3 server accepts (moto checks none unless told to)
S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def _moto_server(log: Path, env: dict | None = None):
    """`moto_server` (a real HTTP S3 API, not an in-process patch) on a free loopback port for one
    block, its output in ``log``: the endpoint, once it accepts connections. A bare connect tells,
    which spends none of the unauthenticated calls a server with authentication on allows."""
    port = _free_port()
    with open(log, "wb") as fh:
        server = subprocess.Popen(
            [_console_script("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"moto_server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_process(server)


def _s3_clients(endpoint: str, key: str, secret: str):
    """A boto3 S3 client and an s3fs filesystem (no instance or listings cache) on ``endpoint``."""
    boto3 = pytest.importorskip("boto3")
    s3fs = pytest.importorskip("s3fs")
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    fs = s3fs.S3FileSystem(
        key=key, secret=secret, endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False
    )
    return client, fs


@pytest.fixture(scope="session")
def moto_server():
    """``with moto_server(log, env=None) as endpoint:`` a loopback S3 server for one block (`_moto_server`)."""
    return _moto_server


@pytest.fixture(scope="session")
def s3_clients():
    """``s3_clients(endpoint, key, secret) -> (boto3 S3 client, s3fs filesystem)`` (`_s3_clients`)."""
    return _s3_clients


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory):
    """A loopback S3 server for one test module: ``.endpoint``, ``.fs`` (s3fs on it), ``.env`` (the
    test keys, the region and ``FSSPEC_S3_ENDPOINT_URL``: fsspec reads FSSPEC_{PROTOCOL}_{KWARG}
    into its config, the endpoint of every s3:// it opens) and ``.create_bucket(name)``."""
    pytest.importorskip("s3fs")
    pytest.importorskip("boto3")
    key, secret = S3_TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"], S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    with _moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        client, fs = _s3_clients(endpoint, key, secret)
        yield SimpleNamespace(
            endpoint=endpoint,
            fs=fs,
            env={**S3_TEST_CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": endpoint},
            create_bucket=lambda name: client.create_bucket(Bucket=name),
        )


def _batch_row(pair: str, status: str = "trained", **values) -> dict:
    """One row of a `BatchReport`, as the batch makes it; ``values`` replace the defaults (trained in
    12 s on 2026-12-01, no metrics, no figures)."""
    return {
        "pair": pair,
        "status": status,
        "reason": status,
        "error": None,
        "hint": None,
        "exit_code": None,
        "seconds": 12.0,
        "metrics": {},
        "figures": {},
        "artifacts": f"/out/{pair}",
        "tag": f"{pair}_T",
        "trained_at": "2026-12-01T10:00:00+00:00",
        **values,
    }


def _write_batch_summary(manifest: Path, out: Path, rows: list[dict], **fields) -> dict:
    """The `summary` reporter's `report_batch` on a `BatchReport` of ``rows`` for the manifest file
    ``manifest`` into ``out`` (made when missing); the summary.json it wrote. ``fields`` replace the
    report's defaults: a one-minute batch on 2026-12-01 that exited 0, sorted by MCC."""
    import json

    from trainer_core import BatchReport, load_manifest
    from trainer_core.storage import open_storage
    from trainer_plugins.reporters.summary import SummaryReporter

    out.mkdir(exist_ok=True)
    report = {
        "manifest": load_manifest(str(manifest)),
        "output": str(out),
        "storage": open_storage(str(out)),
        "started": "2026-12-01T10:00:00+00:00",
        "finished": "2026-12-01T10:01:00+00:00",
        "seconds": 60.0,
        "interrupted": False,
        "exit_code": 0,
        "counts": {},
        "rows": rows,
        "sort": "mcc",
        "larger_is_better": True,
    }
    SummaryReporter().report_batch(BatchReport(**{**report, **fields}))
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="session")
def batch_summary():
    """A batch summary from constructed rows: ``batch_summary.row(pair, status="trained", **values)``
    (`_batch_row`) and ``batch_summary.write(manifest, out, rows, **fields) -> summary.json``
    (`_write_batch_summary`)."""
    return SimpleNamespace(row=_batch_row, write=_write_batch_summary)


@pytest.fixture(scope="session")
def write_model_builder_plugin():
    """``write_model_builder_plugin(folder, module, name, body) -> module``: a plugin registering
    model builder ``name`` whose ``build`` runs ``body``."""
    return _write_model_builder_plugin


def docs_feature_plugin() -> str:
    """The third-party feature set (`returns`: two columns) and labeler (`return-sign`: the sign of
    the move `horizon` candles later, tag SIGN{horizon:03d}) exactly as docs/writing-plugins.md
    shows a plugin author writing them: its first Python block after "A feature set and a labeler"."""
    text = (REPO / "docs" / "writing-plugins.md").read_text()
    section = text[text.index("## 11. A feature set and a labeler") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


@pytest.fixture(scope="session")
def feature_plugin_source() -> str:
    """`docs_feature_plugin`'s source, for module-scoped fixtures that write it themselves."""
    return docs_feature_plugin()


@pytest.fixture
def feature_plugin(tmp_path, monkeypatch):
    """A module ``two_features`` (`docs_feature_plugin`) importable from ``tmp_path/plugins`` for one test;
    returns that folder (put it on a subprocess's PYTHONPATH)."""
    import sys

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "two_features.py").write_text(docs_feature_plugin())
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("two_features", None)
    yield folder
    sys.modules.pop("two_features", None)
