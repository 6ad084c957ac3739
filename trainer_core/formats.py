"""Reading a data table (Feather, Parquet or CSV) with polars, for the loaders and prediction."""

from __future__ import annotations

from pathlib import Path

from .errors import DataError


def read_table(path: Path):
    """A Feather, Parquet or CSV table as a polars DataFrame (a `DataError` when it cannot be read)."""
    import polars as pl

    suffix = path.suffix.lower()
    readers = {
        ".feather": ("Feather (Arrow IPC)", pl.read_ipc),
        ".ipc": ("Feather (Arrow IPC)", pl.read_ipc),
        ".arrow": ("Feather (Arrow IPC)", pl.read_ipc),
        ".parquet": ("Parquet", pl.read_parquet),
        ".csv": ("CSV", pl.read_csv),
    }
    if suffix not in readers:
        raise DataError(
            f"Cannot read {path.name}: unknown file type {suffix or '(none)'}.",
            "Use a .feather, .parquet or .csv file with the training-ready columns.",
        )
    kind, reader = readers[suffix]
    try:
        return reader(path)
    except Exception as exc:
        raise DataError(
            f"Cannot read {path} as {kind}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}.",
            f"Check that the file is a complete {kind} file with the training-ready columns.",
        ) from None
