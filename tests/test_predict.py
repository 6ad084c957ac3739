"""`trainer predict` and `load_pair_model`: the saved model applied exactly as it was trained;
walk-forward validation's folds and their purged regions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import tiny_args
from trainer_core.testing import training_ready_frame, write_training_ready

TAG = "ETHUSDT_FW005_SL050_TP100"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from click.testing import CliRunner

    from trainer_core.cli import cli

    root = tmp_path_factory.mktemp("predict")
    write_training_ready(root / "inputs", "ETHUSDT", rows=700, seed=11)
    result = CliRunner().invoke(
        cli, ["run", "--pair", "ETHUSDT", "--data", str(root / "inputs"), "--output", str(root / "out"), *tiny_args()],
        catch_exceptions=False,
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


def test_predict_equals_the_saved_model_on_independent_windows(model_dir, trainer, tmp_path):
    new = write_training_ready(tmp_path / "new", "ETHUSDT", rows=300, seed=99)
    out = tmp_path / "predictions.parquet"
    result = trainer("predict", "--model-dir", model_dir, "--data", new, "--output", out)
    assert result.exit_code == 0, result.output
    assert "293 predictions" in result.output  # 300 rows, window 8: the first full window ends at row 7
    predictions = pl.read_parquet(out)
    assert predictions.columns == ["row", "timestamp", "p_short", "p_hold", "p_long", "predicted", "predicted_label"]
    expected = independent_probabilities(model_dir, pl.read_ipc(new))
    got = predictions.select(["p_short", "p_hold", "p_long"]).to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert predictions["predicted"].to_list() == expected.argmax(axis=1).tolist()
    assert predictions["row"][0] == 7
    assert str(predictions["timestamp"][0]) == "2024-01-01 00:07:00"


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


def test_data_with_other_parameters_are_refused(model_dir, trainer, tmp_path):
    other = write_training_ready(tmp_path / "other", "ETHUSDT", rows=100, fw=60)
    result = trainer("predict", "--model-dir", model_dir, "--data", other)
    assert result.exit_code == 2
    assert "made with future_window 60, the model ETHUSDT_FW005_SL050_TP100 with future_window 5" in result.output
    missing = tmp_path / "missing.parquet"
    training_ready_frame(100).drop("price_to_ma43200").write_parquet(missing)
    result = trainer("predict", "--model-dir", model_dir, "--data", missing)
    assert result.exit_code == 2 and "price_to_ma43200" in result.output


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


def test_walk_forward_folds_are_purged_and_reported(trainer, tmp_path):
    write_training_ready(tmp_path / "inputs", "ETHUSDT", rows=1200, seed=2)
    out = tmp_path / "out"
    result = trainer("run", "--pair", "ETHUSDT", "--data", tmp_path / "inputs", "--output", out, *tiny_args(),
                     "--set", "split.mode=walk-forward", "--set", "split.folds=3", "--set", "split.validation=0.2")
    assert result.exit_code == 0, result.output
    assert "Fold 1/3" in result.output and "Fold 3/3 (saved)" in result.output
    meta = json.loads((out / "ETHUSDT" / f"metadata_{TAG}.json").read_text())
    folds = meta["walk_forward"]["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    for f in folds:
        s = f["split"]
        train, val, embargo = s["train_targets"], s["validation_targets"], s["embargo_rows"]
        # each fold is purged: its last training label horizon ends before its validation starts
        assert train["last_label_horizon_row"] < val["first_row"]
        assert train["last_row"] < s["validation_start_row"] - embargo + 1
        assert s["scaler_fit_rows"]["last_row"] < s["validation_start_row"] - embargo
    for a, b in zip(folds, folds[1:]):
        va, sb = a["split"]["validation_targets"], b["split"]
        # validation blocks never overlap, nor the next fold's purged region
        assert va["last_row"] < sb["validation_start_row"] - sb["embargo_rows"]
        assert a["split"]["train_targets"]["count"] < sb["train_targets"]["count"]  # expanding training window
    # the saved model is the last fold's: its split is the metadata's split
    assert folds[-1]["split"] == meta["split"]
    assert folds[-1]["accuracy"] == pytest.approx(meta["metrics"]["validation"]["accuracy"])
    spread = meta["walk_forward"]["spread"]["accuracy"]
    accs = [f["accuracy"] for f in folds]
    assert spread["mean"] == pytest.approx(np.mean(accs)) and spread["std"] == pytest.approx(np.std(accs, ddof=1))
    trading = json.loads((out / "ETHUSDT" / f"trading_{TAG}.json").read_text())
    assert trading["walk_forward"]["folds"] == folds
