"""Model folders copied from elsewhere: files edited consistently (their checksums recomputed, as an
attacker would) are refused at load and by `trainer verify`; hostile settings and inputs at predict
are one clear line; `row` is the input file's row index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trainer_core.testing import reseal, tiny_args, write_training_ready

TAG = "ETHUSDT_FW005_SL050_TP100"
READY = "ETHUSDT_TF-1m__FW-005__SL-050__TP-100__training_ready.feather"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trainer):
    """One tiny ETHUSDT model (window 8, 8 seed features, partial history) and the training-ready file
    it was trained on."""
    root = tmp_path_factory.mktemp("folders")
    write_training_ready(root / "inputs", "ETHUSDT", rows=700, seed=11)
    args = ["run", "--pair", "ETHUSDT", "--data", str(root / "inputs"), "--output", str(root / "out")]
    # partial history: raw candles get features from their second candle on, so short files predict
    args += ["--set", "features.partial_history=true"]
    result = trainer(*args, *tiny_args())
    assert result.exit_code == 0, result.output
    return root / "out" / "ETHUSDT", root / "inputs" / READY


def edited(model_dir: Path, root: Path, edit, name: str = "ETHUSDT") -> Path:
    """A copy of the model folder at ``root/name`` with ``edit(spec, scaler, marker)`` applied, resealed."""
    folder = root / name
    shutil.copytree(model_dir, folder)
    docs = {
        key: json.loads((folder / file).read_text())
        for key, file in (
            ("spec", f"spec_{TAG}.json"),
            ("scaler", f"scaler_{TAG}.json"),
            ("marker", "_SUCCESS.json"),
        )
    }
    edit(docs["spec"], docs["scaler"], docs["marker"])
    (folder / f"spec_{TAG}.json").write_text(json.dumps(docs["spec"]))
    (folder / f"scaler_{TAG}.json").write_text(json.dumps(docs["scaler"]))
    (folder / "_SUCCESS.json").write_text(json.dumps(docs["marker"]))
    reseal(folder)
    return folder


def one_error(result, *needles: str) -> str:
    """The CLI failed with exit 2 and one `Error:` line holding every needle; no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], result.output
    return errors[0]


def window(n):
    def edit(spec, scaler, marker):
        spec["sequence_length"] = n
        spec["spec"]["train"]["sequence_length"] = n

    return edit


def swap_first_two(names: list) -> None:
    names[0], names[1] = names[1], names[0]


EDITS = {
    "window 16": (window(16), "the spec's window is 16 rows, the model's input 8"),
    "window 0": (window(0), "the spec's window (sequence_length) is 0, not a number of rows"),
    "window -5": (window(-5), "the spec's window (sequence_length) is -5"),
    "window 10**12": (window(10**12), "the spec's window (sequence_length) is 1000000000000"),
    "spec features reordered": (
        lambda spec, scaler, marker: swap_first_two(spec["feature_names"]),
        "the spec's feature order differs from the scaler's",
    ),
    "scaler features reordered": (
        lambda spec, scaler, marker: swap_first_two(scaler["feature_names"]),
        "the spec's feature order differs from the scaler's",
    ),
    "a feature dropped from the spec": (
        lambda spec, scaler, marker: spec["feature_names"].pop(3),
        "the spec lists 7 features, the model takes 8",
    ),
    "a feature dropped everywhere": (
        lambda spec, scaler, marker: [
            spec["feature_names"].pop(3),
            scaler["feature_names"].pop(3),
            scaler["center"].pop(3),
            scaler["scale"].pop(3),
        ],
        "the spec lists 7 features, the model takes 8",
    ),
    "scaler NaN": (
        lambda spec, scaler, marker: scaler["center"].__setitem__(2, float("nan")),
        "the scaler's center holds a NaN or infinite value",
    ),
    "scaler infinite": (
        lambda spec, scaler, marker: scaler["scale"].__setitem__(0, float("inf")),
        "the scaler's scale holds a NaN or infinite value",
    ),
    "scaler zero": (
        lambda spec, scaler, marker: scaler["scale"].__setitem__(5, 0.0),
        "the scaler's scale holds a zero",
    ),
    "timeframe 5x": (
        lambda spec, scaler, marker: spec["spec"]["data"].__setitem__("timeframe", "5x"),
        "the spec's timeframe '5x' is not a timeframe",
    ),
    "spec of another pair": (
        lambda spec, scaler, marker: [
            spec.__setitem__("pair", "BTCUSDT"),
            spec["spec"].__setitem__("pair", "BTCUSDT"),
        ],
        "names the pair ETHUSDT, the spec file 'BTCUSDT'",
    ),
    "marker of another pair": (
        lambda spec, scaler, marker: marker.__setitem__("pair", "BTCUSDT"),
        "names the pair BTCUSDT, the spec file 'ETHUSDT'",
    ),
}


def test_the_untouched_folder_loads_and_verifies(trained, trainer, tmp_path):
    model_dir, ready = trained
    folder = edited(model_dir, tmp_path, lambda spec, scaler, marker: None)  # resealed, nothing changed
    assert trainer("verify", tmp_path).exit_code == 0
    result = trainer("predict", "--model-dir", folder, "--data", ready)
    assert result.exit_code == 0 and "693 predictions" in result.output


@pytest.mark.parametrize("case", list(EDITS))
def test_a_consistently_edited_folder_is_refused_at_load_and_by_verify(case, trained, trainer, tmp_path):
    from trainer_core import TrainerError, load_pair_model

    model_dir, ready = trained
    edit, expected = EDITS[case]
    folder = edited(model_dir, tmp_path, edit)
    line = one_error(
        trainer("predict", "--model-dir", folder, "--data", ready), "the model's files disagree", expected
    )
    assert str(folder) in line
    with pytest.raises(TrainerError, match="the model's files disagree"):
        load_pair_model(folder)
    result = trainer("verify", tmp_path)
    assert result.exit_code == 1, result.output
    assert "FAILED  ETHUSDT: " in result.output and expected in result.output


def test_verify_and_load_refuse_a_folder_holding_another_pairs_model(trained, trainer, tmp_path):
    from trainer_core import TrainerError, load_pair_model

    model_dir, ready = trained
    shutil.copytree(model_dir, tmp_path / "BTCUSDT")  # intact files, under another pair's name
    result = trainer("verify", tmp_path)
    assert result.exit_code == 1
    assert "FAILED  BTCUSDT: the folder BTCUSDT holds the model of ETHUSDT" in result.output
    with pytest.raises(TrainerError, match="the folder BTCUSDT holds the model of ETHUSDT"):
        load_pair_model(tmp_path / "BTCUSDT")
    # a copy kept under a name that is no pair's is the user's choice
    shutil.copytree(model_dir, tmp_path / "eth-production")
    assert load_pair_model(tmp_path / "eth-production").pair == "ETHUSDT"


def candles(rows: int, seed: int = 3) -> pl.DataFrame:
    """Gap-free 1-minute candles: a random walk from 2024-01-01 00:00 UTC."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, rows)))
    open_ = np.r_[close[0], close[:-1]]
    return pl.DataFrame(
        {
            "timestamp": pl.datetime_range(
                pl.datetime(2024, 1, 1, time_zone="UTC"),
                pl.datetime(2024, 1, 1, time_zone="UTC") + pl.duration(minutes=rows - 1),
                "1m",
                eager=True,
            ),
            "open": open_,
            "high": np.maximum(open_, close) * 1.0005,
            "low": np.minimum(open_, close) * 0.9995,
            "close": close,
            "volume": rng.uniform(10, 20, rows),
        }
    )


def test_features_reordered_in_spec_and_scaler_alike_are_refused_on_candles(trained, trainer, tmp_path):
    model_dir, _ = trained

    def both(spec, scaler, marker):
        swap_first_two(spec["feature_names"])
        swap_first_two(scaler["feature_names"])

    folder = edited(model_dir, tmp_path, both)
    data = tmp_path / "ETHUSDT-1m.parquet"
    candles(300).write_parquet(data)
    one_error(
        trainer("predict", "--model-dir", folder, "--data", data),
        "the feature set makes the columns high_change, low_change",
        "was trained on low_change, high_change",
    )


# -- hostile settings and inputs at predict -----------------------------------------------------


def test_a_timeframe_that_is_not_the_datas_is_one_clear_line(trained, trainer, tmp_path):
    model_dir, ready = trained

    def five_minutes(spec, scaler, marker):
        spec["timeframe"] = "5m"
        spec["spec"]["data"]["timeframe"] = "5m"

    folder = edited(model_dir, tmp_path, five_minutes)
    assert trainer("verify", tmp_path).exit_code == 0  # a 5m model is a valid model
    one_error(
        trainer("predict", "--model-dir", folder, "--data", ready),
        "the data's rows are mostly 1m apart; the model was trained on 5m candles",
    )
    data = tmp_path / "ETHUSDT-1m.parquet"
    candles(300).write_parquet(data)
    one_error(trainer("predict", "--model-dir", folder, "--data", data), "not on a 5m grid")


def test_last_beyond_any_file_is_a_usage_error(trained, trainer):
    model_dir, ready = trained
    result = trainer("predict", "--model-dir", model_dir, "--data", ready, "--last", 10**23)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value for '--last'" in result.output and "1<=x<=1000000000" in result.output


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".feather"])
def test_data_shorter_than_the_window_is_one_clear_line(suffix, trained, trainer, tmp_path):
    model_dir, _ = trained
    data = tmp_path / "ETHUSDT-1m.parquet"
    candles(6).write_parquet(data)  # 5 rows with features, the window is 8
    out = tmp_path / f"x{suffix}"
    one_error(
        trainer("predict", "--model-dir", model_dir, "--data", data, "--output", out),
        "no prediction: none of its 5 rows with features ends a gap-free window of 8 rows",
    )
    assert not out.exists() and not list(tmp_path.glob(".x*"))


# -- the row column -----------------------------------------------------------------------------


def test_row_is_the_input_files_row_index(trained, trainer, tmp_path):
    model_dir, ready = trained
    frame = candles(400)
    data = tmp_path / "ETHUSDT-1m.csv"
    frame.write_csv(data)
    out = tmp_path / "p.parquet"
    assert trainer("predict", "--model-dir", model_dir, "--data", data, "--output", out).exit_code == 0
    predictions = pl.read_parquet(out)
    assert predictions.height == 400 - 1 - 7  # row 0 has no previous candle; window 8
    assert predictions["row"][0] == 8  # the first full window ends at the file's row 8
    file_times = frame["timestamp"].gather(predictions["row"])
    assert (file_times == predictions["timestamp"]).all()
    assert predictions["predicted_label"].dtype == pl.String

    result = trainer("predict", "--model-dir", model_dir, "--data", ready, "--output", out)
    assert result.exit_code == 0
    predictions = pl.read_parquet(out)
    assert (pl.read_ipc(ready)["timestamp"].gather(predictions["row"]) == predictions["timestamp"]).all()
