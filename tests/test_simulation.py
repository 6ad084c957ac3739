"""The trade simulation and the statistics beside it: the worked example of docs/evaluation.md,
exit candles against a per-row reference on candles, Wilson intervals and binomial p-values
against scipy's, and the random-entry and buy-and-hold baselines."""

from __future__ import annotations

import numpy as np
import pytest

try:  # the seed's features and tp-sl labels, wherever the code base keeps them
    from trainer_plugins.features.seed import compute_features
    from trainer_plugins.labelers.tp_sl import LabelParams, compute_labels
except ImportError:
    from trainer_core.features import LabelParams, compute_features, compute_labels
from trainer_plugins.loaders.synthetic import simulate as simulate_candles
from trainer_plugins.reporters.trading import trading_metrics
from trainer_plugins.reporters.trading.simulation import (
    Barriers,
    buy_and_hold,
    equity_stats,
    exit_offsets,
    price_path,
    random_entries,
    simulate,
)
from trainer_plugins.reporters.trading.stats import binomial_p_value, precision_verdict, wilson_interval

# docs/evaluation.md, "A worked example": 8 candles, predictions on the 6 with a full horizon
EX_CLOSE = [100.0, 100.8, 100.5, 100.6, 100.7, 101.0, 100.9, 100.9]
EX_HIGH = [100.2, 101.1, 100.9, 101.1, 100.9, 101.2, 101.3, 101.0]
EX_LOW = [99.8, 100.0, 100.3, 99.4, 100.5, 100.6, 100.8, 100.8]
EX_PROB = [
    [0.20, 0.18, 0.62],
    [0.55, 0.30, 0.15],
    [0.71, 0.20, 0.09],
    [0.10, 0.10, 0.80],
    [0.22, 0.20, 0.58],
    [0.10, 0.80, 0.10],
]
EX_BARRIERS = Barriers(2, 1.0, 0.5, 1.0, 0.5)


def worked_example(threshold=None):
    close, high, low = (np.asarray(a) for a in (EX_CLOSE, EX_HIGH, EX_LOW))
    _, long_r, short_r = compute_labels(close, high, low, LabelParams(2, 1.0, 0.5))
    rows = np.arange(6)
    ts = np.datetime64("2024-01-01T10:00", "ms") + np.arange(8) * np.timedelta64(60_000, "ms")
    off_long, off_short, adjusted = exit_offsets(close, high, low, rows, EX_BARRIERS, long_r, short_r)
    assert adjusted == 0
    sim = simulate(
        rows,
        np.asarray(EX_PROB),
        ts,
        long_r,
        short_r,
        rows + off_long,
        rows + off_short,
        threshold=threshold,
        fee_pct=0.1,
    )
    return sim, off_long, off_short, long_r, short_r


def test_worked_example_of_the_docs():
    sim, off_long, off_short, long_r, short_r = worked_example()
    # exits: row 0 LONG hits TP on candle 1; row 2 SHORT: candle 3 touches both, the stop counts;
    # row 4 LONG touches nothing and times out at the close of candle 6
    assert off_long[[0, 4]].tolist() == [1, 2] and off_short[2] == 1
    assert long_r[0] == pytest.approx(0.01) and short_r[2] == pytest.approx(-0.005)
    assert long_r[4] == pytest.approx(100.9 / 100.7 - 1)
    trades = [(t["side"], t["entry_time"][11:16], t["exit_time"][11:16]) for t in sim["trades"]]
    # row 1 (SHORT) and row 3 (LONG 0.80) are exit candles: no entry there; row 5 is HOLD
    assert trades == [("LONG", "10:00", "10:01"), ("SHORT", "10:02", "10:03"), ("LONG", "10:04", "10:06")]
    assert [t["net_return"] for t in sim["trades"]] == pytest.approx(
        [0.009, -0.006, 100.9 / 100.7 - 1 - 0.001]
    )
    assert sim["signals"] == 5 and sim["n_trades"] == 3
    assert sim["win_rate"] == pytest.approx(2 / 3)
    assert sim["total_net_return"] == pytest.approx(0.0039860973, abs=1e-10)
    assert sim["max_drawdown"] == pytest.approx(0.006)
    net = np.array([t["net_return"] for t in sim["trades"]])
    assert sim["sharpe_per_trade"] == pytest.approx(net.mean() / net.std(ddof=1))
    assert sim["sharpe_per_trade"] == pytest.approx(0.1770, abs=1e-4)
    assert sim["win_rate_wilson"] == pytest.approx([0.2077, 0.9385], abs=1e-4)


def test_worked_example_with_a_threshold():
    sim, *_ = worked_example(threshold=0.6)
    # 0.58 (row 4) is below 0.6; row 3's 0.80 is the exit candle of the SHORT: two trades only
    assert [(t["side"], t["entry_time"][11:16]) for t in sim["trades"]] == [
        ("LONG", "10:00"),
        ("SHORT", "10:02"),
    ]
    assert sim["total_net_return"] == pytest.approx(0.003) and sim["threshold"] == 0.6


def _reference_offsets(close, high, low, entry_candle, fw, tp, sl, long):
    entry = close[entry_candle]
    for k in range(1, fw + 1):
        h, lo = high[entry_candle + k], low[entry_candle + k]
        if long:
            hit_sl, hit_tp = lo <= entry * (1 - sl), h >= entry * (1 + tp)
        else:
            hit_sl, hit_tp = h >= entry * (1 + sl), lo <= entry * (1 - tp)
        if hit_sl or hit_tp:
            return k
    return fw


def test_exit_candles_rebuilt_from_features_match_a_per_row_scan_of_the_candles():
    _, _, high, low, close, volume = simulate_candles("ETHUSDT", 3000, seed=3)
    params = LabelParams(20, 0.3, 0.2, 0.25, 0.15)
    feats = compute_features(close, high, low, volume, 60, 600)
    labels, long_r, short_r = compute_labels(close, high, low, params)
    # data row i is candle i + 1 (the first candle has no previous close), as the loaders build it
    labels, long_r, short_r = labels[1:], long_r[1:], short_r[1:]
    from trainer_core.data import FEATURE_NAMES

    rebuilt = price_path(feats, FEATURE_NAMES)
    rows = np.flatnonzero(labels >= 0)
    barriers = Barriers(20, 0.3, 0.2, 0.25, 0.15)
    off_long, off_short, adjusted = exit_offsets(*rebuilt, rows, barriers, long_r, short_r)
    ref_long = [_reference_offsets(close, high, low, r + 1, 20, 0.003, 0.002, True) for r in rows]
    ref_short = [_reference_offsets(close, high, low, r + 1, 20, 0.0025, 0.0015, False) for r in rows]
    assert off_long.tolist() == ref_long and off_short.tolist() == ref_short
    assert adjusted <= 2  # float32 features: near-ties are rare
    # the outcome at that exit candle is the recorded return: barrier or the move to that close
    timed_out = (off_long == 20) & ~np.isclose(long_r[rows], 0.003) & ~np.isclose(long_r[rows], -0.002)
    moves = close[rows[timed_out] + 1 + 20] / close[rows[timed_out] + 1] - 1
    assert long_r[rows[timed_out]] == pytest.approx(moves, abs=1e-12)
    assert set(off_long.tolist()) >= {1, 20}


def test_a_touch_lost_to_float32_rounding_follows_the_recorded_outcome():
    close = np.array([100.0, 100.2, 100.3, 100.1])
    high = np.array([100.0, 100.999999, 100.5, 100.2])  # the raw candle touched 101, the rebuilt one misses
    low = np.array([100.0, 99.9, 100.1, 100.0])
    long_r = np.array([0.01, np.nan, np.nan, np.nan])
    short_r = np.array([-0.005, np.nan, np.nan, np.nan])  # the short was stopped on candle 1
    off_long, _, adjusted = exit_offsets(
        close, high, low, np.array([0]), Barriers(3, 1.0, 0.5, 1.0, 0.5), long_r, short_r
    )
    assert off_long.tolist() == [1] and adjusted == 1


def test_wilson_interval_and_p_value_match_scipy():
    from scipy.stats import binomtest

    for k, n, p0 in ((8, 10, 0.4), (18, 40, 0.4), (0, 12, 0.3), (12, 12, 0.5), (4507, 8520, 0.52)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
        assert binomial_p_value(k, n, p0) == pytest.approx(binomtest(k, n, p0, alternative="greater").pvalue)
    assert wilson_interval(0, 0) == (None, None) and binomial_p_value(0, 0, 0.5) is None


def test_verdicts():
    assert precision_verdict(9, 12, 0.4)["verdict"] == "too few signals (12)"
    assert precision_verdict(0, 0, 0.4)["verdict"] == "no signals"
    # 18/40 = 0.45 against 0.40: the interval reaches far below break-even
    v = precision_verdict(18, 40, 0.4)
    assert v["verdict"] == "does not beat break-even" and v["wilson_low"] < 0.4 < v["precision"]
    assert v["p_value"] > 0.05
    # the figures docs/evaluation.md quotes
    assert (v["wilson_low"], v["wilson_high"], v["p_value"]) == pytest.approx((0.307, 0.602, 0.311), abs=5e-4)
    strong = precision_verdict(70, 100, 0.4)
    assert strong["verdict"] == "beats break-even" and strong["wilson_low"] > 0.4 and strong["p_value"] < 1e-6
    assert precision_verdict(9, 12, 0.4, min_signals=10)["verdict"] == "beats break-even"


def test_trading_metrics_claim_nothing_below_min_signals():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 200)
    y_prob = np.full((200, 3), 0.1)
    y_prob[:, 1] = 0.8
    y_prob[:12, :] = [0.1, 0.1, 0.8]  # 12 LONG predictions, 9 of them right
    y_true[:9], y_true[9:12] = 2, 1
    report = trading_metrics(
        y_true,
        y_prob,
        train_class_counts={"SHORT": 1, "HOLD": 1, "LONG": 1},
        take_profit_pct=1.0,
        stop_loss_pct=0.5,
        short_take_profit_pct=1.0,
        short_stop_loss_pct=0.5,
        fee_pct=0.1,
    )
    long = report["break_even"]["LONG"]
    assert long["precision"] == pytest.approx(0.75) and long["n"] == 12
    assert long["verdict"] == "too few signals (12)" and long["beats_break_even"] is False
    assert report["break_even"]["SHORT"]["verdict"] == "no signals"
    assert report["thresholds"][0]["LONG"]["verdict"] == "too few signals (12)"


def test_equity_stats_and_buy_and_hold():
    s = equity_stats(np.array([0.01, -0.02, 0.005, -0.01, 0.03]))
    assert s["total_net_return"] == pytest.approx(0.015)
    assert s["max_drawdown"] == pytest.approx(0.025)  # peak 0.01 -> trough -0.015
    assert equity_stats(np.array([]))["sharpe_per_trade"] is None
    close = np.array([1.0, 1.1, 0.99, 1.2, 1.05])
    bh = buy_and_hold(close, np.arange(1, 5), fee_pct=0.1)
    assert bh["gross_return"] == pytest.approx(1.05 / 1.1 - 1)
    assert bh["net_return"] == pytest.approx(1.05 / 1.1 - 1 - 0.001)
    assert bh["max_drawdown"] == pytest.approx(1 - 1.05 / 1.2)  # deeper than 1.1 -> 0.99


def _random_entry_case():
    rng = np.random.default_rng(5)
    m = 2000
    rows = np.arange(m)
    long_r = rng.choice([0.01, -0.005], m)
    short_r = np.where(long_r > 0, -0.005, 0.01)
    exits = rows + rng.integers(1, 6, m)
    return rows, exits, long_r, short_r


def test_random_entries_p_value_separates_timing_from_luck():
    rows, exits, long_r, short_r = _random_entry_case()
    kw = dict(n_trades=200, long_share=0.5, fee_pct=0.1, draws=300, seed=1, max_offset=5)
    # a perfect timer: 200 trades that all win 1 %
    perfect = random_entries(rows, exits, exits, long_r, short_r, model_total=200 * 0.009, **kw)
    assert perfect["p_value"] == pytest.approx(1 / 301) and perfect["beats_share"] == 1.0
    typical = random_entries(
        rows, exits, exits, long_r, short_r, model_total=perfect["mean_total_net_return"], **kw
    )
    assert 0.2 < typical["p_value"] < 0.8
    # random trades here: half win 1 %, half lose 0.5 %, each pays 0.1 %: mean 0.15 % a trade
    assert perfect["mean_total_net_return"] == pytest.approx(200 * 0.0015, abs=0.03)
    again = random_entries(rows, exits, exits, long_r, short_r, model_total=0.0, **kw)
    assert again["mean_total_net_return"] == perfect["mean_total_net_return"]  # seeded
    assert perfect["draws_with_fewer_trades"] == 0
    assert (
        random_entries(rows, exits, exits, long_r, short_r, model_total=0.0, **{**kw, "n_trades": 0})[
            "p_value"
        ]
        is None
    )
