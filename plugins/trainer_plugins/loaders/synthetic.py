"""Loader `synthetic`: a seeded market simulator, so a demo runs with nothing downloaded.

A log-price random walk whose volatility clusters (an AR(1) log-volatility), with occasional
jumps, and a volume with intraday seasonality that rises with the size of the move. Different
for every pair name, identical on every run for the same name and ``data.params.seed``. Its
candles go through the same feature and label code as real ones.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

from trainer_core import ConfigError, hookimpl, reject_unknown

DEFAULTS = {"rows": 20000, "seed": 0, "start": "2024-01-01"}


def check_params(params) -> dict:
    """``data.params`` checked, defaults filled in: ``rows`` (>= 10), ``seed`` (>= 0), ``start`` (a date)."""
    reject_unknown(params, DEFAULTS, "data.params", "the synthetic loader")
    out = {**DEFAULTS, **dict(params)}
    if isinstance(out["rows"], bool) or not isinstance(out["rows"], int) or out["rows"] < 10:
        raise ConfigError(f"data.params.rows: expected an integer >= 10, got {out['rows']!r}.")
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], int) or out["seed"] < 0:
        raise ConfigError(f"data.params.seed: expected an integer >= 0, got {out['seed']!r}.")
    try:
        np.datetime64(str(out["start"]), "m")
    except ValueError:
        raise ConfigError(f"data.params.start: expected a date YYYY-MM-DD, got {out['start']!r}.") from None
    out["start"] = str(out["start"])
    return out


def simulate(pair: str, rows: int, seed: int = 0, start: str = "2024-01-01", timeframe_ms: int = 60_000):
    """Candles for one pair: (time_ms, open, high, low, close, volume)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng([zlib.crc32(pair.encode()), seed])
    base_price = 10 ** rng.uniform(-0.5, 4.5)
    base_vol = rng.uniform(4e-4, 1.2e-3)  # per-minute volatility, like liquid USDT pairs
    phi = 0.999
    log_vol = lfilter([1.0], [1.0, -phi], rng.normal(0, 0.045, rows))
    sigma = base_vol * np.exp(log_vol - log_vol.mean())
    jumps = (rng.random(rows) < 1 / 4000) * rng.normal(0, 15, rows) * sigma
    drift = lfilter([1.0], [1.0, -0.995], rng.normal(0, 0.01, rows)) * sigma
    log_ret = drift + sigma * rng.standard_t(5, rows) * np.sqrt(3 / 5) + jumps
    close = base_price * np.exp(np.cumsum(log_ret))
    open_ = np.concatenate([[base_price], close[:-1]])
    wick = np.abs(rng.normal(0, 0.6, (2, rows))) * sigma
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) / (1 + wick[1])
    t0 = np.datetime64(start, "ms").astype(np.int64)
    time_ms = t0 + np.arange(rows, dtype=np.int64) * timeframe_ms
    minute_of_day = (time_ms // 60_000) % 1440
    season = 1 + 0.6 * np.sin(2 * np.pi * (minute_of_day / 1440 - 0.25)) ** 2
    volume = rng.uniform(50, 5000) * season * (1 + 40 * np.abs(log_ret)) * rng.lognormal(0, 0.5, rows)
    return time_ms, open_, high, low, close, volume


class SyntheticLoader:
    """A seeded simulated market (volatility clustering, jumps, intraday volume) per pair name."""

    def check(self, params) -> None:
        """Check ``data.params`` (``rows``, ``seed``, ``start``)."""
        check_params(params)

    def fingerprint(self, spec) -> str:
        """sha256 of the simulated candles, as `load` records it."""
        return self._candles(spec)[1].sha256

    def _candles(self, spec):
        from trainer_core import Candles, timeframe_ms

        p = check_params(spec.data.params)
        arrays = simulate(spec.pair, p["rows"], p["seed"], p["start"], timeframe_ms(spec.data.timeframe))
        digest = hashlib.sha256()
        for a in arrays:
            digest.update(np.ascontiguousarray(a).tobytes())
        source = f"synthetic:{spec.pair}?rows={p['rows']}&seed={p['seed']}&start={p['start']}"
        return source, Candles(*arrays, sources=[source], sha256="sha256:" + digest.hexdigest())

    def load(self, spec):
        """The pair's simulated `Candles` (the engine makes the rows with the run's plugins)."""
        return self._candles(spec)[1]


@hookimpl
def trainer_register_loaders(register):
    """Register the ``synthetic`` loader."""
    register("synthetic", SyntheticLoader)
