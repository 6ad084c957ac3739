"""Keras fitting of one fold: scale, balance, build, compile, callbacks, datasets, fit, evaluate.

The same `fit_fold` trains every walk-forward fold and the saved model; only the saved model's fit
keeps a working folder (best checkpoint, backup, TensorBoard logs, the epoch record for a resume).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import N_CLASSES, PairData
from ..errors import ConfigError, PluginError, PreemptedError, TrainerError, TrainingError
from ..manifest import PairSpec
from ..plugins import Plugins
from ..scaling import Scaler, fit_scaler
from ..split import Split
from .results import Balance, Evaluation, best_index, monitor_mode

#: kept beside the Keras backup while a run is in progress (so a resume knows its past)
CHECKPOINT_FILE = "checkpoint.weights.h5"
EPOCHS_FILE = "epochs.partial.json"


def quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter off unless the user asked for it (set before import)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass
class Fold:
    """A split made ready to fit: its scaler (fitted on its train rows), the scaled features and the
    balanced training targets."""

    split: Split
    scaler: Scaler
    scaled: np.ndarray
    balance: Balance


@dataclass
class Fit:
    """A fitted fold: the model (best epoch's weights), its history and its evaluations."""

    model: Any
    history: dict[str, list[float]]
    evaluations: dict[str, Evaluation]
    device: dict[str, Any]
    gpus: list = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)


def check_balance(balance: Any, train_idx: np.ndarray, name: str) -> Balance:
    """A balancer's answer checked: a `Balance` of training target rows only, finite positive weights."""
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
        bad = {k: v for k, v in cw.items() if not (np.isfinite(v) and v > 0)}
        if bad:
            raise ConfigError(
                f"Balancer {name!r} gave class weights that are not finite positive numbers: {bad}.",
                "Set balance.class_weights to positive numbers (e.g. {0: 4.0, 1: 1.0, 2: 4.0}) or 'balanced'.",
            )
    return Balance(np.sort(indices), cw)


def prepare_fold(spec: PairSpec, plugins: Plugins, data: PairData, split: Split) -> Fold:
    """Fit the scaler on the split's train rows only and balance its training targets."""
    scaler = fit_scaler(spec.scaling.scaler, data.features, split.train_end, data.feature_names)
    scaled = scaler.transform(data.features)
    balancer = plugins.create("balancer", spec.balance.method)
    rng = np.random.default_rng(spec.train.seed)
    balance = check_balance(
        balancer.balance(data.labels, split.train_idx, rng, spec.balance),
        split.train_idx,
        spec.balance.method,
    )
    return Fold(split, scaler, scaled, balance)


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
        checks = (
            (
                getattr(getattr(cell, "activation", None), "__name__", "tanh") == "tanh",
                "activation is not tanh",
            ),
            (
                getattr(getattr(cell, "recurrent_activation", None), "__name__", "sigmoid") == "sigmoid",
                "recurrent_activation is not sigmoid",
            ),
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
        "lstm_kernel": ("cuDNN" if eligible else "generic (some layers are not cuDNN-eligible)")
        if gpus
        else "CPU (no GPU present)",
    }


def detect_gpus() -> list:
    """The visible GPUs, with memory growth on (so fractional GPUs can share a device)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass
    return gpus


def read_epochs(path: Path) -> dict[int, dict]:
    """The per-epoch record kept beside a run: {epoch: {metric: value, ..., "seconds": s}}."""
    try:
        return {int(k): v for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _compile(model, spec: PairSpec) -> None:
    import keras

    t = spec.train
    if t.loss == "focal":
        alpha = list(t.focal_alpha) if t.focal_alpha is not None else 1.0
        loss = keras.losses.CategoricalFocalCrossentropy(alpha=alpha, gamma=t.focal_gamma)
    else:
        loss = keras.losses.CategoricalCrossentropy()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=t.learning_rate), loss=loss, metrics=["accuracy"]
    )


def _build(spec: PairSpec, plugins: Plugins, input_shape: tuple[int, int]):
    builder = plugins.create("model", spec.model.builder)
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
    lambdas = [layer.name for layer in _all_layers(model) if type(layer).__name__ == "Lambda"]
    if lambdas:
        raise PluginError(
            f"Model builder {spec.model.builder!r} returned a model with a Lambda layer ({', '.join(lambdas)}): "
            "saved models are loaded with Keras' safe mode, which refuses Lambda layers, so it could never be "
            "used for prediction.",
            "Replace the Lambda layer by a registered custom layer (keras.saving.register_keras_serializable).",
        )
    return model


def _all_layers(model) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


def _production_callbacks(spec: PairSpec, workdir: Path, plugins: Plugins, record: dict) -> list:
    """Best checkpoint, resumable early stopping, reduce-LR, TensorBoard, plugin callbacks and the
    recording backup, in that order."""
    import keras

    t = spec.train
    monitor = t.early_stopping_monitor
    record_path = workdir / EPOCHS_FILE
    checkpoint = workdir / CHECKPOINT_FILE

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
                best_epoch, best = values[best_index([v for _, v in values], monitor)]
                self.best, self.best_epoch = best, best_epoch
                self.wait = values[-1][0] - best_epoch

    best_checkpoint = keras.callbacks.ModelCheckpoint(
        str(checkpoint),
        monitor=monitor,
        mode=monitor_mode(monitor),
        save_best_only=True,
        save_weights_only=True,
    )
    seen = [r[monitor] for r in record.values() if monitor in r]
    if seen and checkpoint.exists():
        best_checkpoint.best = seen[best_index(seen, monitor)]

    callbacks = [
        best_checkpoint,
        ResumableEarlyStopping(
            monitor=monitor,
            mode=monitor_mode(monitor),
            patience=t.early_stopping_patience,
            restore_best_weights=True,
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            factor=t.reduce_lr_factor,
            patience=t.reduce_lr_patience,
            min_lr=t.min_learning_rate,
        ),
        keras.callbacks.TensorBoard(log_dir=str(workdir / "logs"), write_graph=False),
    ]
    callbacks.extend(plugins.keras_callbacks(spec, workdir))
    # last: it records what every other callback added to the logs, then saves the backup
    # the backup outlives fit: the commit deletes it only once the artifacts are published
    callbacks.append(RecordingBackupAndRestore(backup_dir=str(workdir / "backup"), delete_checkpoint=False))
    return callbacks


class _Preemption:
    """SIGTERM while fitting: remember it, and stop at the end of the current training step.

    The epoch in progress is abandoned without its end-of-epoch callbacks, so the backup stays the
    one of the last complete epoch and the rerun resumes at the start of the interrupted epoch.
    Outside the main thread (no signal handlers there) it does nothing.
    """

    def __init__(self):
        self.received = False
        self._previous = None
        self._installed = False

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc):
        import signal

        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        return False

    def _handle(self, signum, frame):
        self.received = True

    def callback(self, pair: str):
        import keras

        owner = self

        class StopOnSigterm(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if owner.received:
                    raise PreemptedError(
                        f"{pair}: stopped by SIGTERM during training; the backup of the last complete epoch "
                        "is kept.",
                        "Run the same command again: it resumes from that epoch.",
                    )

            on_test_batch_end = on_train_batch_end

        return StopOnSigterm()


def _fold_callbacks(spec: PairSpec) -> list:
    """An earlier walk-forward fold keeps nothing on disk: early stopping and reduce-LR only."""
    import keras

    t = spec.train
    return [
        keras.callbacks.EarlyStopping(
            monitor=t.early_stopping_monitor,
            mode=monitor_mode(t.early_stopping_monitor),
            patience=t.early_stopping_patience,
            restore_best_weights=True,
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            factor=t.reduce_lr_factor,
            patience=t.reduce_lr_patience,
            min_lr=t.min_learning_rate,
        ),
    ]


def predict_rows(
    model, feats, labs, rows: np.ndarray, spec: PairSpec, name: str, labels: np.ndarray
) -> Evaluation:
    """The model's probabilities for the windows ending at ``rows``."""
    from ..windows import window_dataset

    if not len(rows):
        return Evaluation(name, rows, labels[rows].astype(np.int8), np.zeros((0, N_CLASSES), np.float32))
    ds = window_dataset(
        feats,
        labs,
        rows,
        spec.train.sequence_length,
        max(spec.train.batch_size, 1024),
        shuffle=False,
        with_labels=False,
    )
    y_prob = model.predict(ds, verbose=0).astype(np.float32)
    return Evaluation(name, rows, labels[rows].astype(np.int8), y_prob)


def fit_fold(
    spec: PairSpec,
    plugins: Plugins,
    data: PairData,
    fold: Fold,
    *,
    workdir: Path | None = None,
    resumed: bool = False,
    echo: Callable[[str], None] = print,
    callbacks: list | None = None,
) -> Fit:
    """Build, compile and fit the model on one fold, then evaluate it on the fold's validation (and
    test) targets.

    With ``workdir`` (the saved model's fit) the production callbacks keep their state there, so an
    interrupted run resumes; without it (an earlier walk-forward fold) nothing is written.
    ``callbacks``: extra Keras callbacks for this fit only, after the others (a search's pruning).
    """
    t_import = time.perf_counter()
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    from ..windows import steps, window_dataset

    timings: dict[str, Any] = {"import_seconds": time.perf_counter() - t_import}
    t = spec.train
    final = workdir is not None
    gpus = detect_gpus()
    keras.utils.set_random_seed(t.seed)

    precision = "float32"
    if t.mixed_precision:
        if gpus:
            keras.mixed_precision.set_global_policy("mixed_float16")
            precision = "mixed_float16"
        elif final:
            echo("train.mixed_precision is for GPUs; on this CPU the model trains in float32")
    input_shape = (t.sequence_length, fold.scaled.shape[1])
    model = _build(spec, plugins, input_shape)
    _compile(model, spec)
    device = device_report(model, gpus, precision)
    if final:
        echo(f"Model {spec.model.builder!r}: {model.count_params():,} parameters, input {input_shape}")
        for layer in device["lstm_layers"]:
            if not layer["cudnn_eligible"]:
                echo(
                    f"Warning: LSTM layer {layer['name']!r} cannot use the cuDNN kernel ({'; '.join(layer['reasons'])})"
                    + ("; it runs on the much slower generic kernel." if gpus else "; this matters on a GPU.")
                )

    balance = fold.balance
    weights_by_class = None
    if balance.class_weight:
        weights_by_class = np.array(
            [balance.class_weight.get(i, 1.0) for i in range(N_CLASSES)], dtype=np.float32
        )

    first_epoch = 0
    record: dict[int, dict] = {}
    if final and resumed:  # Keras' backup knows the epoch it resumes at
        try:
            first_epoch = int(
                json.loads((workdir / "backup" / "training_metadata.json").read_text())["epoch"]
            )
        except (OSError, ValueError, KeyError, TypeError):
            first_epoch = 0
        record = read_epochs(workdir / EPOCHS_FILE)
    feats = tf.constant(fold.scaled)
    labs = tf.constant(np.where(data.labels < 0, 0, data.labels).astype(np.int32))
    train_ds = window_dataset(
        feats,
        labs,
        balance.indices,
        t.sequence_length,
        t.batch_size,
        shuffle=True,
        seed=t.seed,
        sample_weight_by_class=weights_by_class,
        first_epoch=first_epoch,
    )
    val_ds = window_dataset(feats, labs, fold.split.val_idx, t.sequence_length, t.batch_size, shuffle=False)

    if final:
        fit_callbacks = _production_callbacks(spec, workdir, plugins, record)
        verbose = t.verbose if t.verbose != "auto" else (1 if sys.stdout.isatty() else 2)
        if resumed:
            echo(f"Resuming an interrupted run after epoch {len(record)} (from its backup)")
    else:
        fit_callbacks, verbose = _fold_callbacks(spec), 0
    fit_callbacks.extend(callbacks or ())
    t0 = time.perf_counter()
    try:
        with _Preemption() as preemption:
            # first, so it stops the step before any other callback sees it
            fit_callbacks.insert(0, preemption.callback(spec.pair))
            history = model.fit(
                train_ds,
                epochs=t.epochs,
                steps_per_epoch=steps(len(balance.indices), t.batch_size),
                validation_data=val_ds,
                callbacks=fit_callbacks,
                verbose=verbose,
                shuffle=False,  # the dataset draws its own permutation per epoch
            )
            if preemption.received:  # between the last step and the end of fit
                raise PreemptedError(
                    f"{spec.pair}: stopped by SIGTERM at the end of training.",
                    "Run the same command again: it resumes from its last epoch.",
                )
    except tf.errors.ResourceExhaustedError as exc:
        raise TrainingError(
            f"{spec.pair}: out of memory while training ({exc.message.splitlines()[0]}).",
            "Lower train.batch_size or the model size, or give the pair more memory.",
        ) from exc
    timings["train_seconds"] = time.perf_counter() - t0

    if final:
        checkpoint = workdir / CHECKPOINT_FILE
        if checkpoint.exists():  # kept (like the epoch record) until the commit succeeded
            model.load_weights(str(checkpoint))
        epochs = [record[e] for e in sorted(record)]
        keys = [k for k in history.history] or [k for k in (epochs[0] if epochs else {}) if k != "seconds"]
        hist = {k: [float(e[k]) for e in epochs if k in e] for k in keys}
        epoch_times = [float(e["seconds"]) for e in epochs]
        train_times = [float(e.get("train_seconds", e["seconds"])) for e in epochs]
        timings["epoch_seconds"] = epoch_times
        timings["epoch_train_seconds"] = train_times
        # the training loop's rate: training targets per second of the epochs' training passes
        # (each epoch's validation pass is in epoch_seconds, not here)
        timings["samples_per_second"] = (
            float(len(balance.indices) * len(train_times) / sum(train_times))
            if train_times and sum(train_times) > 0
            else None
        )
    else:
        hist = {k: [float(x) for x in v] for k, v in history.history.items()}
    if not hist.get("loss"):
        raise TrainingError(f"{spec.pair}: training ran no epoch.")
    if not np.isfinite(hist["loss"]).all():
        raise TrainingError(
            f"{spec.pair}: the training loss became NaN/Inf.",
            "Lower train.learning_rate or check the scaler.",
        )

    t0 = time.perf_counter()
    split = fold.split
    evaluations = {
        "validation": predict_rows(model, feats, labs, split.val_idx, spec, "validation", data.labels)
    }
    if len(split.test_idx):
        evaluations["test"] = predict_rows(model, feats, labs, split.test_idx, spec, "test", data.labels)
    timings["evaluate_seconds"] = time.perf_counter() - t0
    return Fit(model, hist, evaluations, device, gpus, timings)


__all__ = [
    "CHECKPOINT_FILE",
    "EPOCHS_FILE",
    "Fit",
    "Fold",
    "check_balance",
    "detect_gpus",
    "device_report",
    "fit_fold",
    "predict_rows",
    "prepare_fold",
    "quiet_tensorflow",
    "read_epochs",
]
