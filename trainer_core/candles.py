"""Reading exchange candles (format detected from the content) and checking them.

Formats: Binance kline CSV (12 columns, with or without a header, open time in ms or µs), the
same inside a zip archive, freqtrade Feather, Parquet, JSON and gzipped JSON files, and
Parquet/CSV/Feather with ``timestamp, open, high, low, close, volume``. A folder is read as one
series from the files named after the pair and the timeframe, as `trainer download` and
`freqtrade download-data` lay them out (see `candle_files`).
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError

OHLCV = ("open", "high", "low", "close", "volume")
BINANCE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
TIME_NAMES = ("timestamp", "date", "datetime", "time", "open_time")
CANDLE_SUFFIXES = (".csv", ".zip", ".parquet", ".feather", ".json", ".gz", ".arrow", ".ipc")
UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
EXPECTED = (
    "Binance kline CSV (12 columns, with or without header), a zip holding one such CSV, a freqtrade "
    "Feather/Parquet/JSON/JSON.gz file, or Parquet/CSV/Feather with timestamp, open, high, low, close, volume"
)
MARKETS = ("spot", "futures-um")
#: freqtrade's files beside a futures pair's candles that hold other series (mark and index
#: prices, funding rates) or trades, never the pair's candles
NOT_CANDLES = frozenset({"mark", "index", "premiumindex", "funding_rate", "fundingrate", "trades"})
QUOTES = (
    "USDT",
    "USDC",
    "FDUSD",
    "BUSD",
    "TUSD",
    "USD",
    "BTC",
    "ETH",
    "BNB",
    "EUR",
    "TRY",
    "BRL",
    "JPY",
    "DAI",
)
NAME_RE = re.compile(r"^(?P<symbol>[A-Za-z0-9_]+)(?:-(?P<tf>[0-9]+[smhdwM]))?(?:-(?P<rest>.+))?$")
PERIOD_RE = re.compile(r"^\d{4}-\d{2}(?:-\d{2})?$")
#: a compressed candle file (a zip's CSV, a freqtrade .json.gz) may unpack to at most this many MB
#: (a month of 1-second klines is about 380 MB) ...
MAX_UNCOMPRESSED_ENV = "TRAINER_MAX_UNCOMPRESSED_MB"
MAX_UNCOMPRESSED_MB = 512
#: ... and, beyond RATIO_FLOOR bytes, to at most this many times its compressed size (exchange
#: candles compress about 3-4:1; a run of zeros, a decompression bomb, about 1000:1)
MAX_RATIO_ENV = "TRAINER_MAX_COMPRESSION_RATIO"
MAX_RATIO = 100
RATIO_FLOOR = 8 << 20


def timeframe_ms(timeframe: str) -> int:
    """A timeframe such as ``1m``, ``5m`` or ``1h`` in milliseconds."""
    return int(timeframe[:-1]) * UNIT_MS[timeframe[-1]]


@dataclass
class Candles:
    """One pair's candles: times in epoch ms (int64) and float64 prices and volume."""

    time_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    sources: list[str] = field(default_factory=list)
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.time_ms)

    def take(self, mask_or_idx) -> Candles:
        """The candles at ``mask_or_idx`` (a boolean mask or row indices), same sources and sha256."""
        return Candles(
            *(getattr(self, k)[mask_or_idx] for k in ("time_ms", *OHLCV)), self.sources, self.sha256
        )


def _to_ms(values: np.ndarray) -> np.ndarray:
    """Epoch integers in s, ms, µs or ns -> ms, decided per value by magnitude."""
    v = values.astype(np.int64)
    out = v.copy()
    out = np.where(v >= 10**17, v // 1_000_000, out)
    out = np.where((v >= 10**14) & (v < 10**17), v // 1_000, out)
    out = np.where(v < 10**11, v * 1_000, out)
    return out


def _frame_to_candles(frame, where: str) -> Candles:
    import polars as pl

    cols = {c.lower().strip(): c for c in frame.columns}
    time_col = next((cols[c] for c in TIME_NAMES if c in cols), None)
    missing = [c for c in OHLCV if c not in cols]
    if time_col is None or missing:
        raise DataError(
            f"{where}: not a candle table (columns: {', '.join(map(str, frame.columns[:12]))}).",
            f"Expected {EXPECTED}.",
        )
    ts = frame.get_column(time_col)
    try:
        if isinstance(ts.dtype, pl.Datetime) or ts.dtype == pl.Date:
            if getattr(ts.dtype, "time_zone", None):
                ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            time_ms = ts.cast(pl.Datetime("ms")).cast(pl.Int64).to_numpy()
        elif ts.dtype.is_integer() or ts.dtype.is_float():
            time_ms = _to_ms(ts.cast(pl.Int64).to_numpy())
        else:
            parsed = ts.cast(pl.String).str.to_datetime(time_unit="ms", strict=True)
            if getattr(parsed.dtype, "time_zone", None):
                parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            time_ms = parsed.cast(pl.Int64).to_numpy()
        values = [frame.get_column(cols[c]).cast(pl.Float64).to_numpy() for c in OHLCV]
    except Exception as exc:
        raise DataError(
            f"{where}: cannot read the candle columns ({str(exc).splitlines()[0]}).", f"Expected {EXPECTED}."
        ) from None
    if ts.null_count() or any(np.isnan(v).any() for v in values):
        raise DataError(
            f"{where}: missing values in the candle columns.", "Every candle needs a time, OHLC and volume."
        )
    return Candles(np.asarray(time_ms, dtype=np.int64), *values, sources=[where])


def _read_csv_bytes(data: bytes, where: str) -> Candles:
    import polars as pl

    text_head = data[:4096].decode("utf-8", errors="replace")
    first = text_head.splitlines()[0] if text_head.strip() else ""
    if not first:
        raise DataError(f"{where}: the file is empty.", f"Expected {EXPECTED}.")
    fields = [f.strip().lower() for f in first.split(",")]
    has_header = not re.fullmatch(r"-?[0-9.]+(e[+-]?[0-9]+)?", fields[0] or "x")
    try:
        frame = pl.read_csv(io.BytesIO(data), has_header=has_header, infer_schema_length=10000)
    except Exception as exc:
        raise DataError(
            f"{where}: not a readable CSV ({str(exc).splitlines()[0]}).", f"Expected {EXPECTED}."
        ) from None
    if not has_header:
        if frame.width == 12 or frame.width == 6:
            frame.columns = (
                list(BINANCE_COLUMNS[: frame.width]) if frame.width == 12 else ["open_time", *OHLCV]
            )
        else:
            raise DataError(
                f"{where}: a CSV without header with {frame.width} columns is not a known candle layout.",
                f"Expected {EXPECTED}.",
            )
    return _frame_to_candles(frame, where)


def _read_json(data: bytes, where: str) -> Candles:
    try:
        rows = json.loads(data)
        arr = np.asarray(rows, dtype=np.float64)
    except Exception:
        raise DataError(f"{where}: not a freqtrade JSON candle file.", f"Expected {EXPECTED}.") from None
    if arr.ndim != 2 or arr.shape[1] < 6 or len(arr) == 0:
        raise DataError(
            f"{where}: a JSON candle file is a list of [time_ms, open, high, low, close, volume] rows.",
            f"Expected {EXPECTED}.",
        )
    return Candles(_to_ms(arr[:, 0]), *(arr[:, i] for i in range(1, 6)), sources=[where])


def _env_limit(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise ConfigError(
            f"{name}={raw!r}: expected a number greater than 0.", f"Unset it for the default ({default:g})."
        )
    return value


def unpack_limits() -> tuple[int, float]:
    """The most bytes a compressed candle file may unpack to, and the largest compression ratio
    allowed beyond `RATIO_FLOOR` bytes: `$TRAINER_MAX_UNCOMPRESSED_MB` (default 512) and
    `$TRAINER_MAX_COMPRESSION_RATIO` (default 100)."""
    return (
        int(_env_limit(MAX_UNCOMPRESSED_ENV, MAX_UNCOMPRESSED_MB) * 1e6),
        _env_limit(MAX_RATIO_ENV, MAX_RATIO),
    )


def _too_big(where: str, size: int, packed: int, exact: bool = True) -> DataError | None:
    """The error for a member that unpacks to `size` bytes (at least, unless `exact`) from `packed`."""
    limit, ratio = unpack_limits()
    what = f"{size / 1e6:,.1f} MB" if exact else f"more than {size / 1e6:,.1f} MB"
    if size > limit:
        return DataError(
            f"{where}: unpacks to {what}, over the {limit / 1e6:,.1f} MB allowed for one candle file "
            "(a decompression bomb, or not a candle file).",
            f"Remove it; if it is genuine, raise ${MAX_UNCOMPRESSED_ENV}.",
        )
    if size > RATIO_FLOOR and size > ratio * max(packed, 1):
        return DataError(
            f"{where}: unpacks to {what} from {packed / 1e6:,.2f} MB, over {ratio:g} times its "
            "compressed size (candles compress about 4:1; this looks like a decompression bomb).",
            f"Remove it; if it is genuine, raise ${MAX_RATIO_ENV}.",
        )
    return None


def _read_capped(stream, where: str, packed: int) -> bytes:
    """All of `stream`, refused as soon as it grows past the limits of `_too_big`."""
    limit, ratio = unpack_limits()
    most = min(limit, max(int(packed * ratio), RATIO_FLOOR))
    chunks, size = [], 0
    while True:
        block = stream.read(1 << 20)
        if not block:
            return b"".join(chunks)
        size += len(block)
        if size > most:
            problem = _too_big(where, size, packed, exact=False)
            assert problem is not None  # past `most` is past one of the two limits
            raise problem
        chunks.append(block)


def _read_zip(path: Path, where: str) -> Candles:
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            names = [m.filename for m in members]
            if len(members) != 1:
                raise DataError(
                    f"{where}: a candle archive holds one CSV; this one holds {len(names)} files"
                    + (f" ({', '.join(names[:5])})" if names else "")
                    + ".",
                    "Unpack it, or keep one CSV per archive as the exchange publishes them.",
                )
            member = members[0]
            inner = f"{where}:{member.filename}"
            if not member.filename.lower().endswith(".csv"):
                raise DataError(
                    f"{inner}: a candle archive holds one CSV file; this member is not a .csv.",
                    "Keep one kline CSV per archive as the exchange publishes them.",
                )
            problem = _too_big(inner, member.file_size, member.compress_size)
            if problem:
                raise problem
            with zf.open(member) as stream:  # never more than the declared size comes out
                data = _read_capped(stream, inner, member.compress_size)
    except zipfile.BadZipFile:
        raise DataError(f"{where}: a damaged zip archive.", "Download it again.") from None
    except (zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise DataError(
            f"{where}: a damaged or unsupported zip archive ({exc}).", "Download it again."
        ) from None
    return _read_csv_bytes(data, inner)


def _gunzip(path: Path, where: str) -> bytes:
    """A gzip file's content, streamed: refused once it unpacks past the limits, never held whole first."""
    import gzip

    packed = path.stat().st_size
    try:
        with gzip.open(path, "rb") as stream:
            return _read_capped(stream, where, packed)
    except (OSError, EOFError, zlib.error):
        raise DataError(f"{where}: a damaged gzip file.", "Download it again.") from None


def read_candle_file(path: Path) -> Candles:
    """One candle file (kline CSV or zip, freqtrade JSON / jsongz, Feather, Parquet, CSV), told apart by its
    first bytes, then its suffix; a `DataError` when it cannot be read. A compressed file is unpacked
    as a stream and refused past `unpack_limits` (a decompression bomb)."""
    import polars as pl

    where = str(path)
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise DataError(f"{where}: the file is empty.", f"Expected {EXPECTED}.")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK"):
        return _read_zip(path, where)
    if head.startswith(b"\x1f\x8b"):  # freqtrade's jsongz format (or a gzipped CSV)
        data = _gunzip(path, where)
        if data.lstrip()[:1] == b"[":
            return _read_json(data, where)
        return _read_csv_bytes(data, where)
    try:
        if head.startswith(b"PAR1"):
            return _frame_to_candles(pl.read_parquet(path), where)
        if head.startswith(b"ARROW1") or suffix in (".feather", ".arrow", ".ipc"):
            return _frame_to_candles(pl.read_ipc(path), where)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"{where}: cannot read the file ({str(exc).splitlines()[0]}).", f"Expected {EXPECTED}."
        ) from None
    if suffix == ".json" or head.lstrip()[:1] == b"[":
        return _read_json(path.read_bytes(), where)
    return _read_csv_bytes(path.read_bytes(), where)


# -- which files hold a pair's candles ------------------------------------------------------------


@dataclass(frozen=True)
class CandleName:
    """What a candle file's name says: ``BTC_USDT_USDT-1m-futures.feather``, ``ETHUSDT-1m-2024-01.zip``."""

    symbol: str  # as written, upper case: BTC_USDT_USDT, ETHUSDT
    timeframe: str | None  # 1m, 5m, ... when the name has one
    period: str | None  # 2024-01 (a monthly archive) or 2024-01-15 (a daily one)
    kind: str | None  # futures, spot, mark, index, funding_rate, ... (freqtrade's candle type)


def parse_candle_name(name: str) -> CandleName | None:
    """The parts of a candle file name, or None for a name that is not one."""
    if name.startswith("."):
        return None
    stem = name
    for ext in (".json.gz", ".csv.gz", *CANDLE_SUFFIXES):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    else:
        return None
    match = NAME_RE.match(stem)
    if not match:
        return None
    rest = match["rest"]
    period = rest if rest and PERIOD_RE.match(rest) else None
    kind = None if period or not rest else rest.lower()
    return CandleName(match["symbol"].upper(), match["tf"], period, kind)


def symbol_market(symbol: str, pair: str) -> str | None:
    """How a file's symbol names `pair`: "any" (BTCUSDT, BTC_USDT), "futures" (freqtrade's contract
    BTC_USDT_USDT), or None when it names another pair."""
    parts = symbol.upper().split("_")
    if "".join(parts) == pair:
        return "any"
    if len(parts) == 3 and parts[1] == parts[2] and parts[0] + parts[1] == pair:
        return "futures"
    return None


def _looks_like_pair(symbol: str) -> bool:
    joined = symbol.replace("_", "")
    return (
        4 <= len(joined) <= 24
        and joined.isalnum()
        and any(joined.endswith(q) or f"_{q}" in symbol for q in QUOTES)
    )


@dataclass
class _Found:
    path: Path
    name: CandleName
    market: str  # spot, futures or any (the name and the folder do not say)


def _scan(folder: Path, pair: str, in_futures: bool) -> list[_Found]:
    found = []
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        name = parse_candle_name(p.name)
        if name is None or name.kind in NOT_CANDLES:
            continue
        how = symbol_market(name.symbol, pair)
        if how is None:
            continue
        if how == "futures" or name.kind == "futures" or in_futures:
            market = "futures"
        elif name.kind == "spot":
            market = "spot"
        else:
            market = "any"
        found.append(_Found(p, name, market))
    return found


def pair_files(
    folder: Path,
    pair: str,
    timeframe: str | None = None,
    market: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[Path]:
    """The files of `folder` that hold `pair`'s candles at `timeframe` (any timeframe when None).

    Looked for in `folder/PAIR/` (what `trainer download` writes), else in `folder` itself
    (``ETHUSDT-1m.parquet``, ``ETHUSDT-1m-2024-01.zip``, freqtrade's ``ETH_USDT-1m.feather``), and
    for futures in `folder/futures/PAIR/`, `folder/futures/` (freqtrade's
    ``ETH_USDT_USDT-1m-futures.feather``) and the futures-named files of `folder`. `market`
    ("spot" or "futures-um") picks one; None takes spot candles when there are any, else futures.
    Files of other timeframes and freqtrade's mark, index and funding-rate files are left out.
    """
    found = _candidates(folder, pair)
    spot = [f for f in found if f.market != "futures"]
    futures = [f for f in found if f.market == "futures"] or [f for f in found if f.market == "any"]
    if market == "spot":
        chosen = spot
    elif market in ("futures", "futures-um"):
        chosen = futures
    else:
        chosen = spot or futures
        if spot and any(f.market == "futures" for f in found) and echo:
            echo(
                f"Note: {pair}: reading the spot candles in {folder}; futures candles are there too "
                f"(the ohlcv loader's data.params.market: futures-um reads those, as does --data {folder / 'futures'})."
            )
    timeframes = sorted({f.name.timeframe for f in chosen if f.name.timeframe}, key=_tf_order)
    if timeframe is not None:
        picked = [f for f in chosen if f.name.timeframe in (None, timeframe)]
        if chosen and not picked:
            raise DataError(
                f"{pair}: no {timeframe} candles for {pair} in {folder} (its files are {', '.join(timeframes)}).",
                f"Set data.timeframe to one of {', '.join(timeframes)}, or add {timeframe} files.",
            )
        chosen = picked
    elif len(timeframes) > 1 and "1m" in timeframes:  # the trainer's own timeframe, when nobody said
        if echo:
            echo(
                f"Note: {pair}: reading the 1m files of {folder} (it also holds {', '.join(t for t in timeframes if t != '1m')})."
            )
        chosen = [f for f in chosen if f.name.timeframe in (None, "1m")]
    elif len(timeframes) > 1:
        raise DataError(
            f"{pair}: {folder} holds {pair} candles of several timeframes ({', '.join(timeframes)}).",
            "Say which one to read with data.timeframe (e.g. --set data.timeframe=1m).",
        )
    return [f.path for f in chosen]


def _tf_order(tf: str) -> int:
    try:
        return timeframe_ms(tf)
    except (KeyError, ValueError):
        return 0


def _candidates(folder: Path, pair: str) -> list[_Found]:
    def sub(*names):
        d = folder.joinpath(*names)
        return d if d.is_dir() else None

    own, fut, fut_own = sub(pair), sub("futures"), sub("futures", pair)
    found = _scan(own, pair, False) if own else []
    if not found:
        found = _scan(folder, pair, False)
    futures = _scan(fut_own, pair, True) if fut_own else []
    if not futures and fut:
        futures = _scan(fut, pair, True)
    seen = {f.path for f in found}
    return found + [f for f in futures if f.path not in seen]


def candle_files(
    path: str | Path,
    pair: str,
    timeframe: str | None = None,
    market: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[Path]:
    """The file itself, or the pair's files in a folder (see `pair_files`; a clear error when there are none)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(
            f"{pair}: candle data not found: {path}.", "Pass --data with a candle file or a folder of them."
        )
    if not path.is_dir():
        return [path]
    if market is not None and market not in (*MARKETS, "futures"):
        raise ConfigError(f"data.params.market: expected one of {', '.join(MARKETS)}, got {market!r}.")
    files = pair_files(path, pair, timeframe, market, echo)
    if not files:
        where = f"{path}, {path / pair}" + (f" or {path / 'futures'}" if market != "spot" else "")
        raise DataError(
            f"{pair}: no {'futures ' if market and market != 'spot' else ''}candle file for {pair} in {where}.",
            f"Name files after the pair and timeframe, e.g. {pair}-1m.parquet, {pair}-1m-2024-01.zip "
            f"(trainer download) or freqtrade's {_freqtrade_name(pair)}-1m.feather.",
        )
    return files


def _freqtrade_name(pair: str) -> str:
    quote = next((q for q in QUOTES if pair.endswith(q) and len(pair) > len(q)), None)
    return f"{pair[: -len(quote)]}_{quote}" if quote else pair


def candle_fingerprint(files: list[Path]) -> str:
    """sha256 of the one file's bytes, or of the files' sha256s in name order."""
    import hashlib

    from .data import file_sha256

    if len(files) == 1:
        return file_sha256(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(file_sha256(f).encode())
    return "sha256:" + h.hexdigest()


def in_date_range(c: Candles, start=None, end=None) -> Candles:
    """The candles from ``start`` (a date, included) to ``end`` (a date, its whole day included),
    as ``data.start`` / ``data.end`` select them."""
    if not (start or end):
        return c
    keep = np.ones(len(c), dtype=bool)
    if start:
        keep &= c.time_ms >= np.datetime64(start, "ms").astype(np.int64)
    if end:
        keep &= c.time_ms < (np.datetime64(end, "ms") + np.timedelta64(1, "D")).astype(np.int64)
    return c.take(keep)


def rows_fingerprint(c: Candles, start=None, end=None) -> str:
    """``sha256:`` of the candles a pair trains on: times and OHLCV of the rows inside
    [``start``, ``end``], whatever file format or other rows hold them. A file that grows past
    ``data.end`` (a freqtrade file refreshed daily) keeps its fingerprint."""
    import hashlib

    rows = in_date_range(c, start, end)
    h = hashlib.sha256()
    for k in ("time_ms", *OHLCV):
        values = getattr(rows, k)
        h.update(np.ascontiguousarray(values, dtype=np.int64 if k == "time_ms" else np.float64).tobytes())
    return "sha256:" + h.hexdigest()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _warn_other_symbol(path: Path, pair: str, inner: list[str], echo: Callable[[str], None]) -> None:
    """A file named after another pair (``ETHUSDT-1m-2024-01.zip`` read as BTCUSDT) is most
    likely the wrong file; its name is the only record of the symbol the candles belong to."""
    for name in (path.name, *inner):
        parsed = parse_candle_name(Path(name).name)
        if parsed and (parsed.timeframe or parsed.period) and _looks_like_pair(parsed.symbol):
            if symbol_market(parsed.symbol, pair) is None:
                echo(
                    f"Warning: {path.name} is named after {parsed.symbol}, not {pair}: "
                    f"check that --pair and --data belong together."
                )
            return


def read_candles(
    path: str | Path,
    pair: str,
    timeframe: str | None = None,
    market: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> Candles:
    """One pair's candles from a file or a folder (see `candle_files`), sorted, each candle once.

    The same candle in two files (a monthly archive beside the daily ones of its days,
    overlapping exports) is read once when both copies agree, with a note through `echo`
    (standard error by default); copies that disagree are an error naming both files.
    """
    echo = echo or _stderr
    files = candle_files(path, pair, timeframe, market, echo)
    parts = [read_candle_file(f) for f in files]
    if len(files) == 1 and Path(path).is_file():
        prefix = f"{files[0]}:"
        inner = [s[len(prefix) :] for s in parts[0].sources if s.startswith(prefix)]  # the CSV inside a zip
        _warn_other_symbol(files[0], pair, inner, echo)
    keys = ("time_ms", *OHLCV)
    merged = Candles(
        *(np.concatenate([getattr(p, k) for p in parts]) for k in keys),
        sources=[s for p in parts for s in p.sources],
    )
    if len(files) > 1:
        origin = np.concatenate([np.full(len(p), i, dtype=np.int32) for i, p in enumerate(parts)])
        order = np.argsort(merged.time_ms, kind="stable")
        merged, origin = merged.take(order), origin[order]  # monthly files in any order
        merged = _drop_copies(merged, origin, files, pair, echo)
    merged.sha256 = candle_fingerprint(files)
    return merged


def _drop_copies(c: Candles, origin: np.ndarray, files: list[Path], pair: str, echo) -> Candles:
    dup = np.flatnonzero((np.diff(c.time_ms) == 0) & (origin[1:] != origin[:-1])) + 1
    if not len(dup):
        return c
    same = np.ones(len(dup), dtype=bool)
    for k in OHLCV:
        values = getattr(c, k)
        same &= values[dup] == values[dup - 1]
    if not same.all():
        i = int(dup[~same][0])
        raise DataError(
            f"{pair}: {int((~same).sum()):,} candle time(s) appear in two files with different values, first at "
            f"{_iso(c.time_ms[i])} in {files[origin[i - 1]].name} and {files[origin[i]].name}.",
            "The files overlap and disagree: keep one of them (download the period again if unsure).",
        )
    names = sorted({files[origin[i - 1]].name for i in dup} | {files[origin[i]].name for i in dup})
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    echo(
        f"Note: {pair}: {len(dup):,} candle(s) are in two files with the same values (overlapping: {shown}); "
        "each is read once."
    )
    keep = np.ones(len(c), dtype=bool)
    keep[dup] = False
    return c.take(keep)


@dataclass
class GapReport:
    """What `check_candles` found missing: the number of gaps and missing candles, the first few, the rows after each."""

    gaps: int
    missing_candles: int
    first_gaps: list[tuple[str, int]]
    breaks: np.ndarray  # row indices that follow a gap

    def as_dict(self) -> dict:
        """The counts and the first gaps, JSON-able (without ``breaks``)."""
        return {"gaps": self.gaps, "missing_candles": self.missing_candles, "first_gaps": self.first_gaps}


def _iso(ms: int) -> str:
    return str(np.datetime64(int(ms), "ms").astype("datetime64[s]")) + "Z"


def iso_time(ms: int) -> str:
    """An epoch-milliseconds candle time as ISO-8601 UTC to the second (``2024-01-01T00:00:00Z``)."""
    return _iso(ms)


def check_candles(c: Candles, timeframe: str, where: str) -> GapReport:
    """Raise on broken candles; return the gaps (steps longer than the timeframe)."""
    n = len(c)
    if n == 0:
        raise DataError(f"{where}: no candles.", "Check the file and the data.start / data.end range.")
    step = timeframe_ms(timeframe)
    diffs = np.diff(c.time_ms)

    def first(mask, what, hint):
        idx = np.flatnonzero(mask)
        if len(idx):
            i = int(idx[0])
            raise DataError(
                f"{where}: {len(idx):,} {what}, first at {_iso(c.time_ms[min(i + 1, n - 1)])} (row {i + 1}).",
                hint,
            )

    first(diffs < 0, "candles out of time order", "Sort the candles by open time.")
    first(diffs == 0, "duplicated candle times", "Remove the duplicates; each open time must appear once.")
    for name in (*OHLCV,):
        bad = ~np.isfinite(getattr(c, name))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "volume" if name == "volume" else f"{name} price"
            raise DataError(
                f"{where}: {int(bad.sum()):,} candle(s) with an infinite {what}, first at {_iso(c.time_ms[i])} (row {i}).",
                "Prices and volumes must be finite numbers: the file is damaged, download it again.",
            )
    for name in ("open", "high", "low", "close"):
        bad = ~(getattr(c, name) > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where}: {int(bad.sum()):,} candle(s) with a {name} price <= 0, first at {_iso(c.time_ms[i])} (row {i}).",
                "Prices must be positive.",
            )
    checks = (
        (c.high < np.maximum(c.open, c.close), "candle(s) with high below open or close"),
        (c.low > np.minimum(c.open, c.close), "candle(s) with low above open or close"),
        (~(c.volume >= 0), "candle(s) with a negative volume"),
    )
    for mask, what in checks:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise DataError(
                f"{where}: {int(mask.sum()):,} {what}, first at {_iso(c.time_ms[i])} (row {i}).",
                "The candles are inconsistent; download them again.",
            )
    irregular = (diffs % step) != 0
    if irregular.any():
        i = int(np.flatnonzero(irregular)[0])
        raise DataError(
            f"{where}: candle times are not on a {timeframe} grid: {_iso(c.time_ms[i])} -> {_iso(c.time_ms[i + 1])}.",
            "Check data.timeframe; it must match the candles.",
        )
    gap_idx = np.flatnonzero(diffs > step)
    missing = (diffs[gap_idx] // step - 1).astype(np.int64)
    return GapReport(
        gaps=len(gap_idx),
        missing_candles=int(missing.sum()),
        first_gaps=[(_iso(c.time_ms[i]), int(m)) for i, m in zip(gap_idx[:5], missing[:5])],
        breaks=gap_idx + 1,
    )


def fill_gaps(c: Candles, timeframe: str) -> tuple[Candles, np.ndarray]:
    """Insert flat zero-volume candles at the previous close; return them and a filled-row mask."""
    step = timeframe_ms(timeframe)
    full = np.arange(c.time_ms[0], c.time_ms[-1] + step, step, dtype=np.int64)
    pos = np.searchsorted(full, c.time_ms)
    present = np.zeros(len(full), dtype=bool)
    present[pos] = True
    src = np.cumsum(present) - 1  # the last real candle at or before each slot
    close = c.close[src]
    out = Candles(
        full,
        np.where(present, c.open[src], close),
        np.where(present, c.high[src], close),
        np.where(present, c.low[src], close),
        close,
        np.where(present, c.volume[src], 0.0),
        c.sources,
        c.sha256,
    )
    return out, ~present


GAP_POLICIES = ("error", "fill", "split")


def gap_error(report: GapReport, where: str) -> DataError:
    """The `DataError` for candles with gaps under ``data.gaps: error``: counts, first gaps, and the other policies."""
    examples = ", ".join(f"{t} ({m:,} missing)" for t, m in report.first_gaps)
    return DataError(
        f"{where}: {report.gaps:,} gap(s) in the candles, {report.missing_candles:,} missing candle(s); first after {examples}.",
        "Set data.gaps to fill (flat zero-volume candles, flagged) or split (no window or label crosses a gap).",
    )


def check_policy(policy: str) -> str:
    """``policy`` when it is one of `GAP_POLICIES`; else a `ConfigError`."""
    if policy not in GAP_POLICIES:
        raise ConfigError(f"data.gaps: expected one of {', '.join(GAP_POLICIES)}, got {policy!r}.")
    return policy
