"""One pair, end to end: load, validate, split, scale, balance, train, evaluate, report, commit."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__
from .artifacts import ArtifactWriter
from .data import CLASS_NAMES, N_CLASSES, PairData, validate_pair_data
from .errors import ConfigError, DataError, PluginError, TrainerError, TrainingError
from .manifest import PairSpec
from .plugins import Plugins
from .scaling import Scaler, fit_scaler
from .split import Split, purged_split, walk_forward_splits


#: kept beside the Keras backup while a run is in progress (so a resume knows its past)
CHECKPOINT_FILE = "checkpoint.weights.h5"
EPOCHS_FILE = "epochs.partial.json"


@dataclass
class Balance:
    """What a balancer returns: the kept training target rows, and optional loss weights."""

    indices: np.ndarray
    class_weight: dict[int, float] | None = None


@dataclass
class Evaluation:
    """Predictions of the trained model on one slice (validation or test), in row order."""

    name: str
    rows: np.ndarray
    y_true: np.ndarray
    y_prob: np.ndarray

    @property
    def y_pred(self) -> np.ndarray:
        return self.y_prob.argmax(axis=1).astype(np.int8)

    def summary(self) -> dict:
        n = int(len(self.y_true))
        p = np.clip(self.y_prob[np.arange(n), self.y_true], 1e-7, 1.0)
        return {
            "samples": n,
            "accuracy": float(np.mean(self.y_pred == self.y_true)) if n else None,
            "loss": float(-np.mean(np.log(p))) if n else None,
            "class_counts": {name: int(np.sum(self.y_true == i)) for i, name in enumerate(CLASS_NAMES)},
        }


@dataclass
class PairResult:
    """Everything known about a trained pair; reporters read it, metadata records it."""

    spec: PairSpec
    data: PairData
    split: Split
    scaler: Scaler
    balance: Balance
    model: Any
    history: dict[str, list[float]]
    epoch_seconds: list[float]
    evaluations: dict[str, Evaluation]
    timings: dict[str, float]
    resumed: bool
    gpu: dict[str, Any]
    pair_dir: str | None = None  # where the committed artifacts live (a path or a URL)
    started: str = ""
    artifacts: list[str] = field(default_factory=list)
    folds: dict | None = None  # walk-forward: per-fold metrics and their spread

    @property
    def tag(self) -> str:
        return self.spec.tag

    @property
    def validation(self) -> Evaluation:
        return self.evaluations["validation"]

    def best_epoch(self) -> int:
        """1-based epoch chosen by the early-stopping monitor."""
        monitor = self.spec.train.early_stopping_monitor
        values = self.history.get(monitor) or []
        if not values:
            return len(self.history.get("loss", []))
        pick = np.argmax if "acc" in monitor else np.argmin
        return int(pick(values)) + 1

    def metrics(self) -> dict:
        h = self.history
        final = {k: float(v[-1]) for k, v in h.items() if v}
        best_epoch = self.best_epoch()
        best = {k: float(v[best_epoch - 1]) for k, v in h.items() if len(v) >= best_epoch}
        return {
            "final_epoch": final,
            "best_epoch": dict(best, epoch=best_epoch, monitor=self.spec.train.early_stopping_monitor),
            **{name: ev.summary() for name, ev in self.evaluations.items()},
        }


# --------------------------------------------------------------------------------------------


def check_components(spec: PairSpec, plugins: Plugins) -> None:
    """Every component the spec names is registered; a loader or builder with ``check(params)``
    checks its ``data.params`` / ``model.params``."""
    registry = plugins.registry
    loader = registry.get("loader", spec.data.loader)
    registry.get("balancer", spec.balance.method)
    builder = registry.get("model", spec.model.builder)
    for name in spec.reporters:
        registry.get("reporter", name)
    for registration, params in ((loader, spec.data.params), (builder, spec.model.params)):
        component = registration.factory()
        if hasattr(component, "check"):
            component.check(params)


def time_breaks(data: PairData, timeframe: str) -> np.ndarray | None:
    """Rows that follow a step longer than the timeframe (a gap), when the data carry real times."""
    from .candles import timeframe_ms

    if not data.extra.get("timestamps_in_file", True) or len(data) < 2:
        return None
    steps = np.diff(data.timestamps.astype(np.int64))
    return np.flatnonzero(steps > timeframe_ms(timeframe)) + 1


def _echo_default(message: str) -> None:
    print(message, flush=True)


def _check_balance(balance: Any, train_idx: np.ndarray, name: str) -> Balance:
    if not isinstance(balance, Balance):
        raise PluginError(f"Balancer {name!r} returned {type(balance).__name__}, not a Balance.")
    indices = np.asarray(balance.indices, dtype=np.int64)
    if indices.ndim != 1 or len(indices) == 0:
        raise TrainingError(f"Balancer {name!r} kept no training targets.", "Check balance.min_per_class.")
    if not np.isin(indices, train_idx).all():
        raise PluginError(
            f"Balancer {name!r} returned rows that are not training targets (that would leak validation data).",
            "A balancer may only select from the target rows it is given.",
        )
    cw = balance.class_weight
    if cw is not None:
        cw = {int(k): float(v) for k, v in dict(cw).items()}
    return Balance(np.sort(indices), cw)


def _load(spec: PairSpec, plugins: Plugins) -> PairData:
    loader = plugins.create("loader", spec.data.loader)
    try:
        data = loader.load(spec)
    except TrainerError:
        raise
    except Exception as exc:
        raise DataError(
            f"{spec.pair}: loader {spec.data.loader!r} failed: {type(exc).__name__}: {exc}.",
            "Check the data file; run with --debug for the traceback.",
        ) from exc
    if not isinstance(data, PairData):
        raise PluginError(f"Loader {spec.data.loader!r} returned {type(data).__name__}, not PairData.")
    data = validate_pair_data(data, f"{spec.pair} ({data.source})")
    _check_label_params(spec, data)
    return data


def _check_label_params(spec: PairSpec, data: PairData) -> None:
    params = data.label_params or {}
    wanted = {
        "future_window": spec.labels.future_window,
        "stop_loss_pct": spec.labels.stop_loss_pct,
        "take_profit_pct": spec.labels.take_profit_pct,
    }
    for key, value in wanted.items():
        if key in params and params[key] is not None and abs(float(params[key]) - float(value)) > 1e-9:
            raise DataError(
                f"{spec.pair}: the data were labelled with {key}={params[key]:g} but the run uses "
                f"labels.{key}={value:g} ({data.source}).",
                f"Use data labelled with {key}={value:g}, or set labels.{key}={params[key]:g}.",
            )


def quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter off unless the user asked for it (set before import)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def device_report(model, gpus: list, precision: str) -> dict:
    """Where the model trains and, for every LSTM layer, whether Keras can use the cuDNN kernel.

    Keras picks cuDNN on a GPU only with activation tanh, recurrent_activation sigmoid,
    recurrent_dropout 0, unroll False and use_bias True (and no masking).
    """
    layers = []
    for layer in model.layers:
        if type(layer).__name__ != "LSTM":
            continue
        cell = getattr(layer, "cell", layer)
        reasons = []
        checks = (
            (getattr(getattr(cell, "activation", None), "__name__", "tanh") == "tanh", "activation is not tanh"),
            (getattr(getattr(cell, "recurrent_activation", None), "__name__", "sigmoid") == "sigmoid",
             "recurrent_activation is not sigmoid"),
            (getattr(cell, "recurrent_dropout", 0) == 0, "recurrent_dropout is not 0"),
            (not getattr(layer, "unroll", False), "unroll is on"),
            (getattr(cell, "use_bias", True), "use_bias is off"),
        )
        reasons = [why for ok, why in checks if not ok]
        layers.append({"name": layer.name, "cudnn_eligible": not reasons, "reasons": reasons})
    eligible = all(layer["cudnn_eligible"] for layer in layers)
    return {
        "device": gpus[0].name if gpus else "CPU",
        "precision": precision,
        "lstm_layers": layers,
        "lstm_kernel": ("cuDNN" if eligible else "generic (some layers are not cuDNN-eligible)") if gpus
        else "CPU (no GPU present)",
    }


def detect_gpus() -> list:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass
    return gpus


def _compile(model, spec: PairSpec):
    import keras

    t = spec.train
    if t.loss == "focal":
        alpha = list(t.focal_alpha) if t.focal_alpha is not None else 1.0
        loss = keras.losses.CategoricalFocalCrossentropy(alpha=alpha, gamma=t.focal_gamma)
    else:
        loss = keras.losses.CategoricalCrossentropy()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=t.learning_rate), loss=loss, metrics=["accuracy"])


def read_epochs(path: Path) -> dict[int, dict]:
    """The per-epoch record kept beside a run: {epoch: {metric: value, ..., "seconds": s}}."""

    try:
        return {int(k): v for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _callbacks(spec: PairSpec, out: ArtifactWriter, checkpoint: Path, plugins: Plugins, record: dict):

    import keras

    t = spec.train
    monitor = t.early_stopping_monitor
    record_path = out.dir / EPOCHS_FILE

    class RecordingBackupAndRestore(keras.callbacks.BackupAndRestore):
        """Keras' backup (weights, optimizer, epoch number) plus each epoch's metrics and seconds,
        recorded just before the backup is saved, so a resumed run reports the whole history and
        the record never lags the backup."""

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()
            self._trained = None
            super().on_epoch_begin(epoch, logs)

        def on_test_begin(self, logs=None):  # the epoch's validation pass starts: training is done
            if getattr(self, "_trained", 0) is None:
                self._trained = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            entry = {k: float(v) for k, v in (logs or {}).items()}
            entry["seconds"] = now - self._t0
            entry["train_seconds"] = (self._trained or now) - self._t0
            record[epoch] = entry
            tmp = record_path.with_name(record_path.name + ".tmp")
            tmp.write_text(json.dumps(record))
            tmp.replace(record_path)
            super().on_epoch_end(epoch, logs)

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """Early stopping that remembers the best epoch and its patience across a resume."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            values = [(e, r[monitor]) for e, r in sorted(record.items()) if monitor in r]
            if values:
                pick = max if "acc" in monitor else min
                best_epoch, best = pick(values, key=lambda x: x[1])
                self.best, self.best_epoch = best, best_epoch
                self.wait = values[-1][0] - best_epoch

    best_checkpoint = keras.callbacks.ModelCheckpoint(
        str(checkpoint), monitor=monitor, save_best_only=True, save_weights_only=True
    )
    seen = [r[monitor] for r in record.values() if monitor in r]
    if seen and checkpoint.exists():
        best_checkpoint.best = max(seen) if "acc" in monitor else min(seen)

    callbacks = [
        best_checkpoint,
        ResumableEarlyStopping(monitor=monitor, patience=t.early_stopping_patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=t.reduce_lr_factor, patience=t.reduce_lr_patience, min_lr=t.min_learning_rate
        ),
        keras.callbacks.TensorBoard(log_dir=str(out.dir / "logs"), write_graph=False),
    ]
    callbacks.extend(plugins.keras_callbacks(spec, out.dir))
    # last: it records what every other callback added to the logs, then saves the backup
    callbacks.append(RecordingBackupAndRestore(backup_dir=str(out.dir / "backup")))
    return callbacks


def _predict(model, feats, labs, rows: np.ndarray, spec: PairSpec, name: str, labels: np.ndarray) -> Evaluation:
    from .windows import window_dataset

    ds = window_dataset(
        feats, labs, rows, spec.train.sequence_length, max(spec.train.batch_size, 1024), shuffle=False, with_labels=False
    )
    y_prob = model.predict(ds, verbose=0).astype(np.float32) if len(rows) else np.zeros((0, N_CLASSES), np.float32)
    return Evaluation(name, rows, labels[rows].astype(np.int8), y_prob)


def _versions() -> dict:
    import importlib.metadata as md

    out = {"trainer": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in ("tensorflow", "keras", "numpy", "polars", "pyarrow", "scikit-learn", "pluggy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def run_pair(spec: PairSpec, plugins: Plugins, echo: Callable[[str], None] = _echo_default) -> PairResult:
    """Train one pair and commit its artifacts; raise a `TrainerError` on an expected failure."""
    try:
        plugins.before_pair(spec)
        check_components(spec, plugins)  # a misspelled name fails before any work
        result = _run(spec, plugins, echo)
    except BaseException as exc:
        plugins.on_pair_error(spec, exc)
        raise
    plugins.after_pair(spec, result)
    return result


def _run(spec: PairSpec, plugins: Plugins, echo) -> PairResult:
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = _load(spec, plugins)
    timings["load_seconds"] = time.perf_counter() - t0
    counts = data.class_counts()
    unlabelled = int(np.sum(data.labels < 0))
    echo(
        f"Loaded {len(data):,} rows of {spec.pair} from {data.source} "
        f"(SHORT {counts['SHORT']:,} / HOLD {counts['HOLD']:,} / LONG {counts['LONG']:,}"
        + (f", {unlabelled:,} without label" if unlabelled else "")
        + ")"
    )

    t = spec.train
    breaks = data.breaks if data.breaks is not None else time_breaks(data, spec.data.timeframe)
    folds: list[Split] = []
    if spec.split.mode == "walk-forward":
        if spec.split.test > 0:
            raise ConfigError(
                f"{spec.pair}: split.test cannot be combined with split.mode walk-forward.",
                "Set split.test to 0: the last fold's validation block is the final out-of-sample slice.",
            )
        folds = walk_forward_splits(
            data.labels, t.sequence_length, spec.labels.future_window, spec.embargo,
            spec.split.validation, spec.split.folds, where=spec.pair, breaks=breaks,
        )
        split = folds[-1]
        echo(f"Walk-forward: {len(folds)} folds of {len(folds[-1].val_idx):,}-row validation blocks; "
             f"the saved model is the last fold's")
    else:
        split = purged_split(
            data.labels, t.sequence_length, spec.labels.future_window, spec.embargo,
            spec.split.validation, spec.split.test, where=spec.pair, breaks=breaks,
        )
    echo(
        f"Split: {len(split.train_idx):,} training targets (rows {split.train_idx[0]}-{split.train_idx[-1]}), "
        f"{split.embargo} purged rows, {len(split.val_idx):,} validation targets"
        + (f", {len(split.test_idx):,} test targets" if len(split.test_idx) else "")
    )

    t0 = time.perf_counter()
    scaler = fit_scaler(spec.scaling.scaler, data.features, split.train_end, data.feature_names)
    scaled = scaler.transform(data.features)
    timings["scale_seconds"] = time.perf_counter() - t0

    rng = np.random.default_rng(t.seed)
    balancer = plugins.create("balancer", spec.balance.method)
    balance = _check_balance(
        balancer.balance(data.labels, split.train_idx, rng, spec.balance), split.train_idx, spec.balance.method
    )
    kept = data.class_counts(balance.indices)
    echo(
        f"Balanced ({spec.balance.method}): {len(balance.indices):,} training targets "
        f"(SHORT {kept['SHORT']:,} / HOLD {kept['HOLD']:,} / LONG {kept['LONG']:,})"
        + (f", class weights {balance.class_weight}" if balance.class_weight else "")
    )

    out = ArtifactWriter(spec.output, spec.pair, spec.tag)
    attempt = {"config_hash": spec.config_hash, "data_sha256": data.sha256}
    resumed = out.prepare(attempt)
    try:
        probes = [_fit_probe(spec, plugins, data, fold, k + 1, len(folds), echo) for k, fold in enumerate(folds[:-1])]
        result = _train_and_report(spec, plugins, data, split, scaler, scaled, balance, out, timings, resumed, echo,
                                   started, probes if folds else None)
        marker = {
            "pair": spec.pair,
            "tag": spec.tag,
            "config_hash": spec.config_hash,
            "data_sha256": data.sha256,
            "started": started,
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "trainer_version": __version__,
        }
        result.pair_dir = out.commit(marker)
        result.artifacts = sorted(out.written)
    except BaseException:
        out.discard_outputs()
        raise
    echo(f"Saved {len(result.artifacts)} artifacts to {result.pair_dir}")
    return result


def _fold_summary(k: int, split: Split, data: PairData, y_true, y_prob, history: dict, best_epoch: int) -> dict:
    from sklearn.metrics import f1_score

    y_pred = y_prob.argmax(axis=1)
    p = np.clip(y_prob[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    return {
        "fold": k,
        "split": split.describe(data),
        "samples": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)),
        "loss": float(-np.mean(np.log(p))),
        "macro_f1": float(f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro", zero_division=0)),
        "epochs": len(history.get("loss", [])),
        "best_epoch": best_epoch,
    }


def _fit_probe(spec, plugins, data, split, k: int, total: int, echo) -> dict:
    """Train and evaluate one earlier walk-forward fold; its model is not kept."""
    quiet_tensorflow()
    import keras

    from .windows import steps, window_dataset

    t = spec.train
    keras.utils.set_random_seed(t.seed)
    scaler = fit_scaler(spec.scaling.scaler, data.features, split.train_end, data.feature_names)
    scaled = scaler.transform(data.features)
    balancer = plugins.create("balancer", spec.balance.method)
    balance = _check_balance(
        balancer.balance(data.labels, split.train_idx, np.random.default_rng(t.seed), spec.balance),
        split.train_idx, spec.balance.method,
    )
    model = plugins.create("model", spec.model.builder).build((t.sequence_length, scaled.shape[1]), N_CLASSES, spec.model.params)
    _compile(model, spec)
    weights = None
    if balance.class_weight:
        weights = np.array([balance.class_weight.get(i, 1.0) for i in range(N_CLASSES)], dtype=np.float32)
    labs = np.where(data.labels < 0, 0, data.labels).astype(np.int32)
    train_ds = window_dataset(scaled, labs, balance.indices, t.sequence_length, t.batch_size, shuffle=True,
                              seed=t.seed, sample_weight_by_class=weights)
    val_ds = window_dataset(scaled, labs, split.val_idx, t.sequence_length, t.batch_size, shuffle=False)
    history = model.fit(
        train_ds, epochs=t.epochs, steps_per_epoch=steps(len(balance.indices), t.batch_size), validation_data=val_ds,
        verbose=0, shuffle=False,
        callbacks=[
            keras.callbacks.EarlyStopping(monitor=t.early_stopping_monitor, patience=t.early_stopping_patience,
                                          restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=t.reduce_lr_factor,
                                              patience=t.reduce_lr_patience, min_lr=t.min_learning_rate),
        ],
    )
    hist = {k_: [float(x) for x in v] for k_, v in history.history.items()}
    values = hist.get(t.early_stopping_monitor, [])
    best = (int(np.argmax(values) if "acc" in t.early_stopping_monitor else np.argmin(values)) + 1) if values else 0
    ev = _predict(model, scaled, labs, split.val_idx, spec, "validation", data.labels)
    summary = _fold_summary(k, split, data, ev.y_true.astype(np.int64), ev.y_prob, hist, best)
    echo(f"Fold {k}/{total}: {len(split.train_idx):,} training targets, validation accuracy {summary['accuracy']:.4f}, "
         f"macro F1 {summary['macro_f1']:.4f}")
    return summary


def _spread(folds: list[dict]) -> dict:
    out = {}
    for key in ("accuracy", "loss", "macro_f1"):
        values = np.array([f[key] for f in folds], dtype=np.float64)
        out[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "min": float(values.min()), "max": float(values.max())}
    return out


def _train_and_report(spec, plugins, data, split, scaler, scaled, balance, out, timings, resumed, echo,
                      started: str, probes: list[dict] | None = None) -> PairResult:
    t_import = time.perf_counter()
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    from .windows import steps, window_dataset

    timings["import_seconds"] = time.perf_counter() - t_import
    t = spec.train
    gpus = detect_gpus()
    keras.utils.set_random_seed(t.seed)

    precision = "float32"
    if t.mixed_precision:
        if gpus:
            keras.mixed_precision.set_global_policy("mixed_float16")
            precision = "mixed_float16"
        else:
            echo("train.mixed_precision is for GPUs; on this CPU the model trains in float32")
    builder = plugins.create("model", spec.model.builder)
    input_shape = (t.sequence_length, scaled.shape[1])
    try:
        model = builder.build(input_shape, N_CLASSES, spec.model.params)
    except TrainerError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"{spec.pair}: model builder {spec.model.builder!r} failed with model.params "
            f"{dict(spec.model.params)}: {type(exc).__name__}: {exc}.",
            "Check model.params (docs/manifest.md lists the lstm builder's parameters).",
        ) from exc
    if tuple(model.output_shape[1:]) != (N_CLASSES,):
        raise PluginError(
            f"Model builder {spec.model.builder!r} returned a model with output shape {model.output_shape}; "
            f"expected (None, {N_CLASSES})."
        )
    _compile(model, spec)
    echo(f"Model {spec.model.builder!r}: {model.count_params():,} parameters, input {input_shape}")
    device = device_report(model, gpus, precision)
    for layer in device["lstm_layers"]:
        if not layer["cudnn_eligible"]:
            echo(f"Warning: LSTM layer {layer['name']!r} cannot use the cuDNN kernel ({'; '.join(layer['reasons'])})"
                 + ("; it runs on the much slower generic kernel." if gpus else "; this matters on a GPU."))

    weights_by_class = None
    if balance.class_weight:
        weights_by_class = np.array([balance.class_weight.get(i, 1.0) for i in range(N_CLASSES)], dtype=np.float32)

    first_epoch = 0
    if resumed:  # Keras' backup knows the epoch it resumes at
        try:
            first_epoch = int(json.loads((out.dir / "backup" / "training_metadata.json").read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            first_epoch = 0
    feats = tf.constant(scaled)
    labs = tf.constant(np.where(data.labels < 0, 0, data.labels).astype(np.int32))
    train_ds = window_dataset(
        feats, labs, balance.indices, t.sequence_length, t.batch_size,
        shuffle=True, seed=t.seed, sample_weight_by_class=weights_by_class, first_epoch=first_epoch,
    )
    val_ds = window_dataset(feats, labs, split.val_idx, t.sequence_length, t.batch_size, shuffle=False)

    checkpoint = out.dir / CHECKPOINT_FILE
    record = read_epochs(out.dir / EPOCHS_FILE) if resumed else {}
    callbacks = _callbacks(spec, out, checkpoint, plugins, record)
    verbose = t.verbose if t.verbose != "auto" else (1 if sys.stdout.isatty() else 2)
    if resumed:
        echo(f"Resuming an interrupted run after epoch {len(record)} (from its backup)")
    t0 = time.perf_counter()
    try:
        history = model.fit(
            train_ds,
            epochs=t.epochs,
            steps_per_epoch=steps(len(balance.indices), t.batch_size),
            validation_data=val_ds,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the dataset draws its own permutation per epoch
        )
    except tf.errors.ResourceExhaustedError as exc:
        raise TrainingError(
            f"{spec.pair}: out of memory while training ({exc.message.splitlines()[0]}).",
            "Lower train.batch_size or the model size, or give the pair more memory.",
        ) from exc
    timings["train_seconds"] = time.perf_counter() - t0
    if checkpoint.exists():
        model.load_weights(str(checkpoint))
        checkpoint.unlink()
    (out.dir / EPOCHS_FILE).unlink(missing_ok=True)
    epochs = [record[e] for e in sorted(record)]
    keys = [k for k in history.history] or [k for k in (epochs[0] if epochs else {}) if k != "seconds"]
    hist = {k: [float(e[k]) for e in epochs if k in e] for k in keys}
    epoch_times = [float(e["seconds"]) for e in epochs]
    train_times = [float(e.get("train_seconds", e["seconds"])) for e in epochs]
    if not hist.get("loss"):
        raise TrainingError(f"{spec.pair}: training ran no epoch.")
    if not np.isfinite(hist["loss"]).all():
        raise TrainingError(
            f"{spec.pair}: the training loss became NaN/Inf.", "Lower train.learning_rate or check the scaler."
        )
    timings["epoch_seconds"] = [float(x) for x in epoch_times]
    timings["epoch_train_seconds"] = train_times
    samples = len(balance.indices)
    # the training loop's rate: training targets per second of the epochs' training passes
    # (each epoch's validation pass is in epoch_seconds, not here)
    timings["samples_per_second"] = (
        float(samples * len(train_times) / sum(train_times)) if train_times and sum(train_times) > 0 else None
    )

    t0 = time.perf_counter()
    evaluations = {"validation": _predict(model, feats, labs, split.val_idx, spec, "validation", data.labels)}
    if len(split.test_idx):
        evaluations["test"] = _predict(model, feats, labs, split.test_idx, spec, "test", data.labels)
    timings["evaluate_seconds"] = time.perf_counter() - t0

    model_name = out.name("model", "keras")
    with out.writing(model_name) as tmp:
        model.save(str(tmp))
    out.write_json(out.name("scaler", "json"), scaler.to_json())

    result = PairResult(
        spec=spec, data=data, split=split, scaler=scaler, balance=balance, model=model, history=hist,
        epoch_seconds=timings["epoch_seconds"], evaluations=evaluations, timings=timings, resumed=resumed,
        gpu={"available": bool(gpus), "devices": [g.name for g in gpus], "used": bool(gpus), **device},
        started=started,
    )
    if probes is not None:
        ev = result.validation
        last = _fold_summary(len(probes) + 1, split, data, ev.y_true.astype(np.int64), ev.y_prob, hist,
                             result.best_epoch())
        folds = [*probes, last]
        result.folds = {"folds": folds, "spread": _spread(folds), "saved_model": "the last fold's"}
        echo(f"Fold {len(folds)}/{len(folds)} (saved): validation accuracy {last['accuracy']:.4f}; across folds "
             f"{result.folds['spread']['accuracy']['mean']:.4f} +/- {result.folds['spread']['accuracy']['std']:.4f}")
    summary = result.validation.summary()
    echo(
        f"Validation on {summary['samples']:,} targets: accuracy {summary['accuracy']:.4f}, "
        f"loss {summary['loss']:.4f} (best epoch {result.best_epoch()} of {len(hist['loss'])})"
    )
    t0 = time.perf_counter()
    for name in spec.reporters:
        reporter = plugins.create("reporter", name)
        try:
            reporter.report_pair(result, out)
        except TrainerError:
            raise
        except Exception as exc:
            raise TrainingError(f"{spec.pair}: reporter {name!r} failed: {type(exc).__name__}: {exc}.") from exc
    timings["report_seconds"] = time.perf_counter() - t0
    result.artifacts = sorted(out.written)
    return result


def versions() -> dict:
    return _versions()
