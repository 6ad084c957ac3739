"""Applying a trained pair's model exactly as it was trained: its scaler, window length and features.

    from trainer_core import load_pair_model
    model = load_pair_model("artifacts/ETHUSDT")          # or "s3://bucket/runs/ETHUSDT"
    predictions = model.predict(frame)                    # polars (or pandas) frame with the 8 features

Only artifacts with a `_SUCCESS.json` are loaded, and their checksums are verified first.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts import SUCCESS, sha256_file
from .data import CLASS_NAMES, FEATURE_NAMES, DataError
from .errors import ConfigError, StorageError
from .scaling import Scaler
from .storage import is_url, open_storage


@dataclass
class PairModel:
    """A trained pair: ``predict(frame)`` gives per-timestamp class probabilities."""

    pair: str
    tag: str
    model: object
    scaler: Scaler
    sequence_length: int
    feature_names: tuple
    metadata: dict
    location: str

    @property
    def label_params(self) -> dict:
        spec = self.metadata["spec"]
        return {**spec["labels"], **spec.get("features", {})}

    def check_compatible(self, label_params: dict | None, where: str) -> None:
        """Refuse data made with other label or feature parameters than the model's."""
        if not label_params:
            return
        spec = self.metadata["spec"]
        expected = {
            "future_window": spec["labels"]["future_window"],
            "take_profit_pct": spec["labels"]["take_profit_pct"],
            "stop_loss_pct": spec["labels"]["stop_loss_pct"],
            "ma_short": spec.get("features", {}).get("ma_short"),
            "ma_long": spec.get("features", {}).get("ma_long"),
        }
        for key, want in expected.items():
            got = label_params.get(key)
            if got is None or want is None:
                continue
            if abs(float(got) - float(want)) > 1e-9:
                raise DataError(
                    f"{where}: the data were made with {key} {got:g}, the model {self.tag} with {key} {want:g}.",
                    "Predict on data prepared with the model's parameters (see its metadata's spec).",
                )

    def features_from(self, frame, where: str = "data") -> tuple[np.ndarray, np.ndarray | None]:
        """The feature matrix (float32, model's column order) and the timestamps, if any."""
        import polars as pl

        if not isinstance(frame, pl.DataFrame):
            try:
                frame = pl.from_pandas(frame) if hasattr(frame, "to_numpy") and not isinstance(frame, np.ndarray) else frame
            except Exception:
                pass
        if not isinstance(frame, pl.DataFrame):
            raise DataError(f"{where}: expected a polars or pandas DataFrame, got {type(frame).__name__}.")
        missing = [c for c in self.feature_names if c not in frame.columns]
        if missing:
            raise DataError(
                f"{where}: missing feature column(s) {', '.join(missing)}; the model {self.tag} was trained on "
                f"{', '.join(self.feature_names)}.",
                "Pass the training-ready columns (`trainer prepare` writes them), or raw candles to `trainer predict`.",
            )
        feats = frame.select([pl.col(c).cast(pl.Float32) for c in self.feature_names]).to_numpy()
        if not np.isfinite(feats).all():
            row = int(np.flatnonzero(~np.isfinite(feats).all(axis=1))[0])
            raise DataError(f"{where}: NaN/Inf feature values (first at row {row}).")
        ts = None
        for name in ("timestamp", "date", "datetime", "time", "open_time"):
            if name in frame.columns:
                col = frame.get_column(name)
                if isinstance(col.dtype, pl.Datetime) and getattr(col.dtype, "time_zone", None):
                    col = col.dt.replace_time_zone(None)
                try:
                    ts = col.cast(pl.Datetime("ms")).cast(pl.Int64).to_numpy().astype("datetime64[ms]")
                except Exception:
                    ts = None
                break
        return np.ascontiguousarray(feats), ts

    def predict_features(self, features: np.ndarray, timestamps: np.ndarray | None = None, batch_size: int = 2048):
        """Probabilities for every row with a full window (rows sequence_length-1 ..), gaps respected."""
        import polars as pl

        from .windows import window_dataset

        n = len(features)
        w = self.sequence_length
        rows = np.arange(w - 1, n, dtype=np.int64)
        if timestamps is not None and n > 1:
            from .candles import timeframe_ms

            step = timeframe_ms(self.metadata["spec"]["data"]["timeframe"])
            breaks = np.flatnonzero(np.diff(timestamps.astype(np.int64)) != step) + 1
            if len(breaks):
                marks = np.zeros(n, dtype=np.int64)
                marks[breaks] = 1
                crossed = np.cumsum(marks)
                rows = rows[crossed[rows] - crossed[rows - w + 1] == 0]
        scaled = self.scaler.transform(features)
        if len(rows):
            ds = window_dataset(scaled, np.zeros(n, np.int32), rows, w, batch_size, shuffle=False, with_labels=False)
            probs = self.model.predict(ds, verbose=0).astype(np.float32)
        else:
            probs = np.zeros((0, 3), np.float32)
        out = {"row": rows}
        if timestamps is not None:
            out["timestamp"] = timestamps[rows]
        for i, name in enumerate(CLASS_NAMES):
            out[f"p_{name.lower()}"] = probs[:, i]
        pred = probs.argmax(axis=1) if len(rows) else np.zeros(0, np.int64)
        out["predicted"] = pred.astype(np.int8)
        out["predicted_label"] = np.array(CLASS_NAMES, dtype=object)[pred] if len(rows) else np.array([], dtype=object)
        return pl.DataFrame(out)

    def predict(self, frame, where: str = "data"):
        """Per timestamp (each row with a full window): p_short, p_hold, p_long, predicted class."""
        features, ts = self.features_from(frame, where)
        return self.predict_features(features, ts)


def _fetch(location: str) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """A local folder holding the artifacts (downloaded first from a URL)."""
    if not is_url(location):
        path = Path(location).expanduser()
        if not path.is_dir():
            raise ConfigError(f"Model folder not found: {path}.", "Pass --model-dir OUTPUT/PAIR (the folder with _SUCCESS.json).")
        return path, None
    storage = open_storage(location)
    raw = storage.read_bytes(SUCCESS)
    if raw is None:
        raise StorageError(f"No {SUCCESS} at {location}: not a completed pair.", "Pass the pair's folder URL.")
    tmp = tempfile.TemporaryDirectory(prefix="trainer-model-")
    marker = json.loads(raw)
    (Path(tmp.name) / SUCCESS).write_bytes(raw)
    for name in marker.get("artifacts", {}):
        if name.startswith("logs/"):
            continue
        data = storage.read_bytes(name)
        if data is None:
            raise StorageError(f"{location}/{name} is missing.", "Retrain the pair (`trainer batch` resumes it).")
        (Path(tmp.name) / name).write_bytes(data)
    return Path(tmp.name), tmp


def load_pair_model(path: str | Path) -> PairModel:
    """Load a trained pair from its folder (``OUTPUT/PAIR``, local or an fsspec URL)."""
    folder, tmp = _fetch(str(path))
    try:
        marker_path = folder / SUCCESS
        if not marker_path.exists():
            raise DataError(
                f"{folder} has no {SUCCESS}: the pair's training did not complete.",
                "Retrain it; only completed pairs are loaded.",
            )
        marker = json.loads(marker_path.read_text())
        tag = marker["tag"]
        for name, info in marker.get("artifacts", {}).items():
            if name.startswith("logs/") or not name.endswith((".keras", ".json")):
                continue
            actual = folder / name
            if not actual.exists() or sha256_file(actual) != info["sha256"]:
                raise DataError(f"{folder}/{name} does not match its checksum in {SUCCESS}.",
                                "The artifacts were altered or truncated; retrain the pair.")
        metadata = json.loads((folder / f"metadata_{tag}.json").read_text())
        scaler = Scaler.from_json(json.loads((folder / f"scaler_{tag}.json").read_text()))
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        model = keras.models.load_model(folder / f"model_{tag}.keras")
    finally:
        if tmp is not None:
            # keras has read the model into memory; the downloaded copies can go
            tmp.cleanup()
    return PairModel(
        pair=marker["pair"], tag=tag, model=model, scaler=scaler,
        sequence_length=int(metadata["spec"]["train"]["sequence_length"]),
        feature_names=tuple(metadata["data"]["feature_columns"]), metadata=metadata, location=str(path),
    )


def read_for_prediction(pm: PairModel, path: str | Path):
    """Features from a training-ready file (its name's parameters checked) or from raw candles."""
    import polars as pl

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"Data file not found: {path}.", "Pass --data with a training-ready file or candles.")
    from .formats import NAME_RE, pct_from_code as _pct, read_table as read_frame

    if path.is_file() and path.suffix.lower() in (".feather", ".parquet", ".csv", ".arrow", ".ipc"):
        try:
            frame = read_frame(path)
        except DataError:
            frame = None
        # a table with any feature column is training-ready data: a missing feature is then an error,
        # not a reason to read the file as candles
        if frame is not None and any(c in frame.columns for c in pm.feature_names):
            found = NAME_RE.match(path.name)
            if found:
                pm.check_compatible({"future_window": int(found["fw"]), "stop_loss_pct": _pct(found["sl"]),
                                     "take_profit_pct": _pct(found["tp"])}, str(path))
                if found["pair"] != pm.pair:
                    raise DataError(f"{path.name} holds {found['pair']}, the model is for {pm.pair}.",
                                    "Predict a pair with its own model.")
            return frame.drop([c for c in frame.columns if c.startswith("label_")])
    # raw candles: the model's own feature and label settings turn them into features
    from .candles import read_candles
    from .features import pair_data_from_candles
    from .manifest import PairSpec

    spec = PairSpec.from_dict(pm.metadata["spec"])
    data = pair_data_from_candles(read_candles(path, pm.pair), spec)
    columns = {"timestamp": data.timestamps}
    for i, name in enumerate(FEATURE_NAMES):
        columns[name] = data.features[:, i]
    return pl.DataFrame(columns)
