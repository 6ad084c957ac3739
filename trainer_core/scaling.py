"""Feature scalers fitted on training rows only, saved as plain JSON parameters (no pickle)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError


@dataclass
class Scaler:
    """``scaled = (x - center) / scale`` per feature."""

    kind: str
    center: np.ndarray
    scale: np.ndarray
    feature_names: tuple
    fit_rows: tuple[int, int]

    def transform(self, features: np.ndarray) -> np.ndarray:
        """``(features - center) / scale`` as float32, same shape."""
        out = np.empty_like(features, dtype=np.float32)
        np.subtract(features, self.center.astype(np.float32), out=out)
        out /= self.scale.astype(np.float32)
        return out

    def to_json(self) -> dict:
        """The scaler as the JSON document of the ``scaler_{tag}.json`` file."""
        return {
            "format": "pair-trainer scaler v1",
            "type": self.kind,
            "formula": "scaled = (x - center) / scale",
            "feature_names": list(self.feature_names),
            "center": [float(v) for v in self.center],
            "scale": [float(v) for v in self.scale],
            "fit_rows": {"start": self.fit_rows[0], "stop": self.fit_rows[1]},
        }

    @classmethod
    def from_json(cls, doc: dict) -> Scaler:
        """A scaler from a `to_json` document; a `DataError` when it is not one."""
        try:
            return cls(
                kind=doc["type"],
                center=np.asarray(doc["center"], dtype=np.float64),
                scale=np.asarray(doc["scale"], dtype=np.float64),
                feature_names=tuple(doc["feature_names"]),
                fit_rows=(int(doc["fit_rows"]["start"]), int(doc["fit_rows"]["stop"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"Not a scaler file written by this trainer: {exc}.") from None


def fit_scaler(kind: str, features: np.ndarray, stop: int, feature_names) -> Scaler:
    """Fit on rows ``[0, stop)`` only."""
    train = features[:stop].astype(np.float64)
    n_feat = features.shape[1]
    if kind == "robust":
        q25, median, q75 = np.percentile(train, [25, 50, 75], axis=0)
        center, scale = median, q75 - q25
    elif kind == "standard":
        center, scale = train.mean(axis=0), train.std(axis=0)
    elif kind == "minmax":
        lo, hi = train.min(axis=0), train.max(axis=0)
        center, scale = lo, hi - lo
    elif kind == "none":
        center, scale = np.zeros(n_feat), np.ones(n_feat)
    else:
        raise DataError(f"Unknown scaler {kind!r}.", "Use robust, standard, minmax or none.")
    # a constant feature keeps its offset but is not divided by zero (as scikit-learn does)
    scale = np.where(np.abs(scale) < 1e-12, 1.0, scale)
    return Scaler(kind, np.asarray(center), np.asarray(scale), tuple(feature_names), (0, int(stop)))
