"""`trainer prepare`: candles -> the seed's training-ready Feather file (plus realised returns)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from .data import PairData
from .errors import StorageError
from .manifest import training_ready_name


def training_ready_filename(spec) -> str:
    """The training-ready Feather file name for this spec's pair and label settings: the seed's
    ``{PAIR}_TF-1m__FW-120__SL-050__TP-100__training_ready.feather`` for the seed's barrier labels,
    ``{PAIR}_TF-1m__{label_tag}__training_ready.feather`` for another labeler's."""
    lab = spec.labels
    if spec.label_tag is not None and spec.tag != spec.with_label_tag(None).tag:
        return f"{spec.pair}_TF-{spec.data.timeframe}__{spec.label_tag}__training_ready.feather"
    return training_ready_name(
        spec.pair, spec.data.timeframe, lab.future_window, lab.stop_loss_pct, lab.take_profit_pct
    )


def frame_from_pair_data(data: PairData):
    """A training-ready polars DataFrame from `PairData`: timestamp, the features (float32), one-hot
    ``label_0..2`` (null where a row has no label) and the realised returns when present."""
    import polars as pl

    labelled = data.labels >= 0
    columns = {"timestamp": pl.Series("timestamp", data.timestamps.astype("datetime64[ms]"))}
    for i, name in enumerate(data.feature_names):
        columns[name] = pl.Series(name, data.features[:, i], dtype=pl.Float32)
    for k in range(3):
        values = (data.labels == k).astype(np.int8)
        columns[f"label_{k}"] = pl.Series(f"label_{k}", values, dtype=pl.Int8).set(pl.Series(~labelled), None)
    for name in ("long_return", "short_return"):
        values = getattr(data, name)
        if values is not None:
            columns[name] = pl.Series(name, values, dtype=pl.Float64, nan_to_null=True)
    return pl.DataFrame(columns)


def write_training_ready(data: PairData, spec, folder: str | Path) -> Path:
    """Write atomically (temporary name, then rename) and return the file's path."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / training_ready_filename(spec)
        tmp = folder / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            frame_from_pair_data(data).write_ipc(tmp, compression="zstd")
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
    except OSError as exc:
        raise StorageError(
            f"Cannot write to {folder}: {exc.strerror or exc}.", "Check the --output folder."
        ) from exc
    return final
