"""Applying a trained pair's model exactly as it was trained: its scaler, window length and features.

    from trainer_core import load_pair_model
    model = load_pair_model("artifacts/ETHUSDT")          # or "s3://bucket/runs/ETHUSDT"
    predictions = model.predict(frame)                    # polars (or pandas) frame with the 8 features

Only artifacts with a `_SUCCESS.json` are loaded, their checksums verified and their files
cross-checked first (a folder copied from elsewhere is not trusted).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts import SUCCESS, sha256_file
from .data import CLASS_NAMES, DataError
from .errors import ConfigError, StorageError
from .manifest.spec import recorded_spec
from .scaling import Scaler
from .storage import is_url, open_storage
from .verify import keras_input_shape, model_problems

#: the candles a live feed holds: freqtrade asks an exchange for at most 5 pages of candles per
#: pair, one of them the open candle (Binance spot: 5 x 1,000 - 1)
LIVE_FEED_CANDLES = 4_999


def live_history_note(required: int) -> str:
    """``required_history N candles``, and whether a live feed (4,999 candles) can serve it."""
    if required > LIVE_FEED_CANDLES:
        return (
            f"required_history {required:,} candles: more than the {LIVE_FEED_CANDLES:,} a live feed serves "
            "(freqtrade on Binance); lower the feature set's history (features.params) or "
            "train.sequence_length to trade it live"
        )
    return f"required_history {required:,} candles (a live feed serves up to {LIVE_FEED_CANDLES:,})"


class CodeChangedWarning(UserWarning):
    """A model's feature set or labeler is installed in another version than it was trained with."""


def _short(origin: str) -> str:
    head, sep, digest = origin.partition("sha256:")
    return f"{head}sha256:{digest[:12]}" if sep else origin


TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,120}")


@dataclass
class PairModel:
    """A trained pair: ``predict(frame)`` gives per-timestamp class probabilities."""

    pair: str
    tag: str
    model: object
    scaler: Scaler
    sequence_length: int
    feature_names: tuple
    info: dict
    location: str
    #: a feature set or labeler whose code changed since training: an error (True) or a warning
    strict: bool = False
    #: the model store's record of this version (None for a folder loaded as it is)
    version: dict | None = None
    #: predict_latest refuses a version past its ``valid_until`` unless this is True
    allow_expired: bool = False
    #: the rule from probabilities to a signal (``decision_{tag}.json``); arg-max when absent
    decision: dict | None = None

    @property
    def spec(self) -> dict:
        """The resolved settings the model was trained with (as recorded in ``spec_{tag}.json``)."""
        return self.info["spec"]

    @property
    def required_history(self) -> int:
        """Candles `predict_latest` needs, the last closed one included: the window plus the candles
        the feature set reads before a row (``ma_long`` - 1 for the seed set)."""
        value = self.info.get("required_history")
        return int(value) if value is not None else self.sequence_length + 1

    @property
    def context_pairs(self) -> list[str]:
        """The other pairs whose candles the feature set reads (``seed+context``)."""
        return list((self.info.get("features") or {}).get("context_pairs") or [])

    def plugins(self):
        """A plugin manager with the plugins the model was trained with; a feature set or labeler
        that is not there any more is one clear error naming where it came from."""
        from .errors import PluginError
        from .plugins import load_plugins

        try:
            plugins = load_plugins(
                self.info.get("plugins") or self.spec.get("plugins") or (),
                asked_by=f"the model folder {self.location}",
            )
        except PluginError as exc:
            raise PluginError(f"{self.tag}: {exc.message}", exc.hint) from exc
        for kind, key, setting in (("feature-set", "features", "set"), ("labeler", "labels", "method")):
            recorded = self.info.get(key) or {}
            name = recorded.get(setting) or self.spec[key].get(setting)
            if name is None:
                continue
            try:
                plugins.registry.get(kind, name)
            except PluginError:
                origin = recorded.get("origin") or "an unknown plugin"
                raise PluginError(
                    f"{self.tag}: the model was trained with the {kind} {name!r} from {origin}, which is not "
                    "installed here.",
                    "Make the plugin module that registers it importable (PYTHONPATH), then predict."
                    if "sha256:" in origin or origin.startswith("an unknown")
                    else f"Install the distribution it was recorded from ({origin}) from a source you trust "
                    "(a package of that name on an index may be someone else's), then predict.",
                ) from None
            self._check_code(plugins, kind, name, recorded.get("origin"))
        return plugins

    def _check_code(self, plugins, kind: str, name: str, was: str | None) -> None:
        """A component whose code changed since training predicts other probabilities than the
        model's validation: a `CodeChangedWarning`, or a `PluginError` when ``strict``."""
        from .errors import PluginError
        from .plugins import same_origin

        now = plugins.component_origin(kind, name)["origin"]
        if not was or same_origin(was, now):
            return
        message = (
            f"{self.tag}: the {kind} {name!r} changed since the model was trained (was {_short(was)}, "
            f"now {_short(now)}): its features or labels may differ from those the model learned."
        )
        if self.strict:
            raise PluginError(
                message, "Retrain the pair with the installed code, or install the code it was trained with."
            )
        import warnings

        warnings.warn(message, CodeChangedWarning, stacklevel=3)

    def prediction_spec(self, data_path: str | None = None):
        """The model's settings for prediction: its feature and label settings, no date range."""
        from .manifest import PairSpec

        settings = json.loads(json.dumps(self.spec))
        settings["data"]["start"] = settings["data"]["end"] = None  # the training range is not the data's
        if data_path is not None:
            settings["data"]["path"] = str(data_path)
        return PairSpec.from_dict(settings)

    def predict_latest(self, candles, context: dict | None = None) -> dict:
        """Class probabilities for the last (closed) candle of ``candles``.

        ``candles``: a polars (or pandas) frame with ``timestamp, open, high, low, close, volume``
        holding at least `required_history` candles of one timeframe, oldest first, without gaps;
        ``context``: ``{pair: frame}`` for a feature set with context pairs. Returns
        ``{"timestamp", "p_short", "p_hold", "p_long", "predicted_label"}``. Fewer candles than the
        model needs is an error with both numbers: the features would not be the ones it learned.
        """
        import polars as pl

        from .candles import _frame_to_candles
        from .features import pair_data_from_candles
        from .lifecycle import check_not_expired

        if self.version is not None:
            check_not_expired(self.version, self.pair, self.allow_expired)
        frame = candles if isinstance(candles, pl.DataFrame) else pl.from_pandas(candles)
        need = self.required_history
        if frame.height < need:
            raise DataError(
                f"{self.tag}: predict_latest got {frame.height:,} candles; the model needs {need:,} "
                f"(a window of {self.sequence_length} plus {need - self.sequence_length:,} candles its features read).",
                "Pass more history (for the seed set: ma_long - 1 candles before the window).",
            )
        missing = [p for p in self.context_pairs if not context or p not in context]
        if missing:
            raise DataError(
                f"{self.tag}: predict_latest needs the candles of {', '.join(missing)} too (context=...)."
            )
        frame = frame.tail(need)
        where = f"{self.pair} (latest candles)"
        ctx = None
        if self.context_pairs:
            ctx = {
                p: _frame_to_candles(
                    context[p] if isinstance(context[p], pl.DataFrame) else pl.from_pandas(context[p]),
                    f"{p} (context)",
                )
                for p in self.context_pairs
            }
        spec = self.prediction_spec()
        latest = _frame_to_candles(frame, where)
        from .candles import timeframe_ms

        gaps = int(np.count_nonzero(np.diff(latest.time_ms) != timeframe_ms(spec.data.timeframe)))
        if gaps and spec.data.gaps != "fill":
            raise DataError(
                f"{where}: {gaps} gap(s) inside the last {need:,} candles; the model was trained with "
                f"data.gaps: {spec.data.gaps}, under which the features after a gap start over, so the "
                "last window would not have its full history.",
                "Pass gap-free candles (a model trained with data.gaps: fill fills them as in training).",
            )
        data = pair_data_from_candles(
            latest,
            spec,
            self.plugins(),
            context=ctx,
            source=where,
            with_labels=False,
        )
        _check_feature_order(self, data.feature_names, where)
        if len(data) < self.sequence_length or (
            data.breaks is not None
            and len(data.breaks)
            and data.breaks[-1] > len(data) - self.sequence_length
        ):
            raise DataError(
                f"{where}: the last {self.sequence_length} candles do not all have complete features "
                "(a gap, or missing context candles).",
                "Pass gap-free candles.",
            )
        out = self.predict_features(data.features[-self.sequence_length :], None)
        row = out.row(-1, named=True)
        return {
            "timestamp": data.timestamps[-1].astype("datetime64[ms]").item().replace(tzinfo=dt.timezone.utc),
            "p_short": row["p_short"],
            "p_hold": row["p_hold"],
            "p_long": row["p_long"],
            "predicted_label": row["predicted_label"],
            "signal": row["signal"],
        }

    @property
    def decision_rule(self) -> dict:
        """``{"rule": "thresholds", "LONG": p or None, "SHORT": p or None}`` or ``{"rule": "arg-max"}``."""
        return dict(self.decision or {"rule": "arg-max", "chosen_on": None})

    def signals(self, probs: np.ndarray) -> np.ndarray:
        """``LONG`` / ``SHORT`` / ``none`` per row of (n, 3) probabilities, by the recorded rule: the
        arg-max class when it is LONG or SHORT, and under ``thresholds`` only when that class's
        probability reaches its side's threshold (a side without one never signals)."""
        return signals_from(probs, self.decision_rule)

    def features_from_candles(self, candles, context: dict | None = None, where: str | None = None):
        """Raw candles (polars or pandas: ``timestamp``/``date``, open, high, low, close, volume) ->
        the model's feature frame (``row``, ``timestamp`` and the feature columns), exactly as
        `trainer predict` makes it from a candle file."""
        import polars as pl

        from .candles import _frame_to_candles
        from .features import pair_data_from_candles

        frame = candles if isinstance(candles, pl.DataFrame) else pl.from_pandas(candles)
        where = where or f"{self.pair} (candles)"
        ctx = None
        if self.context_pairs:
            missing = [p for p in self.context_pairs if not context or p not in context]
            if missing:
                raise DataError(
                    f"{where}: the model needs the candles of {', '.join(missing)} too (context=...)."
                )
            ctx = {
                p: _frame_to_candles(
                    context[p] if isinstance(context[p], pl.DataFrame) else pl.from_pandas(context[p]),
                    f"{p} (context)",
                )
                for p in self.context_pairs
            }
        raw = _frame_to_candles(frame, where)
        data = pair_data_from_candles(
            raw, self.prediction_spec(), self.plugins(), context=ctx, source=where, with_labels=False
        )
        _check_feature_order(self, data.feature_names, where)
        return _feature_frame(data, raw)

    @property
    def label_params(self) -> dict:
        """The labeler's and feature set's settings the model's training data were made with (as
        each reported them, defaults filled in; a model trained before records its params)."""
        spec = self.spec
        resolved = spec.get("resolved") or {}
        labels = (
            resolved.get("label_settings") or resolved.get("label_params") or spec["labels"].get("params")
        )
        features = (
            resolved.get("feature_settings")
            or resolved.get("feature_params")
            or spec.get("features", {}).get("params")
        )
        return {**(features or {}), **(labels or {})}

    def check_compatible(self, label_params: dict | None, where: str) -> None:
        """Refuse data made with other label or feature parameters than the model's (each number
        both record)."""
        if not label_params:
            return
        for key, want in self.label_params.items():
            got = label_params.get(key)
            if not _number(got) or not _number(want):
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
                frame = (
                    pl.from_pandas(frame)
                    if hasattr(frame, "to_numpy") and not isinstance(frame, np.ndarray)
                    else frame
                )
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
                    col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
                try:
                    ts = col.cast(pl.Datetime("ms")).cast(pl.Int64).to_numpy().astype("datetime64[ms]")
                except Exception:
                    ts = None
                break
        return np.ascontiguousarray(feats), ts

    def predict_features(
        self, features: np.ndarray, timestamps: np.ndarray | None = None, batch_size: int = 2048
    ):
        """Probabilities for every row with a full window (rows sequence_length-1 ..), gaps respected."""
        import polars as pl

        from .windows import window_dataset

        n = len(features)
        w = self.sequence_length
        rows = np.arange(w - 1, n, dtype=np.int64)
        if timestamps is not None and n > 1:
            from .candles import timeframe_ms

            timeframe = self.spec["data"]["timeframe"]
            step = timeframe_ms(timeframe)
            diffs = np.diff(timestamps.astype(np.int64))
            usual = int(np.median(diffs))
            if usual != step:
                # most rows a different time apart: other candles than the model's, not gaps
                raise DataError(
                    f"{self.tag}: the data's rows are mostly {_duration(usual)} apart; the model was trained on "
                    f"{timeframe} candles.",
                    f"Predict on {timeframe} candles (or features made from them).",
                )
            breaks = np.flatnonzero(diffs != step) + 1
            if len(breaks):
                marks = np.zeros(n, dtype=np.int64)
                marks[breaks] = 1
                crossed = np.cumsum(marks)
                rows = rows[crossed[rows] - crossed[rows - w + 1] == 0]
        scaled = self.scaler.transform(features)
        if len(rows):
            ds = window_dataset(
                scaled, np.zeros(n, np.int32), rows, w, batch_size, shuffle=False, with_labels=False
            )
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
        out["predicted_label"] = pl.Series(
            [CLASS_NAMES[i] for i in pred.tolist()], dtype=pl.String
        )  # a string column even when empty: every file type can hold it
        out["signal"] = pl.Series(self.signals(probs).tolist(), dtype=pl.String)
        out["in_sample"] = self.in_sample(out.get("timestamp"), len(rows))
        return pl.DataFrame(out)

    def in_sample(self, timestamps: np.ndarray | None, n: int):
        """Per prediction: True inside the model's training + validation span (from its first
        training target to its last validation target), False outside; null when the model folder
        does not record the span or the data carry no times."""
        import polars as pl

        span = self.info.get("in_sample_span") or {}
        if timestamps is None or not span.get("first") or not span.get("last"):
            return pl.Series([None] * n, dtype=pl.Boolean)
        t = np.asarray(timestamps).astype("datetime64[ms]")
        first = np.datetime64(span["first"].rstrip("Z"), "ms")
        last = np.datetime64(span["last"].rstrip("Z"), "ms")
        return pl.Series((t >= first) & (t <= last), dtype=pl.Boolean)

    def predict(self, frame, where: str = "data", context: dict | None = None):
        """Per timestamp (each row with a full window): p_short, p_hold, p_long, predicted class and
        the signal.

        ``frame``: the model's feature columns, or raw candles (``timestamp``/``date``, open, high,
        low, close, volume; any length >= `required_history`), whose features are computed first
        with the model's own settings, as `trainer predict` does for a candle file: the result is
        the same, row for row. ``row`` is the row's position in ``frame`` (0-based), or the value of
        ``frame``'s own integer ``row`` column when it has one (`read_for_prediction` gives each
        candle's row in its file).
        """
        import polars as pl

        cols = list(frame.columns) if hasattr(frame, "columns") else []
        if not any(c in cols for c in self.feature_names) and {
            "open",
            "high",
            "low",
            "close",
            "volume",
        } <= set(cols):
            height = frame.height if isinstance(frame, pl.DataFrame) else len(frame)
            if height < self.required_history:
                raise DataError(
                    f"{self.tag}: predict got {height:,} candles; a prediction needs {self.required_history:,} "
                    f"(a window of {self.sequence_length} plus the candles its features read).",
                    "Pass more history.",
                )
            frame = self.features_from_candles(frame, context, f"{self.pair} ({where})")

        features, ts = self.features_from(frame, where)
        out = self.predict_features(features, ts)
        if isinstance(frame, pl.DataFrame) and "row" in frame.columns and frame.schema["row"].is_integer():
            # the frame says which row of its source each of its rows is (`read_for_prediction`)
            out = out.with_columns(frame.get_column("row").cast(pl.Int64).gather(out.get_column("row")))
        zoned = [c for c in ("timestamp", "date", "datetime", "time", "open_time") if c in frame.columns]
        if "timestamp" in out.columns and zoned and getattr(frame.schema[zoned[0]], "time_zone", None):
            # times were compared in UTC; they go back out marked as UTC, as they came in zoned
            out = out.with_columns(out.get_column("timestamp").dt.replace_time_zone("UTC"))
        return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _duration(ms: int) -> str:
    """``60000`` -> ``1m``: a step between rows as a timeframe when it is one."""
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms > 0 and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms} ms"


def _check_feature_order(model: PairModel, names, where: str) -> None:
    """The feature set's columns must be the model's, in its order (the scaler and the model are positional)."""
    if tuple(names) != tuple(model.feature_names):
        raise DataError(
            f"{where}: the feature set makes the columns {', '.join(names)}; the model {model.tag} was trained on "
            f"{', '.join(model.feature_names)} (in that order).",
            "The model's spec or the feature-set plugin changed since training; retrain the pair.",
        )


def signals_from(probs: np.ndarray, rule: dict) -> np.ndarray:
    """``LONG`` / ``SHORT`` / ``none`` per row of (n, 3) class probabilities (SHORT, HOLD, LONG)
    under a decision rule (see `PairModel.signals`)."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, 3)
    out = np.full(len(probs), "none", dtype=object)
    if not len(probs):
        return out
    pred = probs.argmax(axis=1)
    thresholds = rule.get("rule") == "thresholds"
    for cls, side in ((2, "LONG"), (0, "SHORT")):
        hit = pred == cls
        if thresholds:
            thr = rule.get(side)
            if thr is None:
                continue
            hit &= probs[:, cls] >= float(thr)  # as the trading report counts a signal
        out[hit] = side
    return out


def predict_latest_many(models: dict, candles: dict, context: dict | None = None):
    """The latest closed candle of several pairs at once: ``models`` ``{pair: PairModel}``,
    ``candles`` ``{pair: frame}`` (each at least the pair model's `required_history` candles).
    One row per pair (in ``models``' order): pair, timestamp, p_short, p_hold, p_long,
    predicted_label, signal; each pair's row is its model's `predict_latest`, digit for digit."""
    import polars as pl

    missing = [p for p in models if p not in candles]
    if missing:
        raise DataError(f"predict_latest_many: no candles for {', '.join(missing)}.", "Pass {pair: candles}.")
    return pl.DataFrame(
        [{"pair": pair, **model.predict_latest(candles[pair], context)} for pair, model in models.items()]
    )


def _feature_frame(data, candles):
    """`PairData` made from ``candles`` -> the model's feature frame: ``row`` (each row's candle in
    ``candles``, 0-based; null for a candle the gap policy filled in), ``timestamp`` (UTC) and the
    feature columns. A gap or dropped row shows in the timestamps: no window crosses it."""
    import polars as pl

    times = data.timestamps.astype("datetime64[ms]").astype(np.int64)
    at = np.minimum(np.searchsorted(candles.time_ms, times), max(len(candles) - 1, 0))
    found = candles.time_ms[at] == times if len(candles) else np.zeros(len(times), dtype=bool)
    row = pl.select(pl.when(pl.Series(found)).then(pl.Series(at, dtype=pl.Int64))).to_series().alias("row")
    columns = {"row": row, "timestamp": pl.Series(data.timestamps).dt.replace_time_zone("UTC")}
    for i, name in enumerate(data.feature_names):
        columns[name] = data.features[:, i]
    return pl.DataFrame(columns)


def _marker(raw: bytes, where: str) -> dict:
    """The completion marker, its schema checked (artifact names are plain file names)."""
    from . import artifacts

    reader = getattr(artifacts, "read_marker", None)
    if reader is not None:
        marker = reader(raw, where)
    else:
        try:
            marker = json.loads(raw)
        except ValueError:
            marker = None
    if (
        not isinstance(marker, dict)
        or not isinstance(marker.get("artifacts"), dict)
        or not isinstance(marker.get("tag"), str)
    ):
        raise StorageError(
            f"{where}/{SUCCESS} is not a valid completion marker.",
            "Retrain the pair (`trainer batch` or `trainer run`).",
        )
    if not TAG_RE.fullmatch(marker["tag"]) or ".." in marker["tag"]:
        # the tag becomes part of file names read and written here: never a path
        raise StorageError(
            f"{where}/{SUCCESS} names the tag {marker['tag']!r}, which is not a plain name.",
            "The marker was altered; retrain the pair.",
        )
    return marker


def _engine_names(tag: str) -> tuple[str, ...]:
    return (f"model_{tag}.keras", f"scaler_{tag}.json", f"spec_{tag}.json")


def _decision_name(tag: str) -> str:
    from .artifacts import serving_file

    return serving_file("decision", tag)


def _fetch(location: str) -> tuple[Path, dict, tempfile.TemporaryDirectory | None]:
    """A local folder holding the engine's artifacts (downloaded first from a URL) and the marker."""
    if not is_url(location):
        path = Path(location).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"Model folder not found: {path}.",
                "Pass --model-dir OUTPUT/PAIR (the folder with _SUCCESS.json).",
            )
        marker_path = path / SUCCESS
        if not marker_path.is_file():
            raise DataError(
                f"{path} has no {SUCCESS}: the pair's training did not complete.",
                "Retrain it; only completed pairs are loaded.",
            )
        return path, _marker(marker_path.read_bytes(), str(path)), None
    storage = open_storage(location)
    raw = storage.read_bytes(SUCCESS)
    if raw is None:
        raise StorageError(
            f"No {SUCCESS} at {location}: not a completed pair.", "Pass the pair's folder URL."
        )
    marker = _marker(raw, location)
    tmp = tempfile.TemporaryDirectory(prefix="trainer-model-")
    for name in (*_engine_names(marker["tag"]), _decision_name(marker["tag"])):
        if name not in marker["artifacts"]:
            continue  # reported as missing below, with the checksums
        data = storage.read_bytes(name)
        if data is None:
            raise StorageError(
                f"{location}/{name} is missing.", "Retrain the pair (`trainer batch` resumes it)."
            )
        (Path(tmp.name) / name).write_bytes(data)
    return Path(tmp.name), marker, tmp


#: a folder named like a pair's (``ETHUSDT``, ``ETHUSDT-futures``): it must hold that pair's model
PAIR_FOLDER_RE = re.compile(r"[A-Z0-9]{2,20}(-[a-z0-9][a-z0-9.-]*)?")


def _pair_folder(location: str) -> str | None:
    """The folder's own name when it is shaped like a pair's folder (then it must be the model's);
    None for a folder named otherwise (a copy kept under another name)."""
    name = location.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
    return name if PAIR_FOLDER_RE.fullmatch(name) else None


def load_pair_model(path: str | Path, strict: bool = False, allow_expired: bool = False) -> PairModel:
    """Load a trained pair from its folder (``OUTPUT/PAIR``, local or an fsspec URL).

    ``OUTPUT/PAIR@champion``, ``OUTPUT/PAIR@challenger`` and ``OUTPUT/PAIR#3`` pick a version from
    the pair's model store; a plain ``OUTPUT/PAIR`` with a store loads its champion, else its newest
    run. A version past its ``valid_until`` is refused unless ``allow_expired``.
    Reads only the engine's files: ``_SUCCESS.json``, the model, the scaler and ``spec_{tag}.json``
    (whichever reporters ran), each checked against its checksum first, then against each other
    (`trainer_core.verify.model_problems`: pair, tag, window, features, scaler, timeframe).
    """
    from .lifecycle import resolve_model

    path, version = resolve_model(str(path), allow_expired)
    folder, marker, tmp = _fetch(str(path))
    try:
        tag = marker["tag"]
        for name in _engine_names(tag):
            info = marker["artifacts"].get(name)
            if info is None:
                raise DataError(
                    f"{path}: {SUCCESS} does not list {name}.",
                    "The pair was trained by an older trainer or its marker was altered; retrain it.",
                )
            actual = folder / name
            if not actual.exists() or sha256_file(actual) != info.get("sha256"):
                raise DataError(
                    f"{path}/{name} does not match its checksum in {SUCCESS}.",
                    "The artifacts were altered or truncated; retrain the pair.",
                )
        decision = None
        info = marker["artifacts"].get(_decision_name(tag))
        if info is not None:  # the decision reporter ran: its rule, checked like the engine's files
            actual = folder / _decision_name(tag)
            if not actual.exists() or sha256_file(actual) != info.get("sha256"):
                raise DataError(
                    f"{path}/{_decision_name(tag)} does not match its checksum in {SUCCESS}.",
                    "The artifacts were altered or truncated; retrain the pair.",
                )
            try:
                decision = json.loads(actual.read_text())
                if decision.get("rule") not in ("thresholds", "arg-max"):
                    raise ValueError(f"unknown rule {decision.get('rule')!r}")
            except (OSError, ValueError, AttributeError) as exc:
                raise DataError(
                    f"{path}/{_decision_name(tag)} cannot be read ({exc}).", "Retrain the pair."
                ) from exc
        try:
            spec_file = json.loads((folder / f"spec_{tag}.json").read_text())
            scaler_doc = json.loads((folder / f"scaler_{tag}.json").read_text())
            problems = model_problems(
                marker,
                spec_file,
                scaler_doc,
                keras_input_shape((folder / f"model_{tag}.keras").read_bytes()),
                _pair_folder(str(path)),
            )
            if problems:
                raise DataError(
                    f"{path}: the model's files disagree: {problems[0]}.",
                    "The folder was altered or mixed up with another pair's; retrain the pair or restore its folder.",
                )
            spec_file["spec"] = recorded_spec(spec_file["spec"])
            scaler = Scaler.from_json(scaler_doc)
            sequence_length = int(spec_file["sequence_length"])
            feature_names = tuple(spec_file["feature_names"])
            spec_file["spec"]["data"]["timeframe"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path}: the model's spec or scaler file cannot be read ({type(exc).__name__}: {exc}).",
                "Retrain the pair.",
            ) from exc
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        try:
            model = keras.models.load_model(folder / f"model_{tag}.keras", safe_mode=True)
        except ValueError as exc:
            if "lambda" in str(exc).lower() or "safe_mode" in str(exc):
                raise DataError(
                    f"{path}: the model holds a Lambda layer, which Keras' safe mode refuses to load "
                    "(a Lambda layer can run any code).",
                    "Train it with a builder that uses registered custom layers instead of Lambda.",
                ) from exc
            raise DataError(f"{path}: the model cannot be loaded: {exc}.", "Retrain the pair.") from exc
        shape = getattr(model, "input_shape", None)
        if not isinstance(shape, tuple) or tuple(shape[1:]) not in (
            (sequence_length, len(feature_names)),
            (None, len(feature_names)),
        ):
            raise DataError(
                f"{path}: the model's files disagree: the model takes inputs of shape {shape}, the spec "
                f"windows of {sequence_length} rows of {len(feature_names)} features.",
                "The folder was altered or mixed up with another pair's; retrain the pair or restore its folder.",
            )
    finally:
        if tmp is not None:
            # keras has read the model into memory; the downloaded copies can go
            tmp.cleanup()
    return PairModel(
        pair=marker.get("pair", spec_file["pair"]),
        tag=tag,
        model=model,
        scaler=scaler,
        sequence_length=sequence_length,
        feature_names=feature_names,
        info=spec_file,
        location=str(path),
        strict=strict,
        version=version,
        allow_expired=allow_expired,
        decision=decision,
    )


def _label_params_in_name(model: PairModel, name: str) -> dict | None:
    """What a data file's name says it holds (its pair and label parameters), as the first of the
    model's loaders that reads such names (a loader's optional ``label_params_in_name``) says; None
    when no loader knows the name."""
    plugins = model.plugins()
    for loader in plugins.registry.names("loader"):
        read = getattr(plugins.create("loader", loader), "label_params_in_name", None)
        found = read(name) if callable(read) else None
        if found:
            return dict(found)
    return None


def read_for_prediction(model: PairModel, path: str | Path):
    """Features from a training-ready file (its name's parameters checked) or from raw candles.

    Raw candles are turned into features with the model's own feature and label settings over the
    whole file, whatever date range the model was trained on: every row with enough history gets a
    prediction (use `select_time` to keep a range).
    """

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"Data file not found: {path}.", "Pass --data with a training-ready file or candles.")
    from .formats import read_table as read_frame

    if path.is_file() and path.suffix.lower() in (".feather", ".parquet", ".csv", ".arrow", ".ipc"):
        try:
            frame = read_frame(path)
        except DataError:
            frame = None
        # a table with any feature column is training-ready data: a missing feature is then an error,
        # not a reason to read the file as candles
        if frame is not None and any(c in frame.columns for c in model.feature_names):
            found = _label_params_in_name(model, path.name)
            if found:
                pair = found.pop("pair", None)
                found.pop("timeframe", None)
                model.check_compatible(found, str(path))
                if pair is not None and pair != model.pair:
                    raise DataError(
                        f"{path.name} holds {pair}, the model is for {model.pair}.",
                        "Predict a pair with its own model.",
                    )
            return frame.drop([c for c in frame.columns if c.startswith("label_")])
    # raw candles: the model's own feature set and labeler turn them into features
    from .candles import read_candles
    from .features import pair_data_from_candles

    spec = model.prediction_spec(path)
    candles = read_candles(path, model.pair, spec.data.timeframe, spec.candle_market)
    data = pair_data_from_candles(candles, spec, model.plugins(), with_labels=False)
    _check_feature_order(model, data.feature_names, str(path))
    # each row's candle in the file (0-based, header not counted; a folder's candles merged oldest
    # first); a candle the gap policy filled in is in no file: null
    return _feature_frame(data, candles)


def select_time(predictions, start: str | None = None, end: str | None = None):
    """Only the predictions from ``start`` (inclusive) to ``end`` (inclusive, a whole day for a
    date); the window and the features still use the history before ``start``."""
    import polars as pl

    if not start and not end:
        return predictions
    if "timestamp" not in predictions.columns:
        raise ConfigError(
            "--start/--end need timestamps, and these data have none.",
            "Drop --start/--end, or pass data with a timestamp column.",
        )
    ts = predictions.get_column("timestamp")
    zone = getattr(ts.dtype, "time_zone", None)
    keep = pl.lit(True)
    col = pl.col("timestamp")
    if zone:
        col = col.dt.replace_time_zone(None)
    if start:
        keep = keep & (col >= _bound(start, "--start"))
    if end:
        limit = _bound(end, "--end")
        keep = keep & ((col < limit + dt.timedelta(days=1)) if len(end.strip()) == 10 else (col <= limit))
    return predictions.filter(keep)


def _bound(text: str, flag: str):
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r} is not a date or time.",
            f"Use {flag} 2024-10-01 or {flag} 2024-10-01T12:00 (UTC).",
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value
