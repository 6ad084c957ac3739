"""The checks run on a pair's rows (`PairData`, defined in `contract`) before training."""

from __future__ import annotations

import functools

import numpy as np

from .contract import CLASS_NAMES, N_CLASSES, NO_LABEL, PairData, _iso  # noqa: F401 (their old home)
from .errors import DataError
from .storage import file_sha256  # noqa: F401 (the one implementation; `trainer_core.file_sha256`)


@functools.lru_cache(maxsize=1)
def default_feature_names() -> tuple[str, ...]:
    """The default feature set's columns, asked of the plugin that registers it (the engine names no
    feature): what ``FEATURE_NAMES`` means, and what a training-ready file of the defaults holds."""
    from .features import feature_params, feature_set_name
    from .manifest import default_manifest
    from .plugins import load_plugins

    spec = default_manifest().resolve("BTCUSDT")
    feature_set = load_plugins(entry_points=False, manifest_plugins=False).create(
        "feature-set", feature_set_name(spec)
    )
    return tuple(feature_set.columns(feature_params(spec)))


def __getattr__(name: str):
    if name == "FEATURE_NAMES":  # its old home: the default feature set's columns
        return default_feature_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
