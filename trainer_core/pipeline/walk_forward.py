"""Walk-forward validation: earlier folds fitted and scored through the same `fit_fold` as the saved
model, then every fold's figures and their spread."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..data import PairData
from ..manifest import PairSpec
from ..plugins import Plugins
from ..split import Split
from .fit import fit_fold, prepare_fold
from .results import Evaluation, best_epoch


def fold_summary(k: int, split: Split, data: PairData, ev: Evaluation, history: dict, best: int) -> dict:
    """One fold's figures: its split, accuracy, log loss, macro F1, epochs and best epoch."""
    from sklearn.metrics import f1_score

    y_true = ev.y_true.astype(np.int64)
    y_pred = ev.y_prob.argmax(axis=1)
    p = np.clip(ev.y_prob[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    return {
        "fold": k,
        "split": split.describe(data),
        "samples": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)),
        "loss": float(-np.mean(np.log(p))),
        "macro_f1": float(f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro", zero_division=0)),
        "epochs": len(history.get("loss", [])),
        "best_epoch": best,
    }


def fit_earlier_fold(
    spec: PairSpec,
    plugins: Plugins,
    data: PairData,
    split: Split,
    k: int,
    total: int,
    echo: Callable[[str], None],
) -> dict:
    """Train and evaluate one earlier walk-forward fold; its model is not kept."""
    fit = fit_fold(spec, plugins, data, prepare_fold(spec, plugins, data, split), echo=echo)
    summary = fold_summary(
        k,
        split,
        data,
        fit.evaluations["validation"],
        fit.history,
        best_epoch(fit.history, spec.train.early_stopping_monitor),
    )
    echo(
        f"Fold {k}/{total}: {len(split.train_idx):,} training targets, validation accuracy {summary['accuracy']:.4f}, "
        f"macro F1 {summary['macro_f1']:.4f}"
    )
    return summary


def spread(folds: list[dict]) -> dict:
    """Mean, standard deviation, minimum and maximum of accuracy, loss and macro F1 across folds."""
    out = {}
    for key in ("accuracy", "loss", "macro_f1"):
        values = np.array([f[key] for f in folds], dtype=np.float64)
        out[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return out
