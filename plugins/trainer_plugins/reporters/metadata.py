"""Reporter `metadata`: ``metadata_{tag}.json``, everything needed to trust and reuse a pair's model.

The seed's sections (config, data, model, training, system, files) are kept under their names;
the resolved spec, provenance, split, balancing, evaluation and timings are added.
"""

from __future__ import annotations

import datetime as dt
import sys

import numpy as np

from trainer_core import hookimpl, versions

from ..labelers.tp_sl import settings_of


def _param_counts(model) -> dict:
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    total = int(model.count_params())
    return {
        "total_parameters": total,
        "trainable_parameters": trainable,
        "non_trainable_parameters": total - trainable,
    }


def build_metadata(result, out) -> dict:
    """The ``metadata_{tag}.json`` document of a trained pair (``out`` names the pair's other files)."""
    spec = result.spec
    data = result.data
    hist = result.history
    metrics = result.metrics()
    balance = result.balance
    t = spec.train
    barriers = settings_of(spec)
    val_acc = hist.get("val_accuracy", [])
    return {
        "format": "pair-trainer metadata v1",
        "pair": spec.pair,
        "tag": spec.tag,
        "config": {
            "pair": spec.pair,
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "sequence_length": t.sequence_length,
            "lstm_units": spec.model.params.get("lstm_units"),
            "dense_units": spec.model.params.get("dense_units"),
            "dropout_rate": spec.model.params.get("dropout"),
            "learning_rate": t.learning_rate,
            "validation_split": spec.split.validation,
            "future_window": barriers.future_window,
            "long_tp_pct": barriers.take_profit_pct,
            "long_sl_pct": barriers.stop_loss_pct,
            "short_tp_pct": barriers.short_tp,
            "short_sl_pct": barriers.short_sl,
        },
        "spec": spec.to_dict(),
        "config_hash": spec.config_hash,
        "data": {
            "source": data.source,
            "sha256": data.sha256,
            "features_sha256": data.features_sha256(),
            "loader": spec.data.loader,
            "rows": len(data),
            "labelled_rows": int(np.count_nonzero(data.labels >= 0)),
            "time_range": data.time_range(),
            "timestamps_in_file": data.extra.get("timestamps_in_file", True),
            # rows whose features read less than the feature set's full history: never targets
            "full_history": data.extra.get("full_history"),
            "short_history_rows": data.extra.get("short_history_rows"),
            "feature_columns": list(data.feature_names),
            "features_shape": list(data.features.shape),
            "label_format": "one-hot label_0..2 (SHORT, HOLD, LONG)",
            "label_params": data.label_params,
            "class_counts": data.class_counts(),
            "scaling_enabled": spec.scaling.scaler != "none",
            "scaler_type": spec.scaling.scaler,
        },
        "split": result.split.describe(data),
        "walk_forward": result.folds,
        "balancing": {
            "method": spec.balance.method,
            "applied": spec.balance.method != "none",
            "train_class_counts_before": data.class_counts(result.split.train_idx),
            "train_class_counts_after": data.class_counts(balance.indices),
            "train_targets_before": int(len(result.split.train_idx)),
            "train_targets_after": int(len(balance.indices)),
            "class_weight": {str(k): v for k, v in (balance.class_weight or {}).items()} or None,
        },
        "model": {
            "builder": spec.model.builder,
            "params": dict(spec.model.params),
            **_param_counts(result.model),
            "input_shape": [t.sequence_length, len(data.feature_names)],
            "optimizer": "Adam",
            "loss_function": "categorical_focal_crossentropy"
            if t.loss == "focal"
            else "categorical_crossentropy",
            "metrics": ["accuracy"],
        },
        "training": {
            "completed_epochs": len(hist.get("loss", [])),
            "best_epoch": result.best_epoch(),
            "resumed": result.resumed,
            "final_training_loss": hist["loss"][-1],
            "final_validation_loss": hist.get("val_loss", [None])[-1],
            "final_training_accuracy": hist.get("accuracy", [None])[-1],
            "final_validation_accuracy": val_acc[-1] if val_acc else None,
            "best_validation_accuracy": max(val_acc) if val_acc else None,
            "history": hist,
        },
        "metrics": metrics,
        "reproducibility": {
            "seed": t.seed,
            "deterministic": [
                "the split, the scaler and the balanced training targets (numpy, seeded)",
                "the order of training windows in every epoch (a stateless shuffle of the seed and the "
                "epoch number, also after a resume)",
                "weight initialisation and dropout (keras.utils.set_random_seed)",
            ],
            "not_guaranteed": [
                "bit-identical results across machines, TensorFlow versions or thread counts",
                "GPU kernels (cuDNN): TensorFlow's op determinism is not enforced, for speed",
            ],
            "observed": "on one CPU machine two runs with the same seed, data and settings give the same losses",
        },
        "timings": result.timings,
        "system": {
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "started": result.started or None,
            "python_version": sys.version.split()[0],
            "versions": versions(),
            "tensorflow_version": versions().get("tensorflow"),
            "gpu_available": result.gpu["available"],
            "gpu_used": result.gpu["used"],
            "gpu_devices": result.gpu["devices"],
            "device": result.gpu.get("device"),
            "precision": result.gpu.get("precision"),
            "lstm_kernel": result.gpu.get("lstm_kernel"),
            "lstm_layers": result.gpu.get("lstm_layers"),
        },
        "files": {
            "model_file": out.name("model", "keras"),
            "scaler_file": out.name("scaler", "json"),
            "metadata_file": out.name("metadata", "json"),
            "history_file": out.name("history", "csv"),
            "training_data_file": data.source,
        },
    }


class MetadataReporter:
    """metadata_{tag}.json: config, data provenance, split, model size, results, versions, timings."""

    def report_pair(self, result, out) -> None:
        """Write ``metadata_{tag}.json``."""
        out.write_json(out.name("metadata", "json"), build_metadata(result, out))


@hookimpl
def trainer_register_reporters(register):
    """Register the ``metadata`` reporter."""
    register("metadata", MetadataReporter)
