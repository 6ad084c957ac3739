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
from .errors import ConfigError, DataError, PluginError, TrainerError
from .manifest.spec import plain

#: what a labeler's tag may look like (it becomes part of artifact file names)
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


def feature_params(spec) -> dict:
    """The params the feature set receives: ``features.params``."""
    return plain(dict(spec.features.get("params") or {}))


def partial_history(spec) -> bool:
    """``features.partial_history``: rows whose features read less history than the feature set's
    ``history`` are training targets too (the seed's behaviour), instead of being left out."""
    return bool(spec.features.get("partial_history", False))


def label_params_of(spec) -> dict:
    """The params the labeler receives: ``labels.params``."""
    return plain(dict(spec.labels.get("params") or {}))


def feature_set_name(spec) -> str:
    """The pair's feature set name (``features.set``, default: the built-in manifest's)."""
    from .manifest import DEFAULTS

    return spec.features.get("set", DEFAULTS["features"]["set"])


def labeler_name(spec) -> str:
    """The pair's labeler name (``labels.method``, default: the built-in manifest's)."""
    from .manifest import DEFAULTS

    return spec.labels.get("method", DEFAULTS["labels"]["method"])


def components(spec, plugins) -> tuple[Any, dict, Any, dict]:
    """The pair's feature set and labeler objects and their params (each one's ``check`` run)."""
    feature_set = plugins.create("feature-set", feature_set_name(spec))
    labeler = plugins.create("labeler", labeler_name(spec))
    fparams, lparams = feature_params(spec), label_params_of(spec)
    for kind, name, component, params in (
        ("feature-set", feature_set_name(spec), feature_set, fparams),
        ("labeler", labeler_name(spec), labeler, lparams),
    ):
        if hasattr(component, "check"):
            call_plugin(plugins, kind, name, "check", component.check, params)
    return feature_set, fparams, labeler, lparams


def describe(plugins, kind: str, name: str) -> str:
    """``feature set 'rsi' (plugin trainer_rsi, trainer-rsi 0.2.0)``: a component, the plugin that
    registered it and the distribution (or module) it came from, for messages."""
    if plugins is None or not hasattr(plugins, "describe"):
        return f"{kind.replace('-', ' ')} {name!r}"
    return plugins.describe(kind, name)


def call_plugin(plugins, kind: str, name: str, method: str, fn, *args):
    """``fn(*args)``; an unexpected exception becomes a `PluginError` naming the component, the
    plugin and its distribution (a `TrainerError` the plugin raised itself passes unchanged)."""
    try:
        return fn(*args)
    except TrainerError:
        raise
    except Exception as exc:
        raise PluginError(
            f"{describe(plugins, kind, name)} failed in {method}(): {type(exc).__name__}: {exc}.",
            "Fix the plugin, or pick another component in the manifest; --debug shows the traceback.",
        ) from exc


def _whole(plugins, kind: str, name: str, component, method: str, params) -> int:
    """``component.method(params)``: a count of candles, an integer >= 0; anything else names the plugin."""
    value = call_plugin(plugins, kind, name, method, getattr(component, method), params)
    what, minimum = f"a {method} of", 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise PluginError(
            f"{describe(plugins, kind, name)} returned {what} {value!r}; expected an integer >= {minimum}.",
            "Fix the plugin.",
        )
    return int(value)


def resolve(spec, plugins) -> dict:
    """The pair's feature set and labeler resolved once: ``tag``, ``horizon``, ``embargo``,
    ``columns``, ``warmup``, ``history``, ``context_pairs``, the names and params of both. Every
    answer is checked, and a bad one is a `PluginError` naming the component and where it came from."""
    feature_set, fparams, labeler, lparams = components(spec, plugins)
    fs, lb = feature_set_name(spec), labeler_name(spec)
    columns = call_plugin(plugins, "feature-set", fs, "columns", feature_set.columns, fparams)
    columns = list(columns) if isinstance(columns, (list, tuple)) else columns
    if not isinstance(columns, list) or not all(isinstance(c, str) and c for c in columns):
        raise PluginError(
            f"{describe(plugins, 'feature-set', fs)} returned columns {columns!r}; expected a list of names.",
            "Fix the plugin.",
        )
    if not columns:
        raise PluginError(
            f"{describe(plugins, 'feature-set', fs)} has no feature columns: a model would see nothing.",
            "Fix the plugin, or pick another features.set.",
        )
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise PluginError(
            f"{describe(plugins, 'feature-set', fs)} names feature(s) {', '.join(twice)} more than once; "
            "a column would be lost.",
            "Give every feature column its own name.",
        )
    warmup = _whole(plugins, "feature-set", fs, feature_set, "warmup", fparams)
    history = warmup
    if hasattr(feature_set, "history"):
        history = max(warmup, _whole(plugins, "feature-set", fs, feature_set, "history", fparams))
    context_pairs = []
    if hasattr(feature_set, "context_pairs"):
        context_pairs = [
            str(p)
            for p in call_plugin(
                plugins, "feature-set", fs, "context_pairs", feature_set.context_pairs, fparams
            )
        ]
    horizon = _whole(plugins, "labeler", lb, labeler, "horizon", lparams)
    tag = call_plugin(plugins, "labeler", lb, "tag", labeler.tag, lparams)
    if not isinstance(tag, str) or not TAG_RE.match(tag) or ".." in tag:
        raise PluginError(
            f"{describe(plugins, 'labeler', lb)} returned the tag {tag!r}, which is not a plain name.",
            "A tag may hold letters, digits, '_', '-' and '.' only.",
        )
    setting = spec.split.embargo
    return {
        "feature_set": fs,
        "labeler": lb,
        "feature_params": fparams,
        "label_params": lparams,
        "feature_settings": _settings(plugins, "feature-set", fs, feature_set, "feature_params", fparams),
        "label_settings": _settings(plugins, "labeler", lb, labeler, "label_params", lparams),
        "tag": tag,
        "horizon": horizon,
        "embargo": horizon if setting == "auto" else max(horizon, int(setting)),
        "columns": columns,
        "warmup": warmup,
        "history": history,
        "context_pairs": context_pairs,
    }


def _settings(plugins, kind: str, name: str, component, method: str, params: dict) -> dict:
    """The params a component reports it uses, its defaults filled in (its optional
    ``feature_params`` / ``label_params``), else the params as given; the config hash counts these."""
    if not hasattr(component, method):
        return params
    out = call_plugin(plugins, kind, name, method, getattr(component, method), params)
    if not isinstance(out, Mapping):
        raise PluginError(
            f"{describe(plugins, kind, name)} returned {type(out).__name__} from {method}(); expected a mapping.",
            "Fix the plugin.",
        )
    return plain(dict(out))


def resolve_spec(spec, plugins):
    """The spec with its feature set and labeler resolved (`resolve`), its tag and embargo from them."""
    return spec.with_resolved(resolve(spec, plugins))


def label_tag(spec, plugins) -> str:
    """The labeler's part of the artifact tag (its `tag(params)`), checked to be a plain name."""
    return resolve(spec, plugins)["tag"]


def horizon_of(spec, plugins) -> int:
    """How many candles after row t the pair's labels may look at."""
    return resolve(spec, plugins)["horizon"]


def history_of(feature_set, params) -> int:
    """Candles before a row its features read, full length (``warmup`` when a set says no more)."""
    warmup = int(feature_set.warmup(params))
    return max(warmup, int(feature_set.history(params)) if hasattr(feature_set, "history") else warmup)


def required_history(spec, plugins) -> int:
    """Candles one prediction needs, the last closed one included: the window plus the candles the
    feature set reads before a row (recorded as ``required_history`` in ``spec_{tag}.json``)."""
    resolved = dict(spec.resolved) if getattr(spec, "is_resolved", False) else resolve(spec, plugins)
    return int(spec.train.sequence_length) + int(resolved["history"])


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


#: float32's largest finite value: a feature beyond it would become Inf and its row silently dropped
FLOAT32_MAX = float(np.finfo(np.float32).max)


def compute_rows(
    frame,
    feature_set,
    fparams,
    labeler,
    lparams,
    context: dict | None,
    where: str,
    plugins=None,
    names: tuple[str, str] = ("?", "?"),
    columns: list[str] | None = None,
):
    """Features (n, F) float32 and labels/returns for one unbroken run of candles, checked.

    Each plugin gets its own copy of the candles, so a feature set that edits its input in place
    cannot change what the labeler sees."""
    fs, lb = names
    n = len(frame)
    columns = list(feature_set.columns(fparams)) if columns is None else columns
    own = {p: c.clone() for p, c in context.items()} if context is not None else None
    if own is not None:
        feats = call_plugin(
            plugins, "feature-set", fs, "compute", feature_set.compute, frame.clone(), fparams, own
        )
    else:
        feats = call_plugin(
            plugins, "feature-set", fs, "compute", feature_set.compute, frame.clone(), fparams
        )
    what = describe(plugins, "feature-set", fs)
    try:
        feats = np.asarray(feats)
    except Exception as exc:
        raise PluginError(f"{where}: {what} returned {type(feats).__name__} ({exc}), not an array.") from None
    if feats.shape != (n, len(columns)):
        raise PluginError(
            f"{where}: {what} returned shape {feats.shape}, expected ({n}, {len(columns)}) "
            f"for columns {columns}.",
            "Fix the plugin: one row per candle, one column per name `columns()` returns.",
        )
    if feats.dtype.kind not in "fiub":
        raise PluginError(
            f"{where}: {what} returned an array of {feats.dtype} values, not numbers.",
            "Return a float32 array (NaN where a feature is undefined).",
        )
    if feats.dtype.kind == "f" and feats.dtype.itemsize > 4:
        wide = np.isfinite(feats) & (np.abs(feats) > FLOAT32_MAX)
        if wide.any():
            rows, cols = np.nonzero(wide)
            bad = sorted({columns[c] for c in cols})
            raise PluginError(
                f"{where}: {what} returned {int(wide.sum()):,} value(s) beyond float32's range in "
                f"column(s) {', '.join(bad)} (first at row {int(rows[0])}); as float32 they would be "
                "Inf and their rows silently dropped.",
                "Scale the feature (a ratio or a log) so it fits float32.",
            )
    feats = feats.astype(np.float32, copy=False)
    if labeler is None:
        return feats, None, None, None
    out = call_plugin(plugins, "labeler", lb, "compute", labeler.compute, frame.clone(), lparams)
    what = describe(plugins, "labeler", lb)
    if not isinstance(out, tuple) or len(out) != 3:
        raise PluginError(
            f"{where}: {what} returned {type(out).__name__}; expected (labels, long_return, short_return)."
        )
    try:
        labels, long_ret, short_ret = (np.asarray(a) for a in out)
    except Exception as exc:
        raise PluginError(f"{where}: {what} returned something that is not arrays ({exc}).") from None
    if labels.shape != (n,) or long_ret.shape != (n,) or short_ret.shape != (n,):
        raise PluginError(
            f"{where}: {what} returned arrays of shapes {labels.shape}, {long_ret.shape}, "
            f"{short_ret.shape}; expected ({n},) each."
        )
    if any(a.dtype.kind not in "fiub" for a in (labels, long_ret, short_ret)):
        raise PluginError(f"{where}: {what} returned arrays that are not numbers.")
    if not np.isin(labels, (NO_LABEL, 0, 1, 2)).all():
        raise PluginError(f"{where}: {what} returned labels outside -1, 0, 1, 2.")
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
    return {p: read_candles(folder, p, spec.data.timeframe, spec.candle_market) for p in pairs}


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
        from .plugins import load_plugins

        plugins = load_plugins(spec.plugins)
    feature_set, fparams, labeler, lparams = components(spec, plugins)
    resolved = dict(spec.resolved) if spec.is_resolved else resolve(spec, plugins)
    names = (resolved["feature_set"], resolved["labeler"])
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
    columns = list(resolved["columns"])
    # a row whose features read fewer candles than the set's full history holds a value serving
    # never computes (serving always has the full history): left out unless partial_history is set
    full_history = 0 if partial_history(spec) else int(resolved["history"])
    short_rows = 0
    parts = {"ts": [], "feat": [], "lab": [], "lr": [], "sr": []}
    breaks: list[int] = []
    rows = 0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi - lo < 2:
            continue
        frame = frame_all.slice(lo, hi - lo)
        ctx = {p: a.slice(lo, hi - lo) for p, a in aligned_all.items()} if aligned_all is not None else None
        feats, labels, long_ret, short_ret = compute_rows(
            frame,
            feature_set,
            fparams,
            labeler if with_labels else None,
            lparams,
            ctx,
            where,
            plugins,
            names,
            columns,
        )
        if labels is None:
            labels = np.full(hi - lo, NO_LABEL, dtype=np.int8)
            long_ret = short_ret = np.full(hi - lo, np.nan)
        labels = labels.copy()
        labels[filled[lo:hi]] = NO_LABEL  # a filled candle is history, never a target
        complete = np.isfinite(feats).all(axis=1)
        if full_history:
            short = complete[:full_history]
            short_rows += int(short.sum())
            complete[:full_history] = False
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
    if not rows and short_rows:
        raise DataError(
            f"{where}: no row has the {full_history:,} candles of history its features read in full "
            f"({max(b - a for a, b in zip(bounds[:-1], bounds[1:])):,} candles"
            f"{' in the longest gap-free run' if len(bounds) > 2 else ''}).",
            f"Pass at least {full_history + 1:,} gap-free candles, lower features.params (ma_long for the "
            "seed set), or set features.partial_history: true to train on shorter-history rows.",
        )
    if not rows:
        raise DataError(
            f"{where}: too few candles to compute features (need at least {resolved['warmup'] + 1} in a row)."
        )
    recorded = (
        dict(call_plugin(plugins, "labeler", names[1], "label_params", labeler.label_params, lparams))
        if hasattr(labeler, "label_params")
        else dict(lparams)
    )
    settings = resolved.get("feature_settings", fparams)
    recorded.update({k: v for k, v in dict(settings).items() if isinstance(v, (int, float, str))})
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
            "horizon": resolved["horizon"],
            "context_pairs": context_pairs,
            "full_history": full_history,
            "short_history_rows": short_rows,
        },
    )


def _sha_with_context(sha: str | None, context: dict) -> str | None:
    """The pair's candle sha256, combined with the context pairs' so a changed context retrains."""
    if not context or sha is None:
        return sha
    doc = {"pair": sha, **{p: c.sha256 for p, c in sorted(context.items())}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
