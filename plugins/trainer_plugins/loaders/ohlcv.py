"""Loader `ohlcv`: raw candles read from files; the engine turns them into the pair's features and labels.

Reads what `trainer prepare` reads (Binance kline CSV or zip, freqtrade Feather/Parquet/JSON,
Parquet/CSV with timestamp, open, high, low, close, volume; a file, a folder of the pair's
files, or a folder holding one folder per pair as `trainer download` writes it, or freqtrade's
data folder) and applies the same feature and label code, so both paths train on identical data.
"""

from __future__ import annotations

from trainer_core import ConfigError, hookimpl, reject_unknown

MARKETS = ("spot", "futures-um")


def market_param(params) -> str | None:
    """`data.params.market`: which candles of a folder holding both spot and futures (default: spot)."""
    market = dict(params or {}).get("market")
    if market is not None and market not in MARKETS:
        raise ConfigError(
            f"data.params.market: expected one of {', '.join(MARKETS)} or null, got {market!r}.",
            "spot reads BTCUSDT / BTC_USDT files, futures-um freqtrade's BTC_USDT_USDT-…-futures files.",
        )
    return market


class OhlcvLoader:
    """1-minute candles (Binance, freqtrade, Parquet/CSV) -> features and labels, in memory.

    ``data.params.market`` (``spot`` or ``futures-um``, default: spot when a folder holds both)
    picks the candles of a folder holding both; ``data.timeframe`` picks the files of that
    timeframe.
    """

    def check(self, params) -> None:
        """Reject unknown ``data.params`` keys and an unknown ``market``."""
        reject_unknown(params, ("market",), "data.params", "the ohlcv loader")
        market_param(params)

    def fingerprint(self, spec) -> str:
        """sha256 of the candles inside ``data.start``..``data.end``, as `load` records it: a file
        that grows past ``data.end`` keeps its fingerprint, so a batch does not retrain the pair."""
        return self._candles(spec, quiet=True).sha256

    def _candles(self, spec, quiet: bool = False):
        from trainer_core import read_candles, rows_fingerprint

        if spec.data_path is None:
            raise ConfigError(f"{spec.pair}: the ohlcv loader needs data.path (a candle file or folder).")
        candles = read_candles(
            spec.data_path,
            spec.pair,
            spec.data.timeframe,
            market_param(spec.data.params),
            echo=(lambda line: None) if quiet else None,
        )
        candles.sha256 = rows_fingerprint(candles, spec.data.start, spec.data.end)
        return candles

    def load(self, spec):
        """The pair's `Candles` from ``data.path`` (the engine makes the rows with the run's plugins),
        fingerprinted by the rows inside ``data.start``..``data.end``."""
        return self._candles(spec)


@hookimpl
def trainer_register_loaders(register):
    """Register the ``ohlcv`` loader."""
    register("ohlcv", OhlcvLoader)
