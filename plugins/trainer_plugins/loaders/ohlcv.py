"""Loader `ohlcv`: raw 1-minute candles turned into the seed's features and labels in memory.

Reads what `trainer prepare` reads (Binance kline CSV or zip, freqtrade Feather/JSON, Parquet/CSV
with timestamp, open, high, low, close, volume; a file or a folder of the pair's files) and
applies the same feature and label code, so both paths train on identical data.
"""

from __future__ import annotations

from trainer_core import ConfigError, hookimpl, reject_unknown


class OhlcvLoader:
    """1-minute candles (Binance, freqtrade, Parquet/CSV) -> features and labels, in memory."""

    def check(self, params) -> None:
        reject_unknown(params, (), "data.params", "the ohlcv loader")

    def fingerprint(self, spec) -> str:
        """sha256 of the candle bytes, as `load` records it, without parsing them."""
        from trainer_core.candles import candle_files, candle_fingerprint

        return candle_fingerprint(candle_files(spec.data_path, spec.pair))

    def load(self, spec):
        from trainer_core.candles import read_candles
        from trainer_core.features import pair_data_from_candles

        if spec.data_path is None:
            raise ConfigError(f"{spec.pair}: the ohlcv loader needs data.path (a candle file or folder).")
        candles = read_candles(spec.data_path, spec.pair)
        return pair_data_from_candles(candles, spec)


@hookimpl
def trainer_register_loaders(register):
    register("ohlcv", OhlcvLoader)
