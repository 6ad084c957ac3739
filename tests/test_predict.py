"""`trainer predict` and `load_pair_model`: the saved model applied exactly as it was trained;
walk-forward validation's folds and their purged regions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trainer_core.testing import tiny_args, training_ready_frame, write_training_ready

TAG = "ETHUSDT_FW005_SL050_TP100"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, trainer):
    root = tmp_path_factory.mktemp("predict")
    write_training_ready(root / "inputs", "ETHUSDT", rows=700, seed=11)
    result = trainer(
        "run", "--pair", "ETHUSDT", "--data", root / "inputs", "--output", root / "out", *tiny_args()
    )
    assert result.exit_code == 0, result.output
    return root / "out" / "ETHUSDT"


def independent_probabilities(model_dir: Path, frame: pl.DataFrame) -> np.ndarray:
    """What the saved Keras model gives on windows built here from the scaler JSON and raw features."""
    import keras

    scaler = json.loads((model_dir / f"scaler_{TAG}.json").read_text())
    raw = frame.select(scaler["feature_names"]).to_numpy().astype(np.float64)
    scaled = ((raw - np.array(scaler["center"])) / np.array(scaler["scale"])).astype(np.float32)
    window = json.loads((model_dir / f"metadata_{TAG}.json").read_text())["spec"]["train"]["sequence_length"]
    windows = np.lib.stride_tricks.sliding_window_view(scaled, window, axis=0).transpose(0, 2, 1)
    return keras.models.load_model(model_dir / f"model_{TAG}.keras").predict(windows, verbose=0)


@pytest.mark.slow
def test_predict_equals_the_saved_model_on_independent_windows(model_dir, trainer, tmp_path):
    new = write_training_ready(tmp_path / "new", "ETHUSDT", rows=300, seed=99)
    out = tmp_path / "predictions.parquet"
    result = trainer("predict", "--model-dir", model_dir, "--data", new, "--output", out)
    assert result.exit_code == 0, result.output
    assert "293 predictions" in result.output  # 300 rows, window 8: the first full window ends at row 7
    predictions = pl.read_parquet(out)
    assert predictions.columns == [
        "row",
        "timestamp",
        "p_short",
        "p_hold",
        "p_long",
        "predicted",
        "predicted_label",
        "signal",
        "in_sample",
    ]
    expected = independent_probabilities(model_dir, pl.read_ipc(new))
    got = predictions.select(["p_short", "p_hold", "p_long"]).to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert predictions["predicted"].to_list() == expected.argmax(axis=1).tolist()
    assert predictions["row"][0] == 7
    assert str(predictions["timestamp"][0]) == "2024-01-01 00:07:00"


@pytest.mark.slow
def test_python_api_and_fsspec_url(model_dir):
    import fsspec

    from trainer_core import load_pair_model

    frame = training_ready_frame(200, seed=5)
    local = load_pair_model(model_dir).predict(frame)
    fs = fsspec.filesystem("memory")
    for path in model_dir.rglob("*"):
        if path.is_file():
            fs.pipe(f"/models/ETHUSDT/{path.relative_to(model_dir).as_posix()}", path.read_bytes())
    remote = load_pair_model("memory://models/ETHUSDT").predict(frame)
    assert remote.equals(local)
    assert local.height == 193


@pytest.mark.slow
def test_data_with_other_parameters_are_refused(model_dir, trainer, tmp_path):
    other = write_training_ready(tmp_path / "other", "ETHUSDT", rows=100, fw=60)
    result = trainer("predict", "--model-dir", model_dir, "--data", other)
    assert result.exit_code == 2
    assert (
        "made with future_window 60, the model ETHUSDT_FW005_SL050_TP100 with future_window 5"
        in result.output
    )
    btc = write_training_ready(tmp_path / "btc", "BTCUSDT", rows=100)
    result = trainer("predict", "--model-dir", model_dir, "--data", btc)
    assert result.exit_code == 2
    assert f"{btc.name} holds BTCUSDT, the model is for ETHUSDT." in result.output
    missing = tmp_path / "missing.parquet"
    training_ready_frame(100).drop("price_to_ma43200").write_parquet(missing)
    result = trainer("predict", "--model-dir", model_dir, "--data", missing)
    assert result.exit_code == 2 and "price_to_ma43200" in result.output


@pytest.mark.slow
def test_altered_artifacts_are_refused(model_dir, trainer, tmp_path):
    import shutil

    copy = tmp_path / "ETHUSDT"
    shutil.copytree(model_dir, copy)
    scaler = copy / f"scaler_{TAG}.json"
    doc = json.loads(scaler.read_text())
    doc["center"][0] += 1.0
    scaler.write_text(json.dumps(doc))
    new = write_training_ready(tmp_path / "new", "ETHUSDT", rows=100)
    result = trainer("predict", "--model-dir", copy, "--data", new)
    assert result.exit_code == 2 and "does not match its checksum" in result.output
    (copy / "_SUCCESS.json").unlink()
    result = trainer("predict", "--model-dir", copy, "--data", new)
    assert result.exit_code == 2 and "did not complete" in result.output


@pytest.mark.slow
def test_walk_forward_folds_are_purged_and_reported(trainer, tmp_path):
    write_training_ready(tmp_path / "inputs", "ETHUSDT", rows=1200, seed=2)
    out = tmp_path / "out"
    result = trainer(
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        tmp_path / "inputs",
        "--output",
        out,
        *tiny_args(),
        "--set",
        "split.mode=walk-forward",
        "--set",
        "split.folds=3",
        "--set",
        "split.validation=0.2",
    )
    assert result.exit_code == 0, result.output
    assert "Fold 1/3" in result.output and "Fold 3/3 (saved)" in result.output
    assert "on its untouched block" in result.output
    meta = json.loads((out / "ETHUSDT" / f"metadata_{TAG}.json").read_text())
    folds = meta["walk_forward"]["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    for f in folds:
        s = f["split"]
        train, val, block = s["train_targets"], s["validation_targets"], s["test_targets"]
        embargo = s["embargo_rows"]
        # each fold early-stops on the end of its own training rows, purged from them ...
        assert train["last_label_horizon_row"] < val["first_row"]
        assert s["scaler_fit_rows"]["last_row"] < s["validation_start_row"] - embargo + 1
        # ... and is scored on its block, which no training or early-stopping label reaches
        assert val["last_row"] + s["future_window"] < block["first_row"]
        assert f["scored_on"].startswith("outer block") and f["samples"] == block["count"]
    for a, b in zip(folds, folds[1:]):
        ba, sb = a["split"]["test_targets"], b["split"]
        assert ba["last_row"] < sb["test_targets"]["first_row"]  # the blocks follow each other
        assert a["split"]["train_targets"]["count"] < sb["train_targets"]["count"]  # expanding window
    # the saved model is the last fold's: its split is the metadata's split, its block the test slice
    assert folds[-1]["split"] == meta["split"]
    assert folds[-1]["accuracy"] == pytest.approx(meta["metrics"]["test"]["accuracy"])
    spread = meta["walk_forward"]["spread"]
    for key in ("accuracy", "mcc"):
        values = [f[key] for f in folds]
        assert spread[key]["mean"] == pytest.approx(np.mean(values))
        assert spread[key]["std"] == pytest.approx(np.std(values, ddof=1))
    trading = json.loads((out / "ETHUSDT" / f"trading_{TAG}.json").read_text())
    assert trading["split"] == "test"
    assert [f["mcc"] for f in trading["walk_forward"]["folds"]] == [f["mcc"] for f in folds]


# -- the engine's own files are enough to predict -----------------------------------------------


@pytest.mark.slow
def test_a_pair_trained_without_reporters_predicts_the_same(model_dir, trainer, tmp_path):
    from trainer_core import load_pair_model

    write_training_ready(tmp_path / "inputs", "ETHUSDT", rows=700, seed=11)  # the model_dir fixture's data
    out = tmp_path / "out"
    result = trainer(
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        tmp_path / "inputs",
        "--output",
        out,
        *tiny_args(),
        "--set",
        "reporters=[]",
    )
    assert result.exit_code == 0, result.output
    bare = out / "ETHUSDT"
    assert sorted(p.name for p in bare.iterdir() if p.is_file()) == [
        "_SUCCESS.json",
        f"model_{TAG}.keras",
        f"scaler_{TAG}.json",
        f"spec_{TAG}.json",
    ]
    assert trainer("verify", out).exit_code == 0
    new = write_training_ready(tmp_path / "new", "ETHUSDT", rows=300, seed=99)
    for folder, name in ((bare, "bare.parquet"), (model_dir, "full.parquet")):
        result = trainer("predict", "--model-dir", folder, "--data", new, "--output", tmp_path / name)
        assert result.exit_code == 0, result.output
    bare_pred, full_pred = (
        pl.read_parquet(tmp_path / "bare.parquet"),
        pl.read_parquet(tmp_path / "full.parquet"),
    )
    assert bare_pred.height == 293
    np.testing.assert_allclose(
        bare_pred.select("p_short", "p_hold", "p_long").to_numpy(),
        full_pred.select("p_short", "p_hold", "p_long").to_numpy(),
        rtol=1e-6,
        atol=1e-7,
    )
    frame = training_ready_frame(200, seed=5)
    assert load_pair_model(bare).predict(frame).equals(load_pair_model(bare).predict(frame))
    spec = json.loads((bare / f"spec_{TAG}.json").read_text())
    assert spec["sequence_length"] == 8 and spec["feature_names"][0] == "high_change"
    assert spec["label_params"]["future_window"] == 5


@pytest.mark.slow
def test_a_damaged_marker_is_one_clear_error(model_dir, trainer, tmp_path):
    import shutil

    copy = tmp_path / "ETHUSDT"
    shutil.copytree(model_dir, copy)
    new = write_training_ready(tmp_path / "new", "ETHUSDT", rows=50)
    marker = copy / "_SUCCESS.json"
    good = marker.read_bytes()
    for bad in (good[: len(good) // 2], b"[]", b'"x"', b"null", b'{"artifacts": []}'):
        marker.write_bytes(bad)
        result = trainer("predict", "--model-dir", copy, "--data", new)
        assert result.exit_code == 2, (bad, result.output)
        assert "Traceback" not in result.output and "_SUCCESS.json" in result.output
    doc = json.loads(good)
    doc["tag"] = "../../escape"
    marker.write_text(json.dumps(doc))
    result = trainer("predict", "--model-dir", copy, "--data", new)
    assert result.exit_code == 2 and "not a plain name" in result.output


@pytest.mark.slow
def test_a_url_marker_cannot_write_outside_the_download_folder(model_dir, tmp_path):
    import fsspec

    from trainer_core import TrainerError, load_pair_model

    fs = fsspec.filesystem("memory")
    for path in model_dir.rglob("*"):
        if path.is_file():
            fs.pipe(f"/evil/ETHUSDT/{path.relative_to(model_dir).as_posix()}", path.read_bytes())
    doc = json.loads((model_dir / "_SUCCESS.json").read_text())
    doc["artifacts"]["../../../../tmp/pwned.txt"] = {"sha256": "0" * 64, "bytes": 1}
    doc["tag"] = "../../../tmp/pwned"
    fs.pipe("/evil/ETHUSDT/_SUCCESS.json", json.dumps(doc).encode())
    with pytest.raises(TrainerError):
        load_pair_model("memory://evil/ETHUSDT")
    assert not Path("/tmp/pwned.txt").exists() and not Path("/tmp/pwned.keras").exists()


# -- predicting on candles: the data given, not the training window -------------------------------

needs_real_data = pytest.mark.real_candles


@needs_real_data
@pytest.mark.slow
def test_predict_on_candles_after_the_training_window(trainer, tmp_path, train_on_real_candles):
    frame, candles, result = train_on_real_candles(4, "data.start=2025-05-05", "data.end=2025-05-06")
    out = tmp_path / "out"
    assert result.exit_code == 0, result.output
    model = out / "ETHUSDT"
    last_candle = frame["timestamp"][-1]
    result = trainer("predict", "--model-dir", model, "--data", candles, "--output", tmp_path / "all.parquet")
    assert result.exit_code == 0, result.output
    every = pl.read_parquet(tmp_path / "all.parquet")
    # the whole file: from the first row with a full window to the last candle, UTC kept
    assert every["timestamp"].dtype == pl.Datetime("ms", "UTC")
    assert every["timestamp"][-1] == last_candle
    # the first ma_long - 1 = 119 candles are history (their features would read less); window 8
    assert every.height == frame.height - 119 - 7
    later = frame.filter(pl.col("timestamp") >= pl.datetime(2025, 5, 7, time_zone="UTC"))
    october_like = tmp_path / "later" / "ETHUSDT-1m.parquet"
    october_like.parent.mkdir()
    later.write_parquet(october_like)
    result = trainer(
        "predict", "--model-dir", model, "--data", october_like, "--output", tmp_path / "later.parquet"
    )
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "later.parquet").height == later.height - 119 - 7
    result = trainer(
        "predict",
        "--model-dir",
        model,
        "--data",
        candles,
        "--start",
        "2025-05-07",
        "--end",
        "2025-05-07",
        "--output",
        tmp_path / "day.parquet",
    )
    assert result.exit_code == 0, result.output
    day = pl.read_parquet(tmp_path / "day.parquet")
    assert day.height == 1440 and str(day["timestamp"][0]).startswith("2025-05-07 00:00:00")
    # the day's predictions use the history before it: the same numbers as from the whole file
    same = every.filter(pl.col("timestamp").is_in(day["timestamp"].implode()))
    np.testing.assert_allclose(day.select("p_long").to_numpy(), same.select("p_long").to_numpy(), rtol=1e-5)
    result = trainer("predict", "--model-dir", model, "--data", candles, "--last", "3")
    assert result.exit_code == 0 and "3 predictions" in result.output
    result = trainer("predict", "--model-dir", model, "--data", candles, "--start", "2030-01-01")
    assert result.exit_code == 2 and "No predictions from 2030-01-01" in result.output
    assert "run from 2025-05-04" in result.output


# -- models that could not be used, and validation slices too small to mean anything ------------


@pytest.mark.slow
def test_a_lambda_layer_is_refused_before_training(
    trainer, tmp_path, inputs, monkeypatch, write_model_builder_plugin
):
    write_model_builder_plugin(
        tmp_path,
        "lambda_model_plugin",
        "with-lambda",
        """
x = keras.Input(input_shape)
y = keras.layers.Flatten()(keras.layers.Lambda(lambda t: t * 2.0)(x))
return keras.Model(x, keras.layers.Dense(n_classes, activation='softmax')(y))
""",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\nplugins: [lambda_model_plugin]\ndefaults: {model: {builder: with-lambda}}\n"
        "pairs: [ETHUSDT]\n"
    )
    out = tmp_path / "out"
    result = trainer(
        "run", "--manifest", manifest, "--pair", "ETHUSDT", "--data", inputs, "--output", out, *tiny_args()
    )
    assert result.exit_code == 2, result.output
    assert "Lambda layer" in result.output and "safe mode" in result.output
    assert "Traceback" not in result.output and "Epoch 1" not in result.output
    assert not (out / "ETHUSDT" / "_SUCCESS.json").exists()


def test_too_few_validation_targets_is_an_error(trainer, tmp_path, inputs):
    result = trainer(
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        inputs,
        "--output",
        tmp_path / "out",
        *tiny_args(),
        "--set",
        "split.validation=0.02",
    )
    assert result.exit_code == 2, result.output
    assert "validation target(s); at least 30 are needed" in result.output  # 5 % of 600 labelled rows
    assert "split.min_validation_targets" in result.output
    assert not (tmp_path / "out" / "ETHUSDT" / "_SUCCESS.json").exists()


def test_nan_class_weights_are_refused_before_training(trainer, tmp_path, inputs):
    result = trainer(
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        inputs,
        "--output",
        tmp_path / "out",
        *tiny_args(),
        "--set",
        "balance.method=class-weights",
        "--set",
        "balance.class_weights={0: .nan, 1: 1.0, 2: 1.0}",
    )
    assert result.exit_code == 2, result.output
    assert "class_weights" in result.output or "class weights" in result.output
    assert "loss became NaN" not in result.output and "Traceback" not in result.output
