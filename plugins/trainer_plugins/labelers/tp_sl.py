"""Labeler `tp-sl`: the original trainer's take-profit / stop-loss barrier labels.

Entering at ``close[t]`` and scanning candles ``t+1 .. t+future_window``: LONG when the long side
takes profit first, SHORT when the short side does, HOLD otherwise; a candle touching both barriers
of a side counts as its stop. The scan uses sparse tables of running maxima (highs) and minima
(lows) with binary lifting, O(n log future_window), never a loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer_core import NO_LABEL, ConfigError, hookimpl, reject_unknown

SHORT, HOLD, LONG = 0, 1, 2
#: the labeler's params and their defaults (null short side: the long side's)
DEFAULTS = {
    "future_window": 120,
    "take_profit_pct": 1.0,
    "stop_loss_pct": 0.5,
    "short_take_profit_pct": None,
    "short_stop_loss_pct": None,
}
KEYS = tuple(DEFAULTS)
#: candles a label may look ahead: about 70 days of 1-minute candles
MAX_HORIZON = 100_000
#: percent: a take-profit or stop-loss beyond 1000 % never triggers
MAX_PCT = 1000.0
HINT = (
    "tp-sl's labels.params: future_window (candles, 1 to 100,000), take_profit_pct and stop_loss_pct "
    "(percent, > 0 and <= 1,000), short_take_profit_pct and short_stop_loss_pct (the same, or null for "
    "the long side's). See docs/manifest.md."
)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse(key: str, expected: str, value) -> ConfigError:
    kind = "null" if value is None else type(value).__name__
    return ConfigError(f"labels.params.{key}: expected {expected}, got {_shown(value)} ({kind}).", HINT)


def _window(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_HORIZON:
        raise _refuse("future_window", f"an integer >= 1 and <= {MAX_HORIZON:,} (candles)", value)
    return value


def _pct(key: str, value, nullable: bool = False) -> float | None:
    expected = f"a number > 0 and <= {MAX_PCT:,.0f} (percent)" + (" or null" if nullable else "")
    if value is None and nullable:
        return None
    number = value
    if isinstance(number, str):  # YAML 1.1 reads 1e-1 (no dot) as a string
        try:
            number = float(number)
        except ValueError:
            raise _refuse(key, expected, value) from None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise _refuse(key, expected, value)
    try:
        number = float(number)
    except OverflowError:  # an integer beyond any float
        raise _refuse(key, expected, value) from None
    if not 0 < number <= MAX_PCT:  # NaN fails too
        raise _refuse(key, expected, value)
    return number


@dataclass(frozen=True)
class LabelParams:
    """The barrier settings (percentages; the short side defaults to the long side's)."""

    future_window: int = 120
    take_profit_pct: float = 1.0
    stop_loss_pct: float = 0.5
    short_take_profit_pct: float | None = None
    short_stop_loss_pct: float | None = None

    @property
    def short_tp(self) -> float:
        """The short side's take-profit percentage (the long side's unless set)."""
        return self.take_profit_pct if self.short_take_profit_pct is None else self.short_take_profit_pct

    @property
    def short_sl(self) -> float:
        """The short side's stop-loss percentage (the long side's unless set)."""
        return self.stop_loss_pct if self.short_stop_loss_pct is None else self.short_stop_loss_pct

    def as_dict(self) -> dict:
        """The five settings, the short side's resolved."""
        return {
            "future_window": self.future_window,
            "take_profit_pct": self.take_profit_pct,
            "stop_loss_pct": self.stop_loss_pct,
            "short_take_profit_pct": self.short_tp,
            "short_stop_loss_pct": self.short_sl,
        }

    @classmethod
    def from_params(cls, params) -> LabelParams:
        """The settings from ``labels.params``, defaults filled in and each checked against its
        bounds; a bad value is a `ConfigError` naming it."""
        p = {**DEFAULTS, **dict(params or {})}
        return cls(
            _window(p["future_window"]),
            _pct("take_profit_pct", p["take_profit_pct"]),
            _pct("stop_loss_pct", p["stop_loss_pct"]),
            _pct("short_take_profit_pct", p["short_take_profit_pct"], nullable=True),
            _pct("short_stop_loss_pct", p["short_stop_loss_pct"], nullable=True),
        )

    @classmethod
    def from_spec(cls, spec) -> LabelParams:
        """The settings of a `PairSpec` whose ``labels.method`` is tp-sl (its ``labels.params``)."""
        return cls.from_params(spec.labels.get("params") or {})


def settings_of(spec) -> LabelParams:
    """The barriers of a spec (or a recorded spec's ``labels`` mapping): its ``labels.params`` when
    ``labels.method`` is tp-sl, else the defaults (what the seed's reports assume for another labeler)."""
    labels = spec.labels if hasattr(spec, "labels") else spec
    if labels.get("method", "tp-sl") != "tp-sl":
        return LabelParams()
    return LabelParams.from_params(labels.get("params") or {})


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


def pct_code(pct: float) -> int:
    """A percentage in hundredths, as the seed's names write it (0.5 % -> 50)."""
    return int(round(float(pct) * 100))


class TakeProfitStopLoss:
    """The original trainer's barrier labels: take-profit vs stop-loss within future_window candles."""

    def check(self, params) -> None:
        """Reject unknown ``labels`` keys and settings `LabelParams.from_params` cannot read."""
        reject_unknown(params, KEYS, "labels.params", "the tp-sl labeler")
        LabelParams.from_params(params)

    def horizon(self, params) -> int:
        """``future_window``: the candles after ``t`` a label looks at."""
        return LabelParams.from_params(params).future_window

    def tag(self, params) -> str:
        """``FW{fw:03d}_SL{sl:03d}_TP{tp:03d}``, percentages in hundredths (``FW120_SL050_TP100``)."""
        p = LabelParams.from_params(params)
        return (
            f"FW{p.future_window:03d}_SL{pct_code(p.stop_loss_pct):03d}_TP{pct_code(p.take_profit_pct):03d}"
        )

    def label_params(self, params) -> dict:
        """What the data record of their labels (and what prediction checks)."""
        return LabelParams.from_params(params).as_dict()

    def compute(self, candles, params):
        """The barrier labels and the realised long / short returns of every candle."""
        p = LabelParams.from_params(params)
        cols = [candles.get_column(c).to_numpy() for c in ("close", "high", "low")]
        return compute_labels(*cols, p)


@hookimpl
def trainer_register_labelers(register):
    """Register the ``tp-sl`` labeler."""
    register("tp-sl", TakeProfitStopLoss)
