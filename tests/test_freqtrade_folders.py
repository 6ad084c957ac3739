"""Candle folders as other tools leave them: freqtrade's `user_data/data/binance` (spot and futures,
1m and 5m side by side, mark/index/funding-rate files, the json, jsongz, feather and parquet formats)
and Binance archives mixing monthly and daily zips, read by `trainer prepare` and the ohlcv loader;
Inf prices and a file named after another pair."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trainer_core.candles import read_candles
from trainer_core.errors import DataError
from trainer_core.manifest import default_manifest
from trainer_core.testing import tiny_args

START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SETS = ("--set", "labels.future_window=10", "--set", "features.ma_short=30", "--set", "features.ma_long=120")


def candles(seed: int, minutes: int = 3000, step_min: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * (1 + seed) * np.exp(np.cumsum(rng.normal(0, 1e-3, minutes)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 5e-4, minutes)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 5e-4, minutes)))
    t = START_MS + np.arange(minutes, dtype=np.int64) * 60_000 * step_min
    return pl.DataFrame(
        {
            "t": t,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.uniform(1, 100, minutes),
        }
    )


def freqtrade_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """freqtrade's columns: `date` (UTC, ns as pandas writes it), open, high, low, close, volume."""
    date = pl.from_epoch(frame["t"], time_unit="ms").cast(pl.Datetime("ns")).dt.replace_time_zone("UTC")
    return frame.drop("t").insert_column(0, date.alias("date"))


def write(frame: pl.DataFrame, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "feather":
        freqtrade_frame(frame).write_ipc(path, compression="lz4")
    elif fmt == "parquet":
        freqtrade_frame(frame).write_parquet(path)
    else:
        text = json.dumps(frame.select("t", "open", "high", "low", "close", "volume").rows())
        path.write_bytes(gzip.compress(text.encode()) if fmt == "jsongz" else text.encode())


#: (pair, timeframe, market) -> (file under the folder, seed, step in minutes)
LAYOUT = {
    ("BTCUSDT", "1m", "spot"): ("BTC_USDT-1m.feather", 1, 1),
    ("BTCUSDT", "5m", "spot"): ("BTC_USDT-5m.feather", 2, 5),
    ("BTCUSDT", "1m", "futures-um"): ("futures/BTC_USDT_USDT-1m-futures.feather", 3, 1),
    ("BTCUSDT", "5m", "futures-um"): ("futures/BTC_USDT_USDT-5m-futures.feather", 4, 5),
    ("ETHUSDT", "1m", "spot"): ("ETH_USDT-1m.json", 5, 1),
    ("ETHUSDT", "5m", "spot"): ("ETH_USDT-5m.json", 6, 5),
    ("SOLUSDT", "1m", "spot"): ("SOL_USDT-1m.json.gz", 7, 1),
    ("XRPUSDT", "1m", "spot"): ("XRP_USDT-1m.parquet", 8, 1),
    ("LTCUSDT", "1m", "futures-um"): ("futures/LTC_USDT_USDT-1m-futures.parquet", 9, 1),  # no spot file
}
FORMATS = {".feather": "feather", ".json": "json", ".gz": "jsongz", ".parquet": "parquet"}


@pytest.fixture(scope="module")
def binance(tmp_path_factory) -> Path:
    """`user_data/data/binance` as `freqtrade download-data` leaves it."""
    root = tmp_path_factory.mktemp("user_data") / "data" / "binance"
    for name, seed, step in LAYOUT.values():
        path = root / name
        write(candles(seed, 3000 if step == 1 else 600, step), path, FORMATS[path.suffix])
    # beside the futures candles: other series of the same contract, never its candles
    hourly = candles(20, 50, 60)
    write(hourly, root / "futures" / "BTC_USDT_USDT-1h-mark.feather", "feather")
    write(hourly, root / "futures" / "BTC_USDT_USDT-1h-index.feather", "feather")
    write(candles(21, 10, 480), root / "futures" / "BTC_USDT_USDT-8h-funding_rate.feather", "feather")
    write(hourly, root / "futures" / "LTC_USDT_USDT-1h-mark.feather", "feather")
    pl.DataFrame({"timestamp": [START_MS], "price": [1.0], "amount": [2.0]}).write_ipc(
        root / "BTC_USDT-trades.feather"
    )
    return root


def expected(key) -> tuple[str, pl.DataFrame]:
    name, seed, step = LAYOUT[key]
    return name, candles(seed, 3000 if step == 1 else 600, step)


@pytest.mark.parametrize("key", list(LAYOUT), ids=["-".join(k) for k in LAYOUT])
def test_each_pair_timeframe_and_market_reads_its_own_file(binance, key):
    pair, timeframe, market = key
    name, frame = expected(key)
    notes = []
    c = read_candles(binance, pair, timeframe, market, echo=notes.append)
    assert c.sources == [str(binance / name)]
    assert np.array_equal(c.time_ms, frame["t"].to_numpy())
    np.testing.assert_array_equal(c.close, frame["close"].to_numpy())
    # the plain name and no market: spot when there is a spot file, else the futures contract
    default = read_candles(binance, pair, timeframe, echo=notes.append)
    spot = LAYOUT.get((pair, timeframe, "spot"))
    assert default.sources == [str(binance / (spot or LAYOUT[key])[0])]


def test_prepare_reads_the_folder_by_pair_timeframe_and_market(trainer, binance, tmp_path):
    def prepare(pair, *extra):
        return trainer(
            "prepare", "--pair", pair, "--data", binance, "--output", tmp_path / pair, *SETS, *extra
        )

    result = prepare("BTCUSDT")  # 1m and 5m files side by side: no "duplicated candle times"
    assert result.exit_code == 0, result.output
    assert "BTCUSDT: 3,000 candles -> 2,881 rows" in result.output
    assert "futures candles are there too" in result.output  # and how to read those
    result = prepare("BTCUSDT", "--set", "data.timeframe=5m")
    assert result.exit_code == 0 and "600 candles -> 481 rows" in result.output, result.output
    futures = trainer(
        "prepare", "--pair", "BTCUSDT", "--data", binance / "futures", "--output", tmp_path / "futures", *SETS
    )
    assert futures.exit_code == 0, futures.output
    (spot_file,) = (tmp_path / "BTCUSDT").glob("*_TF-1m_*.feather")
    (futures_file,) = (tmp_path / "futures").glob("*.feather")
    assert not pl.read_ipc(spot_file).equals(pl.read_ipc(futures_file))  # another market, other candles
    for pair in ("ETHUSDT", "SOLUSDT", "XRPUSDT", "LTCUSDT"):
        result = prepare(pair)
        assert result.exit_code == 0 and "3,000 candles -> 2,881 rows" in result.output, (pair, result.output)
    result = prepare("BTCUSDT", "--set", "data.timeframe=15m")
    assert result.exit_code == 2
    assert "no 15m candles for BTCUSDT" in result.output and "its files are 1m, 5m" in result.output
    result = prepare("DOGEUSDT")
    assert result.exit_code == 2 and "no candle file for DOGEUSDT" in result.output
    assert "DOGE_USDT-1m.feather" in result.output  # the hint names freqtrade's file name


def test_ohlcv_loader_reads_the_folder(binance):
    from trainer_core.pipeline import load_pair_data
    from trainer_core.plugins import load_plugins
    from trainer_plugins.loaders.ohlcv import OhlcvLoader

    loader, plugins = OhlcvLoader(), load_plugins(entry_points=False)
    for (pair, timeframe, market), (name, _, _) in LAYOUT.items():
        spec = default_manifest().resolve(
            pair,
            sets=[
                "data.loader=ohlcv",
                f"data.path={binance}",
                f"data.timeframe={timeframe}",
                f"data.params.market={market}",
                "labels.future_window=10",
                "features.ma_short=30",
                "features.ma_long=120",
            ],
        )
        data, _ = load_pair_data(spec, plugins)
        assert data.source == str(binance / name) and len(data) == (
            3000 - 119 if timeframe == "1m" else 600 - 119
        )
        assert loader.fingerprint(spec) == data.sha256
    with pytest.raises(Exception, match="data.params.market: expected one of spot, futures-um"):
        loader.check({"market": "margin"})


def _zip(path: Path, frame: pl.DataFrame) -> None:
    csv = frame.select("t", "open", "high", "low", "close", "volume").write_csv(include_header=False)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(path.with_suffix(".csv").name, csv)


def test_monthly_and_daily_archives_of_the_same_days_read_each_candle_once(tmp_path):
    frame = candles(1, 33 * 1440)  # January and two days of February
    folder = tmp_path / "ETHUSDT"
    folder.mkdir()
    jan = frame.filter(pl.col("t") < START_MS + 31 * 86_400_000)
    _zip(folder / "ETHUSDT-1m-2024-01.zip", jan)
    for day in range(29, 34):  # 2024-01-29 .. 2024-02-02, the first three inside the monthly one
        part = frame.slice((day - 1) * 1440, 1440)
        label = f"2024-01-{day:02d}" if day <= 31 else f"2024-02-{day - 31:02d}"
        _zip(folder / f"ETHUSDT-1m-{label}.zip", part)
    notes = []
    c = read_candles(tmp_path, "ETHUSDT", "1m", echo=notes.append)
    assert np.array_equal(c.time_ms, frame["t"].to_numpy())
    (note,) = notes
    assert "4,320 candle(s) are in two files with the same values" in note
    assert (
        "overlapping: ETHUSDT-1m-2024-01-29.zip, ETHUSDT-1m-2024-01-30.zip, ETHUSDT-1m-2024-01-31.zip, ETHUSDT-1m-2024-01.zip)"
        in note
    )
    # an overlap that disagrees is an error naming both files
    changed = frame.slice(30 * 1440, 1440).with_columns(pl.col("close") * 1.01, pl.col("high") * 1.02)
    _zip(folder / "ETHUSDT-1m-2024-01-31.zip", changed)
    with pytest.raises(
        DataError, match="1,440 candle time.s. appear in two files with different values"
    ) as err:
        read_candles(tmp_path, "ETHUSDT", "1m", echo=notes.append)
    assert "ETHUSDT-1m-2024-01-31.zip and ETHUSDT-1m-2024-01.zip" in err.value.message


def test_infinite_prices_are_refused(trainer, tmp_path):
    frame = candles(1, 200).with_columns(
        pl.when(pl.int_range(pl.len()) == 50).then(float("inf")).otherwise(pl.col("high")).alias("high")
    )
    path = tmp_path / "ETHUSDT-1m.parquet"
    frame.rename({"t": "timestamp"}).write_parquet(path)
    result = trainer("prepare", "--pair", "ETHUSDT", "--data", path, "--output", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert (
        lines[0].startswith("Error: ")
        and "1 candle(s) with an infinite high price, first at 2024-01-01T00:50:00Z" in lines[0]
    )
    assert lines[1].startswith("Hint: ") and len(lines) == 2
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_file_named_after_another_pair_is_warned_about(trainer, binance, tmp_path):
    archive = tmp_path / "ETHUSDT-1m-2024-01.zip"
    _zip(archive, candles(1, 300))
    result = trainer("prepare", "--pair", "BTCUSDT", "--data", archive, "--output", tmp_path / "a", *SETS)
    assert result.exit_code == 0, result.output
    assert "Warning: ETHUSDT-1m-2024-01.zip is named after ETHUSDT, not BTCUSDT" in result.output
    result = trainer(
        "prepare",
        "--pair",
        "BTCUSDT",
        "--data",
        binance / "ETH_USDT-1m.json",
        "--output",
        tmp_path / "b",
        *SETS,
    )
    assert result.exit_code == 0 and "is named after ETH_USDT, not BTCUSDT" in result.output, result.output
    for ok in (binance / "futures" / "BTC_USDT_USDT-1m-futures.feather", binance / "BTC_USDT-1m.feather"):
        result = trainer("prepare", "--pair", "BTCUSDT", "--data", ok, "--output", tmp_path / "c", *SETS)
        assert result.exit_code == 0 and "Warning" not in result.output, result.output


@pytest.mark.slow
@pytest.mark.parametrize(
    "pair, extra",
    [
        ("BTCUSDT", ["--set", "data.params.market=futures-um"]),  # futures, feather, beside 5m and mark files
        ("ETHUSDT", ["--set", "data.timeframe=5m", "--set", "split.validation=0.4"]),  # spot json, 5m
    ],
)
def test_train_from_the_freqtrade_folder(trainer, binance, tmp_path, pair, extra):
    out = tmp_path / "out"
    result = trainer(
        "run",
        "--pair",
        pair,
        "--data",
        binance,
        "--output",
        out,
        "--set",
        "data.loader=ohlcv",
        *tiny_args(),
        *SETS,
        *extra,
    )
    assert result.exit_code == 0, result.output
    folder = f"{pair}-futures" if pair == "BTCUSDT" else pair  # a futures pair's folder names its market
    (marker,) = out.glob(f"{folder}/_SUCCESS.json")
    (meta_path,) = out.glob(f"{folder}/metadata_*.json")
    meta = json.loads(meta_path.read_text())
    name = LAYOUT[(pair, "1m", "futures-um") if pair == "BTCUSDT" else (pair, "5m", "spot")][0]
    assert meta["data"]["source"] == str(binance / name)
