"""Scoring any predictions on any candles with the trading report: `trainer evaluate`'s engine.

    from trainer_plugins.reporters.trading.evaluate import evaluate_predictions
    report = evaluate_predictions("preds.parquet", "candles/ETHUSDT-1m.parquet", "out/", pair="ETHUSDT")
    report = evaluate_predictions(None, "candles/", "out/", model_dir="artifacts/ETHUSDT", start="2025-07-01")

The candles give the labels and realised returns (the tp-sl labeler's rule, per gap-free segment)
and the exit candle of every trade from real highs and lows; the predictions are matched to the
candles by timestamp. The report is the one a trained pair gets, on the slice ``evaluated``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from trainer_core import (
    CLASS_NAMES,
    ConfigError,
    DataError,
    check_candles,
    load_pair_model,
    manifest_from_dict,
    normalize_pair,
    parse_candle_name,
    read_candles,
    read_for_prediction,
    read_table,
    select_time,
)

from .report import Market, Scored, build_report
from .settings import evaluation_settings
from .simulation import Barriers

PROB_COLUMNS = ("p_short", "p_hold", "p_long")
SLICE = "evaluated"


class FolderWriter:
    """Atomic files in one output folder, named like a pair's artifacts (``trading_{tag}.json``)."""

    def __init__(self, folder: str | Path, tag: str):
        self.dir = Path(folder).expanduser()
        if self.dir.exists() and not self.dir.is_dir():
            raise ConfigError(f"--output {self.dir} is a file.", "Give a folder (it is created if needed).")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tag = tag
        self.written: list[str] = []

    def name(self, kind: str, ext: str) -> str:
        """``trading_{tag}.json`` for ``name("trading", "json")``."""
        return f"{kind}_{self.tag}.{ext}"

    def _tmp(self, name: str) -> Path:
        return self.dir / f".{name}.tmp-{uuid.uuid4().hex[:8]}{Path(name).suffix}"

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` as ``name`` atomically."""
        tmp = self._tmp(name)
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.dir / name)
        finally:
            tmp.unlink(missing_ok=True)
        self.written.append(name)
        return self.dir / name

    def write_json(self, name: str, obj) -> Path:
        """Write ``obj`` as indented JSON (numpy values as plain ones, NaN refused)."""

        def plain(value):
            if hasattr(value, "tolist"):
                return value.tolist()
            raise TypeError(f"not JSON serialisable: {type(value).__name__}")

        return self.write_text(name, json.dumps(obj, indent=2, default=plain, allow_nan=False) + "\n")

    class _Writing:
        def __init__(self, outer, name):
            self.outer, self.name, self.tmp = outer, name, outer._tmp(name)

        def __enter__(self):
            return self.tmp

        def __exit__(self, kind, exc, tb):
            try:
                if kind is None:
                    os.replace(self.tmp, self.outer.dir / self.name)
                    self.outer.written.append(self.name)
            finally:
                self.tmp.unlink(missing_ok=True)
            return False

    def writing(self, name: str):
        """A temporary path renamed to ``name`` when the block ends without an error."""
        return self._Writing(self, name)


def resolve_spec(pair: str, base: dict | None, sets: Iterable[str]):
    """The pair's settings: the model's recorded spec (or the built-in defaults) with ``--set`` on top."""
    sections = {}
    if base:
        # the settings sections (mappings, and the reporters list); not the engine's resolved record
        sections = {
            k: v for k, v in base.items() if (isinstance(v, dict) and k != "resolved") or k == "reporters"
        }
    entry = {"pair": pair, "market": base["market"]} if base and base.get("market") else pair  # its candles
    manifest = manifest_from_dict({"version": 1, "defaults": sections, "pairs": [entry]})
    return manifest.resolve(pair, list(sets))


def _resolved_tag(spec) -> str:
    """The tag of a spec no model folder names: its labeler's, resolved with the command's plugins."""
    from trainer_core import command_plugins
    from trainer_core import resolve_spec as resolve_components

    return resolve_components(spec, command_plugins(spec.plugins)).tag


def _probabilities(frame, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The timestamps (epoch ms) and the (n, 3) probabilities of a predictions table, checked."""
    import polars as pl

    missing = [c for c in ("timestamp", *PROB_COLUMNS) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: the predictions lack {', '.join(missing)} (columns: {', '.join(frame.columns[:12])}).",
            "Give a table with timestamp, p_short, p_hold, p_long, as `trainer predict --output` writes.",
        )
    ts = frame.get_column("timestamp")
    try:
        if isinstance(ts.dtype, pl.Datetime):
            if getattr(ts.dtype, "time_zone", None):
                ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            ms = ts.cast(pl.Datetime("ms")).cast(pl.Int64).to_numpy()
        elif ts.dtype.is_integer():
            ms = ts.cast(pl.Int64).to_numpy()
        else:
            ms = ts.cast(pl.String).str.to_datetime(time_unit="ms", strict=True).cast(pl.Int64).to_numpy()
    except Exception:
        raise DataError(
            f"{where}: the timestamp column cannot be read as times.",
            "Write timestamps as datetimes or ISO-8601 strings (UTC).",
        ) from None
    try:
        probs = np.column_stack([frame.get_column(c).cast(pl.Float64).to_numpy() for c in PROB_COLUMNS])
    except Exception:
        raise DataError(
            f"{where}: p_short, p_hold, p_long must be numbers.", "Check the predictions file."
        ) from None
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1) | (probs > 1).any(axis=1)
    bad |= np.abs(probs.sum(axis=1) - 1) > 1e-3
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: {int(bad.sum()):,} row(s) whose probabilities are not in [0, 1] or do not sum to 1, "
            f"first at row {i}: {probs[i].tolist()}.",
            "p_short, p_hold and p_long of a row are class probabilities: each in [0, 1], summing to 1.",
        )
    if np.any(np.diff(ms) <= 0):
        order = np.argsort(ms, kind="stable")
        ms, probs = ms[order], probs[order]
        if np.any(np.diff(ms) == 0):
            raise DataError(f"{where}: a timestamp appears twice.", "Give one prediction per candle.")
    return ms, probs


def _labels(candles, spec) -> tuple[np.ndarray, np.ndarray, np.ndarray, Barriers]:
    """tp-sl labels and realised returns of every candle, computed per gap-free segment."""
    from trainer_plugins.labelers.tp_sl import LabelParams, compute_labels

    method = spec.labels.get("method", "tp-sl")
    if method != "tp-sl":
        raise ConfigError(
            f"labels.method is {method!r}: trainer evaluate knows the exits of the tp-sl labeler only.",
            "Evaluate with labels.method=tp-sl, or score the predictions with your labeler's own tool.",
        )
    params = LabelParams.from_params(spec.labels.get("params") or {})
    report = check_candles(candles, spec.data.timeframe, spec.pair)
    n = len(candles)
    labels = np.full(n, -1, dtype=np.int8)
    long_r, short_r = np.full(n, np.nan), np.full(n, np.nan)
    bounds = [0, *report.breaks.tolist(), n]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        lab, lr, sr = compute_labels(candles.close[lo:hi], candles.high[lo:hi], candles.low[lo:hi], params)
        labels[lo:hi], long_r[lo:hi], short_r[lo:hi] = lab, lr, sr
    p = params.as_dict()
    barriers = Barriers(
        int(p["future_window"]),
        float(p["take_profit_pct"]),
        float(p["stop_loss_pct"]),
        float(p["short_take_profit_pct"]),
        float(p["short_stop_loss_pct"]),
    )
    return labels, long_r, short_r, barriers


def _model_thresholds(model_dir: str | None, tag: str | None) -> dict | None:
    """The thresholds a model's own report chose on its validation slice, when it has one locally."""
    if not model_dir or not tag:
        return None
    path = Path(model_dir).expanduser() / f"trading_{tag}.json"
    try:
        choice = json.loads(path.read_text())["threshold_choice"]
        return {side: choice[side]["threshold"] for side in ("LONG", "SHORT")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def evaluate_predictions(
    predictions,
    candles_path: str | Path,
    output: str | Path | None,
    *,
    pair: str | None = None,
    model_dir: str | None = None,
    sets: Iterable[str] = (),
    start: str | None = None,
    end: str | None = None,
    include_in_sample: bool = False,
) -> dict:
    """Score predictions on candles with the trading report; write it to ``output`` (None: do not write).

    ``predictions``: a table path or a polars frame with ``timestamp, p_short, p_hold, p_long``
    (``trainer predict`` writes it), or None with ``model_dir`` (the model predicts the candles).
    ``candles_path``: a candle file or folder of the pair. The labeler and evaluation settings
    are the model's (``model_dir``) or the built-in defaults, with ``sets`` (``"evaluation.fee_pct=0.2"``)
    on top. ``start``/``end`` keep predictions in that UTC range. Rows marked ``in_sample`` are
    left out unless ``include_in_sample``. Returns the report (also written as
    ``trading_{tag}.json``/``.png``/``.html``), with ``headline`` and ``files`` added.
    """
    import polars as pl

    model = load_pair_model(model_dir) if model_dir else None
    if pair is None:
        if model is not None:
            pair = model.pair
        else:
            found = parse_candle_name(Path(candles_path).name)
            if found is None:
                raise ConfigError(
                    f"Cannot tell the pair from {candles_path}.", "Pass --pair (e.g. --pair ETHUSDT)."
                )
            pair = found.symbol
    pair = normalize_pair(pair, "--pair")
    spec = resolve_spec(pair, model.spec if model is not None else None, sets)
    evaluation_settings(spec.evaluation)  # a bad --set evaluation.KEY fails before any reading
    where = str(predictions) if isinstance(predictions, (str, Path)) else "predictions"
    if predictions is None:
        if model is None:
            raise ConfigError(
                "Nothing to evaluate.", "Pass --predictions FILE, or --model-dir DIR to predict first."
            )
        frame = read_for_prediction(model, candles_path)
        predictions = model.predict(frame, where=str(candles_path))
        where = f"{model.tag} on {candles_path}"
    elif isinstance(predictions, (str, Path)):
        path = Path(predictions).expanduser()
        if not path.is_file():
            raise DataError(
                f"Predictions file not found: {path}.",
                "Pass --predictions with a file `trainer predict` wrote.",
            )
        predictions = read_table(path)
    if not isinstance(predictions, pl.DataFrame):
        predictions = pl.from_pandas(predictions)
    if "timestamp" in predictions.columns and predictions.schema["timestamp"] == pl.String:
        try:  # a CSV's times arrive as text
            predictions = predictions.with_columns(
                pl.col("timestamp").str.to_datetime(time_unit="ms", time_zone="UTC", strict=True)
            )
        except Exception:
            raise DataError(
                f"{where}: the timestamp column cannot be read as times.",
                "Write timestamps as ISO-8601 strings (UTC), e.g. 2025-05-05T00:00:00Z.",
            ) from None
    predictions = select_time(predictions, start, end)
    in_sample = 0
    if "in_sample" in predictions.columns and not include_in_sample:
        mask = predictions.get_column("in_sample").cast(pl.Boolean).fill_null(False)
        in_sample = int(mask.sum())
        predictions = predictions.filter(~mask)
    ms, probs = _probabilities(predictions, where)
    if not len(ms):
        raise DataError(
            f"{where}: no predictions to evaluate"
            + (f" between {start or 'the start'} and {end or 'the end'}" if start or end else "")
            + ".",
            "Widen --start/--end, or give predictions of the candles' dates.",
        )

    candles = read_candles(candles_path, pair, spec.data.timeframe, getattr(spec, "candle_market", None))
    labels, long_r, short_r, barriers = _labels(candles, spec)
    idx = np.searchsorted(candles.time_ms, ms)
    found = (idx < len(candles)) & (candles.time_ms[np.minimum(idx, len(candles) - 1)] == ms)
    if not found.any():
        raise DataError(
            f"{where}: none of the {len(ms):,} predictions' timestamps is a candle of {candles_path}.",
            "Give the candles the predictions were made on (same pair and timeframe, UTC times).",
        )
    unmatched = int((~found).sum())
    rows, probs = idx[found], probs[found]
    labelled = labels[rows] >= 0
    unlabelled = int((~labelled).sum())
    rows, probs = rows[labelled], probs[labelled]
    if not len(rows):
        raise DataError(
            f"{where}: every matched prediction lies in the last {barriers.future_window} candles, whose outcome is not known yet.",
            "Give candles that run at least labels.params.future_window candles past the last prediction.",
        )
    y_true = labels[rows].astype(np.int64)
    scored = Scored(SLICE, rows, y_true, probs)
    market = Market(
        candles.time_ms.astype("datetime64[ms]"),
        long_r,
        short_r,
        candles.close,
        candles.high,
        candles.low,
        barriers,
    )
    counts = {name: int(np.sum(y_true == i)) for i, name in enumerate(CLASS_NAMES)}
    tag = model.tag if model is not None else _resolved_tag(spec)
    chosen = _model_thresholds(model_dir, tag)
    report, chart = build_report(
        scored,
        market,
        spec,
        train_counts=counts,
        horizon=barriers.future_window,
        seed=int(spec.train.seed),
        chosen=chosen,
        measured_on=SLICE,
    )
    report = {
        "pair": pair,
        **report,
        "evaluated": {
            "predictions": where,
            "candles": str(candles_path),
            "model": model.location if model is not None else None,
            "first": str(np.datetime64(int(ms[found][0]), "ms")) + "Z",
            "last": str(np.datetime64(int(ms[found][-1]), "ms")) + "Z",
            "rows_scored": int(len(rows)),
            "rows_without_candle": unmatched,
            "rows_without_outcome": unlabelled,
            "in_sample_rows_left_out": in_sample,
            "random_baseline_priors": "the evaluated rows' own class mix",
        },
    }
    if chosen is None:
        report["threshold_choice"]["note"] = (
            "no validation slice here: no thresholds were chosen (pass --model-dir of a model whose report chose them)"
        )
    from . import write_report
    from .report import headline

    if output is not None:
        out = FolderWriter(output, tag)
        report["headline"] = write_report(out, report, chart, pair, tag)
        report["files"] = [str(out.dir / n) for n in out.written]
    else:
        report["headline"] = headline(report, tag)
    return report
