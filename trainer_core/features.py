"""From 1-minute candles to the seed's 8 features, SHORT/HOLD/LONG labels and realised returns.

Everything is vectorised over rows. The barrier scan uses sparse tables of running maxima
(of highs) and minima (of lows): for each row, the first candle within the horizon that touches
a barrier is found by binary lifting in log2(future_window) steps, never by a loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import FEATURE_NAMES, NO_LABEL

SHORT, HOLD, LONG = 0, 1, 2


@dataclass(frozen=True)
class LabelParams:
    future_window: int = 120
    take_profit_pct: float = 1.0
    stop_loss_pct: float = 0.5
    short_take_profit_pct: float | None = None
    short_stop_loss_pct: float | None = None

    @property
    def short_tp(self) -> float:
        return self.take_profit_pct if self.short_take_profit_pct is None else self.short_take_profit_pct

    @property
    def short_sl(self) -> float:
        return self.stop_loss_pct if self.short_stop_loss_pct is None else self.short_stop_loss_pct

    def as_dict(self) -> dict:
        return {
            "future_window": self.future_window,
            "take_profit_pct": self.take_profit_pct,
            "stop_loss_pct": self.stop_loss_pct,
            "short_take_profit_pct": self.short_tp,
            "short_stop_loss_pct": self.short_sl,
        }

    @classmethod
    def from_spec(cls, spec) -> "LabelParams":
        lab = spec.labels
        return cls(lab.future_window, lab.take_profit_pct, lab.stop_loss_pct,
                   lab.short_take_profit_pct, lab.short_stop_loss_pct)


def _pct_change(now: np.ndarray, prev: np.ndarray) -> np.ndarray:
    return (now - prev) / prev * 100.0


def _trailing_mean(values: np.ndarray, length: int) -> np.ndarray:
    """Mean of values[t-length+1 .. t], over the values available so far at the start (expanding)."""
    csum = np.cumsum(values, dtype=np.float64)
    out = csum.copy()
    if len(values) > length:
        out[length:] -= csum[:-length]
    counts = np.minimum(np.arange(1, len(values) + 1), length)
    return out / counts


def compute_features(close, high, low, volume, ma_short: int = 1440, ma_long: int = 43200) -> np.ndarray:
    """The 8 features of rows 1..n-1 (row 0 has no previous candle), float32 (n-1, 8).

    ``volume_change`` after a zero-volume candle is 0 when the volume stays 0 and +100 otherwise;
    a volume ratio whose moving average is 0 (only zero-volume candles so far) is 1.
    """
    close = np.asarray(close, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    volume = np.asarray(volume, dtype=np.float64)
    n = len(close)
    out = np.empty((max(n - 1, 0), len(FEATURE_NAMES)), dtype=np.float32)
    if n < 2:
        return out
    prev_close = close[:-1]
    out[:, 0] = _pct_change(high[1:], prev_close)
    out[:, 1] = _pct_change(low[1:], prev_close)
    out[:, 2] = _pct_change(close[1:], prev_close)
    prev_vol, vol = volume[:-1], volume[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        vchange = np.where(prev_vol > 0, _pct_change(vol, prev_vol), np.where(vol > 0, 100.0, 0.0))
        out[:, 3] = vchange
        out[:, 4] = close[1:] / _trailing_mean(close, ma_short)[1:]
        out[:, 5] = close[1:] / _trailing_mean(close, ma_long)[1:]
        for col, length in ((6, ma_short), (7, ma_long)):
            mean = _trailing_mean(volume, length)[1:]
            out[:, col] = np.where(mean > 0, vol / np.where(mean > 0, mean, 1.0), 1.0)
    return out


def _sparse_table(values: np.ndarray, levels: int, op) -> list[np.ndarray]:
    """table[p][i] = op(values[i .. i + 2**p - 1]) (clipped at the end)."""
    tables = [values]
    for p in range(1, levels):
        prev = tables[-1]
        step = 1 << (p - 1)
        nxt = prev.copy()
        nxt[:-step] = op(prev[:-step], prev[step:])
        tables.append(nxt)
    return tables


def _first_touch(tables, starts: np.ndarray, threshold: np.ndarray, horizon: int, above: bool) -> np.ndarray:
    """Offset k in 1..horizon of the first candle after each start touching the threshold;
    horizon + 1 where none does. ``above``: value >= threshold (highs), else <= (lows)."""
    clear = np.zeros(len(starts), dtype=np.int64)  # candles known not to touch
    last = len(tables[0]) - 1
    for p in range(len(tables) - 1, -1, -1):
        size = 1 << p
        can = clear + size <= horizon
        pos = np.minimum(starts + 1 + clear, last)
        block = tables[p][pos]
        untouched = block < threshold if above else block > threshold
        clear = np.where(can & untouched, clear + size, clear)
    return clear + 1  # horizon + 1 when no candle in the horizon touches


def compute_labels(close, high, low, params: LabelParams):
    """Labels and realised returns for every candle, per the barrier rules.

    Returns ``(labels int8, long_return float64, short_return float64)``; the last
    ``future_window`` candles have label -1 and NaN returns. Returns are fractions (0.01 = 1 %).
    """
    close = np.asarray(close, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    n = len(close)
    fw = int(params.future_window)
    labels = np.full(n, NO_LABEL, dtype=np.int8)
    long_ret = np.full(n, np.nan)
    short_ret = np.full(n, np.nan)
    m = n - fw  # rows with a full horizon
    if m <= 0:
        return labels, long_ret, short_ret
    levels = max(1, int(np.floor(np.log2(fw))) + 1)
    highs = _sparse_table(high, levels, np.maximum)
    lows = _sparse_table(low, levels, np.minimum)
    rows = np.arange(m)
    entry = close[:m]
    tp, sl = params.take_profit_pct / 100.0, params.stop_loss_pct / 100.0
    stp, ssl = params.short_tp / 100.0, params.short_sl / 100.0
    long_tp = _first_touch(highs, rows, entry * (1 + tp), fw, above=True)
    long_sl = _first_touch(lows, rows, entry * (1 - sl), fw, above=False)
    short_tp = _first_touch(lows, rows, entry * (1 - stp), fw, above=False)
    short_sl = _first_touch(highs, rows, entry * (1 + ssl), fw, above=True)
    none = fw + 1
    long_wins = (long_tp < long_sl) & (long_tp < none)  # same candle: the stop counts
    short_wins = (short_tp < short_sl) & (short_tp < none)
    lab = np.full(m, HOLD, dtype=np.int8)
    lab[long_wins & (~short_wins | (long_tp < short_tp))] = LONG
    lab[short_wins & (~long_wins | (short_tp < long_tp))] = SHORT
    labels[:m] = lab

    end_move = close[fw:] / entry - 1.0
    long_stopped = (long_sl <= long_tp) & (long_sl < none)
    short_stopped = (short_sl <= short_tp) & (short_sl < none)
    long_ret[:m] = np.where(long_wins, tp, np.where(long_stopped, -sl, end_move))
    short_ret[:m] = np.where(short_wins, stp, np.where(short_stopped, -ssl, -end_move))
    return labels, long_ret, short_ret


def pair_data_from_candles(candles, spec, source: str | None = None):
    """Candles -> `PairData` with the run's label and feature settings and its gap policy."""
    from .candles import check_candles, check_policy, fill_gaps, gap_error, timeframe_ms
    from .data import PairData

    where = f"{spec.pair} ({source or ', '.join(candles.sources[:3])})"
    timeframe = spec.data.timeframe
    if spec.data.start or spec.data.end:
        keep = np.ones(len(candles), dtype=bool)
        if spec.data.start:
            keep &= candles.time_ms >= np.datetime64(spec.data.start, "ms").astype(np.int64)
        if spec.data.end:
            keep &= candles.time_ms < (np.datetime64(spec.data.end, "ms") + np.timedelta64(1, "D")).astype(np.int64)
        candles = candles.take(keep)
    report = check_candles(candles, timeframe, where)
    policy = check_policy(spec.data.gaps)
    bounds = [0, len(candles)]
    if report.gaps:
        if policy == "error":
            raise gap_error(report, where)
        if policy == "fill":
            candles, filled = fill_gaps(candles, timeframe)
            bounds = [0, len(candles)]
        else:
            bounds = [0, *report.breaks.tolist(), len(candles)]
    filled = filled if report.gaps and policy == "fill" else np.zeros(len(candles), dtype=bool)
    segments = list(zip(bounds[:-1], bounds[1:]))
    params = LabelParams.from_spec(spec)
    ma_short, ma_long = spec.features.ma_short, spec.features.ma_long
    parts = {"ts": [], "feat": [], "lab": [], "lr": [], "sr": []}
    breaks = []
    rows = 0
    for lo, hi in segments:
        if hi - lo < 2:
            continue
        seg = candles.take(slice(lo, hi))
        if rows:
            breaks.append(rows)
        feats = compute_features(seg.close, seg.high, seg.low, seg.volume, ma_short, ma_long)
        labels, long_ret, short_ret = compute_labels(seg.close, seg.high, seg.low, params)
        labels = labels.copy()
        labels[filled[lo:hi]] = NO_LABEL  # a filled candle is history, never a target
        parts["ts"].append(seg.time_ms[1:])
        parts["feat"].append(feats)
        parts["lab"].append(labels[1:])
        parts["lr"].append(long_ret[1:])
        parts["sr"].append(short_ret[1:])
        rows += hi - lo - 1
    if not rows:
        from .errors import DataError

        raise DataError(f"{where}: too few candles to compute features (need at least 2 in a row).")
    return PairData(
        timestamps=np.concatenate(parts["ts"]).astype("datetime64[ms]"),
        features=np.ascontiguousarray(np.concatenate(parts["feat"])),
        labels=np.concatenate(parts["lab"]),
        feature_names=FEATURE_NAMES,
        source=source or ", ".join(candles.sources),
        sha256=candles.sha256,
        label_params={**params.as_dict(), "ma_short": ma_short, "ma_long": ma_long},
        long_return=np.concatenate(parts["lr"]),
        short_return=np.concatenate(parts["sr"]),
        breaks=np.asarray(breaks, dtype=np.int64),
        extra={
            "timestamps_in_file": True,
            "candles": len(candles),
            "gaps": report.as_dict(),
            "gap_policy": policy,
            "filled_candles": int(filled.sum()),
            "segments": len([1 for lo, hi in segments if hi - lo >= 2]),
            "timeframe_ms": timeframe_ms(timeframe),
        },
    )
