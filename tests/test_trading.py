"""The trading report's numbers against values computed by hand on a tiny constructed case."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from trainer_plugins.reporters.trading import break_even, trading_metrics

Y_TRUE = [2, 2, 0, 1, 2, 0]
Y_PROB = [
    [0.1, 0.2, 0.7],  # LONG 0.70, right
    [0.2, 0.35, 0.45],  # LONG 0.45, right
    [0.5, 0.3, 0.2],  # SHORT 0.50, right
    [0.1, 0.3, 0.6],  # LONG 0.60, wrong (HOLD)
    [0.6, 0.3, 0.1],  # SHORT 0.60, wrong (LONG)
    [0.3, 0.4, 0.3],  # HOLD 0.40, wrong (SHORT)
]
LONG_RET = [0.01, 0.01, -0.005, 0.002, 0.01, -0.005]
SHORT_RET = [-0.005, -0.005, 0.01, -0.002, -0.005, 0.01]


@pytest.fixture(scope="module")
def report():
    return trading_metrics(
        Y_TRUE,
        Y_PROB,
        train_class_counts={"SHORT": 20, "HOLD": 60, "LONG": 20},
        take_profit_pct=1.0,
        stop_loss_pct=0.5,
        short_take_profit_pct=1.0,
        short_stop_loss_pct=0.5,
        fee_pct=0.1,
        thresholds=(0.4, 0.5, 0.6, 0.7, 0.9),
        long_return=LONG_RET,
        short_return=SHORT_RET,
        calibration_bins=10,
    )


def test_model_scores(report):
    m = report["model"]
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["per_class"]["SHORT"]["precision"] == pytest.approx(1 / 2)
    assert m["per_class"]["HOLD"]["precision"] == 0
    assert m["per_class"]["LONG"]["precision"] == pytest.approx(2 / 3)
    assert [m["per_class"][c]["recall"] for c in ("SHORT", "HOLD", "LONG")] == pytest.approx(
        [1 / 2, 0, 2 / 3]
    )
    assert m["per_class"]["LONG"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0 + 2 / 3) / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0 + 2 / 3) / 3)
    # Matthews: c=3, s=6, predicted [2,1,3], true [2,1,3] -> (18 - 14) / (36 - 14) = 4/22
    assert m["mcc"] == pytest.approx(4 / 22)
    expected_loss = -np.mean(np.log([0.7, 0.45, 0.5, 0.3, 0.1, 0.3]))
    assert m["log_loss"] == pytest.approx(expected_loss)


def test_scores_agree_with_scikit_learn(report):
    from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss, matthews_corrcoef

    pred = np.argmax(Y_PROB, axis=1)
    m = report["model"]
    assert m["mcc"] == pytest.approx(matthews_corrcoef(Y_TRUE, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(Y_TRUE, pred, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(Y_TRUE, pred))
    assert m["log_loss"] == pytest.approx(log_loss(Y_TRUE, Y_PROB, labels=[0, 1, 2]))


def test_baselines(report):
    hold = report["baselines"]["always_hold"]
    assert hold["accuracy"] == pytest.approx(1 / 6)
    assert hold["per_class"]["HOLD"]["f1"] == pytest.approx(2 / 7)
    assert hold["macro_f1"] == pytest.approx(2 / 21)
    assert hold["balanced_accuracy"] == pytest.approx(1 / 3)
    assert hold["mcc"] == 0
    rnd = report["baselines"]["random_by_training_priors"]
    assert rnd["priors"] == pytest.approx({"SHORT": 0.2, "HOLD": 0.6, "LONG": 0.2})
    # expected confusion = true counts [2,1,3] x priors [.2,.6,.2]
    assert rnd["accuracy"] == pytest.approx((2 * 0.2 + 1 * 0.6 + 3 * 0.2) / 6)
    assert [rnd["per_class"][c]["precision"] for c in ("SHORT", "HOLD", "LONG")] == pytest.approx(
        [1 / 3, 1 / 6, 1 / 2]
    )
    assert [rnd["per_class"][c]["recall"] for c in ("SHORT", "HOLD", "LONG")] == pytest.approx(
        [0.2, 0.6, 0.2]
    )
    assert rnd["mcc"] == pytest.approx(0, abs=1e-12)
    assert rnd["log_loss"] == pytest.approx(-(5 * math.log(0.2) + math.log(0.6)) / 6)


def test_break_even(report):
    assert break_even(1.0, 0.5, 0.0) == pytest.approx(1 / (1 + 1.0 / 0.5))
    long = report["break_even"]["LONG"]
    assert long["break_even_win_rate"] == pytest.approx((0.5 + 0.1) / 1.5)
    assert long["precision"] == pytest.approx(2 / 3)
    assert long["edge"] == pytest.approx(2 / 3 - 0.4)
    # 2 of 3 right is far from enough to claim anything: the count and the interval say so
    assert long["n"] == 3 and long["verdict"] == "too few signals (3)" and long["beats_break_even"] is False
    assert long["wilson_low"] < 0.4 < long["wilson_high"]
    short = report["break_even"]["SHORT"]
    assert short["precision"] == pytest.approx(0.5) and short["edge"] == pytest.approx(0.1)


def test_signals_by_threshold_including_none(report):
    rows = {r["threshold"]: r for r in report["thresholds"]}
    long = {t: rows[t]["LONG"] for t in rows}
    assert long[0.4]["signals"] == 3 and long[0.4]["precision"] == pytest.approx(2 / 3)
    assert long[0.4]["mean_return"] == pytest.approx((0.01 + 0.01 + 0.002) / 3)
    assert long[0.4]["mean_net_return"] == pytest.approx((0.01 + 0.01 + 0.002) / 3 - 0.001)
    assert long[0.5]["signals"] == 2 and long[0.5]["precision"] == pytest.approx(0.5)
    assert long[0.6]["signals"] == 2  # 0.6 >= 0.6 counts
    assert long[0.7]["signals"] == 1 and long[0.7]["mean_net_return"] == pytest.approx(0.009)
    none = long[0.9]
    assert none["signals"] == 0 and none["n_signals"] == 0 and none["verdict"] == "no signals"
    for key in ("precision", "wilson_low", "ci_low", "ci_high", "n_effective", "p_value", "mean_return"):
        assert none[key] is None, key
    short = {t: rows[t]["SHORT"] for t in rows}
    assert short[0.4]["signals"] == 2 and short[0.4]["mean_return"] == pytest.approx(0.0025)
    assert short[0.6]["signals"] == 1 and short[0.6]["precision"] == 0
    assert short[0.6]["mean_net_return"] == pytest.approx(-0.006)
    assert short[0.7]["signals"] == 0 and short[0.7]["precision"] is None


def test_calibration_table(report):
    bins = report["calibration"]["bins"]
    counts = [b["count"] for b in bins]
    assert counts == [0, 0, 0, 1, 2, 2, 1, 0, 0, 0]
    assert bins[4]["mean_confidence"] == pytest.approx(0.475) and bins[4]["accuracy"] == 1
    assert bins[5]["accuracy"] == 0 and bins[6]["accuracy"] == 1
    assert report["calibration"]["expected_calibration_error"] == pytest.approx((0.4 + 1.05 + 1.2 + 0.3) / 6)


def test_without_returns_and_with_no_predictions_of_a_side():
    report = trading_metrics(
        [1, 1, 0],
        [[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1]],
        train_class_counts={"SHORT": 1, "HOLD": 1, "LONG": 1},
        take_profit_pct=1.0,
        stop_loss_pct=1.0,
        short_take_profit_pct=1.0,
        short_stop_loss_pct=1.0,
        fee_pct=0.0,
    )
    assert report["returns_available"] is False
    assert report["break_even"]["LONG"]["precision"] is None and report["break_even"]["LONG"]["edge"] is None
    assert report["break_even"]["LONG"]["break_even_win_rate"] == 0.5
    assert all(r["LONG"]["signals"] == 0 and r["SHORT"]["signals"] == 0 for r in report["thresholds"])


REAL_CANDLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"
SMALL_REAL_RUN = [
    "--set",
    "data.loader=ohlcv",
    "--set",
    "data.start=2025-05-10",
    "--set",
    "data.end=2025-05-12",
    "--set",
    "train.sequence_length=8",
    "--set",
    "train.batch_size=128",
    "--set",
    "model.params.lstm_units=[4]",
    "--set",
    "model.params.dense_units=[4]",
    "--set",
    "balance.min_per_class=0",
    "--set",
    "labels.future_window=30",
    "--set",
    "labels.take_profit_pct=0.4",
    "--set",
    "labels.stop_loss_pct=0.3",
    "--set",
    "features.ma_short=60",
    "--set",
    "features.ma_long=600",
    "--set",
    "split.test=0.2",
    "--set",
    "split.min_validation_targets=200",
    "--set",
    "train.verbose=0",
]
SIMULATION_KEYS = {
    "threshold",
    "fee_pct",
    "trades",
    "n_trades",
    "win_rate",
    "total_net_return",
    "max_drawdown",
    "sharpe_per_trade",
}


@pytest.mark.slow
def test_real_pair_report_shows_its_simulation_on_the_test_slice(tmp_path, trainer):
    if not (REAL_CANDLES / "ETHUSDT-1m.parquet").exists():
        pytest.skip("no real candles in ../shared/data/ohlcv")
    result = trainer(
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        REAL_CANDLES,
        "--output",
        tmp_path,
        "--epochs",
        "1",
        *SMALL_REAL_RUN,
    )
    assert result.exit_code == 0, result.output
    pair_dir = tmp_path / "ETHUSDT"
    tag = "ETHUSDT_FW030_SL030_TP040"
    report = json.loads((pair_dir / f"trading_{tag}.json").read_text())
    assert report["split"] == "test" and report["threshold_choice"]["measured_on"] == "test"
    sim = report["simulation"]
    assert SIMULATION_KEYS <= set(sim) and sim["slice"] == "test"
    assert sim["n_trades"] == len(sim["trades"]) > 0
    assert set(sim["trades"][0]) == {"side", "entry_time", "exit_time", "gross_return", "cost", "net_return"}
    assert sim["total_net_return"] == pytest.approx(sum(t["net_return"] for t in sim["trades"]))
    # spot by default: two taker fees of 0.1 %, no funding, so every trade costs 0.2 %
    assert [t["cost"] for t in sim["trades"]] == pytest.approx([0.002] * len(sim["trades"]))
    for side in ("LONG", "SHORT"):
        v = report["break_even"][side]
        if v["n_signals"]:
            assert v["n_effective"] <= v["n_signals"] and v["ci_low"] is not None
    assert all(a["exit_time"] < b["entry_time"] for a, b in zip(sim["trades"], sim["trades"][1:]))
    rnd = sim["baselines"]["random_entry"]
    assert rnd["n_trades"] == sim["n_trades"] and 0 < rnd["p_value"] <= 1
    page = (pair_dir / f"trading_{tag}.html").read_text()
    assert (
        "Trade simulation (test slice)" in page
        and 'id="simulation-chart" src="data:image/png;base64,' in page
    )
    assert "p-value, better than random timing" in page and "<b>Test slice.</b> Untouched" in page
    figures = json.loads((pair_dir / "_SUCCESS.json").read_text())["figures"]["trading"]
    assert figures["simulation"]["n_trades"] == sim["n_trades"]
    assert figures["simulation"]["random_entry_p_value"] == rnd["p_value"]
    assert figures["LONG"]["n"] == report["break_even"]["LONG"]["n"]
    assert figures["report"] == f"trading_{tag}.html"


@pytest.mark.slow
def test_report_without_test_slice_or_returns_says_so(tmp_path, trainer, inputs):
    from trainer_core.testing import tiny_args

    result = trainer(
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        inputs,
        "--output",
        tmp_path,
        *tiny_args(1),
        "--set",
        "split.min_validation_targets=50",
        "--set",
        "split.test=0",
    )
    assert result.exit_code == 0, result.output
    assert "Headline measured on the early-stopping slice (split.test is 0) on" in result.output
    page = next((tmp_path / "ETHUSDT").glob("trading_*.html")).read_text()
    report = json.loads(next((tmp_path / "ETHUSDT").glob("trading_*.json")).read_text())
    assert (
        report["split"] == "validation"
        and "chosen and measured on the same" in report["threshold_choice"]["note"]
    )
    assert "Measured on the early-stopping slice" in page
    assert "measured on the early-stopping slice" in report["measured_on_note"]
    assert report["simulation"] == {
        "available": False,
        "reason": "the data carry no realised returns (long_return / short_return)",
    }
    assert "No simulation: the data carry no realised returns" in page
    assert "simulation-chart" not in page
