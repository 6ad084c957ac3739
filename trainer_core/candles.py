"""Reading exchange candles (format detected from the content) and checking them.

Formats: Binance kline CSV (12 columns, with or without a header, open time in ms or µs), the
same inside a zip archive, freqtrade Feather and JSON files, and Parquet/CSV/Feather with
``timestamp, open, high, low, close, volume``. A folder is read as one series from every file
whose name starts with the pair.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError

OHLCV = ("open", "high", "low", "close", "volume")
BINANCE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
    "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)
TIME_NAMES = ("timestamp", "date", "datetime", "time", "open_time")
CANDLE_SUFFIXES = (".csv", ".zip", ".parquet", ".feather", ".json", ".arrow", ".ipc")
UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
EXPECTED = (
    "Binance kline CSV (12 columns, with or without header), a zip holding one such CSV, a freqtrade "
    "Feather/JSON file, or Parquet/CSV/Feather with timestamp, open, high, low, close, volume"
)


def timeframe_ms(timeframe: str) -> int:
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

    def take(self, mask_or_idx) -> "Candles":
        return Candles(*(getattr(self, k)[mask_or_idx] for k in ("time_ms", *OHLCV)), self.sources, self.sha256)


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
        raise DataError(f"{where}: cannot read the candle columns ({str(exc).splitlines()[0]}).",
                        f"Expected {EXPECTED}.") from None
    if ts.null_count() or any(np.isnan(v).any() for v in values):
        raise DataError(f"{where}: missing values in the candle columns.", "Every candle needs a time, OHLC and volume.")
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
        raise DataError(f"{where}: not a readable CSV ({str(exc).splitlines()[0]}).", f"Expected {EXPECTED}.") from None
    if not has_header:
        if frame.width == 12 or frame.width == 6:
            frame.columns = list(BINANCE_COLUMNS[: frame.width]) if frame.width == 12 else ["open_time", *OHLCV]
        else:
            raise DataError(
                f"{where}: a CSV without header with {frame.width} columns is not a known candle layout.",
                f"Expected {EXPECTED}.",
            )
    return _frame_to_candles(frame, where)


def _read_json(path: Path, where: str) -> Candles:
    try:
        rows = json.loads(path.read_text())
        arr = np.asarray(rows, dtype=np.float64)
    except Exception:
        raise DataError(f"{where}: not a freqtrade JSON candle file.", f"Expected {EXPECTED}.") from None
    if arr.ndim != 2 or arr.shape[1] < 6 or len(arr) == 0:
        raise DataError(f"{where}: a JSON candle file is a list of [time_ms, open, high, low, close, volume] rows.",
                        f"Expected {EXPECTED}.")
    return Candles(_to_ms(arr[:, 0]), *(arr[:, i] for i in range(1, 6)), sources=[where])


def read_candle_file(path: Path) -> Candles:
    import polars as pl

    where = str(path)
    suffix = path.suffix.lower()
    head = path.read_bytes()[:8] if path.exists() else b""
    if path.stat().st_size == 0:
        raise DataError(f"{where}: the file is empty.", f"Expected {EXPECTED}.")
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise DataError(
                        f"{where}: a candle archive holds one CSV; this one holds {len(names)} files"
                        + (f" ({', '.join(names[:5])})" if names else "") + ".",
                        "Unpack it, or keep one CSV per archive as the exchange publishes them.",
                    )
                return _read_csv_bytes(zf.read(names[0]), f"{where}:{names[0]}")
        except zipfile.BadZipFile:
            raise DataError(f"{where}: a damaged zip archive.", "Download it again.") from None
    try:
        if head.startswith(b"PAR1"):
            return _frame_to_candles(pl.read_parquet(path), where)
        if head.startswith(b"ARROW1") or suffix in (".feather", ".arrow", ".ipc"):
            return _frame_to_candles(pl.read_ipc(path), where)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{where}: cannot read the file ({str(exc).splitlines()[0]}).", f"Expected {EXPECTED}.") from None
    if suffix == ".json" or head.lstrip()[:1] == b"[":
        return _read_json(path, where)
    return _read_csv_bytes(path.read_bytes(), where)


def pair_files(folder: Path, pair: str) -> list[Path]:
    """Files named after the pair: ``ETHUSDT-1m.parquet``, ``ETHUSDT-1m-2024-01.zip``, ``ETH_USDT-1m.feather``."""
    files = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in CANDLE_SUFFIXES:
            continue
        name = p.name.upper().replace("_", "")
        if name.startswith(pair) and not name[len(pair):len(pair) + 1].isalnum():
            files.append(p)
    return files


def candle_files(path: str | Path, pair: str) -> list[Path]:
    """The file itself, or the pair's files in a folder (a clear error when there are none)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{pair}: candle data not found: {path}.", "Pass --data with a candle file or a folder of them.")
    if not path.is_dir():
        return [path]
    files = pair_files(path, pair)
    if not files:
        raise DataError(
            f"{pair}: no candle file for {pair} in {path}.",
            f"Name files after the pair, e.g. {pair}-1m.parquet or {pair}-1m-2024-01.zip.",
        )
    return files


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


def read_candles(path: str | Path, pair: str) -> Candles:
    files = candle_files(path, pair)
    parts = [read_candle_file(f) for f in files]
    keys = ("time_ms", *OHLCV)
    merged = Candles(*(np.concatenate([getattr(p, k) for p in parts]) for k in keys),
                     sources=[s for p in parts for s in p.sources])
    if len(files) > 1:
        order = np.argsort(merged.time_ms, kind="stable")
        merged = merged.take(order)  # monthly files in any order; duplicates are caught by the checks
    merged.sha256 = candle_fingerprint(files)
    return merged


@dataclass
class GapReport:
    gaps: int
    missing_candles: int
    first_gaps: list[tuple[str, int]]
    breaks: np.ndarray  # row indices that follow a gap

    def as_dict(self) -> dict:
        return {"gaps": self.gaps, "missing_candles": self.missing_candles, "first_gaps": self.first_gaps}


def _iso(ms: int) -> str:
    return str(np.datetime64(int(ms), "ms").astype("datetime64[s]")) + "Z"


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
            raise DataError(f"{where}: {len(idx):,} {what}, first at {_iso(c.time_ms[min(i + 1, n - 1)])} (row {i + 1}).", hint)

    first(diffs < 0, "candles out of time order", "Sort the candles by open time.")
    first(diffs == 0, "duplicated candle times", "Remove the duplicates; each open time must appear once.")
    for name in ("open", "high", "low", "close"):
        bad = ~(getattr(c, name) > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: {int(bad.sum()):,} candle(s) with a {name} price <= 0, first at {_iso(c.time_ms[i])} (row {i}).",
                            "Prices must be positive.")
    checks = (
        (c.high < np.maximum(c.open, c.close), "candle(s) with high below open or close"),
        (c.low > np.minimum(c.open, c.close), "candle(s) with low above open or close"),
        (~(c.volume >= 0), "candle(s) with a negative volume"),
    )
    for mask, what in checks:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise DataError(f"{where}: {int(mask.sum()):,} {what}, first at {_iso(c.time_ms[i])} (row {i}).",
                            "The candles are inconsistent; download them again.")
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
    out = Candles(full, np.where(present, c.open[src], close), np.where(present, c.high[src], close),
                  np.where(present, c.low[src], close), close, np.where(present, c.volume[src], 0.0),
                  c.sources, c.sha256)
    return out, ~present


GAP_POLICIES = ("error", "fill", "split")


def gap_error(report: GapReport, where: str) -> DataError:
    examples = ", ".join(f"{t} ({m:,} missing)" for t, m in report.first_gaps)
    return DataError(
        f"{where}: {report.gaps:,} gap(s) in the candles, {report.missing_candles:,} missing candle(s); first after {examples}.",
        "Set data.gaps to fill (flat zero-volume candles, flagged) or split (no window or label crosses a gap).",
    )


def check_policy(policy: str) -> str:
    if policy not in GAP_POLICIES:
        raise ConfigError(f"data.gaps: expected one of {', '.join(GAP_POLICIES)}, got {policy!r}.")
    return policy
