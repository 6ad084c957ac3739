"""Loader `training-ready`: the seed's training-ready files (Feather, Parquet or CSV) read with polars,
and written (`write_training_ready`, behind `trainer prepare`).

File name: ``{PAIR}_TF-{tf}__FW-{fw:03d}__SL-{sl:03d}__TP-{tp:03d}__training_ready.feather``;
columns: the 8 features, one-hot ``label_0..2`` (SHORT, HOLD, LONG), optionally a timestamp
column and the realised ``long_return`` / ``short_return``.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import numpy as np

from trainer_core import (
    NO_LABEL,
    DataError,
    PairData,
    StorageError,
    file_sha256,
    hookimpl,
    reject_unknown,
)
from trainer_core import read_table as read_frame

from ..features.seed import COLUMNS as FEATURE_NAMES
from ..labelers.tp_sl import pct_code, settings_of

LABEL_COLUMNS = ("label_0", "label_1", "label_2")
TIME_COLUMNS = ("timestamp", "date", "datetime", "time", "open_time", "index")
RETURN_COLUMNS = ("long_return", "short_return")
SUFFIXES = (".feather", ".parquet", ".csv")
TIMEFRAME_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
#: the seed's file name, its label parameters in it (SL and TP in hundredths of a percent)
NAME_RE = re.compile(
    r"^(?P<pair>[A-Z0-9]+)_TF-(?P<tf>[0-9]+[smhdw])__FW-(?P<fw>[0-9]+)__SL-(?P<sl>[0-9]+)__TP-(?P<tp>[0-9]+)"
    r"__training_ready\.(?P<ext>feather|parquet|csv)$"
)


def _pct(code: str) -> float:
    """``"050"`` (hundredths of a percent, as in file names) -> 0.5."""
    return int(code) / 100.0


def training_ready_name(
    pair: str, timeframe: str, fw: int, sl_pct: float, tp_pct: float, ext: str = "feather"
) -> str:
    """The seed's training-ready file name: ``ETHUSDT_TF-1m__FW-120__SL-050__TP-100__training_ready.feather``."""
    return (
        f"{pair}_TF-{timeframe}__FW-{fw:03d}__SL-{pct_code(sl_pct):03d}__TP-{pct_code(tp_pct):03d}"
        f"__training_ready.{ext}"
    )


def label_params_in_name(name: str) -> dict | None:
    """The pair, timeframe and label parameters a seed file name carries
    (``{"pair": "ETHUSDT", "timeframe": "1m", "future_window": 120, "stop_loss_pct": 0.5,
    "take_profit_pct": 1.0}``); None for another name."""
    found = NAME_RE.match(name)
    if not found:
        return None
    return {
        "pair": found["pair"],
        "timeframe": found["tf"],
        "future_window": int(found["fw"]),
        "stop_loss_pct": _pct(found["sl"]),
        "take_profit_pct": _pct(found["tp"]),
    }


def feature_columns(spec) -> tuple[str, ...]:
    """The feature columns a file for this spec holds: the resolved feature set's (the seed's 8
    before the engine resolved the spec)."""
    resolved = spec.resolved if getattr(spec, "is_resolved", False) else None
    return tuple(resolved["columns"]) if resolved is not None else FEATURE_NAMES


def expected_filename(spec, ext: str = "feather") -> str:
    """The training-ready file name for this spec, with extension ``ext``: the seed's
    ``{PAIR}_TF-1m__FW-120__SL-050__TP-100__training_ready`` for the tp-sl labeler,
    ``{PAIR}_TF-1m__{label_tag}__training_ready`` for another labeler."""
    resolved = spec.resolved if getattr(spec, "is_resolved", False) else None
    if resolved is not None and resolved["labeler"] != "tp-sl":
        return f"{spec.pair}_TF-{spec.data.timeframe}__{resolved['tag']}__training_ready.{ext}"
    lab = settings_of(spec)
    return training_ready_name(
        spec.pair, spec.data.timeframe, lab.future_window, lab.stop_loss_pct, lab.take_profit_pct, ext=ext
    )


def frame_from_pair_data(data: PairData):
    """A training-ready polars DataFrame from `PairData`: timestamp, the features (float32), one-hot
    ``label_0..2`` (null where a row has no label) and the realised returns when present."""
    import polars as pl

    labelled = data.labels >= 0
    columns = {"timestamp": pl.Series("timestamp", data.timestamps.astype("datetime64[ms]"))}
    for i, name in enumerate(data.feature_names):
        columns[name] = pl.Series(name, data.features[:, i], dtype=pl.Float32)
    for k, name in enumerate(LABEL_COLUMNS):
        values = (data.labels == k).astype(np.int8)
        columns[name] = pl.Series(name, values, dtype=pl.Int8).set(pl.Series(~labelled), None)
    for name in RETURN_COLUMNS:
        values = getattr(data, name)
        if values is not None:
            columns[name] = pl.Series(name, values, dtype=pl.Float64, nan_to_null=True)
    return pl.DataFrame(columns)


def write_training_ready(data: PairData, spec, folder: str | Path) -> Path:
    """Write ``data`` as the Feather file this loader finds for ``spec`` (`expected_filename`) in
    ``folder``, atomically (temporary name, then rename); return the file's path."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / expected_filename(spec)
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


def find_file(spec) -> Path:
    """The training-ready file for ``spec``: ``data.path`` itself, or the expected name in that folder
    (Feather, Parquet, CSV); a `DataError` saying what the folder holds instead."""
    raw = spec.data_path
    if raw is None:
        raise DataError(f"{spec.pair}: no data path given.", "Pass --data FILE_OR_FOLDER or set data.path.")
    path = Path(raw).expanduser()
    if not path.exists():
        raise DataError(
            f"{spec.pair}: data path not found: {path}.",
            f"Pass --data with the file, or a folder holding {expected_filename(spec)}.",
        )
    if path.is_file():
        return path
    for ext in ("feather", "parquet", "csv"):
        candidate = path / expected_filename(spec, ext)
        if candidate.is_file():
            return candidate
    same_pair = sorted(
        p.name for p in path.glob(f"{spec.pair}_TF-*__training_ready.*") if p.suffix in SUFFIXES
    )
    if same_pair:
        found = NAME_RE.match(same_pair[0])
        detail = ""
        if found:
            detail = (
                f" The folder has {same_pair[0]} (TF {found['tf']}, future_window {int(found['fw'])}, "
                f"stop_loss_pct {_pct(found['sl']):g}, take_profit_pct {_pct(found['tp']):g}); the run uses "
                f"TF {spec.data.timeframe}, future_window {settings_of(spec).future_window}, "
                f"stop_loss_pct {settings_of(spec).stop_loss_pct:g}, "
                f"take_profit_pct {settings_of(spec).take_profit_pct:g}."
            )
        raise DataError(
            f"{spec.pair}: no training-ready file in {path} matches the run's label parameters "
            f"(expected {expected_filename(spec)}).{detail}",
            "Set labels.params (and data.timeframe) to the file's values, or prepare data with the run's parameters.",
        )
    others = sorted(
        p.name for p in path.iterdir() if p.name.endswith(tuple("__training_ready" + s for s in SUFFIXES))
    )
    raise DataError(
        f"{spec.pair}: no training-ready file for {spec.pair} in {path} (expected {expected_filename(spec)})"
        + (f"; found: {', '.join(others[:10])}" if others else "; the folder has no training-ready files")
        + ".",
        "Check --pair and --data.",
    )


def check_name(spec, path: Path) -> dict:
    """Label parameters encoded in the file name; a disagreement with the run is an error."""
    params = label_params_in_name(path.name)
    if params is None:
        return {}
    run = {
        "pair": spec.pair,
        "timeframe": spec.data.timeframe,
        "future_window": settings_of(spec).future_window,
        "stop_loss_pct": round(settings_of(spec).stop_loss_pct, 2),
        "take_profit_pct": round(settings_of(spec).take_profit_pct, 2),
    }
    setting = {"pair": "--pair", "timeframe": "data.timeframe"}
    for key, value in params.items():
        if value != run[key]:
            name = setting.get(key, f"labels.params.{key}")
            raise DataError(
                f"{spec.pair}: file {path.name} has {key} {_fmt(value)} but the run uses {name} {_fmt(run[key])}.",
                f"Use a file made with {name} {_fmt(run[key])}, or run with {name} {_fmt(value)}.",
            )
    return params


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _timestamps(frame, column: str | None, n: int, timeframe: str, where: str) -> np.ndarray:
    import polars as pl

    if column is None:
        step = int(timeframe[:-1]) * TIMEFRAME_MS[timeframe[-1]]
        return (np.arange(n, dtype=np.int64) * step).astype("datetime64[ms]")
    series = frame.get_column(column)
    dtype = series.dtype
    try:
        if dtype == pl.Date:
            series = series.cast(pl.Datetime("ms"))
        if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
            if getattr(series.dtype, "time_zone", None):
                series = series.dt.replace_time_zone(None)
            return series.cast(pl.Datetime("ms")).cast(pl.Int64).to_numpy().astype("datetime64[ms]")
        if dtype.is_integer():
            values = series.to_numpy()
            if series.null_count():
                raise ValueError("missing values")
            biggest = int(np.abs(values).max()) if len(values) else 0
            unit = (
                "s" if biggest < 10**11 else "ms" if biggest < 10**14 else "us" if biggest < 10**17 else "ns"
            )
            return values.astype(f"datetime64[{unit}]").astype("datetime64[ms]")
        if dtype == pl.String:
            parsed = series.str.to_datetime(time_unit="ms", strict=True)
            if getattr(parsed.dtype, "time_zone", None):
                parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            return parsed.cast(pl.Int64).to_numpy().astype("datetime64[ms]")
    except Exception as exc:
        raise DataError(
            f"{where}: cannot read column {column!r} as timestamps ({str(exc).splitlines()[0]}).",
            "Use datetimes, epoch milliseconds or ISO-8601 strings.",
        ) from None
    raise DataError(
        f"{where}: column {column!r} has type {dtype}, not timestamps.",
        "Use datetimes, epoch milliseconds or ISO-8601 strings.",
    )


def _labels(frame, where: str) -> np.ndarray:
    import polars as pl

    try:
        onehot = frame.select([pl.col(c).cast(pl.Float64) for c in LABEL_COLUMNS]).to_numpy()
    except Exception as exc:
        raise DataError(f"{where}: label columns are not numeric ({str(exc).splitlines()[0]}).") from None
    missing = np.isnan(onehot)
    unlabelled = missing.all(axis=1)
    partial = missing.any(axis=1) & ~unlabelled
    valid = ~missing.any(axis=1)
    filled = np.where(missing, 0.0, onehot)
    is_binary = np.isin(filled, (0.0, 1.0)).all(axis=1)
    bad = partial | (valid & (~is_binary | (filled.sum(axis=1) != 1.0)))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        values = ", ".join("null" if np.isnan(v) else f"{v:g}" for v in onehot[first])
        raise DataError(
            f"{where}: labels are not one-hot in {int(bad.sum()):,} row(s); row {first} has "
            f"label_0..2 = ({values}).",
            "Each row needs exactly one of label_0 (SHORT), label_1 (HOLD), label_2 (LONG) set to 1 and the others 0.",
        )
    labels = filled.argmax(axis=1).astype(np.int8)
    labels[unlabelled] = NO_LABEL
    return labels


class TrainingReadyLoader:
    """The seed's training-ready Feather files (and Parquet/CSV with the same columns)."""

    def check(self, params) -> None:
        """Reject any ``data.params`` (the loader takes none)."""
        reject_unknown(params, (), "data.params", "the training-ready loader")

    def file_name(self, pair: str, timeframe: str, label_params, ext: str = "feather") -> str:
        """The seed's file name for these tp-sl label parameters (`training_ready_name`)."""
        p = dict(label_params)
        return training_ready_name(
            pair, timeframe, int(p["future_window"]), p["stop_loss_pct"], p["take_profit_pct"], ext=ext
        )

    def label_params_in_name(self, name: str) -> dict | None:
        """What a file's name says it holds (`label_params_in_name`): prediction checks a
        training-ready file against the model with it."""
        return label_params_in_name(name)

    def fingerprint(self, spec) -> str:
        """sha256 of the file `load` would read, without parsing it."""
        return file_sha256(find_file(spec))

    def load(self, spec) -> PairData:
        """Read the file and check its name and columns; the rows within ``data.start`` / ``data.end`` as `PairData`."""
        import polars as pl

        path = find_file(spec)
        name_params = check_name(spec, path)
        frame = read_frame(path)
        where = f"{spec.pair} ({path.name})"
        columns = list(frame.columns)
        feature_names = feature_columns(spec)
        missing = [c for c in (*feature_names, *LABEL_COLUMNS) if c not in columns]
        time_cols = [c for c in columns if c in TIME_COLUMNS]
        known = set(feature_names) | set(LABEL_COLUMNS) | set(RETURN_COLUMNS) | set(time_cols)
        extra = [c for c in columns if c not in known]
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing column(s) {', '.join(missing)}")
            if extra:
                problems.append(f"unexpected column(s) {', '.join(extra)}")
            raise DataError(
                f"{where}: {'; '.join(problems)}.",
                f"A training-ready file has the {len(feature_names)} features of the run's feature set ("
                + ", ".join(feature_names)
                + "), label_0, label_1, label_2, and optionally a timestamp column and long_return/short_return.",
            )
        if len(time_cols) > 1:
            raise DataError(f"{where}: several timestamp columns ({', '.join(time_cols)}).", "Keep one.")
        n = frame.height
        try:
            features = frame.select([pl.col(c).cast(pl.Float32) for c in feature_names]).to_numpy()
        except Exception as exc:
            raise DataError(
                f"{where}: feature columns must be numeric ({str(exc).splitlines()[0]}).",
                "Regenerate the file; every feature is a number.",
            ) from None
        labels = _labels(frame, where)
        timestamps = _timestamps(frame, time_cols[0] if time_cols else None, n, spec.data.timeframe, where)
        returns = {}
        for col in RETURN_COLUMNS:
            if col in columns:
                returns[col] = frame.get_column(col).cast(pl.Float64).to_numpy()

        start, end = spec.data.start, spec.data.end
        if start or end:
            if not time_cols:
                raise DataError(
                    f"{where}: data.start/data.end need a timestamp column, and the file has none.",
                    "Remove data.start/data.end, or use a file with a timestamp column.",
                )
            keep = np.ones(n, dtype=bool)
            if start:
                keep &= timestamps >= np.datetime64(start, "ms")
            if end:
                keep &= timestamps < np.datetime64(end, "ms") + np.timedelta64(1, "D")
            features, labels, timestamps = features[keep], labels[keep], timestamps[keep]
            returns = {k: v[keep] for k, v in returns.items()}

        label_params = {
            k: name_params[k]
            for k in ("future_window", "stop_loss_pct", "take_profit_pct")
            if k in name_params
        }
        return PairData(
            timestamps=timestamps,
            features=np.ascontiguousarray(features),
            labels=labels,
            feature_names=feature_names,
            source=str(path),
            sha256=file_sha256(path),
            label_params=label_params,
            long_return=returns.get("long_return"),
            short_return=returns.get("short_return"),
            extra={"format": path.suffix.lstrip("."), "timestamps_in_file": bool(time_cols)},
        )


@hookimpl
def trainer_register_loaders(register):
    """Register the ``training-ready`` loader."""
    register("training-ready", TrainingReadyLoader)
