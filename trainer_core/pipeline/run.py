"""One pair, end to end: load, validate, split, fit (walk-forward folds first), report, commit."""

from __future__ import annotations

import datetime as dt
import json
import platform
import time
from collections.abc import Callable, Mapping

import numpy as np

from ..artifacts import ArtifactWriter, dumps
from ..candles import Candles
from ..data import PairData, validate_pair_data
from ..errors import ConfigError, DataError, PluginError, TrainerError, TrainingError
from ..features import (
    describe,
    feature_set_name,
    labeler_name,
    pair_data_from_candles,
    resolve,
    resolve_spec,
)
from ..manifest import PairSpec
from ..plugins import Plugins
from ..split import Split, purged_split, walk_forward_splits
from ..version import __version__
from .fit import fit_fold, prepare_fold
from .results import PairResult
from .walk_forward import fit_earlier_fold, fold_summary, out_of_sample_fold, spread

#: the engine's own file beside the model and scaler: everything prediction needs
SPEC_KIND = "spec"
SPEC_FORMAT = "pair-trainer model spec v1"


def check_components(spec: PairSpec, plugins: Plugins) -> None:
    """Every component the spec names is registered; a loader or builder with ``check(params)``
    checks its ``data.params`` / ``model.params``, a reporter with ``check(evaluation)`` the
    ``evaluation`` section it reads."""
    registry = plugins.registry
    loader = registry.get("loader", spec.data.loader)
    registry.get("balancer", spec.balance.method)
    builder = registry.get("model", spec.model.builder)
    checks = [(registry.get("reporter", name), spec.evaluation) for name in spec.reporters]
    for registration, params in ((loader, spec.data.params), (builder, spec.model.params), *checks):
        component = registration.factory()
        if hasattr(component, "check"):
            component.check(params)
    resolve(spec, plugins)  # the feature set and labeler: their params and answers checked


def resolve_tag(spec: PairSpec, plugins: Plugins) -> PairSpec:
    """The spec with its feature set and labeler resolved once (`features.resolve_spec`): its tag
    (the labeler's), horizon, embargo, columns and history."""
    return spec if spec.is_resolved else resolve_spec(spec, plugins)


def _horizon_and_embargo(spec: PairSpec, data: PairData) -> tuple[int, int]:
    """The labels' horizon and the purge ``max(horizon, embargo)``, from the resolved spec."""
    if spec.resolved is None or not spec.is_resolved:
        raise TrainingError(f"{spec.pair}: the spec was not resolved before its split.")
    return int(spec.resolved["horizon"]), int(spec.resolved["embargo"])


def time_breaks(data: PairData, timeframe: str) -> np.ndarray | None:
    """Rows that follow a step longer than the timeframe (a gap), when the data carry real times."""
    from ..candles import timeframe_ms

    if not data.extra.get("timestamps_in_file", True) or len(data) < 2:
        return None
    steps = np.diff(data.timestamps.astype(np.int64))
    return np.flatnonzero(steps > timeframe_ms(timeframe)) + 1


def versions() -> dict:
    """The trainer's, Python's and the main libraries' versions (None where one is not installed)."""
    import importlib.metadata as md

    out = {"trainer": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in ("tensorflow", "keras", "numpy", "polars", "pyarrow", "scikit-learn", "pluggy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def _echo_default(message: str) -> None:
    print(message, flush=True)


def load_pair_data(spec: PairSpec, plugins: Plugins) -> tuple[PairData, Candles | None]:
    """The pair's rows and, when its loader returned candles, those candles: a loader returns either
    `Candles` (the engine makes the rows with the pair's own feature set and labeler) or finished
    `PairData` (its columns must be the feature set's)."""
    spec = resolve_tag(spec, plugins)
    loader = plugins.create("loader", spec.data.loader)
    try:
        loaded = loader.load(spec)
    except TrainerError:
        raise
    except Exception as exc:
        raise DataError(
            f"{spec.pair}: {describe(plugins, 'loader', spec.data.loader)} failed: {type(exc).__name__}: {exc}.",
            "Check the data file; run with --debug for the traceback.",
        ) from exc
    candles = None
    if isinstance(loaded, Candles):
        candles = loaded
        loaded = pair_data_from_candles(candles, spec, plugins)
    if not isinstance(loaded, PairData):
        raise PluginError(
            f"{describe(plugins, 'loader', spec.data.loader)} returned {type(loaded).__name__}, "
            "not Candles or PairData."
        )
    data = validate_pair_data(loaded, f"{spec.pair} ({loaded.source})")
    _check_label_params(spec, data)
    columns = list(spec.resolved["columns"])
    if list(data.feature_names) != columns:
        raise DataError(
            f"{spec.pair}: the data ({data.source}) hold the feature columns {', '.join(data.feature_names)}, "
            f"but feature set {spec.resolved['feature_set']!r} makes {', '.join(columns)}.",
            "Prepare the data with the run's features settings (`trainer prepare --manifest ...`), or set "
            "features.set to the set the data were made with.",
        )
    return data, candles


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_label_params(spec: PairSpec, data: PairData) -> None:
    """The data's recorded label settings against the labeler's (as it reports them, defaults
    filled in): every number both hold must agree."""
    params = data.label_params or {}
    resolved = spec.resolved or {}
    wanted = dict(resolved.get("label_settings") or resolved.get("label_params") or {})
    for key, value in wanted.items():
        got = params.get(key)
        if _number(got) and _number(value) and abs(float(got) - float(value)) > 1e-9:
            raise DataError(
                f"{spec.pair}: the data were labelled with {key}={got:g} but the run uses "
                f"labels.params.{key}={value:g} ({data.source}).",
                f"Use data labelled with {key}={value:g}, or set labels.params.{key}={got:g}.",
            )


def _split(spec: PairSpec, data: PairData, echo) -> tuple[Split, list[Split]]:
    try:
        return _split_rows(spec, data, echo)
    except (DataError, ConfigError) as exc:
        short = int(data.extra.get("short_history_rows") or 0)
        if not short:
            raise
        raise type(exc)(
            f"{exc.message} {short:,} rows were left out because their features read less than the "
            f"{data.extra['full_history']:,} candles of history the feature set needs.",
            "Add that much history before the range, lower features.params (ma_long for the seed set), "
            "or set features.partial_history: true.",
        ) from exc


def _split_rows(spec: PairSpec, data: PairData, echo) -> tuple[Split, list[Split]]:
    t = spec.train
    breaks = data.breaks if data.breaks is not None else time_breaks(data, spec.data.timeframe)
    horizon, embargo = _horizon_and_embargo(spec, data)
    folds: list[Split] = []
    if spec.split.mode == "walk-forward":
        folds = walk_forward_splits(
            data.labels,
            t.sequence_length,
            horizon,
            embargo,
            spec.split.validation,
            spec.split.folds,
            where=spec.pair,
            breaks=breaks,
        )
        # each fold early-stops on the end of its own training rows and is scored on its block
        folds = [out_of_sample_fold(f, spec.split.validation) for f in folds]
        split = folds[-1]
        echo(
            f"Walk-forward: {len(folds)} folds, each scored on its untouched block of "
            f"{len(folds[-1].test_idx):,} rows and early-stopped on the end of its training rows; "
            f"the saved model is the last fold's"
        )
    else:
        split = purged_split(
            data.labels,
            t.sequence_length,
            horizon,
            embargo,
            spec.split.validation,
            spec.split.test,
            where=spec.pair,
            breaks=breaks,
        )
    _check_validation_size(spec, data, split)
    short = int(data.extra.get("short_history_rows") or 0)
    echo(
        f"Split: {len(split.train_idx):,} training targets (rows {split.train_idx[0]}-{split.train_idx[-1]}), "
        f"{split.embargo} purged rows, {len(split.val_idx):,} validation targets"
        + (f", {len(split.test_idx):,} test targets" if len(split.test_idx) else "")
        + (
            f"; {short:,} rows with less than the features' {data.extra['full_history']:,}-candle history "
            "left out (features.partial_history: false)"
            if short
            else ""
        )
    )
    return split, folds


def required_validation_targets(spec: PairSpec, labelled_rows: int) -> int:
    """The fewest validation targets a run accepts: ``split.min_validation_targets``, lowered to
    5 % of the labelled rows for data too small to hold that many."""
    wanted = int(getattr(spec.split, "min_validation_targets", None) or 1000)
    return max(1, min(wanted, labelled_rows // 20))


def _check_validation_size(spec: PairSpec, data: PairData, split: Split) -> None:
    labelled = int(np.count_nonzero(data.labels >= 0))
    need = required_validation_targets(spec, labelled)
    got = len(split.val_idx)
    if got < need:
        raise ConfigError(
            f"{spec.pair}: split.validation {spec.split.validation:g} leaves {got:,} validation target(s); "
            f"at least {need:,} are needed for its metrics to mean anything.",
            "Raise split.validation, or lower split.min_validation_targets.",
        )


def run_pair(
    spec: PairSpec, plugins: Plugins, echo: Callable[[str], None] = _echo_default, force: bool = False
) -> PairResult:
    """Train one pair and commit its artifacts; raise a `TrainerError` on an expected failure.

    ``force`` starts over even when a resumable backup of the same attempt exists.
    """
    try:
        plugins.before_pair(spec)
        check_components(spec, plugins)  # a misspelled name fails before any work
        spec = resolve_spec(spec, plugins)  # the feature set and labeler, resolved once
        result = _run(spec, plugins, echo, force)
    except BaseException as exc:
        plugins.on_pair_error(spec, exc)
        raise
    plugins.after_pair(spec, result)
    return result


def _prepare_output(out: ArtifactWriter, attempt: dict, force: bool, echo) -> bool:
    return out.prepare(attempt, force=force, echo=echo)


def _run(spec: PairSpec, plugins: Plugins, echo, force: bool) -> PairResult:
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    timings: dict = {}
    t0 = time.perf_counter()
    data, candles = load_pair_data(spec, plugins)
    timings["load_seconds"] = time.perf_counter() - t0
    counts = data.class_counts()
    unlabelled = int(np.sum(data.labels < 0))
    echo(
        f"Loaded {len(data):,} rows of {spec.pair} from {data.source} "
        f"(SHORT {counts['SHORT']:,} / HOLD {counts['HOLD']:,} / LONG {counts['LONG']:,}"
        + (f", {unlabelled:,} without label" if unlabelled else "")
        + ")"
    )
    split, folds = _split(spec, data, echo)

    t0 = time.perf_counter()
    fold = prepare_fold(spec, plugins, data, split)
    timings["scale_seconds"] = time.perf_counter() - t0
    kept = data.class_counts(fold.balance.indices)
    echo(
        f"Balanced ({spec.balance.method}): {len(fold.balance.indices):,} training targets "
        f"(SHORT {kept['SHORT']:,} / HOLD {kept['HOLD']:,} / LONG {kept['LONG']:,})"
        + (f", class weights {fold.balance.class_weight}" if fold.balance.class_weight else "")
    )

    out = ArtifactWriter(spec.output, spec.name, spec.tag)
    attempt = {"config_hash": spec.config_hash, "data_sha256": data.sha256}
    resumed = _prepare_output(out, attempt, force, echo)
    try:
        fitted = [
            fit_earlier_fold(spec, plugins, data, s, k + 1, len(folds), echo)
            for k, s in enumerate(folds[:-1])
        ]
        earlier = [summary for summary, _ in fitted]
        fit = fit_fold(spec, plugins, data, fold, workdir=out.dir, resumed=resumed, echo=echo)
        timings.update(fit.timings)
        result = PairResult(
            spec=spec,
            data=data,
            split=split,
            scaler=fold.scaler,
            balance=fold.balance,
            model=fit.model,
            history=fit.history,
            epoch_seconds=timings["epoch_seconds"],
            evaluations=fit.evaluations,
            timings=timings,
            resumed=resumed,
            gpu={
                "available": bool(fit.gpus),
                "devices": [g.name for g in fit.gpus],
                "used": bool(fit.gpus),
                **fit.device,
            },
            started=started,
            candles=candles,
        )
        if folds:
            outer = result.evaluations.get("test") or result.validation
            last = fold_summary(len(earlier) + 1, split, data, outer, result.history, result.best_epoch())
            all_folds = [*earlier, last]
            result.folds = {
                "folds": all_folds,
                "spread": spread(all_folds),
                "saved_model": "the last fold's",
                "scored_on": "each fold's outer block, untouched by its training and early stopping",
            }
            # the trading reporter simulates each fold's block and stitches the trades
            result.fold_evaluations = [ev for _, ev in fitted] + [outer]
            echo(
                f"Fold {len(all_folds)}/{len(all_folds)} (saved): on its untouched block accuracy "
                f"{last['accuracy']:.4f}, MCC {last['mcc']:.3f}; across folds MCC "
                f"{result.folds['spread']['mcc']['mean']:.3f} +/- {result.folds['spread']['mcc']['std']:.3f}"
            )
        summary = result.validation.summary()
        echo(
            f"Validation (the early-stopping slice) on {summary['samples']:,} targets: accuracy "
            f"{summary['accuracy']:.4f}, loss {summary['loss']:.4f}, MCC {result.validation.scores()['mcc']:.3f} "
            f"(best epoch {result.best_epoch()} of {len(result.history['loss'])})"
        )
        head = result.summary_metrics()
        where = (
            "Test (untouched slice)"
            if head["measured_on"] == "test"
            else "Headline measured on the early-stopping slice (split.test is 0)"
        )
        echo(
            f"{where} on {head['headline_samples']:,} targets: MCC {head['mcc']:.3f}, balanced accuracy "
            f"{head['balanced_accuracy']:.3f}; signals LONG {head['predicted']['LONG']:,} / "
            f"SHORT {head['predicted']['SHORT']:,}"
        )
        if head["single_class"]:
            echo(
                f"Warning: the model predicts {head['single_class']} only on the {head['measured_on']} slice: "
                "its accuracy is the class share, not skill (MCC 0)."
            )
        _save_engine_files(result, out, plugins)
        _report(result, out, plugins)
        marker = _marker(result, plugins, started)
        result.pair_dir = out.commit(marker)
        result.trained_at = marker["finished"]  # the batch row's time is the marker's, to the second
        result.artifacts = sorted(out.written)
    except BaseException:
        out.discard_outputs()
        raise
    echo(f"Saved {len(result.artifacts)} artifacts to {result.pair_dir}")
    return result


def model_spec(result: PairResult, plugins: Plugins | None = None) -> dict:
    """The engine's record of how to apply the model: written as ``spec_{tag}.json``.

    It names the feature set and labeler with their params and the plugin that provided each, so
    prediction recomputes exactly the features the model was trained on.
    """
    spec, data = result.spec, result.data
    resolved = dict(spec.resolved or {})
    set_name = resolved.get("feature_set", feature_set_name(spec))
    method = resolved.get("labeler", labeler_name(spec))
    features = {
        "set": set_name,
        "params": resolved.get("feature_params", {}),
        "context_pairs": list(resolved.get("context_pairs", [])),
        "warmup": resolved.get("warmup"),
        "history": resolved.get("history"),
    }
    labels = {
        "method": method,
        "params": resolved.get("label_params", {}),
        "horizon": resolved.get("horizon"),
    }
    if plugins is not None:
        features.update(plugins.component_origin("feature-set", set_name))
        labels.update(plugins.component_origin("labeler", method))
    return {
        "format": SPEC_FORMAT,
        "pair": spec.pair,
        "name": spec.name,
        "market": spec.market,
        "tag": spec.tag,
        "trainer_version": __version__,
        "config_hash": spec.config_hash,
        "sequence_length": spec.train.sequence_length,
        "timeframe": spec.data.timeframe,
        "feature_names": list(data.feature_names),
        "label_params": data.label_params,
        "n_classes": 3,
        "features": features,
        "labels": labels,
        # candles predict_latest needs, the last one included: the window and the features' own history
        "required_history": spec.train.sequence_length + (features["history"] or 0),
        "plugins": list(spec.plugins),
        "spec": spec.to_dict(),
        # predictions inside it are in-sample (`trainer predict`'s in_sample column)
        "in_sample_span": _in_sample_span(result),
    }


def _in_sample_span(result: PairResult) -> dict | None:
    """The times of the first training target and the last validation target, when the data have times."""
    ts, split = result.data.timestamps, result.split
    if ts is None or not len(split.train_idx) or not len(split.val_idx):
        return None

    def iso(i):
        return str(np.datetime64(ts[int(i)], "ms")) + "Z"

    return {"first": iso(split.train_idx[0]), "last": iso(split.val_idx[-1])}


def _save_engine_files(result: PairResult, out: ArtifactWriter, plugins: Plugins) -> None:
    with out.writing(out.name("model", "keras")) as tmp:
        result.model.save(str(tmp))
    out.write_json(out.name("scaler", "json"), result.scaler.to_json())
    out.write_json(out.name(SPEC_KIND, "json"), model_spec(result, plugins))


def _report(result: PairResult, out: ArtifactWriter, plugins: Plugins) -> None:
    spec = result.spec
    t0 = time.perf_counter()
    for name in spec.reporters:
        reporter = plugins.create("reporter", name)
        try:
            figures = reporter.report_pair(result, out)
        except TrainerError:
            raise
        except Exception as exc:
            raise TrainingError(
                f"{spec.pair}: reporter {name!r} failed: {type(exc).__name__}: {exc}."
            ) from exc
        if figures is None:
            continue
        if not isinstance(figures, Mapping):
            raise PluginError(
                f"Reporter {name!r} returned {type(figures).__name__}; report_pair returns a "
                "mapping of its headline figures or None."
            )
        try:
            result.figures[name] = json.loads(dumps(dict(figures)))
        except (TypeError, ValueError) as exc:
            raise PluginError(f"Reporter {name!r} returned figures that are not JSON: {exc}.") from exc
    result.timings["report_seconds"] = time.perf_counter() - t0
    result.artifacts = sorted(out.written)


def _marker(result: PairResult, plugins: Plugins, started: str) -> dict:
    spec = result.spec
    fingerprint = getattr(plugins, "code_fingerprint", None)
    return {
        "pair": spec.pair,
        "tag": spec.tag,
        "config_hash": spec.config_hash,
        "data_sha256": result.data.sha256,
        "started": started,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "trainer_version": __version__,
        "code": fingerprint(spec) if fingerprint else {"trainer": __version__},
        "metrics": result.summary_metrics(),
        "figures": result.figures,
        # the first and last candle the run's data held: where a fresh out-of-sample window starts
        "data_range": result.data.time_range(),
    }
