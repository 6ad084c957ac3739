"""The trade simulation replayed through backtesting.py: the same signals give the same trades
and the same total return, same-candle stops and time-out exits included.

The reporter knows only the data rows (features rebuilt into prices, recorded returns); the
backtester gets the raw candles. Each candle opens at the previous close so that a barrier order
fills at its barrier, which is what the labeler's returns assume.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from trainer_core.data import FEATURE_NAMES

try:  # the seed's features and tp-sl labels, wherever the code base keeps them
    from trainer_plugins.features.seed import compute_features
    from trainer_plugins.labelers.tp_sl import LabelParams, compute_labels
except ImportError:
    from trainer_core.features import LabelParams, compute_features, compute_labels
from trainer_plugins.loaders.synthetic import simulate as simulate_candles
from trainer_plugins.reporters.trading.simulation import Barriers, exit_offsets, price_path, simulate

pytest.importorskip("backtesting", reason="backtesting.py is in the test extra")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"
FW = 15
PARAMS = LabelParams(FW, 0.3, 0.2, 0.25, 0.15)
FEE_PCT = 0.1


def _synthetic():
    time_ms, _, high, low, close, volume = simulate_candles("BTCUSDT", 4000, seed=11)
    high, low = high.copy(), low.copy()
    wide = np.arange(300, 3900, 97)  # candles reaching both barriers of any open position
    high[wide] = close[wide] * 1.01
    low[wide] = close[wide] * 0.99
    return time_ms, high, low, close, volume, wide


def _real():
    import polars as pl

    frame = pl.read_parquet(SHARED / "ETHUSDT-1m.parquet").slice(20_000, 4000)
    time_ms = frame["timestamp"].dt.epoch("ms").to_numpy()
    assert (np.diff(time_ms) == 60_000).all()
    return (
        time_ms,
        frame["high"].to_numpy(),
        frame["low"].to_numpy(),
        frame["close"].to_numpy(),
        frame["volume"].to_numpy(),
        np.zeros(0, dtype=np.int64),
    )


def _replay(time_ms, high, low, close, sides):
    """backtesting.py on the candles; ``sides`` per candle: +1 LONG, -1 SHORT, 0 nothing."""
    import pandas as pd
    from backtesting import Backtest, Strategy

    open_ = np.concatenate([[close[0]], close[:-1]])
    frame = pd.DataFrame(
        {"Open": open_, "High": high, "Low": low, "Close": close, "Volume": 1.0},
        index=pd.to_datetime(time_ms, unit="ms"),
    )
    tp, sl = PARAMS.take_profit_pct / 100, PARAMS.stop_loss_pct / 100
    stp, ssl = PARAMS.short_tp / 100, PARAMS.short_sl / 100

    class Replay(Strategy):
        def init(self):
            pass

        def next(self):
            i = len(self.data) - 1
            if self.trades:
                trade = self.trades[-1]
                if i - trade.entry_bar >= FW:
                    # a time-out exits at this close: drop the barriers first, so that the next
                    # candle cannot trigger them before the close order fills
                    trade.sl = None
                    trade.tp = None
                    trade.close()
                return
            if self.closed_trades and i <= self.closed_trades[-1].exit_bar:
                return
            entry = self.data.Close[-1]
            if sides[i] > 0:
                self.buy(size=1, sl=entry * (1 - sl), tp=entry * (1 + tp))
            elif sides[i] < 0:
                self.sell(size=1, sl=entry * (1 + ssl), tp=entry * (1 - stp))

    bt = Backtest(frame, Replay, cash=1e12, commission=0.0, trade_on_close=True, finalize_trades=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = bt.run()
    out = []
    for t in stats._trades.itertuples():
        long = t.Size > 0
        gross = t.ExitPrice / t.EntryPrice - 1 if long else 1 - t.ExitPrice / t.EntryPrice
        out.append(
            {
                "side": "LONG" if long else "SHORT",
                "entry_bar": int(t.EntryBar),
                "exit_bar": int(t.ExitBar),
                "gross_return": float(gross),
            }
        )
    return out


@pytest.mark.parametrize("candles", ["synthetic", "ETHUSDT"])
def test_simulation_matches_backtesting_py(candles):
    if candles == "ETHUSDT" and not (SHARED / "ETHUSDT-1m.parquet").exists():
        pytest.skip("no real candles in ../shared/data/ohlcv")
    time_ms, high, low, close, volume, wide = _synthetic() if candles == "synthetic" else _real()
    labels, long_r, short_r = compute_labels(close, high, low, PARAMS)
    # the data rows a loader builds: row i is candle i + 1 (its features need the previous close)
    feats = compute_features(close, high, low, volume, 60, 600)
    labels, long_r, short_r = labels[1:], long_r[1:], short_r[1:]
    timestamps = time_ms[1:].astype("datetime64[ms]")
    rows = np.flatnonzero(labels >= 0)
    rows = rows[rows < len(labels) - FW - 2]  # every position closes before the candles end

    rng = np.random.default_rng(7)
    y_prob = rng.dirichlet([1.0, 1.0, 1.0], size=len(rows))
    rebuilt = price_path(feats, FEATURE_NAMES)
    barriers = Barriers(FW, PARAMS.take_profit_pct, PARAMS.stop_loss_pct, PARAMS.short_tp, PARAMS.short_sl)
    off_long, off_short, _ = exit_offsets(*rebuilt, rows, barriers, long_r, short_r)
    sim = simulate(
        rows,
        y_prob,
        timestamps,
        long_r,
        short_r,
        rows + off_long,
        rows + off_short,
        threshold=None,
        fee_pct=FEE_PCT,
    )

    sides = np.zeros(len(close), dtype=np.int64)
    pred = y_prob.argmax(axis=1)
    sides[rows + 1] = np.where(pred == 2, 1, np.where(pred == 0, -1, 0))
    replayed = _replay(time_ms, high, low, close, sides)

    def bar_time(bar):
        return str(np.datetime_as_string(np.datetime64(int(time_ms[bar]), "ms"), unit="s")) + "Z"

    ours = [(t["side"], t["entry_time"], t["exit_time"]) for t in sim["trades"]]
    theirs = [(t["side"], bar_time(t["entry_bar"]), bar_time(t["exit_bar"])) for t in replayed]
    assert sim["n_trades"] > 100
    assert ours == theirs
    gross_ours = np.array([t["gross_return"] for t in sim["trades"]])
    gross_theirs = np.array([t["gross_return"] for t in replayed])
    np.testing.assert_allclose(gross_ours, gross_theirs, rtol=0, atol=1e-9)
    total_theirs = float(np.sum(gross_theirs - FEE_PCT / 100))
    assert abs(sim["total_net_return"] - total_theirs) < 1e-9

    exit_offset = np.array([t["exit_bar"] - t["entry_bar"] for t in replayed])
    barrier_hit = np.isin(np.round(gross_theirs, 9), np.round([0.003, -0.002, 0.0025, -0.0015], 9))
    assert ((exit_offset == FW) & ~barrier_hit).any(), "no time-out exit was exercised"
    if candles == "synthetic":
        exit_bars = np.array([t["exit_bar"] for t in replayed])
        same_candle = np.isin(exit_bars, wide) & (exit_offset < FW)
        assert same_candle.sum() >= 3, "no same-candle stop was exercised"
        stops = np.where(np.array([t["side"] for t in replayed]) == "LONG", -0.002, -0.0015)
        np.testing.assert_allclose(gross_theirs[same_candle], stops[same_candle], atol=1e-12)
