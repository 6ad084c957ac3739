"""Features a live feed can serve: rows whose features read less than the feature set's full history
are history only (no train/serve skew), the seed's behaviour as an explicit setting, and
`required_history` printed by `trainer validate` and `trainer run --config-test`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trainer_core.candles import read_candles
from trainer_core.errors import DataError
from trainer_core.features import pair_data_from_candles
from trainer_core.manifest import default_manifest

REPO = Path(__file__).resolve().parents[1]
START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def _candles(tmp_path, minutes: int, seed: int = 3, name: str = "ETHUSDT-1m.parquet"):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, minutes)))
    open_ = np.r_[close[0], close[:-1]]
    frame = pl.DataFrame(
        {
            "timestamp": START_MS + np.arange(minutes, dtype=np.int64) * 60_000,
            "open": open_,
            "high": np.maximum(open_, close) * 1.0004,
            "low": np.minimum(open_, close) * 0.9996,
            "close": close,
            "volume": rng.uniform(1, 100, minutes),
        }
    )
    path = tmp_path / name
    frame.write_parquet(path)
    return path


SETS = ["labels.future_window=5", "features.ma_short=10", "features.ma_long=120"]


def run_args(pair: str, candles: Path, out: Path, *args, sets=()) -> list:
    """`trainer run`'s arguments: ``pair`` on ``candles`` into ``out``, then ``args``, then each of
    ``sets`` as ``--set``."""
    set_args = [a for s in sets for a in ("--set", s)]
    return ["run", "--pair", pair, "--data", candles, "--output", out, *args, *set_args]


def predict_to(trainer, model_dir: Path, candles: Path, output: Path):
    """`trainer predict` of the model in ``model_dir`` on ``candles`` into the file ``output``."""
    return trainer("predict", "--model-dir", model_dir, "--data", candles, "--output", output)


def test_rows_short_of_the_full_history_are_history_only(tmp_path):
    path = _candles(tmp_path, 1000)
    candles = read_candles(path, "ETHUSDT")
    full = pair_data_from_candles(candles, default_manifest().resolve("ETHUSDT", sets=SETS))
    seed = pair_data_from_candles(
        candles, default_manifest().resolve("ETHUSDT", sets=[*SETS, "features.partial_history=true"])
    )
    # ma_long 120: a row needs the 119 candles before it; candles 1..118 read fewer
    assert len(seed) == 999 and len(full) == 1000 - 119
    assert full.extra["full_history"] == 119 and full.extra["short_history_rows"] == 118
    assert seed.extra["full_history"] == 0 and seed.extra["short_history_rows"] == 0
    assert full.timestamps[0] == np.datetime64(START_MS + 119 * 60_000, "ms")
    # the rows kept are the same values, and each equals what serving computes from only the
    # candles it needs (119 before the row): no feature value serving would not compute
    np.testing.assert_array_equal(full.features, seed.features[118:])
    for row in (0, 400, len(full) - 1):
        candle = 119 + row
        served = pair_data_from_candles(
            candles.take(np.arange(candle - 119, candle + 1)),
            default_manifest().resolve("ETHUSDT", sets=SETS),
            with_labels=False,
        )
        assert len(served) == 1
        np.testing.assert_array_equal(served.features[0], full.features[row])
    # the seed's expanding means differ from the full-length ones on the short rows
    served = pair_data_from_candles(
        candles.take(np.arange(0, 120)), default_manifest().resolve("ETHUSDT", sets=SETS), with_labels=False
    )
    assert not np.allclose(seed.features[50, 5], served.features[0, 5])


def test_too_little_history_is_one_error_naming_what_to_change(tmp_path, trainer):
    path = _candles(tmp_path, 3000)
    result = trainer(
        *run_args("ETHUSDT", path, tmp_path / "out", sets=["data.loader=ohlcv", "labels.future_window=5"])
    )
    assert result.exit_code == 2  # a data error
    assert (
        "no row has the 43,199 candles of history its features read in full (3,000 candles)" in result.output
    )
    assert "features.params" in result.output and "features.partial_history: true" in result.output
    assert not (tmp_path / "out" / "ETHUSDT" / "_SUCCESS.json").exists()
    with pytest.raises(DataError, match="no row has the 43,199 candles"):
        pair_data_from_candles(read_candles(path, "ETHUSDT"), default_manifest().resolve("ETHUSDT"))


def test_a_split_left_short_by_the_history_rule_says_so(tmp_path, trainer):
    """Enough rows for features, too few for the split once the history rows are left out."""
    path = _candles(tmp_path, 175)
    sets = ["data.loader=ohlcv", "labels.future_window=5", "features.ma_short=10", "features.ma_long=150"]
    result = trainer(
        *run_args(
            "ETHUSDT", path, tmp_path / "out", "--epochs", "1", sets=[*sets, "train.sequence_length=30"]
        )
    )
    assert result.exit_code == 2
    assert "rows were left out because their features read less than the 149 candles" in result.output
    assert "features.partial_history: true" in result.output


def test_validate_and_config_test_print_required_history(trainer):
    for name, need in (("demo", 30 + 4319), ("laptop", 60 + 4319)):
        result = trainer("validate", REPO / "manifests" / f"{name}.yaml")
        assert result.exit_code == 0, result.output
        assert f"required_history={need}" in result.output
        assert f"required_history {need:,} candles (a live feed serves up to 4,999)" in result.output
    result = trainer("validate", REPO / "manifests" / "demo.yaml", "--set", "features.ma_long=43200")
    assert result.exit_code == 0
    assert "required_history 43,229 candles: more than the 4,999 a live feed serves" in result.output
    # the live example of docs/freqtrade.md
    result = trainer(
        "validate",
        REPO / "manifests" / "laptop.yaml",
        "--set",
        "features.ma_long=2880",
        "--set",
        "train.sequence_length=60",
    )
    assert "required_history=2939" in result.output
    result = trainer("run", "--pair", "ETHUSDT", "--config-test")
    assert "# required_history 43,319 candles: more than the 4,999 a live feed serves" in result.output
    assert "partial_history: false" in result.output


def test_partial_history_takes_a_boolean_only(trainer):
    result = trainer("validate", REPO / "manifests" / "demo.yaml", "--set", "features.partial_history=maybe")
    assert result.exit_code == 2 and "features.partial_history" in result.output


# -- a tiny trained model: the signal, raw candles, many pairs, gaps -----------------------------

LIVE_SETS = [
    "data.loader=ohlcv",
    "data.gaps=split",
    "labels.future_window=10",
    "labels.take_profit_pct=0.2",
    "labels.stop_loss_pct=0.2",
    "features.ma_short=30",
    "features.ma_long=120",
    "train.sequence_length=10",
    "model.params={lstm_units: [8], dense_units: [4], dropout: 0.0}",
    "evaluation.min_signals=5",
]


@pytest.fixture(scope="module")
def live(tmp_path_factory, trainer):
    root = tmp_path_factory.mktemp("live")
    out = {}
    for seed, pair in ((3, "ETHUSDT"), (4, "BTCUSDT")):
        path = _candles(root, 3000, seed=seed, name=f"{pair}-1m.parquet")
        result = trainer(*run_args(pair, path, root / "art", "--epochs", "1", sets=LIVE_SETS))
        assert result.exit_code == 0, result.output
        out[pair] = {"path": path, "dir": root / "art" / pair, "log": result.output}
    return out


@pytest.mark.slow
def test_the_split_log_and_metadata_count_the_rows_left_out(live):
    assert "118 rows with less than the features' 119-candle history left out" in live["ETHUSDT"]["log"]
    meta = json.loads(next(live["ETHUSDT"]["dir"].glob("metadata_*.json")).read_text())
    assert meta["data"]["full_history"] == 119 and meta["data"]["short_history_rows"] == 118


@pytest.mark.slow
def test_the_decision_rule_is_recorded_and_predict_prints_its_signal(live, trainer, tmp_path):
    from trainer_core import load_pair_model
    from trainer_core.inference import signals_from

    decision = json.loads(next(live["ETHUSDT"]["dir"].glob("decision_*.json")).read_text())
    assert decision["rule"] in ("thresholds", "arg-max")
    model = load_pair_model(live["ETHUSDT"]["dir"])
    assert model.decision_rule["rule"] == decision["rule"]
    result = predict_to(trainer, live["ETHUSDT"]["dir"], live["ETHUSDT"]["path"], tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    got = pl.read_csv(tmp_path / "p.csv")
    assert "signal" in got.columns and got.height == 3000 - 129 + 1
    probs = got.select("p_short", "p_hold", "p_long").to_numpy()
    assert (got["signal"].to_numpy() == signals_from(probs, decision)).all()
    # the rule by hand: a side signals when it is the arg-max class and reaches its threshold
    pred = probs.argmax(axis=1)
    for cls, side in ((2, "LONG"), (0, "SHORT")):
        want = pred == cls
        if decision["rule"] == "thresholds":
            want &= probs[:, cls] >= (decision[side] if decision[side] is not None else np.inf)
        assert ((got["signal"] == side).to_numpy() == want).all()
    # a rule with thresholds changes the signal, not the probabilities
    strict = signals_from(probs, {"rule": "thresholds", "LONG": 0.99, "SHORT": None})
    assert (strict == "none").sum() >= (got["signal"] == "none").sum()


@pytest.mark.slow
def test_pair_model_predict_takes_raw_candles_like_trainer_predict(live, trainer, tmp_path):
    from trainer_core import load_pair_model

    model = load_pair_model(live["ETHUSDT"]["dir"])
    candles = pl.read_parquet(live["ETHUSDT"]["path"])
    result = predict_to(trainer, live["ETHUSDT"]["dir"], live["ETHUSDT"]["path"], tmp_path / "p.parquet")
    assert result.exit_code == 0
    cli = pl.read_parquet(tmp_path / "p.parquet")
    direct = model.predict(
        candles.with_columns(pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC"))
    )
    assert direct.equals(cli)
    # any length >= required_history: one row per candle with a full window
    tail = candles.tail(model.required_history + 4).with_columns(
        pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC")
    )
    assert model.required_history == 10 + 119
    # the same predictions; `row` counts the rows of the frame given
    assert model.predict(tail).drop("row").equals(cli.tail(5).drop("row"))
    assert model.predict(tail.to_pandas()).drop("row").equals(cli.tail(5).drop("row"))
    with pytest.raises(DataError, match="predict got 128 candles; a prediction needs 129"):
        model.predict(tail.tail(128))


@pytest.mark.slow
def test_predict_latest_and_many_pairs_give_the_last_row_with_its_signal(live):
    from trainer_core import load_pair_model, predict_latest_many

    models = {p: load_pair_model(live[p]["dir"]) for p in ("ETHUSDT", "BTCUSDT")}
    candles = {
        p: pl.read_parquet(live[p]["path"]).with_columns(
            pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC")
        )
        for p in models
    }
    many = predict_latest_many(models, candles)
    assert many["pair"].to_list() == ["ETHUSDT", "BTCUSDT"]
    for row in many.iter_rows(named=True):
        model = models[row["pair"]]
        one = model.predict_latest(candles[row["pair"]].tail(model.required_history))
        full = model.predict(candles[row["pair"]]).row(-1, named=True)
        assert {k: row[k] for k in one} == one
        assert one["signal"] == full["signal"] and one["p_long"] == full["p_long"]
    with pytest.raises(DataError, match="no candles for BTCUSDT"):
        predict_latest_many(models, {"ETHUSDT": candles["ETHUSDT"]})


@pytest.mark.slow
def test_a_gap_inside_the_required_history_is_refused_for_a_split_model(live):
    from trainer_core import load_pair_model

    model = load_pair_model(live["ETHUSDT"]["dir"])
    candles = pl.read_parquet(live["ETHUSDT"]["path"]).with_columns(
        pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC")
    )
    need = model.required_history
    window = candles.tail(need + 10)
    gapped = pl.concat([window.head(50), window.tail(need - 50)])  # 10 minutes missing 80 candles back
    assert gapped.height == need
    with pytest.raises(
        DataError, match="1 gap.s. inside the last 129 candles; the model was trained with data.gaps: split"
    ):
        model.predict_latest(gapped)
    # the same number of candles without the gap is served
    assert model.predict_latest(window.tail(need))["signal"] in ("LONG", "SHORT", "none")


@pytest.mark.slow
def test_an_altered_decision_file_is_refused(live, tmp_path):
    import shutil

    from trainer_core import load_pair_model

    copy = tmp_path / "ETHUSDT"
    shutil.copytree(live["ETHUSDT"]["dir"], copy)
    decision = next(copy.glob("decision_*.json"))
    rule = json.loads(decision.read_text())
    decision.write_text(json.dumps({**rule, "rule": "arg-max"}))
    with pytest.raises(DataError, match=f"{decision.name} does not match its checksum"):
        load_pair_model(copy)


@pytest.mark.slow
@pytest.mark.real_candles
def test_a_laptop_manifest_model_serves_from_a_live_buffer(trainer, tmp_path, shared_data):
    """manifests/laptop.yaml's features and window (a smaller model, one epoch): the model predicts
    the last candle of a 4,999-candle live buffer, as `trainer predict` does on the whole file."""
    from trainer_core import load_pair_model

    frame = pl.read_parquet(shared_data / "ETHUSDT-1m.parquet").slice(0, 12 * 1440)
    (tmp_path / "ETHUSDT").mkdir()
    frame.write_parquet(tmp_path / "ETHUSDT" / "ETHUSDT-1m.parquet")
    result = trainer(
        "run",
        "--manifest",
        REPO / "manifests" / "laptop.yaml",
        "--pair",
        "ETHUSDT",
        "--data",
        tmp_path,
        "--output",
        tmp_path / "out",
        "--epochs",
        "1",
        "--set",
        "model.params={lstm_units: [8], dense_units: [4], dropout: 0.0}",
    )
    assert result.exit_code == 0, result.output
    model = load_pair_model(tmp_path / "out" / "ETHUSDT")
    assert model.required_history == 60 + 4319 <= 4999
    buffer = frame.tail(4999)
    latest = model.predict_latest(buffer)
    every = model.predict(frame)
    last = every.row(-1, named=True)
    assert latest["timestamp"] == frame["timestamp"][-1] == last["timestamp"]
    assert (latest["p_short"], latest["p_long"], latest["signal"]) == (
        last["p_short"],
        last["p_long"],
        last["signal"],
    )


@pytest.mark.slow
def test_a_model_trained_with_gaps_filled_fills_a_served_gap_as_in_training(tmp_path, trainer):
    from trainer_core import load_pair_model

    path = _candles(tmp_path, 1500, seed=5)
    full = pl.read_parquet(path)
    gapped = pl.concat([full.head(1400), full.tail(90)])  # 10 minutes missing, 90 candles before the end
    gapped.write_parquet(path)
    sets = [s.replace("data.gaps=split", "data.gaps=fill") for s in LIVE_SETS]
    result = trainer(*run_args("ETHUSDT", path, tmp_path / "art", "--epochs", "1", sets=sets))
    assert result.exit_code == 0, result.output
    model = load_pair_model(tmp_path / "art" / "ETHUSDT")
    candles = gapped.with_columns(pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC"))
    buffer = candles.tail(model.required_history)  # 39 candles, the gap, 90 candles
    assert np.diff(buffer["timestamp"].dt.epoch("ms").to_numpy()).max() == 11 * 60_000
    latest = model.predict_latest(buffer)
    result = predict_to(trainer, tmp_path / "art" / "ETHUSDT", path, tmp_path / "p.parquet")
    assert result.exit_code == 0, result.output
    last = pl.read_parquet(tmp_path / "p.parquet").row(-1, named=True)
    assert latest["timestamp"] == last["timestamp"]
    for column in ("p_short", "p_hold", "p_long"):
        assert latest[column] == pytest.approx(last[column], abs=1e-6)
    assert latest["signal"] == last["signal"]
