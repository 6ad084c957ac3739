"""What a pair's training produces: the balancer's answer, per-slice evaluations and the `PairResult`
reporters read. The direction of the early-stopping monitor is decided here, once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import CLASS_NAMES, PairData
from ..manifest import PairSpec
from ..scaling import Scaler
from ..split import Split


def monitor_mode(monitor: str) -> str:
    """``"max"`` for an accuracy-like monitor (``val_accuracy``), ``"min"`` for a loss."""
    return "max" if "acc" in monitor else "min"


def best_index(values: Sequence[float], monitor: str) -> int:
    """0-based position of the best value of ``monitor`` in ``values`` (the first on a tie)."""
    pick = np.argmax if monitor_mode(monitor) == "max" else np.argmin
    return int(pick(np.asarray(values, dtype=np.float64)))


def is_better(value: float, best: float, monitor: str) -> bool:
    """Whether ``value`` improves on ``best`` for ``monitor``."""
    return value > best if monitor_mode(monitor) == "max" else value < best


@dataclass
class Balance:
    """What a balancer returns: the kept training target rows, and optional loss weights per class.

    Attributes:
        indices: the training target rows to keep (a subset of the rows the balancer was given).
        class_weight: ``{class: weight}`` applied to the loss, or None.
    """

    indices: np.ndarray
    class_weight: dict[int, float] | None = None


@dataclass
class Evaluation:
    """Predictions of the trained model on one slice (``validation`` or ``test``), in row order.

    Attributes:
        name: the slice's name.
        rows: the target rows of the slice (positions in `PairData`).
        y_true: their labels (0 SHORT, 1 HOLD, 2 LONG).
        y_prob: the model's class probabilities, shape ``(len(rows), 3)``.
    """

    name: str
    rows: np.ndarray
    y_true: np.ndarray
    y_prob: np.ndarray

    @property
    def y_pred(self) -> np.ndarray:
        """The arg-max class of every row."""
        return self.y_prob.argmax(axis=1).astype(np.int8)

    def summary(self) -> dict:
        """Samples, accuracy, log loss and the true class counts of the slice."""
        n = int(len(self.y_true))
        p = np.clip(self.y_prob[np.arange(n), self.y_true], 1e-7, 1.0)
        return {
            "samples": n,
            "accuracy": float(np.mean(self.y_pred == self.y_true)) if n else None,
            "loss": float(-np.mean(np.log(p))) if n else None,
            "class_counts": {name: int(np.sum(self.y_true == i)) for i, name in enumerate(CLASS_NAMES)},
        }

    def scores(self) -> dict:
        """Class-balance-aware figures: MCC, balanced accuracy, how often each class was predicted,
        and the class a model predicts for every row (None when it predicts more than one)."""
        from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef

        y_true, y_pred = self.y_true.astype(np.int64), self.y_pred.astype(np.int64)
        predicted = {name: int(np.sum(y_pred == i)) for i, name in enumerate(CLASS_NAMES)}
        used = [name for name, count in predicted.items() if count]
        n = len(y_true)
        return {
            "mcc": float(matthews_corrcoef(y_true, y_pred)) if n else None,
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if n else None,
            "predicted": predicted,
            "single_class": used[0] if len(used) == 1 else None,
        }


@dataclass
class PairResult:
    """Everything known about a trained pair; reporters read it, the engine commits it.

    Attributes:
        spec: the resolved, frozen settings of the pair.
        data: the loaded `PairData` (features unscaled).
        split: the purged chronological split used by the saved model.
        scaler: the fitted scaler (train rows only).
        balance: the balanced training targets.
        model: the trained Keras model (best epoch's weights).
        history: per-epoch metrics (``loss``, ``val_accuracy``...), the whole run's, also after a resume.
        epoch_seconds: wall time of every epoch.
        evaluations: ``{"validation": Evaluation, "test": Evaluation}`` (test only with ``split.test``).
        timings: seconds spent per stage.
        resumed: whether the run resumed an interrupted attempt.
        gpu: where it trained (device, precision, cuDNN eligibility of every LSTM layer).
        pair_dir: where the committed artifacts live (a path or a URL), set after the commit.
        started: ISO-8601 UTC time the run started.
        artifacts: the committed artifact names.
        folds: walk-forward per-fold metrics and their spread, or None.
        figures: each reporter's returned headline figures, by reporter name.
    """

    spec: PairSpec
    data: PairData
    split: Split
    scaler: Scaler
    balance: Balance
    model: Any
    history: dict[str, list[float]]
    epoch_seconds: list[float]
    evaluations: dict[str, Evaluation]
    timings: dict[str, Any]
    resumed: bool
    gpu: dict[str, Any]
    pair_dir: str | None = None
    started: str = ""
    artifacts: list[str] = field(default_factory=list)
    folds: dict | None = None
    figures: dict[str, dict] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The artifact tag, e.g. ``ETHUSDT_FW120_SL050_TP100``."""
        return self.spec.tag

    @property
    def validation(self) -> Evaluation:
        """The evaluation on the whole validation slice."""
        return self.evaluations["validation"]

    def best_epoch(self) -> int:
        """1-based epoch chosen by the early-stopping monitor."""
        return best_epoch(self.history, self.spec.train.early_stopping_monitor)

    def metrics(self) -> dict:
        """Final-epoch and best-epoch metrics, and the summary of every evaluated slice."""
        h = self.history
        final = {k: float(v[-1]) for k, v in h.items() if v}
        best = self.best_epoch()
        at_best = {k: float(v[best - 1]) for k, v in h.items() if len(v) >= best}
        return {
            "final_epoch": final,
            "best_epoch": dict(at_best, epoch=best, monitor=self.spec.train.early_stopping_monitor),
            **{name: ev.summary() for name, ev in self.evaluations.items()},
        }

    def summary_metrics(self) -> dict:
        """The engine's headline figures of the pair, as the batch summary and the CLI show them."""
        val = self.validation.summary()
        return {
            "val_accuracy": val["accuracy"],
            "val_loss": val["loss"],
            "val_samples": val["samples"],
            "epochs": len(self.history.get("loss", [])),
            "best_epoch": self.best_epoch(),
            **self.validation.scores(),
        }


def best_epoch(history: dict[str, list[float]], monitor: str) -> int:
    """1-based best epoch of ``monitor`` in a history (the last epoch when it was not recorded)."""
    values = history.get(monitor) or []
    if not values:
        return len(history.get("loss", []))
    return best_index(values, monitor) + 1
