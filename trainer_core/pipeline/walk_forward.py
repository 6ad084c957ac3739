"""Walk-forward validation that is out of sample: each fold early-stops on an inner slice at the
end of its own training rows and is scored on its outer block, which nothing of the fold touched;
every fold (the saved model's too) goes through the same `fit_fold`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..data import PairData
from ..manifest import PairSpec
from ..plugins import Plugins
from ..split import Split
from .fit import fit_fold, prepare_fold
from .results import Evaluation, best_epoch

SCORED_ON = "outer block (untouched: not trained on, not early-stopped on)"


def out_of_sample_fold(split: Split, inner: float) -> Split:
    """The fold with an inner early-stopping slice: the last ``inner`` share of the rows before its
    purge becomes the validation slice (purged from the training rows by the embargo), and the
    fold's block becomes its test slice, scored only."""
    train = split.train_idx
    lo, hi = int(train[0]), int(split.train_end)
    inner_start = hi - max(1, int(np.floor((hi - lo) * inner)))
    inner_val = train[train >= inner_start]
    inner_train = train[train < inner_start - split.embargo]
    return Split(
        n_rows=split.n_rows,
        window=split.window,
        future_window=split.future_window,
        embargo=split.embargo,
        val_start=inner_start,
        test_start=split.val_start,
        train_idx=inner_train,
        val_idx=inner_val,
        test_idx=split.val_idx,
    )


def fold_summary(k: int, split: Split, data: PairData, ev: Evaluation, history: dict, best: int) -> dict:
    """One fold's figures on its outer block: its split, accuracy, log loss, macro F1, MCC, epochs
    and best epoch (chosen on the inner slice)."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    y_true = ev.y_true.astype(np.int64)
    y_pred = ev.y_prob.argmax(axis=1)
    p = np.clip(ev.y_prob[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    return {
        "fold": k,
        "split": split.describe(data),
        "scored_on": SCORED_ON if ev.name == "test" else ev.name,
        "samples": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else None,
        "loss": float(-np.mean(np.log(p))) if len(y_true) else None,
        "macro_f1": float(f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)) if len(y_true) else None,
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
) -> tuple[dict, Evaluation]:
    """Train one earlier walk-forward fold (early-stopped on its inner slice) and score it on its
    outer block; its model is not kept. Returns the fold's figures and its outer-block evaluation."""
    fit = fit_fold(spec, plugins, data, prepare_fold(spec, plugins, data, split), echo=echo)
    outer = fit.evaluations.get("test") or fit.evaluations["validation"]
    summary = fold_summary(
        k, split, data, outer, fit.history, best_epoch(fit.history, spec.train.early_stopping_monitor)
    )
    echo(
        f"Fold {k}/{total}: {len(split.train_idx):,} training targets; on its untouched block of "
        f"{summary['samples']:,} targets accuracy {summary['accuracy']:.4f}, MCC {summary['mcc']:.3f}"
    )
    return summary, outer


def spread(folds: list[dict]) -> dict:
    """Mean, standard deviation, minimum and maximum of accuracy, loss, macro F1 and MCC across folds."""
    out = {}
    for key in ("accuracy", "loss", "macro_f1", "mcc"):
        values = np.array([f[key] for f in folds if f.get(key) is not None], dtype=np.float64)
        if not len(values):
            continue
        out[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return out
