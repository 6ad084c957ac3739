# PairTrainerStrategy: written by `trainer freqtrade export`; pair_trainer_models.json beside it pins the models.
"""A freqtrade strategy that trades pair-trainer models.

Each pair's model is loaded once in `bot_start`, from the folder pinned in pair_trainer_models.json
and checked against the checksums recorded at export. `populate_indicators` adds p_short, p_hold,
p_long and signal (LONG / SHORT / none) with pair-trainer's own inference code: the whole dataframe
at once in backtesting (`PairModel.predict` on raw candles, as `trainer predict`), the last closed
candle live (`PairModel.predict_latest`). A row without the model's full history gets no prediction.
Entries follow the signal; exits follow the labels' rule: take-profit (minimal_roi), stop-loss
(stoploss) and the time-out after future_window candles (minimal_roi's -1 at that age).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from freqtrade.enums import RunMode
from freqtrade.exceptions import OperationalException
from freqtrade.exchange import timeframe_to_minutes
from freqtrade.strategy import IStrategy
from pandas import DataFrame

logger = logging.getLogger(__name__)

PINS = json.loads(Path(__file__).with_name("pair_trainer_models.json").read_text(encoding="utf-8"))
EXIT = PINS["exit"]
COLUMNS = ("p_short", "p_hold", "p_long")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _candles(dataframe: DataFrame):
    """freqtrade's candles as the polars frame pair-trainer reads (timestamp in UTC, OHLCV)."""
    import polars as pl

    frame = dataframe[["date", "open", "high", "low", "close", "volume"]]
    return pl.from_pandas(frame).rename({"date": "timestamp"})


class PairTrainerStrategy(IStrategy):
    """Trades the signal of each pair's pinned pair-trainer model; exits by its labels' rule."""

    INTERFACE_VERSION = 3

    timeframe = PINS["timeframe"]
    can_short = PINS["can_short"]
    # the candles before the first traded one: the window plus the candles the features read
    startup_candle_count = PINS["startup_candle_count"]
    process_only_new_candles = True
    # take-profit at +TP % of the entry price; from future_window candles on, exit (at that candle's open)
    minimal_roi = {
        "0": EXIT["take_profit_pct"] / 100,
        str(EXIT["future_window"] * timeframe_to_minutes(PINS["timeframe"])): -1,
    }
    stoploss = -EXIT["stop_loss_pct"] / 100
    trailing_stop = False
    use_exit_signal = False
    exit_profit_only = False
    ignore_roi_if_entry_signal = False

    def bot_start(self, **kwargs) -> None:
        """Load every pinned model once, refusing a folder that changed since the export."""
        from trainer_core import load_pair_model

        self.pair_models = {}
        for name, pin in PINS["models"].items():
            folder = Path(pin["model_dir"])
            marker = folder / "_SUCCESS.json"
            if not marker.is_file() or _sha256(marker) != pin["success_sha256"]:
                raise OperationalException(
                    f"{name}: {marker} is missing or changed since `trainer freqtrade export`; "
                    "export again to trade the model that is there now."
                )
            model = load_pair_model(folder)  # checks every model file against _SUCCESS.json
            model.decision = dict(pin["decision"])
            self.pair_models[name] = model
            logger.info("pair-trainer: %s -> %s (%s)", name, model.tag, folder)

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """p_short, p_hold, p_long and signal per candle with a full history (NaN / none before)."""
        model = self.pair_models.get(metadata["pair"])
        if model is None:
            raise OperationalException(
                f"{metadata['pair']} has no pinned pair-trainer model; pinned: {', '.join(self.pair_models)}."
            )
        for column in COLUMNS:
            dataframe[column] = np.nan
        dataframe["signal"] = "none"
        if len(dataframe) < model.required_history:
            return dataframe
        live = self.config.get("runmode") in (RunMode.LIVE, RunMode.DRY_RUN)
        if live:  # the last closed candle only: freqtrade's dataframe holds closed candles
            latest = model.predict_latest(_candles(dataframe.tail(model.required_history)))
            last = dataframe.index[-1]
            for column in (*COLUMNS, "signal"):
                dataframe.loc[last, column] = latest[column]
            return dataframe
        predictions = model.predict(_candles(dataframe), where=metadata["pair"]).to_pandas()
        at = dataframe["date"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
        got = predictions["timestamp"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
        rows = np.searchsorted(at, got)  # every prediction is at one of the dataframe's candles
        for column in COLUMNS:
            values = np.full(len(dataframe), np.nan)
            values[rows] = predictions[column].to_numpy(dtype=np.float64)
            dataframe[column] = values
        signal = np.full(len(dataframe), "none", dtype=object)
        signal[rows] = predictions["signal"].to_numpy()
        dataframe["signal"] = signal
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """Enter long on LONG, short on SHORT (futures only)."""
        dataframe["enter_long"] = (dataframe["signal"] == "LONG").astype(int)
        if self.can_short:
            dataframe["enter_short"] = (dataframe["signal"] == "SHORT").astype(int)
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        """No exit signal: minimal_roi and stoploss close every trade."""
        dataframe["exit_long"] = 0
        dataframe["exit_short"] = 0
        return dataframe
