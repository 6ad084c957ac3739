"""The trade simulation: exit candles under the labeler's barrier rule, one position at a time,
costs (fee, slippage, futures funding), and the buy-and-hold and random-entry baselines.
Pure numpy; no engine state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: how far (relative) a reconstructed high/low may sit from a barrier and still be its touch,
#: used only where the exact comparison disagrees with the recorded outcome (float32 features)
TOUCH_TOLERANCE = 1e-6
NO_SIGNAL, LONG_SIDE, SHORT_SIDE = 0, 1, -1


# -- prices and exit candles -------------------------------------------------------------------


def price_path(features: np.ndarray, feature_names) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Close, high and low of every data row relative to an arbitrary base, rebuilt from the
    seed's ``close_change`` / ``high_change`` / ``low_change`` (percent moves from the previous
    close); None when the data lack those features. Ratios within a segment are exact up to the
    features' float32 rounding; the move across a gap in the candles is not known (left out)."""
    names = list(feature_names)
    if not all(c in names for c in ("close_change", "high_change", "low_change")):
        return None
    f = np.asarray(features, dtype=np.float64)
    cc = f[:, names.index("close_change")] / 100.0
    hc = f[:, names.index("high_change")] / 100.0
    lc = f[:, names.index("low_change")] / 100.0
    close = np.exp(np.cumsum(np.log1p(cc)))
    prev = np.concatenate([[1.0], close[:-1]])
    return close, prev * (1 + hc), prev * (1 + lc)


def _first_touch(
    series: np.ndarray, rows: np.ndarray, level: np.ndarray, horizon: int, above: bool
) -> np.ndarray:
    """Offset k in 1..horizon of the first row after each of ``rows`` whose value touches
    ``level`` (>= when ``above``, else <=); horizon + 1 where none does."""
    first = np.full(len(rows), horizon + 1, dtype=np.int64)
    last = len(series) - 1
    for k in range(1, horizon + 1):
        pos = rows + k
        inside = pos <= last
        v = series[np.minimum(pos, last)]
        touched = inside & ((v >= level) if above else (v <= level))
        first = np.where((first > horizon) & touched, k, first)
    return first


@dataclass(frozen=True)
class Barriers:
    """The labeler's barriers, in percent, and its horizon in candles."""

    future_window: int
    take_profit_pct: float
    stop_loss_pct: float
    short_take_profit_pct: float
    short_stop_loss_pct: float


def exit_offsets(close, high, low, rows, barriers: Barriers, long_return=None, short_return=None):
    """For each entry row: how many candles later its LONG and its SHORT position close under the
    labeler's rule (the first candle touching a barrier, a candle touching both counts as the
    stop, else ``future_window``). Returns ``(long_offset, short_offset, adjusted)``.

    With the recorded ``long_return`` / ``short_return`` (the labeler's outcome, computed from the
    raw candles), a row whose outcome the rebuilt prices contradict (a touch within float32
    rounding of a barrier) takes the first candle within ``TOUCH_TOLERANCE`` of the recorded
    barrier; ``adjusted`` counts those rows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    fw = int(barriers.future_window)
    entry = close[rows]
    out = []
    adjusted = 0
    sides = (
        (barriers.take_profit_pct, barriers.stop_loss_pct, True, long_return),
        (barriers.short_take_profit_pct, barriers.short_stop_loss_pct, False, short_return),
    )
    for tp_pct, sl_pct, is_long, recorded in sides:
        tp, sl = tp_pct / 100.0, sl_pct / 100.0
        if is_long:
            tp_level, sl_level = entry * (1 + tp), entry * (1 - sl)
            k_tp = _first_touch(high, rows, tp_level, fw, above=True)
            k_sl = _first_touch(low, rows, sl_level, fw, above=False)
        else:
            tp_level, sl_level = entry * (1 - tp), entry * (1 + sl)
            k_tp = _first_touch(low, rows, tp_level, fw, above=False)
            k_sl = _first_touch(high, rows, sl_level, fw, above=True)
        offset = np.minimum(np.minimum(k_tp, k_sl), fw)
        if recorded is not None:
            rec = np.asarray(recorded, dtype=np.float64)[rows]
            win, stop = np.isclose(rec, tp, rtol=0, atol=1e-12), np.isclose(rec, -sl, rtol=0, atol=1e-12)
            rebuilt_win = (k_tp < k_sl) & (k_tp <= fw)
            rebuilt_stop = (k_sl <= k_tp) & (k_sl <= fw)
            bad = (win != rebuilt_win) | (stop != rebuilt_stop)
            if bad.any():
                idx = np.flatnonzero(bad)
                r = rows[idx]
                if is_long:
                    t_tp = _first_touch(high, r, tp_level[idx] * (1 - TOUCH_TOLERANCE), fw, above=True)
                    t_sl = _first_touch(low, r, sl_level[idx] * (1 + TOUCH_TOLERANCE), fw, above=False)
                else:
                    t_tp = _first_touch(low, r, tp_level[idx] * (1 + TOUCH_TOLERANCE), fw, above=False)
                    t_sl = _first_touch(high, r, sl_level[idx] * (1 - TOUCH_TOLERANCE), fw, above=True)
                fixed = np.where(win[idx], t_tp, np.where(stop[idx], t_sl, fw))
                offset[idx] = np.minimum(fixed, fw)
                adjusted += len(idx)
        out.append(offset)
    return out[0], out[1], adjusted


# -- the simulation ------------------------------------------------------------------------------


def _iso(ts) -> str | None:
    if ts is None:
        return None
    return str(np.datetime_as_string(np.asarray(ts).astype("datetime64[ms]"), unit="s")) + "Z"


def run_trades(signal_rows, signal_sides, exit_row_long, exit_row_short) -> np.ndarray:
    """One position at a time: walk the signal rows (sorted data rows), open at a signal when no
    position is open, close at its exit row, and let the next position open only at a signal row
    after that exit. ``exit_row_*`` are indexed like ``signal_rows``.
    Returns the indices (into the signal arrays) of the signals that became trades."""
    signal_rows = np.asarray(signal_rows, dtype=np.int64)
    taken = []
    i = 0
    n = len(signal_rows)
    while i < n:
        taken.append(i)
        exit_row = exit_row_long[i] if signal_sides[i] == LONG_SIDE else exit_row_short[i]
        i = int(np.searchsorted(signal_rows, exit_row, side="right"))
    return np.asarray(taken, dtype=np.int64)


def equity_stats(net: np.ndarray) -> dict:
    """Total, max drawdown of the cumulative sum (a positive fraction) and per-trade Sharpe."""
    net = np.asarray(net, dtype=np.float64)
    if len(net) == 0:
        return {
            "total_net_return": 0.0,
            "max_drawdown": 0.0,
            "sharpe_per_trade": None,
            "skewness": None,
            "kurtosis": None,
        }
    equity = np.concatenate([[0.0], np.cumsum(net)])
    drawdown = np.maximum.accumulate(equity) - equity
    sd = float(np.std(net, ddof=1)) if len(net) > 1 else 0.0
    moments = {"skewness": None, "kurtosis": None}
    if len(net) > 2 and sd > 0:
        from scipy.stats import kurtosis, skew

        moments = {"skewness": float(skew(net)), "kurtosis": float(kurtosis(net, fisher=False))}
    return {
        "total_net_return": float(net.sum()),
        "max_drawdown": float(drawdown.max()),
        "sharpe_per_trade": float(net.mean() / sd) if sd > 0 else None,
        **moments,
    }


@dataclass(frozen=True)
class Costs:
    """What a trade costs, as a trader sets it.

    ``fee_pct``: exchange fees of the round trip in percent (both sides' taker fees);
    ``slippage_bps``: price slippage per side in basis points (paid on entry and on exit);
    ``funding_rate_pct``: futures funding per 8 hours in percent, paid by a LONG and received
    by a SHORT at each funding time (00:00, 08:00, 16:00 UTC) the position is held across
    (0 for spot).
    """

    fee_pct: float
    slippage_bps: float = 0.0
    funding_rate_pct: float = 0.0
    market: str = "spot"
    #: the exchange's funding history (``evaluation.funding_file``): times (epoch ms) and rates
    #: (fractions), used instead of the constant rate when given
    funding_history: tuple | None = None
    funding_source: str | None = None

    @property
    def round_trip_pct(self) -> float:
        """Fees and both sides' slippage, in percent: what every trade pays whatever its side."""
        return self.fee_pct + 2 * self.slippage_bps / 100.0

    def as_dict(self) -> dict:
        """The settings and the round trip, for the report."""
        return {
            "market": self.market,
            "fee_pct": float(self.fee_pct),
            "slippage_bps": float(self.slippage_bps),
            "funding_rate_pct": float(self.funding_rate_pct),
            "round_trip_pct": float(self.round_trip_pct),
            "funding_from": self.funding_source or ("constant rate" if self.funding_rate_pct else "none"),
        }

    def funding_paid(self, entry_ms, exit_ms) -> np.ndarray:
        """What a LONG held from ``entry_ms`` to ``exit_ms`` pays in funding, as a fraction of the
        entry price (a SHORT receives it): the recorded rates of the funding times in
        ``(entry, exit]``, else the constant rate times their number."""
        entry_ms = np.asarray(entry_ms, dtype=np.int64)
        exit_ms = np.asarray(exit_ms, dtype=np.int64)
        if self.funding_history is None:
            return self.funding_rate_pct / 100.0 * funding_times(entry_ms, exit_ms)
        times, rates = self.funding_history
        cum = np.concatenate([[0.0], np.cumsum(rates)])
        return (
            cum[np.searchsorted(times, exit_ms, side="right")]
            - cum[np.searchsorted(times, entry_ms, side="right")]
        )


FUNDING_PERIOD_MS = 8 * 3600 * 1000


def funding_times(entry_ms, exit_ms) -> np.ndarray:
    """How many funding times (every 8 hours from 00:00 UTC) lie in ``(entry, exit]``."""
    entry_ms = np.asarray(entry_ms, dtype=np.int64)
    exit_ms = np.asarray(exit_ms, dtype=np.int64)
    return exit_ms // FUNDING_PERIOD_MS - entry_ms // FUNDING_PERIOD_MS


def trade_costs(costs: Costs, is_long, entry_ms, exit_ms) -> np.ndarray:
    """Each trade's total cost as a fraction of the entry price: the round trip, plus funding paid
    by a LONG (received by a SHORT) at every funding time it is held across."""
    is_long = np.asarray(is_long, dtype=bool)
    funding = costs.funding_paid(entry_ms, exit_ms)
    return costs.round_trip_pct / 100.0 + np.where(is_long, funding, -funding)


#: the largest funding-rate file read (Binance's monthly files are about 4 KB)
MAX_FUNDING_BYTES = 20_000_000


def read_funding_file(path) -> tuple[np.ndarray, np.ndarray]:
    """Funding times (epoch ms) and rates (fractions) from Binance's archive files
    (``futures/um/monthly/fundingRate``: ``calc_time, funding_interval_hours, last_funding_rate``),
    a ``.csv`` or a ``.zip`` holding one, or a folder of them; sorted, each time once."""
    import io
    import zipfile
    from pathlib import Path

    from trainer_core import DataError

    path = Path(path).expanduser()
    files = (
        sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".zip")) if path.is_dir() else [path]
    )
    hint = "Give Binance's fundingRate CSV (or its zip) or a folder of them: calc_time, last_funding_rate."
    if not files or not all(f.is_file() for f in files):
        raise DataError(f"evaluation.funding_file {path}: no funding-rate file there.", hint)
    times, rates = [], []
    for f in files:
        try:
            if f.suffix.lower() == ".zip":
                with zipfile.ZipFile(f) as z:
                    members = [m for m in z.infolist() if not m.is_dir()]
                    if len(members) != 1 or members[0].file_size > MAX_FUNDING_BYTES:
                        raise DataError(
                            f"{f}: expected one CSV of at most {MAX_FUNDING_BYTES:,} bytes.", hint
                        )
                    with z.open(members[0]) as member:
                        raw = member.read(MAX_FUNDING_BYTES + 1)
            else:
                if f.stat().st_size > MAX_FUNDING_BYTES:
                    raise DataError(f"{f}: larger than {MAX_FUNDING_BYTES:,} bytes.", hint)
                raw = f.read_bytes()
            import polars as pl

            frame = pl.read_csv(io.BytesIO(raw))
            cols = {c.lower(): c for c in frame.columns}
            t = cols.get("calc_time") or cols.get("timestamp")
            r = cols.get("last_funding_rate") or cols.get("funding_rate")
            if t is None or r is None:
                raise DataError(
                    f"{f}: no calc_time / last_funding_rate columns ({', '.join(frame.columns[:6])}).", hint
                )
            times.append(frame.get_column(t).cast(pl.Int64).to_numpy())
            rates.append(frame.get_column(r).cast(pl.Float64).to_numpy())
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{f}: not a funding-rate file ({type(exc).__name__}: {exc}).", hint) from None
    t_all, r_all = np.concatenate(times), np.concatenate(rates)
    if not np.isfinite(r_all).all() or np.any(np.abs(r_all) > 0.1):
        raise DataError(f"{path}: a funding rate is not a finite fraction below 10 %.", hint)
    t_all, first = np.unique(t_all, return_index=True)
    return t_all, r_all[first]


def _ms(timestamps) -> np.ndarray:
    return np.asarray(timestamps).astype("datetime64[ms]").astype(np.int64)


def simulate(
    rows,
    y_prob,
    timestamps,
    long_return,
    short_return,
    exit_long,
    exit_short,
    *,
    threshold: float | None,
    costs: Costs | float | None = None,
    fee_pct: float | None = None,
) -> dict:
    """The trade simulation over one slice.

    ``rows``: the slice's data rows in order; ``y_prob``: (len(rows), 3) class probabilities;
    ``timestamps``, ``long_return``, ``short_return``: per data row; ``exit_long`` /
    ``exit_short``: per slice row, the data row at whose close that side's position closes.
    A signal is a row predicted LONG (SHORT) with that probability >= ``threshold`` (None: the
    arg-max alone). ``costs``: a `Costs` (``fee_pct`` alone: a round-trip fee in percent). Returns the
    ``simulation`` section of the report; the win rate counts non-overlapping trades, so its
    binomial interval needs no correction for overlap.
    """
    from .stats import wilson_interval

    if not isinstance(costs, Costs):
        costs = Costs(float(costs if costs is not None else (fee_pct or 0.0)))
    rows = np.asarray(rows, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    pred = y_prob.argmax(axis=1) if len(rows) else np.zeros(0, dtype=np.int64)
    conf = y_prob.max(axis=1) if len(rows) else np.zeros(0)
    ok = np.isfinite(long_return[rows]) & np.isfinite(short_return[rows]) if len(rows) else np.zeros(0, bool)
    strong = np.ones(len(rows), bool) if threshold is None else conf >= threshold
    side = np.where(pred == 2, LONG_SIDE, np.where(pred == 0, SHORT_SIDE, NO_SIGNAL))
    sig = np.flatnonzero((side != NO_SIGNAL) & strong & ok)
    taken = sig[run_trades(rows[sig], side[sig], exit_long[sig], exit_short[sig])]
    is_long = side[taken] == LONG_SIDE
    entry_rows = rows[taken]
    exit_rows = np.where(is_long, exit_long[taken], exit_short[taken]).astype(np.int64)
    ms = _ms(timestamps)
    cost = trade_costs(costs, is_long, ms[entry_rows], ms[exit_rows]) if len(taken) else np.zeros(0)
    gross = np.where(is_long, long_return[entry_rows], short_return[entry_rows]).astype(np.float64)
    net = gross - cost
    trades = [
        {
            "side": "LONG" if is_long[i] else "SHORT",
            "entry_time": _iso(timestamps[entry_rows[i]]),
            "exit_time": _iso(timestamps[exit_rows[i]]),
            "gross_return": float(gross[i]),
            "cost": float(cost[i]),
            "net_return": float(net[i]),
        }
        for i in range(len(taken))
    ]
    wins = int((net > 0).sum())
    low, high = wilson_interval(wins, len(net))
    gross_total, cost_total = float(gross.sum()), float(cost.sum())
    return {
        "threshold": None if threshold is None else float(threshold),
        "fee_pct": float(costs.fee_pct),
        "costs": costs.as_dict(),
        "trades": trades,
        "n_trades": len(trades),
        "n_long": int(is_long.sum()),
        "n_short": int((~is_long).sum()),
        "signals": int(len(sig)),
        "win_rate": (wins / len(net)) if len(net) else None,
        "win_rate_wilson": [low, high],
        "win_rate_basis": "non-overlapping trades (one position at a time): binomial, no overlap correction",
        "total_gross_return": gross_total,
        "total_cost": cost_total,
        "cost_sensitivity": [
            {"cost_multiple": k, "total_net_return": gross_total - k * cost_total} for k in (0.0, 1.0, 2.0)
        ],
        **equity_stats(net),
    }


def buy_and_hold(close: np.ndarray, rows, fee_pct: float) -> dict:
    """Buy at the close of the slice's first row, sell at the close of its last, one round trip
    of ``fee_pct`` (fees and slippage; funding is left out)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) < 2:
        return {"gross_return": None, "net_return": None, "max_drawdown": None}
    path = close[rows[0] : rows[-1] + 1] / close[rows[0]]
    gross = float(path[-1] - 1.0)
    drawdown = float(np.max(1.0 - path / np.maximum.accumulate(path)))
    return {"gross_return": gross, "net_return": gross - fee_pct / 100.0, "max_drawdown": drawdown}


def random_entries(
    eligible_rows,
    exit_long,
    exit_short,
    long_return,
    short_return,
    *,
    n_trades: int,
    long_share: float,
    fee_pct: float,
    model_total: float,
    draws: int = 1000,
    seed: int = 0,
    max_offset: int = 1,
) -> dict:
    """Random timing under the same rules: each draw lays back-to-back trades from a random start
    (within the first ``max_offset`` eligible rows) across the slice, each side LONG with
    probability ``long_share``, then keeps ``n_trades`` of them picked at random and sums their
    net returns. ``exit_*`` / ``*_return`` are indexed like ``eligible_rows``.

    ``p_value`` = (1 + draws at or above the model's total) / (1 + draws); ``beats_share`` is the
    share of draws whose total is below the model's.
    """
    eligible_rows = np.asarray(eligible_rows, dtype=np.int64)
    m = len(eligible_rows)
    if n_trades <= 0 or m == 0:
        return {
            "draws": 0,
            "seed": seed,
            "n_trades": int(n_trades),
            "p_value": None,
            "beats_share": None,
            "mean_total_net_return": None,
            "totals_quantiles": None,
            "totals": [],
        }
    rng = np.random.default_rng(seed)
    fee = fee_pct / 100.0
    totals = np.empty(draws)
    short_chains = 0
    chunk = 100
    for start in range(0, draws, chunk):
        d = min(chunk, draws - start)
        pos = rng.integers(0, max(1, min(max_offset, m)), size=d)
        chain_net: list[np.ndarray] = []
        alive = pos < m
        while alive.any():
            p = np.minimum(pos, m - 1)
            is_long = rng.random(d) < long_share
            ret = np.where(is_long, long_return[p], short_return[p]) - fee
            chain_net.append(np.where(alive, ret, np.nan))
            exit_row = np.where(is_long, exit_long[p], exit_short[p])
            nxt = np.searchsorted(eligible_rows, exit_row, side="right")
            pos = np.where(alive, nxt, pos)
            alive = pos < m
        net = np.stack(chain_net, axis=1)  # (d, longest chain), NaN past a chain's end
        keys = np.where(np.isnan(net), np.inf, rng.random(net.shape))
        pick = np.argsort(keys, axis=1)[:, :n_trades]
        chosen = np.take_along_axis(net, pick, axis=1)
        short_chains += int(np.isnan(chosen).any(axis=1).sum())
        totals[start : start + d] = np.nansum(chosen, axis=1)
    at_or_above = int((totals >= model_total - 1e-12).sum())
    return {
        "draws": int(draws),
        "seed": int(seed),
        "n_trades": int(n_trades),
        "long_share": float(long_share),
        "p_value": (1 + at_or_above) / (1 + draws),
        "beats_share": float(np.mean(totals < model_total - 1e-12)),
        "mean_total_net_return": float(totals.mean()),
        "totals_quantiles": {q: float(np.quantile(totals, float(q))) for q in ("0.05", "0.5", "0.95")},
        "draws_with_fewer_trades": short_chains,
        "totals": [float(t) for t in totals],
    }
