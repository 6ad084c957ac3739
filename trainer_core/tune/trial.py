"""What runs inside a Ray task of a search: one trial (every inner fold, reporting each epoch to the
pair's study so ASHA can stop it) or one outer fit (tuned or default on the outer split).

Workers are reused for up to `tune.worker_reuse` jobs: TensorFlow and the plugins are imported once
per process, the pair's data arrive from Ray's object store (prepared once by the driver, read
without a copy), and Keras' state is cleared after every job so memory stays flat (measured: each
record carries the worker's resident memory).
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data import PairData
from ..errors import PreemptedError, TrainerError
from ..manifest import PairSpec
from ..plugins import Plugins
from .folds import nested_folds
from .stats import net_returns, objective_value

_PLUGINS: dict[tuple, Plugins] = {}
_STORAGES: dict[str, Any] = {}
#: when this worker process started (the first job it ran imports TensorFlow; later ones do not)
_PROCESS_JOBS = {"count": 0}


def rss_mb() -> float:
    """This process's resident memory now, in MB (from /proc; the peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def open_storage_of(location: str):
    """The Optuna storage of a search: a journal file path (safe on a shared volume: appends under
    a lock file) or a database URL; one object per process, reused across jobs."""
    storage = _STORAGES.get(location)
    if storage is None:
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        if "://" in location:
            storage = optuna.storages.RDBStorage(location)
        else:
            storage = optuna.storages.JournalStorage(
                JournalFileBackend(location, lock_obj=JournalFileOpenLock(location))
            )
        _STORAGES[location] = storage
    return storage


def pruner_of(asha: Any):
    """The study's pruner: successive halving on epochs (`Asha` or its dict), or none."""
    import optuna

    if asha is None:
        return optuna.pruners.NopPruner()
    get = asha.get if isinstance(asha, dict) else lambda k: getattr(asha, k)
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=int(get("grace")), reduction_factor=int(get("reduction")), min_early_stopping_rate=0
    )


def _plugins(names: tuple) -> Plugins:
    plugins = _PLUGINS.get(names)
    if plugins is None:
        plugins = _PLUGINS[names] = Plugins.load(names)
    return plugins


def load_data(spec: PairSpec, plugins: Plugins) -> PairData:
    """The pair's rows through the engine's own loading path (candles made into rows by the pair's
    feature set and labeler, checked)."""
    from ..pipeline import load_pair_data

    return load_pair_data(spec, plugins)[0]


def _breaks(spec: PairSpec, data: PairData):
    from ..pipeline import time_breaks

    return data.breaks if data.breaks is not None else time_breaks(data, spec.data.timeframe)


def folds_for(spec: PairSpec, data: PairData, job: dict):
    """The nested folds of this job's data and window (the embargo is the driver's, shared by every trial)."""
    return nested_folds(
        data,
        spec.train.sequence_length,
        int(data.extra.get("horizon", spec.resolved["horizon"])),
        job["embargo"],
        spec.split.validation,
        job["folds"],
        job["test"],
        breaks=_breaks(spec, data),
        where=spec.pair,
    )


def exit_if_orphaned(parent: int) -> None:
    """End this worker when the process that started it is gone: a local Ray's raylet dies with a
    killed driver, and a trial must not go on training (and writing to the study) for nobody."""
    if os.getppid() != parent:
        os._exit(1)


def _pruning_callback(trial, fold: int, max_epochs: int, monitor: str, sign: float, parent: int):
    import keras

    class ReportEpoch(keras.callbacks.Callback):
        """Report the fold's validation figure each epoch; stop the fit when the pruner says so."""

        pruned = False
        reported: list = []

        def on_epoch_end(self, epoch, logs=None):
            exit_if_orphaned(parent)
            value = (logs or {}).get(monitor)
            if value is None:
                return
            step = fold * max_epochs + epoch + 1
            trial.report(sign * float(value), step)
            self.reported.append([step, sign * float(value)])
            if trial.should_prune():
                ReportEpoch.pruned = True
                self.model.stop_training = True

    ReportEpoch.reported = []
    return ReportEpoch()


def _save_predictions(path: Path, rows, y_true, y_prob, net) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp, rows=np.asarray(rows), y_true=np.asarray(y_true), y_prob=np.asarray(y_prob), net=np.asarray(net)
    )
    tmp.replace(path)


def run_job(job: dict, data: PairData | None = None) -> dict:
    """Run one trial or one outer fit; return its record (errors included, never raised).

    SIGTERM (a preempted node) ends the worker with 143 so Ray retries the job elsewhere.
    """
    from ..batch.worker import configure_tensorflow_threads

    started, t0 = _now(), time.perf_counter()
    _PROCESS_JOBS["count"] += 1
    job = dict(job, _parent=os.getppid())
    record: dict[str, Any] = {
        "kind": job["kind"],
        "pair": job["pair"],
        "number": job.get("number"),
        "params": job.get("params", {}),
        "start": started,
        "worker_pid": os.getpid(),
        "worker_job": _PROCESS_JOBS["count"],
    }
    trial = study = None
    gradients_before = _custom_gradients() if _PROCESS_JOBS["count"] > 1 else None
    try:
        spec = PairSpec.from_dict(job["spec"])
        configure_tensorflow_threads(spec.resources.cpus)
        _quiet()
        plugins = _plugins(tuple(spec.plugins))
        if data is None:
            data = load_data(spec, plugins)
        if job["kind"] == "trial":
            import optuna

            study = optuna.load_study(
                study_name=job["study"],
                storage=open_storage_of(job["storage"]),
                pruner=pruner_of(job.get("pruner")),
            )
            trial = optuna.trial.Trial(study, job["trial_id"])
            out = _trial(spec, plugins, data, job, trial, record, t0)
        else:
            out = _outer(spec, plugins, data, job, record, t0)
    except PreemptedError as exc:
        print(f"[{job['pair']}] {exc.message}", flush=True)
        os._exit(exc.exit_code)
    except TrainerError as exc:
        out = dict(record, state="FAIL", error=exc.message, hint=exc.hint)
    except Exception as exc:  # an unexpected error fails this trial only
        import traceback

        out = dict(
            record, state="FAIL", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )
    finally:
        _clear_keras(gradients_before)
    out["end"] = _now()
    out["seconds"] = time.perf_counter() - t0
    out["worker_rss_mb"] = rss_mb()
    out["worker_peak_rss_mb"] = peak_rss_mb()
    if trial is not None and study is not None:
        _tell(study, trial, out)
    return out


def _quiet() -> None:
    """Optuna's per-trial info lines and TensorFlow's retracing warnings off in a worker (each trial
    builds a new model, so every trial traces its functions anew: that is expected, not a problem)."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _custom_gradients() -> set[str] | None:
    """The names of the custom gradients TensorFlow has registered so far (None before it is imported)."""
    import sys

    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.framework import ops

    return {name for name in ops._gradient_registry.list() if name.startswith("CustomGradient-")}


def _clear_keras(gradients_before: set[str] | None = None) -> None:
    """Free what a job left in this process: Keras' state, then the graphs its models traced.

    Each trace of a function using ``tf.custom_gradient`` (Keras' LSTM and losses do) registers its
    gradient under a new name (``CustomGradient-<uid>``) in TensorFlow's process-wide gradient
    registry, which is never emptied; the registered function holds the traced graph's tensors, so
    every graph a fit traced (train and predict steps, each loop body and branch, and the functions
    they registered in the eager context) stayed alive after the model was gone: about 27 MB per
    trial of a small LSTM. ``gradients_before``: the names registered when the job started; those
    registered since belong to the job's own traces (unique names, never looked up again once its
    models are gone) and are dropped after Keras has let go of the models. The first job of a
    process passes None: what it registers while TensorFlow loads is kept.
    """
    import sys

    keras = sys.modules.get("keras")
    if keras is not None:
        keras.backend.clear_session()
    if gradients_before is not None:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
        for name in (_custom_gradients() or set()) - gradients_before:
            registry.pop(name, None)
    gc.collect()


def _tell(study, trial, out: dict) -> None:
    """Record the outcome in the study from the worker itself, so a result survives the driver."""
    import optuna

    state = out.get("state")
    trial.set_user_attr("record", _plain(out))
    try:
        if state == "COMPLETE":
            study.tell(trial, out["value"])
        elif state == "PRUNED":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    except (RuntimeError, ValueError):  # already finished (a retried attempt, or the driver gave up on it)
        pass


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _trial(spec, plugins, data, job, trial, record, t0) -> dict:
    from ..pipeline import fit_fold, prepare_fold

    folds = folds_for(spec, data, job)
    objective = job["objective"]
    monitor = objective if objective in ("val_loss", "val_accuracy") else "val_loss"
    # the pruner compares with the study's direction: a loss reported for a maximised figure is negated
    sign = -1.0 if (monitor == "val_loss" and job["direction"] == "maximize") else 1.0
    fold_scores, rows, y_true, y_prob, net = [], [], [], [], []
    timings = {"train_seconds": 0.0, "evaluate_seconds": 0.0}
    first_fit_at = None
    state = "COMPLETE"
    intermediate = []
    for k, split in enumerate(folds.inner):
        fold = prepare_fold(spec, plugins, data, split)
        callback = _pruning_callback(trial, k, spec.train.epochs, monitor, sign, job["_parent"])
        if first_fit_at is None:
            first_fit_at = time.perf_counter()
        fit = fit_fold(spec, plugins, data, fold, echo=lambda m: None, callbacks=[callback])
        timings["train_seconds"] += fit.timings.get("train_seconds", 0.0)
        timings["evaluate_seconds"] += fit.timings.get("evaluate_seconds", 0.0)
        intermediate.extend(callback.reported)
        ev = fit.evaluations["validation"]
        fold_net = net_returns(
            ev.y_prob,
            _at(data.long_return, ev.rows),
            _at(data.short_return, ev.rows),
            fee_pct(spec),
        )
        fold_scores.append(objective_value(objective, ev.y_true, ev.y_prob, fold_net))
        rows.append(ev.rows)
        y_true.append(ev.y_true)
        y_prob.append(ev.y_prob)
        net.append(fold_net)
        del fit, fold
        if type(callback).pruned:
            state = "PRUNED"
            break
    value = float(np.mean(fold_scores))
    if state == "COMPLETE":
        _save_predictions(
            Path(job["record_dir"]) / f"trial_{job['number']:05d}.npz",
            np.concatenate(rows),
            np.concatenate(y_true),
            np.concatenate(y_prob),
            np.concatenate(net),
        )
    wall = time.perf_counter() - t0
    return dict(
        record,
        state=state,
        value=value,
        fold_scores=[float(x) for x in fold_scores],
        intermediate=intermediate,
        epochs=spec.train.epochs,
        timings={
            **timings,
            "setup_seconds": (first_fit_at or time.perf_counter()) - t0,
            "fixed_seconds": wall - timings["train_seconds"] - timings["evaluate_seconds"],
        },
    )


def fee_pct(spec: PairSpec) -> float:
    """The round-trip cost in percent: ``evaluation.fee_pct``, else two taker fees of the pair's
    market (spot 0.1 % each, USD-M futures 0.05 % each), as the trading reporter reads it."""
    if spec.evaluation.get("fee_pct") is not None:
        return float(spec.evaluation["fee_pct"])
    return 0.1 if dict(spec.data.params or {}).get("market") == "futures-um" else 0.2


def _at(values, rows):
    return None if values is None else np.asarray(values)[rows]


def _outer(spec, plugins, data, job, record, t0) -> dict:
    from ..pipeline import fit_fold, prepare_fold

    folds = folds_for(spec, data, job)
    fold = prepare_fold(spec, plugins, data, folds.outer)
    fit = fit_fold(spec, plugins, data, fold, echo=lambda m: None)
    ev = fit.evaluations["test"]
    net = net_returns(
        ev.y_prob, _at(data.long_return, ev.rows), _at(data.short_return, ev.rows), fee_pct(spec)
    )
    _save_predictions(
        Path(job["record_dir"]) / f"outer_{job['label']}.npz", ev.rows, ev.y_true, ev.y_prob, net
    )
    value = objective_value(job["objective"], ev.y_true, ev.y_prob, net)
    return dict(
        record,
        state="COMPLETE",
        label=job["label"],
        value=float(value),
        epochs_run=len(fit.history.get("loss", [])),
        test_rows=int(len(ev.rows)),
        timings={k: v for k, v in fit.timings.items() if isinstance(v, float)},
    )


__all__ = ["folds_for", "load_data", "open_storage_of", "peak_rss_mb", "pruner_of", "rss_mb", "run_job"]
