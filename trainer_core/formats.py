"""The seed's training-ready format: its file-name pattern and reading its tables with polars."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import DataError

NAME_RE = re.compile(
    r"^(?P<pair>[A-Z0-9]+)_TF-(?P<tf>[0-9]+[smhdw])__FW-(?P<fw>[0-9]+)__SL-(?P<sl>[0-9]+)__TP-(?P<tp>[0-9]+)"
    r"__training_ready\.(?P<ext>feather|parquet|csv)$"
)


def pct_from_code(code: str) -> float:
    """``"050"`` (hundredths of a percent, as in file names) -> 0.5."""
    return int(code) / 100.0


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
