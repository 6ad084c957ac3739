"""`trainer run` end to end on a tiny seed-format file: every artifact, as a user would read it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from trainer_core.artifacts import sha256_file
from trainer_core.scaling import Scaler
from trainer_core.testing import success_markers, tiny_args, training_ready_frame, write_training_ready
from trainer_core.windows import windows_numpy

TAG = "ETHUSDT_FW005_SL050_TP100"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trainer):
    """One tiny ETHUSDT run through the CLI, shared by the artifact tests below."""
    root = tmp_path_factory.mktemp("run")
    inputs = root / "inputs"
    write_training_ready(inputs, "ETHUSDT", rows=700, seed=3)
    out = root / "out"
    result = trainer("run", "--pair", "ETHUSDT", "--data", inputs, "--output", out, *tiny_args(epochs=2))
    assert result.exit_code == 0, result.output
    return root, out / "ETHUSDT", result.output


@pytest.mark.slow
def test_every_artifact_is_written(trained):
    _, pair_dir, output = trained
    names = sorted(p.name for p in pair_dir.iterdir())
    assert names == sorted(
        [
            "_SUCCESS.json",
            "logs",
            f"model_{TAG}.keras",
            f"scaler_{TAG}.json",
            f"spec_{TAG}.json",
            f"metadata_{TAG}.json",
            f"history_{TAG}.csv",
            f"confusion_matrix_{TAG}.json",
            f"confusion_matrix_{TAG}.png",
            f"trading_{TAG}.json",
            f"trading_{TAG}.png",
            f"trading_{TAG}.html",
            f"decision_{TAG}.json",
        ]
    )
    assert any((pair_dir / "logs").rglob("events.out.tfevents.*"))
    # nothing temporary is left behind, in the pair folder or the output root
    assert not [p for p in pair_dir.parent.rglob("*") if ".tmp-" in p.name or p.name == ".trainer-staging"]
    assert "Saved" in output and "Validation (the early-stopping slice) on" in output
    assert "Test (untouched slice) on 105 targets: MCC" in output


@pytest.mark.slow
def test_model_loads_and_takes_windows(trained):
    import keras

    _, pair_dir, _ = trained
    model = keras.models.load_model(pair_dir / f"model_{TAG}.keras")
    assert tuple(model.input_shape) == (None, 8, 8)
    probs = model.predict(np.zeros((2, 8, 8), np.float32), verbose=0)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_metadata_records_the_purged_split(trained):
    _, pair_dir, _ = trained
    meta = json.loads((pair_dir / f"metadata_{TAG}.json").read_text())
    split = meta["split"]
    train, val, fit = split["train_targets"], split["validation_targets"], split["scaler_fit_rows"]
    # the last training target's label horizon ends before the first validation target
    assert train["last_row"] + split["future_window"] < val["first_row"]
    assert train["last_label_horizon_row"] < val["first_row"]
    # and the scaler saw no row past the training rows
    assert fit["last_row"] < val["first_row"] - split["embargo_rows"] + 1
    assert fit["last_row"] >= train["last_row"]
    assert train["first_row"] == 7  # sequence_length 8: the first full window ends at row 7
    # the test slice (split.test 0.15 by default) is purged from validation the same way, and ends the data
    test = split["test_targets"]
    assert val["last_row"] + split["future_window"] < test["first_row"]
    assert test["last_row"] == 700 - 1
    assert test["count"] == test["last_row"] - test["first_row"] + 1
    assert train["first_time"] == "2024-01-01T00:07:00Z"
    scaler = json.loads((pair_dir / f"scaler_{TAG}.json").read_text())
    assert scaler["fit_rows"] == {"start": 0, "stop": fit["last_row"] + 1}


@pytest.mark.slow
def test_metadata_contents(trained):
    root, pair_dir, _ = trained
    meta = json.loads((pair_dir / f"metadata_{TAG}.json").read_text())
    data_file = root / "inputs" / "ETHUSDT_TF-1m__FW-005__SL-050__TP-100__training_ready.feather"
    assert meta["data"]["sha256"] == sha256_file(data_file)
    assert meta["data"]["rows"] == 700
    assert meta["data"]["time_range"] == ["2024-01-01T00:00:00Z", "2024-01-01T11:39:00Z"]
    before, after = (
        meta["balancing"]["train_class_counts_before"],
        meta["balancing"]["train_class_counts_after"],
    )
    assert sum(before.values()) == meta["split"]["train_targets"]["count"]
    assert len(set(after.values())) == 1  # undersampled to the minority class (floor 0 in the tiny settings)
    assert min(before.values()) == after["SHORT"]
    assert meta["spec"]["train"]["epochs"] == 2 and meta["spec"]["train"]["sequence_length"] == 8
    assert meta["config"]["future_window"] == 5
    assert meta["model"]["total_parameters"] > 0
    assert meta["model"]["trainable_parameters"] == meta["model"]["total_parameters"]
    assert meta["training"]["completed_epochs"] == 2
    assert len(meta["timings"]["epoch_seconds"]) == 2 and meta["timings"]["samples_per_second"] > 0
    assert meta["timings"]["load_seconds"] >= 0 and meta["timings"]["train_seconds"] > 0
    assert meta["system"]["versions"]["tensorflow"] and meta["system"]["gpu_used"] is False
    val = meta["metrics"]["validation"]
    assert val["samples"] == meta["split"]["validation_targets"]["count"]
    assert meta["metrics"]["best_epoch"]["epoch"] in (1, 2)


@pytest.mark.slow
def test_history_csv(trained):
    _, pair_dir, _ = trained
    rows = list(csv.DictReader((pair_dir / f"history_{TAG}.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        assert float(r["loss"]) > 0 and 0 <= float(r["val_accuracy"]) <= 1 and float(r["seconds"]) > 0


@pytest.mark.slow
def test_confusion_matrix_on_the_whole_validation_set(trained):
    _, pair_dir, _ = trained
    cm = json.loads((pair_dir / f"confusion_matrix_{TAG}.json").read_text())
    meta = json.loads((pair_dir / f"metadata_{TAG}.json").read_text())
    matrix = np.array(cm["confusion_matrix"])
    assert matrix.shape == (3, 3)
    assert matrix.sum() == meta["split"]["validation_targets"]["count"] == cm["sample_count"]
    # rows are the natural class mix of the validation targets (not balanced)
    assert matrix.sum(axis=1).tolist() == [cm["per_class"][c]["support"] for c in ("SHORT", "HOLD", "LONG")]
    assert cm["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert cm["accuracy"] == pytest.approx(meta["metrics"]["validation"]["accuracy"])
    png = (pair_dir / f"confusion_matrix_{TAG}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.slow
def test_success_marker_checksums_every_artifact(trained):
    _, pair_dir, _ = trained
    marker = json.loads((pair_dir / "_SUCCESS.json").read_text())
    files = {p.relative_to(pair_dir).as_posix() for p in pair_dir.rglob("*") if p.is_file()} - {
        "_SUCCESS.json"
    }
    assert set(marker["artifacts"]) == files
    for name, info in marker["artifacts"].items():
        assert info["sha256"] == sha256_file(pair_dir / name)
    assert marker["config_hash"].startswith("sha256:") and marker["data_sha256"].startswith("sha256:")


@pytest.mark.slow
def test_saved_model_reproduces_validation_predictions(trained):
    """Applying the saved scaler JSON and window length to the raw features gives the report's numbers."""
    import keras

    root, pair_dir, _ = trained
    frame = training_ready_frame(700, seed=3)
    from trainer_core.data import FEATURE_NAMES

    raw = frame.select(FEATURE_NAMES).to_numpy().astype(np.float32)
    labels = np.argmax(frame.select(["label_0", "label_1", "label_2"]).to_numpy(), axis=1)
    scaler = Scaler.from_json(json.loads((pair_dir / f"scaler_{TAG}.json").read_text()))
    meta = json.loads((pair_dir / f"metadata_{TAG}.json").read_text())
    val = meta["split"]["validation_targets"]
    targets = np.arange(val["first_row"], val["last_row"] + 1)
    x = windows_numpy(scaler.transform(raw), targets, 8)
    model = keras.models.load_model(pair_dir / f"model_{TAG}.keras")
    pred = model.predict(x, verbose=0).argmax(axis=1)
    cm = json.loads((pair_dir / f"confusion_matrix_{TAG}.json").read_text())
    assert np.mean(pred == labels[targets]) == pytest.approx(cm["accuracy"])


@pytest.mark.slow
def test_rerun_replaces_artifacts_whole(trained, trainer):
    root, pair_dir, _ = trained
    out = pair_dir.parent
    first = json.loads((pair_dir / "_SUCCESS.json").read_text())
    result = trainer(
        "run", "--pair", "ETHUSDT", "--data", root / "inputs", "--output", out, *tiny_args(epochs=1)
    )
    assert result.exit_code == 0, result.output
    second = json.loads((pair_dir / "_SUCCESS.json").read_text())
    assert second["artifacts"] != first["artifacts"]
    meta = json.loads((pair_dir / f"metadata_{TAG}.json").read_text())
    assert meta["training"]["completed_epochs"] == 1
    assert len(list(pair_dir.rglob("events.out.tfevents.*"))) == 2  # no logs of the first run mixed in
    assert success_markers(out) == [pair_dir / "_SUCCESS.json"]


@pytest.mark.parametrize("ext", ["parquet", "csv"])
def test_parquet_and_csv_load_the_same(tmp_path, ext):
    from trainer_core.manifest import default_manifest
    from trainer_plugins.loaders.training_ready import TrainingReadyLoader

    feather = write_training_ready(tmp_path / "a", rows=300, seed=5)
    other = write_training_ready(tmp_path / "b", rows=300, seed=5, ext=ext)
    spec = default_manifest().resolve("ETHUSDT", sets=["labels.future_window=5"])
    a = TrainingReadyLoader().load(
        spec.__class__(**{**spec.__dict__, "data": type(spec.data)({**spec.data, "path": str(feather)})})
    )
    b = TrainingReadyLoader().load(
        spec.__class__(**{**spec.__dict__, "data": type(spec.data)({**spec.data, "path": str(other)})})
    )
    np.testing.assert_allclose(a.features, b.features, rtol=1e-6)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.timestamps, b.timestamps)
    assert b.source.endswith(ext)


@pytest.mark.slow
def test_plugin_from_a_manifest_adds_builder_and_balancer(tmp_path, inputs, trainer, monkeypatch):
    """A plugin module defined here, named in the manifest, supplies the model and the balancer."""
    (tmp_path / "my_test_plugin.py").write_text(
        '''
import numpy as np
import keras
from trainer_core import Balance, hookimpl

class Dense:
    """a flat dense model"""
    def build(self, input_shape, n_classes, params):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                 keras.layers.Dense(params.get("units", 3), activation="relu"),
                                 keras.layers.Dense(n_classes, activation="softmax")])

class FirstHalf:
    """the first half of the training targets"""
    def balance(self, labels, target_idx, rng, params):
        return Balance(target_idx[: len(target_idx) // 2])

@hookimpl
def trainer_register_model_builders(register):
    register("flat-dense", Dense)

@hookimpl
def trainer_register_balancers(register):
    register("first-half", FirstHalf)
'''
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\nplugins: [my_test_plugin]\n"
        "defaults:\n  model: {builder: flat-dense, params: {units: 5}}\n  balance: {method: first-half}\n"
        "pairs: [ETHUSDT]\n"
    )
    listed = trainer("plugins", "--manifest", manifest)
    assert "flat-dense" in listed.output and "my_test_plugin" in listed.output
    out = tmp_path / "out"
    result = trainer(
        "run",
        "--manifest",
        manifest,
        "--pair",
        "ETHUSDT",
        "--data",
        inputs,
        "--output",
        out,
        "--epochs",
        "1",
        "--set",
        "train.sequence_length=8",
        "--set",
        "labels.future_window=5",
        "--set",
        "train.verbose=0",
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(next((out / "ETHUSDT").glob("metadata_*.json")).read_text())
    assert meta["model"]["builder"] == "flat-dense" and meta["model"]["params"] == {"units": 5}
    assert meta["balancing"]["method"] == "first-half"
    assert meta["balancing"]["train_targets_after"] == meta["balancing"]["train_targets_before"] // 2


@pytest.mark.slow
def test_a_model_that_predicts_one_class_is_flagged(
    trainer, tmp_path, inputs, monkeypatch, write_model_builder_plugin
):
    write_model_builder_plugin(
        tmp_path,
        "hold_only_model",
        "hold-only",
        """
x = keras.Input(input_shape)
hold = keras.initializers.Constant([0.0, 50.0, 0.0])  # HOLD wins every row, whatever the input
out = keras.layers.Dense(n_classes, activation='softmax', kernel_initializer='zeros', bias_initializer=hold)
return keras.Model(x, out(keras.layers.Flatten()(x)))
""",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\nplugins: [hold_only_model]\ndefaults: {model: {builder: hold-only}}\npairs: [ETHUSDT]\n"
    )
    result = trainer(
        "run",
        "--manifest",
        manifest,
        "--pair",
        "ETHUSDT",
        "--data",
        inputs,
        "--output",
        tmp_path / "out",
        *tiny_args(),
    )
    assert result.exit_code == 0, result.output
    assert "MCC 0.000" in result.output and "signals LONG 0 / SHORT 0" in result.output
    assert "Warning: the model predicts HOLD only" in result.output
    marker = json.loads((tmp_path / "out" / "ETHUSDT" / "_SUCCESS.json").read_text())
    assert marker["metrics"]["single_class"] == "HOLD" and marker["metrics"]["mcc"] == 0.0
