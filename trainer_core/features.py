"""Candles to `PairData` through the pair's feature set and labeler (both plugins).

The engine applies the date range and the gap policy, hands each unbroken run of candles to the
feature set (with its context pairs aligned on the pair's timestamps) and to the labeler, and keeps
a row as a target or window member only when all its features are finite.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from .data import NO_LABEL, PairData
from .errors import ConfigError, DataError, PluginError

#: what a labeler's tag may look like (it becomes part of artifact file names)
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


def _section_params(section: Mapping, skip: tuple[str, ...]) -> dict:
    """A section's own settings with its ``params`` on top (``ma_short`` and ``features.params.ma_short``
    mean the same)."""
    plain = {k: _plain(v) for k, v in section.items() if k not in skip}
    return {**plain, **{k: _plain(v) for k, v in dict(section.get("params") or {}).items()}}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def feature_params(spec) -> dict:
    """The params the feature set receives: ``features.*`` with ``features.params`` on top."""
    return _section_params(spec.features, ("set", "params"))


def label_params_of(spec) -> dict:
    """The params the labeler receives: ``labels.*`` with ``labels.params`` on top."""
    return _section_params(spec.labels, ("method", "params"))


def feature_set_name(spec) -> str:
    """The pair's feature set name (``features.set``, default ``seed``)."""
    return spec.features.get("set", "seed")


def labeler_name(spec) -> str:
    """The pair's labeler name (``labels.method``, default ``tp-sl``)."""
    return spec.labels.get("method", "tp-sl")


def components(spec, plugins) -> tuple[Any, dict, Any, dict]:
    """The pair's feature set and labeler objects and their params (each one's ``check`` run)."""
    feature_set = plugins.create("feature-set", feature_set_name(spec))
    labeler = plugins.create("labeler", labeler_name(spec))
    fparams, lparams = feature_params(spec), label_params_of(spec)
    for component, params in ((feature_set, fparams), (labeler, lparams)):
        if hasattr(component, "check"):
            component.check(params)
    return feature_set, fparams, labeler, lparams


def label_tag(spec, plugins) -> str:
    """The labeler's part of the artifact tag (``FW120_SL050_TP100`` for tp-sl), checked to be a plain name."""
    _, _, labeler, lparams = components(spec, plugins)
    tag = str(labeler.tag(lparams))
    if not TAG_RE.match(tag) or ".." in tag:
        raise PluginError(
            f"Labeler {labeler_name(spec)!r} returned the tag {tag!r}, which is not a plain name.",
            "A tag may hold letters, digits, '_', '-' and '.' only.",
        )
    return tag


def horizon_of(spec, plugins) -> int:
    """How many candles after row t the pair's labels may look at."""
    _, _, labeler, lparams = components(spec, plugins)
    horizon = int(labeler.horizon(lparams))
    if horizon < 0:
        raise PluginError(f"Labeler {labeler_name(spec)!r} returned a negative horizon ({horizon}).")
    return horizon


def history_of(feature_set, params) -> int:
    """Candles before a row its features read, full length (``warmup`` when a set says no more)."""
    warmup = int(feature_set.warmup(params))
    return max(warmup, int(feature_set.history(params)) if hasattr(feature_set, "history") else warmup)


def _frame(candles):
    import polars as pl

    return pl.DataFrame(
        {
            "timestamp": pl.Series(candles.time_ms).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            "open": candles.open,
            "high": candles.high,
            "low": candles.low,
            "close": candles.close,
            "volume": candles.volume,
        }
    )


def _aligned(frame, other):
    """``other``'s candles at ``frame``'s timestamps (nulls where it has none): never a later candle."""
    return frame.select("timestamp").join(_frame(other), on="timestamp", how="left")


def compute_rows(frame, feature_set, fparams, labeler, lparams, context: dict | None, where: str):
    """Features (n, F) float32 and labels/returns for one unbroken run of candles, checked."""
    n = len(frame)
    columns = list(feature_set.columns(fparams))
    if context is not None:
        feats = feature_set.compute(frame, fparams, context)
    else:
        feats = feature_set.compute(frame, fparams)
    feats = np.asarray(feats)
    if feats.shape != (n, len(columns)):
        raise PluginError(
            f"{where}: feature set returned shape {feats.shape}, expected ({n}, {len(columns)}) "
            f"for columns {columns}."
        )
    feats = feats.astype(np.float32, copy=False)
    if labeler is None:
        return feats, None, None, None
    out = labeler.compute(frame, lparams)
    if not isinstance(out, tuple) or len(out) != 3:
        raise PluginError(
            f"{where}: labeler returned {type(out).__name__}; expected (labels, long_return, short_return)."
        )
    labels, long_ret, short_ret = (np.asarray(a) for a in out)
    if labels.shape != (n,) or long_ret.shape != (n,) or short_ret.shape != (n,):
        raise PluginError(
            f"{where}: labeler returned arrays of shapes {labels.shape}, {long_ret.shape}, "
            f"{short_ret.shape}; expected ({n},) each."
        )
    if not np.isin(labels, (NO_LABEL, 0, 1, 2)).all():
        raise PluginError(f"{where}: labeler returned labels outside -1, 0, 1, 2.")
    return feats, labels.astype(np.int8), long_ret.astype(np.float64), short_ret.astype(np.float64)


def read_context(spec, feature_set, fparams) -> dict:
    """The context pairs' candles, read from the pair's data path (a folder holding them)."""
    pairs = list(feature_set.context_pairs(fparams)) if hasattr(feature_set, "context_pairs") else []
    if not pairs:
        return {}
    from .candles import read_candles

    if spec.data_path is None:
        raise ConfigError(
            f"{spec.pair}: feature set {feature_set_name(spec)!r} needs context pairs "
            f"{', '.join(pairs)} but data.path is not set.",
            "Point data.path at the folder of all pairs.",
        )
    import os

    folder = (
        spec.data_path
        if os.path.isdir(os.path.expanduser(spec.data_path))
        else os.path.dirname(spec.data_path)
    )
    market = dict(spec.data.params or {}).get("market")
    return {p: read_candles(folder, p, spec.data.timeframe, market) for p in pairs}


def pair_data_from_candles(
    candles,
    spec,
    plugins=None,
    context: dict | None = None,
    source: str | None = None,
    with_labels: bool = True,
) -> PairData:
    """Candles -> `PairData` with the pair's feature set, labeler, date range and gap policy.

    ``context`` maps each context pair to its `Candles` (read from the data path when not given).
    """
    from .candles import check_candles, check_policy, fill_gaps, gap_error, timeframe_ms

    if plugins is None:
        from .plugins import Plugins

        plugins = Plugins.load(spec.plugins)
    feature_set, fparams, labeler, lparams = components(spec, plugins)
    where = f"{spec.pair} ({source or ', '.join(candles.sources[:3])})"
    timeframe = spec.data.timeframe
    if spec.data.start or spec.data.end:
        keep = np.ones(len(candles), dtype=bool)
        if spec.data.start:
            keep &= candles.time_ms >= np.datetime64(spec.data.start, "ms").astype(np.int64)
        if spec.data.end:
            keep &= candles.time_ms < (np.datetime64(spec.data.end, "ms") + np.timedelta64(1, "D")).astype(
                np.int64
            )
        candles = candles.take(keep)
    report = check_candles(candles, timeframe, where)
    policy = check_policy(spec.data.gaps)
    bounds = [0, len(candles)]
    filled = np.zeros(len(candles), dtype=bool)
    if report.gaps:
        if policy == "error":
            raise gap_error(report, where)
        if policy == "fill":
            candles, filled = fill_gaps(candles, timeframe)
            bounds = [0, len(candles)]
        else:
            bounds = [0, *report.breaks.tolist(), len(candles)]
    if context is None:
        context = read_context(spec, feature_set, fparams)
    context_pairs = list(context)
    frame_all = _frame(candles)
    aligned_all = {p: _aligned(frame_all, c) for p, c in context.items()} if context_pairs else None
    columns = list(feature_set.columns(fparams))
    parts = {"ts": [], "feat": [], "lab": [], "lr": [], "sr": []}
    breaks: list[int] = []
    rows = 0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi - lo < 2:
            continue
        frame = frame_all.slice(lo, hi - lo)
        ctx = {p: a.slice(lo, hi - lo) for p, a in aligned_all.items()} if aligned_all is not None else None
        feats, labels, long_ret, short_ret = compute_rows(
            frame, feature_set, fparams, labeler if with_labels else None, lparams, ctx, where
        )
        if labels is None:
            labels = np.full(hi - lo, NO_LABEL, dtype=np.int8)
            long_ret = short_ret = np.full(hi - lo, np.nan)
        labels = labels.copy()
        labels[filled[lo:hi]] = NO_LABEL  # a filled candle is history, never a target
        complete = np.isfinite(feats).all(axis=1)
        # a row with any missing feature (warm-up, a missing context candle) is neither a target nor
        # a window member: the rows around it become separate runs
        starts = np.flatnonzero(complete & ~np.r_[False, complete[:-1]])
        stops = np.flatnonzero(complete & ~np.r_[complete[1:], False]) + 1
        ts = candles.time_ms[lo:hi]
        for a, b in zip(starts, stops):
            if rows:
                breaks.append(rows)
            parts["ts"].append(ts[a:b])
            parts["feat"].append(feats[a:b])
            parts["lab"].append(labels[a:b])
            parts["lr"].append(long_ret[a:b])
            parts["sr"].append(short_ret[a:b])
            rows += b - a
    if not rows:
        raise DataError(
            f"{where}: too few candles to compute features (need at least "
            f"{int(feature_set.warmup(fparams)) + 1} in a row)."
        )
    recorded = dict(labeler.label_params(lparams)) if hasattr(labeler, "label_params") else dict(lparams)
    recorded.update({k: v for k, v in fparams.items() if isinstance(v, (int, float, str))})
    return PairData(
        timestamps=np.concatenate(parts["ts"]).astype("datetime64[ms]"),
        features=np.ascontiguousarray(np.concatenate(parts["feat"])),
        labels=np.concatenate(parts["lab"]),
        feature_names=tuple(columns),
        source=source or ", ".join(candles.sources),
        sha256=_sha_with_context(candles.sha256, context),
        label_params=recorded,
        long_return=np.concatenate(parts["lr"]),
        short_return=np.concatenate(parts["sr"]),
        breaks=np.asarray(breaks, dtype=np.int64),
        extra={
            "timestamps_in_file": True,
            "candles": len(candles),
            "gaps": report.as_dict(),
            "gap_policy": policy,
            "filled_candles": int(filled.sum()),
            "segments": len([1 for lo, hi in zip(bounds[:-1], bounds[1:]) if hi - lo >= 2]),
            "timeframe_ms": timeframe_ms(timeframe),
            "feature_set": feature_set_name(spec),
            "labeler": labeler_name(spec),
            "horizon": int(labeler.horizon(lparams)),
            "context_pairs": context_pairs,
        },
    )


def _sha_with_context(sha: str | None, context: dict) -> str | None:
    """The pair's candle sha256, combined with the context pairs' so a changed context retrains."""
    if not context or sha is None:
        return sha
    doc = {"pair": sha, **{p: c.sha256 for p, c in sorted(context.items())}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
