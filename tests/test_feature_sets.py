"""Feature sets and labelers as plugins: docs/writing-plugins.md's set and labeler train and predict exactly as
trained; `predict_latest` and `required_history`; the built-in `seed+context` set sees no later
candle of its context pair."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from trainer_core.testing import synthetic_candles, tiny_args

TAG = "ETHUSDT-returns_SIGN010"  # the folder name (pair and feature set) and the labeler's tag
FOLDER = "ETHUSDT-returns"


def own_features(frame: pl.DataFrame) -> np.ndarray:
    """The test's own computation of the two features (float32, row 0 has none)."""
    close = frame["close"].to_numpy()
    out = np.full((frame.height, 2), np.nan, dtype=np.float32)
    out[1:, 0] = (close[1:] / close[:-1] - 1) * 100
    out[:, 1] = ((frame["high"] - frame["low"]) / frame["close"] * 100).to_numpy()
    return out


def candle_frame(rows: int, seed: int = 3) -> pl.DataFrame:
    return synthetic_candles("ETHUSDT", rows, seed=seed, start="2024-03-01")


@pytest.fixture(scope="module")
def plugin_model(tmp_path_factory, feature_plugin_source, trainer):
    """A model trained with the test's feature set and labeler on 2024-03-01..02 of a 3-day file."""
    root = tmp_path_factory.mktemp("feature_sets")
    (root / "two_features.py").write_text(feature_plugin_source)  # docs/writing-plugins.md's plugin
    sys.path.insert(0, str(root))
    frame = candle_frame(3 * 1440)
    candles = root / "data" / "ETHUSDT-1m.parquet"
    candles.parent.mkdir()
    frame.write_parquet(candles)
    manifest = root / "m.yaml"
    manifest.write_text(
        "version: 1\nplugins: [two_features]\npairs: [ETHUSDT]\n"
        "defaults:\n  data: {loader: ohlcv}\n"
        "  features: {set: returns}\n  labels: {method: return-sign, params: {horizon: 10}}\n"
    )
    args = ["--manifest", manifest, "--pair", "ETHUSDT", "--data", candles, "--output", root / "out"]
    result = trainer(
        "run", *args, *tiny_args(), "--set", "data.start=2024-03-01", "--set", "data.end=2024-03-02"
    )
    try:
        assert result.exit_code == 0, result.output
        yield root, frame, candles, root / "out" / FOLDER
    finally:
        sys.path.remove(str(root))


@pytest.mark.slow
def test_hook_trainer_register_feature_sets(plugin_model):
    import keras

    root, frame, candles, model_dir = plugin_model
    model = keras.models.load_model(model_dir / f"model_{TAG}.keras")
    assert model.input_shape == (None, 8, 2)
    spec = json.loads((model_dir / f"spec_{TAG}.json").read_text())
    assert spec["feature_names"] == ["close_change", "range_pct"]
    assert spec["features"]["set"] == "returns" and spec["features"]["origin"].startswith(
        "two_features sha256:"
    )
    assert spec["features"]["plugin"] == "two_features"
    assert spec["required_history"] == 8 + 1


@pytest.mark.slow
def test_hook_trainer_register_labelers(plugin_model):
    root, frame, candles, model_dir = plugin_model
    names = {p.name for p in model_dir.iterdir()}
    assert f"model_{TAG}.keras" in names and f"metadata_{TAG}.json" in names  # the labeler's tag
    spec = json.loads((model_dir / f"spec_{TAG}.json").read_text())
    assert spec["labels"]["method"] == "return-sign" and spec["labels"]["horizon"] == 10
    meta = json.loads((model_dir / f"metadata_{TAG}.json").read_text())
    split = meta["split"]
    # purged by the labeler's horizon: the last training label ends before validation starts
    assert split["embargo_rows"] == 10
    assert split["train_targets"]["last_label_horizon_row"] < split["validation_targets"]["first_row"]


@pytest.mark.slow
def test_predict_on_later_candles_reproduces_the_model_on_independent_windows(
    plugin_model, trainer, tmp_path
):
    import keras

    root, frame, candles, model_dir = plugin_model
    later = frame.filter(pl.col("timestamp") >= pl.datetime(2024, 3, 3, time_zone="UTC"))
    later_file = tmp_path / "ETHUSDT-1m.parquet"
    later.write_parquet(later_file)
    result = trainer(
        "predict", "--model-dir", model_dir, "--data", later_file, "--output", tmp_path / "p.parquet"
    )
    assert result.exit_code == 0, result.output
    got = pl.read_parquet(tmp_path / "p.parquet")
    assert got.height == later.height - 8  # row 0 has no feature, window 8
    scaler = json.loads((model_dir / f"scaler_{TAG}.json").read_text())
    assert scaler["feature_names"] == ["close_change", "range_pct"]
    feats = own_features(later)[1:].astype(np.float64)
    scaled = ((feats - np.array(scaler["center"])) / np.array(scaler["scale"])).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(scaled, 8, axis=0).transpose(0, 2, 1)
    expected = keras.models.load_model(model_dir / f"model_{TAG}.keras").predict(windows, verbose=0)
    np.testing.assert_allclose(
        got.select("p_short", "p_hold", "p_long").to_numpy(), expected, rtol=1e-5, atol=1e-6
    )
    assert got["timestamp"][0] == later["timestamp"][8]


@pytest.mark.slow
def test_predict_latest_needs_required_history_and_matches_predict(plugin_model, trainer, tmp_path):
    from trainer_core import DataError, load_pair_model

    root, frame, candles, model_dir = plugin_model
    result = trainer(
        "predict", "--model-dir", model_dir, "--data", candles, "--output", tmp_path / "all.parquet"
    )
    assert result.exit_code == 0, result.output
    last = pl.read_parquet(tmp_path / "all.parquet").row(-1, named=True)
    model = load_pair_model(model_dir)
    assert model.required_history == 9
    latest = model.predict_latest(frame.tail(model.required_history))
    assert latest["timestamp"] == frame["timestamp"][-1]
    for key in ("p_short", "p_hold", "p_long"):
        assert latest[key] == pytest.approx(last[key], rel=1e-5, abs=1e-6)
    assert latest["predicted_label"] == last["predicted_label"]
    with pytest.raises(DataError, match=r"got 8 candles; the model needs 9"):
        model.predict_latest(frame.tail(model.required_history - 1))


@pytest.mark.slow
def test_a_missing_feature_set_plugin_is_named_at_predict(plugin_model, tmp_path):
    root, frame, candles, model_dir = plugin_model
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer_core.cli",
            "predict",
            "--model-dir",
            str(model_dir),
            "--data",
            str(candles),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "two_features" in run.stderr and "Traceback" not in run.stderr


def test_trainer_plugins_lists_feature_sets_and_labelers(trainer):
    result = trainer("plugins")
    assert result.exit_code == 0
    assert "seed" in result.output and "seed+context" in result.output and "tp-sl" in result.output
    only = trainer("plugins", "--kind", "labeler")
    assert "tp-sl" in only.output and "seed+context" not in only.output


def test_predict_latest_for_the_seed_set_needs_ma_long_history(trainer, tmp_path):
    """The seed set with ma_long 43200 needs 30 days of 1-minute candles before the window."""
    from trainer_core.features import components, history_of
    from trainer_core.manifest import default_manifest
    from trainer_core.plugins import Plugins

    spec = default_manifest().resolve("ETHUSDT")
    feature_set, params, _, _ = components(spec, Plugins.load())
    assert history_of(feature_set, params) == 43199
    assert 120 + history_of(feature_set, params) == 43319  # required_history with the default window


# -- seed+context on real candles -----------------------------------------------------------------

needs_real_data = pytest.mark.real_candles
CONTEXT = [
    "--set",
    "features.set=seed+context",
    "--set",
    "features.params={pairs: [BTCUSDT], ma_short: 30, ma_long: 120}",
]


def _context_folder(tmp_path, shared_data, rows=3000):
    folder = tmp_path / "candles"
    folder.mkdir()
    for pair in ("ETHUSDT", "BTCUSDT"):
        pl.read_parquet(shared_data / f"{pair}-1m.parquet").slice(10_000, rows).write_parquet(
            folder / f"{pair}-1m.parquet"
        )
    return folder


@needs_real_data
def test_context_features_never_see_a_later_context_candle(tmp_path, shared_data):
    from trainer_core.candles import read_candles
    from trainer_core.features import pair_data_from_candles
    from trainer_core.manifest import default_manifest

    folder = _context_folder(tmp_path, shared_data, rows=1500)
    sets = [
        "data.loader=ohlcv",
        f"data.path={folder}",
        "features.set=seed+context",
        "features.params={pairs: [BTCUSDT], ma_short: 30, ma_long: 120}",
        "labels.future_window=5",
    ]
    spec = default_manifest().resolve("ETHUSDT", sets=sets)
    eth = read_candles(folder, "ETHUSDT", "1m")
    btc = read_candles(folder, "BTCUSDT", "1m")
    base = pair_data_from_candles(eth, spec, context={"BTCUSDT": btc})
    assert base.features.shape[1] == 10 and base.feature_names[-2:] == (
        "btcusdt_close_change",
        "btcusdt_volume_change",
    )
    assert np.isfinite(base.features).all()
    t = 900
    changed = btc.take(np.arange(len(btc)))
    changed.close = changed.close.copy()
    changed.high = changed.high.copy()
    changed.close[t] *= 1.03
    changed.high[t] = max(changed.high[t], changed.close[t])
    moved = pair_data_from_candles(eth, spec, context={"BTCUSDT": changed})
    when = btc.time_ms[t]
    before = base.timestamps.astype(np.int64) < when
    np.testing.assert_array_equal(moved.features[before], base.features[before])
    at = np.flatnonzero(base.timestamps.astype(np.int64) == when)[0]
    assert moved.features[at, 8] != base.features[at, 8]  # the context's close_change at t itself moved
    # a minute the context pair has no candle for is neither a target nor a window member
    missing = btc.take(np.arange(len(btc)) != 1000)
    holed = pair_data_from_candles(eth, spec, context={"BTCUSDT": missing})
    assert np.isfinite(holed.features).all()
    assert btc.time_ms[1000] not in set(holed.timestamps.astype(np.int64).tolist())
    assert len(holed.breaks) >= 1


@needs_real_data
@pytest.mark.slow
def test_seed_context_trains_ethusdt_with_btcusdt_context(trainer, tmp_path, shared_data):
    import keras

    folder = _context_folder(tmp_path, shared_data)
    out = tmp_path / "out"
    result = trainer(
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        folder,
        "--output",
        out,
        "--set",
        "data.loader=ohlcv",
        *CONTEXT,
        *tiny_args(),
    )
    assert result.exit_code == 0, result.output
    model_dir = out / "ETHUSDT-seed-context"  # the feature set names the folder and the tag
    tag = "ETHUSDT-seed-context_FW005_SL050_TP100"
    assert keras.models.load_model(model_dir / f"model_{tag}.keras").input_shape == (None, 8, 10)
    spec = json.loads((model_dir / f"spec_{tag}.json").read_text())
    assert spec["features"]["context_pairs"] == ["BTCUSDT"]
    result = trainer(
        "predict", "--model-dir", model_dir, "--data", folder / "ETHUSDT-1m.parquet", "--last", "5"
    )
    assert result.exit_code == 0, result.output
    assert "5 predictions" in result.output


@pytest.mark.slow
def test_prepare_uses_the_selected_feature_set_and_labeler(plugin_model, trainer, tmp_path):
    root, frame, candles, model_dir = plugin_model
    result = trainer(
        "prepare",
        "--manifest",
        root / "m.yaml",
        "--pair",
        "ETHUSDT",
        "--data",
        candles,
        "--output",
        tmp_path / "inputs",
    )
    assert result.exit_code == 0, result.output
    written = tmp_path / "inputs" / "ETHUSDT_TF-1m__SIGN010__training_ready.feather"
    table = pl.read_ipc(written)
    assert table.columns[:3] == ["timestamp", "close_change", "range_pct"]
    np.testing.assert_allclose(table["range_pct"].to_numpy(), own_features(frame)[1:, 1], rtol=1e-6)


@pytest.mark.slow
def test_a_batch_trains_with_the_plugin_labeler_and_a_rerun_skips_under_its_tag(plugin_model, tmp_path):
    """The seam between a third-party labeler's tag and the batch: Ray workers, resume, summary."""
    root, frame, candles, model_dir = plugin_model
    manifest = tmp_path / "batch.yaml"
    manifest.write_text(
        f"version: 1\noutput: {tmp_path / 'out'}\nplugins: [two_features]\npairs: [ETHUSDT]\n"
        f"defaults:\n  data: {{loader: ohlcv, path: {candles}, start: 2024-03-01, end: 2024-03-02}}\n"
        "  features: {set: returns}\n  labels: {method: return-sign, params: {horizon: 10}}\n"
        "  model: {params: {lstm_units: [4], dense_units: [4]}}\n"
        "  train: {epochs: 1, sequence_length: 8, batch_size: 64, verbose: 0}\n  balance: {min_per_class: 0}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "trainer_core.cli", "batch", str(manifest)]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "out" / FOLDER / f"model_{TAG}.keras").exists()
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"skipped   {FOLDER}" in again.stdout and "completed with the same settings" in again.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    row = summary["pairs"][0]
    assert row["status"] == "skipped"
    # the rerun's row points at the files of the labeler's tag, not the seed's naming
    assert row["confusion_matrix_png"] == f"{FOLDER}/confusion_matrix_{TAG}.png"
    assert row["trading"]["report"] == f"{FOLDER}/trading_{TAG}.html"
