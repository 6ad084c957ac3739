"""Feature set `seed`: the original trainer's 8 features of 1-minute candles.

``high_change``, ``low_change``, ``close_change`` (% from the previous close), ``volume_change``
(% from the previous volume), and price and volume over their ``ma_short`` / ``ma_long`` trailing
means (expanding at the start of a series). Vectorised with cumulative sums.
"""

from __future__ import annotations

import numpy as np

from trainer_core import ConfigError, hookimpl, reject_unknown

COLUMNS = (
    "high_change",
    "low_change",
    "close_change",
    "volume_change",
    "price_to_ma1440",
    "price_to_ma43200",
    "volume_to_ma1440",
    "volume_to_ma43200",
)
DEFAULTS = {"ma_short": 1440, "ma_long": 43200}
#: the trailing means never look further back than this many candles (about two years of 1-minute candles)
MAX_MA = 1_000_000


def seed_params(params) -> dict:
    """``ma_short`` / ``ma_long`` with their defaults, checked."""
    out = {**DEFAULTS, **dict(params or {})}
    for key in ("ma_short", "ma_long"):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MA:
            raise ConfigError(
                f"features.params.{key}: expected a whole number of candles from 1 to {MAX_MA:,}, "
                f"got {value!r}.",
                "The seed's values are ma_short 1440 and ma_long 43200.",
            )
    return out


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
    out = np.empty((max(n - 1, 0), len(COLUMNS)), dtype=np.float32)
    if n < 2:
        return out
    prev_close = close[:-1]
    out[:, 0] = _pct_change(high[1:], prev_close)
    out[:, 1] = _pct_change(low[1:], prev_close)
    out[:, 2] = _pct_change(close[1:], prev_close)
    prev_vol, vol = volume[:-1], volume[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, 3] = np.where(prev_vol > 0, _pct_change(vol, prev_vol), np.where(vol > 0, 100.0, 0.0))
        out[:, 4] = close[1:] / _trailing_mean(close, ma_short)[1:]
        out[:, 5] = close[1:] / _trailing_mean(close, ma_long)[1:]
        for col, length in ((6, ma_short), (7, ma_long)):
            mean = _trailing_mean(volume, length)[1:]
            out[:, col] = np.where(mean > 0, vol / np.where(mean > 0, mean, 1.0), 1.0)
    return out


class SeedFeatures:
    """The original trainer's 8 features (price and volume changes, ratios to two trailing means)."""

    def check(self, params) -> None:
        """Reject unknown ``features.params`` keys and bad moving-average lengths."""
        reject_unknown(params, tuple(DEFAULTS), "features.params", "the seed feature set")
        seed_params(params)

    def feature_params(self, params) -> dict:
        """``ma_short`` and ``ma_long``, their defaults filled in (what the config hash counts)."""
        return seed_params(params)

    def columns(self, params) -> list[str]:
        """The 8 feature names, in order."""
        return list(COLUMNS)

    def warmup(self, params) -> int:
        """1: the first row has no previous candle."""
        return 1  # the previous candle; the trailing means are defined (expanding) from the start

    def history(self, params) -> int:
        """Candles before a row that its trailing means read once they are full length."""
        p = seed_params(params)
        return max(1, p["ma_short"] - 1, p["ma_long"] - 1)

    def compute(self, candles, params) -> np.ndarray:
        """The 8 features of every candle, float32; row 0 is NaN."""
        p = seed_params(params)
        cols = [candles.get_column(c).to_numpy() for c in ("close", "high", "low", "volume")]
        out = np.full((len(candles), len(COLUMNS)), np.nan, dtype=np.float32)
        out[1:] = compute_features(*cols, p["ma_short"], p["ma_long"])
        return out


@hookimpl
def trainer_register_feature_sets(register):
    """Register the ``seed`` feature set."""
    register("seed", SeedFeatures)
