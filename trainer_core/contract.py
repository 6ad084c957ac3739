"""The floor below the hook specs: the data types that cross the engine-plugin boundary and the
protocol of every component kind. It imports nothing of the engine at run time.

``hookspecs.py`` imports its types from here only; plugins import them from ``trainer_core``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # annotations only: none of these is imported at run time
    from .artifacts import ArtifactWriter
    from .candles import Candles
    from .manifest import Manifest as Manifest
    from .manifest import PairSpec as PairSpec
    from .scaling import Scaler
    from .split import Split

__all__ = [
    "CLASS_NAMES",
    "N_CLASSES",
    "NO_LABEL",
    "Balance",
    "Balancer",
    "BatchEvent",
    "BatchReport",
    "BatchReporter",
    "BatchRow",
    "CandleSource",
    "Evaluation",
    "FeatureSet",
    "Labeler",
    "Loader",
    "ModelBuilder",
    "PairData",
    "PairResult",
    "Register",
    "Reporter",
    "best_epoch",
    "best_index",
    "figure_of",
    "is_better",
    "monitor_mode",
    "sort_rows",
]

CLASS_NAMES = ("SHORT", "HOLD", "LONG")
N_CLASSES = 3
NO_LABEL = -1

#: ``register(name, factory)``: what every registration hook receives
Register = Callable[[str, Callable[[], Any]], None]


# ---------------------------------------------------------------------------
# One pair's rows
# ---------------------------------------------------------------------------


@dataclass
class PairData:
    """One pair's rows: features, labels and where they came from.

    ``timestamps`` datetime64[ms] strictly increasing; ``features`` float32 (n, F) C-contiguous;
    ``labels`` int8 (n,) in {0 SHORT, 1 HOLD, 2 LONG}, -1 for a row without a label (history
    only, never a target). ``long_return`` / ``short_return`` are optional per-row float arrays.
    ``breaks``: rows that follow a gap in time; no window crosses one. None: derived from the
    timestamps (a step longer than the timeframe is a gap).
    """

    timestamps: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    feature_names: tuple[str, ...]
    source: str
    sha256: str | None
    label_params: dict[str, Any] = field(default_factory=dict)
    long_return: np.ndarray | None = None
    short_return: np.ndarray | None = None
    breaks: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def features_sha256(self) -> str:
        """``sha256:`` and the SHA-256 of the feature matrix's bytes (identical data, identical hash)."""
        return "sha256:" + hashlib.sha256(np.ascontiguousarray(self.features).tobytes()).hexdigest()

    def time_range(self) -> tuple[str, str] | None:
        """The first and last timestamps (ISO-8601), or None for empty data."""
        if len(self) == 0:
            return None
        return _iso(self.timestamps[0]), _iso(self.timestamps[-1])

    def class_counts(self, rows: np.ndarray | None = None) -> dict[str, int]:
        """``{"SHORT": n, "HOLD": n, "LONG": n}`` over all rows, or over ``rows``."""
        labels = self.labels if rows is None else self.labels[rows]
        return {name: int(np.count_nonzero(labels == i)) for i, name in enumerate(CLASS_NAMES)}


def _iso(ts: np.datetime64) -> str:
    return str(np.datetime_as_string(ts.astype("datetime64[ms]"), unit="s")) + "Z"


# ---------------------------------------------------------------------------
# What a balancer returns, what the model predicted, what a trained pair is
# ---------------------------------------------------------------------------


def monitor_mode(monitor: str) -> str:
    """``"max"`` for an accuracy-like monitor (``val_accuracy``), ``"min"`` for a loss."""
    return "max" if "acc" in monitor else "min"


def best_index(values: Sequence[float], monitor: str) -> int:
    """0-based position of the best value of ``monitor`` in ``values`` (the first on a tie)."""
    array = np.asarray(values, dtype=np.float64)
    return int(np.argmax(array) if monitor_mode(monitor) == "max" else np.argmin(array))


def is_better(value: float, best: float, monitor: str) -> bool:
    """Whether ``value`` improves on ``best`` for ``monitor``."""
    return value > best if monitor_mode(monitor) == "max" else value < best


def best_epoch(history: Mapping[str, Sequence[float]], monitor: str) -> int:
    """1-based best epoch of ``monitor`` in a history (the last epoch when it was not recorded)."""
    values = history.get(monitor) or []
    if not values:
        return len(history.get("loss", []))
    return best_index(values, monitor) + 1


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
        return np.asarray(self.y_prob.argmax(axis=1).astype(np.int8))

    def summary(self) -> dict[str, Any]:
        """Samples, accuracy, log loss and the true class counts of the slice."""
        n = int(len(self.y_true))
        p = np.clip(self.y_prob[np.arange(n), self.y_true], 1e-7, 1.0)
        return {
            "samples": n,
            "accuracy": float(np.mean(self.y_pred == self.y_true)) if n else None,
            "loss": float(-np.mean(np.log(p))) if n else None,
            "class_counts": {name: int(np.sum(self.y_true == i)) for i, name in enumerate(CLASS_NAMES)},
        }

    def scores(self) -> dict[str, Any]:
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
        candles: the pair's candles the rows were made from (None when a loader returned rows).
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
    folds: dict[str, Any] | None = None
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    candles: Candles | None = None

    @property
    def tag(self) -> str:
        """The artifact tag, e.g. ``ETHUSDT_FW120_SL050_TP100``."""
        return str(self.spec.tag)

    @property
    def validation(self) -> Evaluation:
        """The evaluation on the whole validation slice."""
        return self.evaluations["validation"]

    def best_epoch(self) -> int:
        """1-based epoch chosen by the early-stopping monitor."""
        return best_epoch(self.history, str(self.spec.train.early_stopping_monitor))

    def metrics(self) -> dict[str, Any]:
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

    def summary_metrics(self) -> dict[str, Any]:
        """The engine's headline figures of the pair, as the batch summary and the CLI show them."""
        val = self.validation.summary()
        # the class-balance-aware headline (MCC, balanced accuracy, signals) comes from the untouched
        # test slice when there is one; the validation slice chose the epoch and is optimistic
        test = self.evaluations.get("test")
        headline = test if test is not None and len(test.y_true) else self.validation
        val_scores = self.validation.scores()
        return {
            "val_accuracy": val["accuracy"],
            "val_loss": val["loss"],
            "val_samples": val["samples"],
            "epochs": len(self.history.get("loss", [])),
            "best_epoch": self.best_epoch(),
            **headline.scores(),
            "measured_on": "test" if headline is test else "validation",
            "headline_samples": int(len(headline.y_true)),
            "val_mcc": val_scores["mcc"],
        }


# ---------------------------------------------------------------------------
# A batch: one row per pair, and the whole batch as batch reporters see it
# ---------------------------------------------------------------------------

#: the statuses a batch row can have
STATUSES = ("trained", "skipped", "failed", "cancelled")


@dataclass
class BatchRow(Mapping[str, Any]):
    """One pair's outcome in a batch, as the worker returns it and `trainer_after_batch` and the
    batch reporters receive it. Read as attributes (``row.status``) or as a mapping (``row["status"]``).

    Attributes:
        pair: the pair's name.
        status: ``trained``, ``skipped``, ``failed`` or ``cancelled``.
        reason: why (``trained``, ``no completed run``, ``error``, ``interrupted (Ctrl-C)``, ``interrupted (SIGTERM)``...).
        error: the failure's one-line message, or None.
        hint: what to do about it, or None.
        exit_code: the failure's exit code, or None.
        seconds: wall time in the worker, or None.
        metrics: the engine's validation metrics (a skipped pair's from its ``_SUCCESS.json``).
        figures: ``{reporter: headline figures}``.
        artifacts: the pair's folder (a path or a URL), or None.
        tag: the artifact tag, or None.
        trained_at: ISO-8601 UTC time the pair was committed, or None.
        traceback: the worker's traceback of an unexpected error, or None.
    """

    pair: str
    status: str
    reason: str = ""
    error: str | None = None
    hint: str | None = None
    exit_code: int | None = None
    seconds: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    artifacts: str | None = None
    tag: str | None = None
    trained_at: str | None = None
    traceback: str | None = None

    def __getitem__(self, key: str) -> Any:
        if key not in _ROW_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_ROW_FIELDS)

    def __len__(self) -> int:
        return len(_ROW_FIELDS)

    def as_dict(self) -> dict[str, Any]:
        """The row as a plain dict (JSON-able when its metrics and figures are)."""
        return {name: getattr(self, name) for name in _ROW_FIELDS}


_ROW_FIELDS = tuple(f.name for f in fields(BatchRow))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _search(node: Any, name: str) -> float | None:
    """The first number stored under key ``name`` in nested mappings, depth first."""
    if not isinstance(node, Mapping):
        return None
    found = _number(node.get(name))
    if found is not None:
        return found
    for value in node.values():
        found = _search(value, name)
        if found is not None:
            return found
    return None


def figure_of(row: Mapping[str, Any], name: str) -> float | None:
    """A row's value of a figure: the engine's metric of that name, else the first number of that
    name in the reporters' headline figures (in the order the reporters ran); None if absent."""
    metric = _number((row.get("metrics") or {}).get(name))
    return metric if metric is not None else _search(row.get("figures") or {}, name)


def sort_rows(rows: Sequence[BatchRow], figure: str, larger_is_better: bool = True) -> list[BatchRow]:
    """``rows`` best first by ``figure``: pairs lacking the figure after the others, failed and
    cancelled pairs last, ties in the given order; ``pair`` sorts by name."""

    def key(item: tuple[int, BatchRow]) -> tuple[bool, int, Any, int]:
        index, row = item
        last = row["status"] in ("failed", "cancelled")
        if figure == "pair":
            return (last, 0, row["pair"], index)
        value = figure_of(row, figure)
        if value is None:
            return (last, 1, 0.0, index)
        return (last, 0, -value if larger_is_better else value, index)

    return [row for _, row in sorted(enumerate(rows), key=key)]


@dataclass
class BatchReport:
    """What a batch reporter's `report_batch(batch)` receives: the whole batch, one `BatchRow` per
    selected pair in the manifest's order (a skipped pair's metrics, figures and time come from its
    ``_SUCCESS.json``)."""

    manifest: Manifest
    output: str
    storage: Any
    started: str
    finished: str
    seconds: float
    interrupted: bool
    exit_code: int
    counts: dict[str, int]
    rows: list[BatchRow] = field(default_factory=list)
    #: the figure the user sorts pairs by (`trainer batch --sort`)
    sort: str = "mcc"
    #: whether a larger value of ``sort`` is better (it sorts descending)
    larger_is_better: bool = True
    #: where the batch reporters wrote (what each ``report_batch`` returned: a list of paths or URLs)
    written: list[str] = field(default_factory=list)

    def sorted_rows(self) -> list[BatchRow]:
        """The rows best first by ``sort``: pairs lacking that figure after the others, failed and
        cancelled pairs last, ties in the manifest's order."""
        return sort_rows(self.rows, self.sort, self.larger_is_better)


@dataclass
class BatchEvent:
    """A moment of a batch, as ``trainer_batch_progress`` receives it (the built-in `console`
    plugin prints one line per event, and the final table).

    Attributes:
        kind: ``skipped``, ``running``, ``trained``, ``failed``, ``cancelled``, ``waiting`` (a pair
            not started after ``batch.schedule_timeout``) or ``finished`` (the batch is over).
        pair: the pair's name (None for ``finished``).
        detail: what the driver says about it (why skipped, what a waiting pair waits for).
        done: pairs trained or failed so far; to_run: pairs the batch trains (skipped ones not
            counted); failed: pairs failed so far; elapsed: seconds since the batch started.
        echo: where the batch's lines go (the CLI's standard output).
        row: the pair's `BatchRow` once it finished (trained, failed, cancelled), else None.
        report: the whole `BatchReport`, for ``finished``.
        waited: for ``waiting``, the seconds since the pair was submitted.
    """

    kind: str
    pair: str | None
    detail: str
    done: int
    to_run: int
    failed: int
    elapsed: float
    echo: Callable[[str], None]
    row: BatchRow | None = None
    report: BatchReport | None = None
    waited: float | None = None


# ---------------------------------------------------------------------------
# Component protocols: what the engine calls on each kind (optional methods are named in the
# hook specs and probed once, where the engine resolves a pair's components)
# ---------------------------------------------------------------------------


@runtime_checkable
class Loader(Protocol):
    """``data.loader``: a pair's rows (`PairData`) or its candles (`Candles`) from ``data.path``.
    Optional: ``check(params)``, ``fingerprint(spec) -> str``, ``label_params_in_name(name) -> dict |
    None`` (what a data file's name says it holds, which prediction checks against the model)."""

    def load(self, spec: PairSpec) -> PairData | Candles: ...


CandleSource = Loader  # a loader that returns candles: the engine makes the rows


@runtime_checkable
class Balancer(Protocol):
    """``balance.method``: which training targets to keep, and the loss's class weights."""

    def balance(
        self, labels: np.ndarray, target_idx: np.ndarray, rng: np.random.Generator, params: Any
    ) -> Balance: ...


@runtime_checkable
class ModelBuilder(Protocol):
    """``model.builder``: an uncompiled or compiled Keras model. Optional: ``check(params)``."""

    def build(self, input_shape: tuple[int, int], n_classes: int, params: Any) -> Any: ...


@runtime_checkable
class Reporter(Protocol):
    """A name in ``reporters``: files beside the model, and its headline figures.
    Optional: ``figures`` (``{figure: larger_is_better}``, the figures ``trainer batch --sort`` may
    order pairs by), ``check(evaluation)`` (the ``evaluation`` section it reads, before any work)."""

    def report_pair(self, result: PairResult, out: ArtifactWriter) -> Mapping[str, Any] | None: ...


@runtime_checkable
class BatchReporter(Protocol):
    """A name in ``batch.reporters``: called once after a batch, in the driver."""

    def report_batch(self, batch: BatchReport) -> Sequence[str] | None: ...


@runtime_checkable
class FeatureSet(Protocol):
    """``features.set``: what a model sees at each candle. Optional: ``check(params)``,
    ``history(params)``, ``context_pairs(params)``, ``feature_params(params)`` (the params with
    its defaults filled in: the config hash counts those)."""

    def columns(self, params: dict[str, Any]) -> list[str]: ...

    def warmup(self, params: dict[str, Any]) -> int: ...

    def compute(self, candles: Any, params: dict[str, Any], *context: Any) -> np.ndarray: ...


@runtime_checkable
class Labeler(Protocol):
    """``labels.method``: what a model learns to predict. Optional: ``check(params)``,
    ``label_params(params)`` (the params with its defaults filled in: the config hash counts
    those, and the data record them)."""

    def horizon(self, params: dict[str, Any]) -> int: ...

    def tag(self, params: dict[str, Any]) -> str: ...

    def compute(self, candles: Any, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
