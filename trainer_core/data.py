"""The data contract every loader returns (`PairData`) and the checks run on it before training."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataError
from .storage import file_sha256  # noqa: F401 (the one implementation; `trainer_core.file_sha256`)

FEATURE_NAMES = (
    "high_change",
    "low_change",
    "close_change",
    "volume_change",
    "price_to_ma1440",
    "price_to_ma43200",
    "volume_to_ma1440",
    "volume_to_ma43200",
)
CLASS_NAMES = ("SHORT", "HOLD", "LONG")
N_CLASSES = 3
NO_LABEL = -1


@dataclass
class PairData:
    """One pair's rows: features, labels and where they came from.

    ``timestamps`` datetime64[ms] strictly increasing; ``features`` float32 (n, F) C-contiguous;
    ``labels`` int8 (n,) in {0 SHORT, 1 HOLD, 2 LONG}, -1 for a row without a label (history
    only, never a target). ``long_return`` / ``short_return`` are optional per-row float arrays.
    ``breaks``: rows that follow a gap in time; no window crosses one. None: derived from the
    timestamps (a step longer than the timeframe is a gap).
    """

    timestamps: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    feature_names: tuple
    source: str
    sha256: str
    label_params: dict = field(default_factory=dict)
    long_return: np.ndarray | None = None
    short_return: np.ndarray | None = None
    breaks: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def features_sha256(self) -> str:
        """``sha256:`` and the SHA-256 of the feature matrix's bytes (identical data, identical hash)."""
        return "sha256:" + hashlib.sha256(np.ascontiguousarray(self.features).tobytes()).hexdigest()

    def time_range(self) -> tuple[str, str] | None:
        """The first and last timestamps (ISO-8601), or None for empty data."""
        if len(self) == 0:
            return None
        return _iso(self.timestamps[0]), _iso(self.timestamps[-1])

    def class_counts(self, rows: np.ndarray | None = None) -> dict[str, int]:
        """``{"SHORT": n, "HOLD": n, "LONG": n}`` over all rows, or over ``rows``."""
        labels = self.labels if rows is None else self.labels[rows]
        return {name: int(np.count_nonzero(labels == i)) for i, name in enumerate(CLASS_NAMES)}


def _iso(ts: np.datetime64) -> str:
    return str(np.datetime_as_string(ts.astype("datetime64[ms]"), unit="s")) + "Z"


def validate_pair_data(data: PairData, where: str) -> PairData:
    """Check the contract; return the data with arrays in their canonical dtypes and layout."""
    feats = np.asarray(data.features)
    if feats.ndim != 2:
        raise DataError(f"{where}: features must be a 2-D array (rows, features), got shape {feats.shape}.")
    n, n_feat = feats.shape
    if n_feat != len(data.feature_names):
        raise DataError(
            f"{where}: {n_feat} feature columns but {len(data.feature_names)} feature names.",
            "The loader must return one name per feature column.",
        )
    labels = np.asarray(data.labels)
    if labels.shape != (n,):
        raise DataError(f"{where}: {labels.shape[0] if labels.ndim else 0} labels for {n} feature rows.")
    ts = np.asarray(data.timestamps)
    if ts.shape != (n,):
        raise DataError(f"{where}: {ts.shape[0] if ts.ndim else 0} timestamps for {n} rows.")
    if n == 0:
        raise DataError(
            f"{where}: the data have no rows.", "Check the file, or the data.start/data.end range."
        )

    feats = np.ascontiguousarray(feats, dtype=np.float32)
    finite = np.isfinite(feats)
    if not finite.all():
        bad_rows, bad_cols = np.nonzero(~finite)
        cols = sorted({data.feature_names[c] for c in bad_cols})
        kinds = []
        if np.isnan(feats).any():
            kinds.append("NaN")
        if np.isinf(feats).any():
            kinds.append("Inf")
        raise DataError(
            f"{where}: {len(bad_rows):,} {'/'.join(kinds)} value(s) in column(s) {', '.join(cols)} "
            f"(first at row {int(bad_rows[0])}).",
            "Clean or regenerate the training data (`trainer prepare` writes finite features).",
        )

    valid = (labels == NO_LABEL) | ((labels >= 0) & (labels < 3))
    if not valid.all():
        first = int(np.flatnonzero(~valid)[0])
        raise DataError(
            f"{where}: label values must be 0 (SHORT), 1 (HOLD), 2 (LONG) or -1 (no label); "
            f"row {first} has {labels[first]!r}."
        )
    labels = labels.astype(np.int8, copy=False)

    ts = ts.astype("datetime64[ms]")
    if np.isnat(ts).any():
        first = int(np.flatnonzero(np.isnat(ts))[0])
        raise DataError(f"{where}: timestamp missing at row {first}.")
    if n > 1:
        step = np.diff(ts.astype(np.int64))
        if (step == 0).any():
            first = int(np.flatnonzero(step == 0)[0])
            raise DataError(
                f"{where}: {int((step == 0).sum()):,} duplicated timestamp(s), first {_iso(ts[first])} "
                f"at rows {first} and {first + 1}.",
                "Remove the duplicate rows; each timestamp must appear once.",
            )
        if (step < 0).any():
            first = int(np.flatnonzero(step < 0)[0])
            raise DataError(
                f"{where}: timestamps are out of order at row {first + 1} "
                f"({_iso(ts[first + 1])} comes after {_iso(ts[first])}).",
                "Sort the rows by time; the split is chronological and needs them in order.",
            )
    data.features, data.labels, data.timestamps = feats, labels, ts
    return data
