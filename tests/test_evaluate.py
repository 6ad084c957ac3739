"""`trainer evaluate` and the verdicts it shares with every trained pair: persistent random signals,
which know nothing of the future, scored on real candles. Their interval must cover the no-skill
precision at about its nominal rate, where the old Wilson interval of the raw count did not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trainer_plugins.reporters.trading.evaluate import evaluate_predictions

PAIRS = ("ADAUSDT", "BNBUSDT", "BTCUSDT", "ETHUSDT", "LTCUSDT", "SOLUSDT", "XRPUSDT")
WINDOW = 11_000  # about the test slice (15 %) of these files


def random_signals(rng, timestamps) -> pl.DataFrame:
    """States held 10 to 60 candles (SHORT 30 %, HOLD 40 %, LONG 30 %), independent of the future."""
    n = len(timestamps)
    state = np.empty(n, dtype=np.int64)
    i = 0
    while i < n:
        hold = int(rng.integers(10, 61))
        state[i : i + hold] = rng.choice(3, p=[0.3, 0.4, 0.3])
        i += hold
    p = np.full((n, 3), 0.2)
    p[np.arange(n), state] = 0.6
    return pl.DataFrame({"timestamp": timestamps, "p_short": p[:, 0], "p_hold": p[:, 1], "p_long": p[:, 2]})


def window(candles: Path, rng) -> pl.Series:
    ts = pl.read_parquet(candles, columns=["timestamp"]).get_column("timestamp")
    start = int(rng.integers(0, len(ts) - WINDOW - 200))
    return ts.slice(start, WINDOW)


@pytest.mark.real_candles
def test_evaluate_command_writes_the_trading_report_of_a_predictions_file(tmp_path, trainer, shared_data):
    rng = np.random.default_rng(7)
    preds = tmp_path / "preds.parquet"
    random_signals(rng, window(shared_data / "ETHUSDT-1m.parquet", rng)).write_parquet(preds)
    out = tmp_path / "eval"
    result = trainer(
        "evaluate",
        "--predictions",
        str(preds),
        "--data",
        str(shared_data / "ETHUSDT-1m.parquet"),
        "--output",
        str(out),
        "--set",
        "evaluation.random_entry_draws=200",
        "--set",
        "evaluation.bootstrap_reps=200",
    )
    assert result.exit_code == 0, result.output
    assert "ETHUSDT: 11,000 predictions scored" in result.output
    tag = "ETHUSDT_FW120_SL050_TP100"
    assert sorted(p.name for p in out.iterdir()) == [f"trading_{tag}.{e}" for e in ("html", "json", "png")]
    report = json.loads((out / f"trading_{tag}.json").read_text())
    assert report["split"] == "evaluated" and report["samples"] == 11_000
    for side in ("LONG", "SHORT"):
        v = report["break_even"][side]
        for key in ("n_signals", "n_effective", "ci_low", "ci_high", "p_value", "beats_break_even"):
            assert v[key] is not None, key
        # persistent signals overlap: far fewer effective outcomes than signals
        assert v["n_effective"] < v["n_signals"] / 5
        assert v["ci_high"] - v["ci_low"] > 2 * (v["wilson_high"] - v["wilson_low"])
        assert v["beats_break_even"] is False  # random signals never earn a check mark here
    assert report["costs"] == {
        "market": "spot",
        "fee_pct": 0.2,
        "slippage_bps": 0.0,
        "funding_rate_pct": 0.0,
        "round_trip_pct": 0.2,
        "funding_from": "none",
    }
    sens = report["simulation"]["cost_sensitivity"]
    assert [c["cost_multiple"] for c in sens] == [0.0, 1.0, 2.0]
    assert sens[1]["total_net_return"] == pytest.approx(report["simulation"]["total_net_return"])
    page = (out / f"trading_{tag}.html").read_text()
    assert "n_eff" in page and "beats break-even" in page


def test_evaluate_refuses_predictions_that_are_not_probabilities(tmp_path, trainer):
    ts = pl.datetime_range(
        pl.datetime(2025, 5, 5), pl.datetime(2025, 5, 5, 1), "1m", time_zone="UTC", eager=True
    )
    bad = pl.DataFrame({"timestamp": ts, "p_short": 0.5, "p_hold": 0.5, "p_long": 0.5})
    preds = tmp_path / "bad.csv"
    bad.write_csv(preds)
    candles = tmp_path / "ETHUSDT-1m.csv"
    candles.write_text("timestamp,open,high,low,close,volume\n2025-05-05T00:00:00,1,1,1,1,1\n")
    out = tmp_path / "eval"
    result = trainer("evaluate", "--predictions", str(preds), "--data", str(candles), "--output", str(out))
    assert result.exit_code == 2, result.output
    assert "do not sum to 1" in result.output and "Traceback" not in result.output
    assert not out.exists()
    # a CSV's text times are read as times, so --start/--end work on them
    good = bad.with_columns(p_short=pl.lit(0.2), p_hold=pl.lit(0.6), p_long=pl.lit(0.2)).head(3)
    good.write_csv(preds)
    late = trainer(
        "evaluate", "--predictions", preds, "--data", candles, "--output", out, "--start", "2025-05-06"
    )
    assert late.exit_code == 2 and "no predictions to evaluate between 2025-05-06" in late.output
    missing = trainer("evaluate", "--data", str(candles), "--output", str(out))
    assert missing.exit_code == 2 and "--predictions" in missing.output


@pytest.mark.real_candles
def test_verdict_intervals_cover_the_no_skill_precision_of_random_persistent_signals(shared_data):
    """Over seeded random signals on the 7 pairs, the 95 % interval each verdict uses covers the
    precision a no-skill signal has on those rows (their share of the side's label) in about 95 %
    of the cases, with a width close to a block bootstrap's; the raw Wilson interval does not.

    With N cases the coverage estimate has a binomial standard error sqrt(0.95 x 0.05 / N)
    (N = 70: 0.026); the test accepts coverage down to 3 standard errors below 95 %. The interval
    also counts the slice's own base rate as uncertain (a trader's next month is another draw), so
    it is a little conservative for this slice-conditional truth: coverage up to 100 % passes.
    """
    covered, wilson_covered, cases = 0, 0, 0
    width_ratio = []
    for seed in range(35):
        rng = np.random.default_rng(1000 + seed)
        pair = PAIRS[seed % len(PAIRS)]
        report = evaluate_predictions(
            random_signals(rng, window(shared_data / f"{pair}-1m.parquet", rng)),
            shared_data / f"{pair}-1m.parquet",
            None,
            sets=[
                "evaluation.bootstrap_reps=200",
                "evaluation.random_entry_draws=1",
                "evaluation.thresholds=[0.9]",
                f"train.seed={seed}",
            ],
        )
        for side in ("LONG", "SHORT"):
            v = report["break_even"][side]
            truth = report["class_counts"][side] / report["samples"]
            cases += 1
            covered += v["ci_low"] <= truth <= v["ci_high"]
            wilson_covered += v["wilson_low"] <= truth <= v["wilson_high"]
            width_ratio.append((v["ci_high"] - v["ci_low"]) / (v["bootstrap_high"] - v["bootstrap_low"]))
    se = np.sqrt(0.95 * 0.05 / cases)
    coverage = covered / cases
    assert coverage >= 0.95 - 3 * se, f"coverage {coverage:.3f} of {cases}"
    assert wilson_covered / cases < 0.8  # the raw count's interval is far too narrow
    assert 0.8 < float(np.median(width_ratio)) < 1.25


@pytest.mark.real_candles
@pytest.mark.slow
def test_a_pair_trained_with_the_defaults_reports_its_test_slice_and_evaluates_later_candles(
    tmp_path, trainer, train_on_real_candles
):
    _, candles, result = train_on_real_candles(4, "data.start=2025-05-05", "data.end=2025-05-06")
    out = tmp_path / "out"
    assert result.exit_code == 0, result.output
    assert "Validation (the early-stopping slice) on" in result.output
    assert "Test (untouched slice) on" in result.output
    model = out / "ETHUSDT"
    marker = json.loads((model / "_SUCCESS.json").read_text())
    assert marker["metrics"]["measured_on"] == "test"
    report = json.loads(next(model.glob("trading_*.json")).read_text())
    assert report["split"] == "test"
    assert report["simulation"]["exit_prices"] == "the candles"  # real highs and lows, not rebuilt

    result = trainer("predict", "--model-dir", model, "--data", candles, "--output", tmp_path / "p.parquet")
    assert result.exit_code == 0, result.output
    preds = pl.read_parquet(tmp_path / "p.parquet")
    span = json.loads(next(model.glob("spec_*.json")).read_text())["in_sample_span"]
    inside = preds.filter(pl.col("in_sample"))
    assert inside.height > 0 and preds.filter(~pl.col("in_sample")).height > 0
    first = pl.Series([span["first"]]).str.to_datetime(time_unit="ms", time_zone="UTC")[0]
    last = pl.Series([span["last"]]).str.to_datetime(time_unit="ms", time_zone="UTC")[0]
    assert inside["timestamp"].min() == first and inside["timestamp"].max() == last
    # the test slice and the days after training are out of sample
    assert not preds.filter(pl.col("timestamp") >= pl.datetime(2025, 5, 7, time_zone="UTC"))[
        "in_sample"
    ].any()

    result = trainer(
        "evaluate",
        "--model-dir",
        model,
        "--data",
        candles,
        "--start",
        "2025-05-07",
        "--output",
        tmp_path / "eval",
        "--set",
        "evaluation.random_entry_draws=100",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(next((tmp_path / "eval").glob("trading_*.json")).read_text())
    assert report["evaluated"]["first"].startswith("2025-05-07")
    assert report["evaluated"]["in_sample_rows_left_out"] == 0
    assert report["samples"] == report["evaluated"]["rows_scored"] > 1000


@pytest.mark.real_candles
@pytest.mark.slow
def test_walk_forward_folds_are_scored_out_of_sample_and_stitched(tmp_path, train_on_real_candles):
    walk_forward = ("split.mode=walk-forward", "split.folds=3", "split.validation=0.2")
    _, _, result = train_on_real_candles(
        5, *walk_forward, "labels.take_profit_pct=0.3", "labels.stop_loss_pct=0.3"
    )
    out = tmp_path / "out"
    assert result.exit_code == 0, result.output
    report = json.loads(next((out / "ETHUSDT").glob("trading_*.json")).read_text())
    wf = report["walk_forward"]
    folds = wf["folds"]
    assert len(folds) == 3 and all(f["scored_on"].startswith("outer block") for f in folds)
    assert all(isinstance(f["mcc"], float) and "total_net_return" in f for f in folds)
    oos = wf["out_of_sample"]
    assert oos["n_trades"] == sum(f["n_trades"] for f in folds) == len(oos["trades"]) > 0
    assert oos["total_net_return"] == pytest.approx(sum(f["total_net_return"] for f in folds))
    times = [t["entry_time"] for t in oos["trades"]]
    assert times == sorted(times)  # one curve through the blocks, in time order
    assert wf["spread"]["total_net_return"]["max"] == pytest.approx(max(f["total_net_return"] for f in folds))
    page = next((out / "ETHUSDT").glob("trading_*.html")).read_text()
    assert "Walk-forward folds" in page and "outer block" in page


def _funding_zip(path: Path, times_ms, rates, extra_member: bool = False) -> Path:
    import zipfile

    body = "calc_time,funding_interval_hours,last_funding_rate\n" + "".join(
        f"{t},8,{r:.8f}\n" for t, r in zip(times_ms, rates)
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ETHUSDT-fundingRate-2025-05.csv", body)
        if extra_member:
            z.writestr("other.csv", body)
    return path


@pytest.mark.real_candles
def test_a_funding_rate_file_charges_each_trade_the_rates_it_was_held_across(tmp_path, shared_data):
    rng = np.random.default_rng(3)
    ts = window(shared_data / "ETHUSDT-1m.parquet", rng)
    first = int(ts[0].timestamp() * 1000) // (8 * 3600_000) * (8 * 3600_000)
    times = first + np.arange(0, 40) * 8 * 3600_000
    rates = np.round(rng.uniform(-0.0005, 0.001, len(times)), 8)  # as the file holds them
    funding = _funding_zip(tmp_path / "funding.zip", times, rates)
    report = evaluate_predictions(
        random_signals(rng, ts),
        shared_data / "ETHUSDT-1m.parquet",
        None,
        sets=[
            "data.params.market=futures-um",
            f"evaluation.funding_file={funding}",
            "evaluation.random_entry_draws=20",
            "evaluation.bootstrap_reps=0",
        ],
    )
    sim = report["simulation"]
    assert sim["costs"]["market"] == "futures" and sim["costs"]["fee_pct"] == 0.1
    assert sim["costs"]["funding_from"].startswith("file ")
    crossed = 0
    for t in sim["trades"]:
        entry = int(np.datetime64(t["entry_time"].rstrip("Z"), "ms").astype(np.int64))
        exit_ = int(np.datetime64(t["exit_time"].rstrip("Z"), "ms").astype(np.int64))
        paid = rates[(times > entry) & (times <= exit_)].sum()
        crossed += paid != 0
        sign = 1 if t["side"] == "LONG" else -1
        assert t["cost"] == pytest.approx(0.001 + sign * paid, abs=1e-12)
    assert crossed > 0  # some trades were held across a funding time


def test_a_funding_file_that_is_not_one_csv_is_one_line(tmp_path, trainer):
    bad = _funding_zip(tmp_path / "f.zip", [0], [0.0001], extra_member=True)
    ts = pl.datetime_range(
        pl.datetime(2025, 5, 5), pl.datetime(2025, 5, 5, 0, 4), "1m", time_zone="UTC", eager=True
    )
    preds = tmp_path / "p.csv"
    pl.DataFrame({"timestamp": ts, "p_short": 0.2, "p_hold": 0.6, "p_long": 0.2}).write_csv(preds)
    candles = tmp_path / "ETHUSDT-1m.csv"
    lines = [f"2025-05-05T00:0{i}:00,1,1.1,0.9,1,1" for i in range(5)]
    candles.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(lines) + "\n")
    result = trainer(
        "evaluate",
        "--predictions",
        preds,
        "--data",
        candles,
        "--output",
        tmp_path / "out",
        "--set",
        "labels.future_window=1",
        "--set",
        f"evaluation.funding_file={bad}",
    )
    assert result.exit_code == 2 and "expected one CSV" in result.output and "Traceback" not in result.output
    assert not any((tmp_path / "out").glob("trading_*"))
