"""The chronological split, purged so no training label's horizon reaches validation or test.

Rows are split at ``s = floor(n * (1 - validation - test))`` (and ``floor(n * (1 - test))``):
train targets ``W-1 <= t < s - E`` with ``E = max(future_window, embargo)``, then a gap of E rows,
then validation targets, then (with ``split.test``) another gap and the test targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .data import NO_LABEL, PairData, _iso
from .errors import DataError


@dataclass
class Split:
    """A pair's split: the target row indices of train, validation and test, and where each starts."""

    n_rows: int
    window: int
    future_window: int
    embargo: int
    val_start: int
    test_start: int | None
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray

    @property
    def train_end(self) -> int:
        """First row that is not a training row (the scaler is fitted on rows below it)."""
        return self.val_start - self.embargo

    def describe(self, data: PairData) -> dict:
        """The split as a JSON-able dict: its settings, then first/last row and time of each part's targets and of the scaler's fit rows."""
        ts = data.timestamps

        def rng(idx):
            if len(idx) == 0:
                return None
            first, last = int(idx[0]), int(idx[-1])
            return {
                "first_row": first,
                "last_row": last,
                "count": int(len(idx)),
                "first_time": _iso(ts[first]),
                "last_time": _iso(ts[last]),
            }

        train = rng(self.train_idx)
        if train is not None:
            horizon_end = int(self.train_idx[-1]) + self.future_window
            train["last_label_horizon_row"] = horizon_end
            train["last_label_horizon_time"] = _iso(ts[min(horizon_end, self.n_rows - 1)])
        out = {
            "rows": self.n_rows,
            "sequence_length": self.window,
            "future_window": self.future_window,
            "embargo_rows": self.embargo,
            "validation_start_row": self.val_start,
            "train_targets": train,
            "validation_targets": rng(self.val_idx),
            "test_targets": rng(self.test_idx),
            "scaler_fit_rows": {
                "first_row": 0,
                "last_row": self.train_end - 1,
                "count": self.train_end,
                "first_time": _iso(ts[0]),
                "last_time": _iso(ts[self.train_end - 1]),
            },
        }
        return out


def _bounds(n: int, validation: float, test: float) -> tuple[int, int | None]:
    val_start = int(np.floor(n * (1.0 - validation - test)))
    test_start = int(np.floor(n * (1.0 - test))) if test > 0 else None
    return val_start, test_start


def _feasible(n: int, window: int, embargo: int, validation: float, test: float) -> bool:
    """Whether ``n`` rows leave at least one target in every part of the split."""
    val_start, test_start = _bounds(n, validation, test)
    ok = val_start - embargo > window - 1
    if test_start is None:
        return ok and n - val_start >= 1
    return ok and test_start - embargo > val_start and n - test_start >= 1


#: how many row counts `minimum_rows` tries one by one past its closed-form lower bound
_SCAN = 20_000


def minimum_rows(window: int, embargo: int, validation: float, test: float) -> int:
    """The fewest rows that leave at least one target in every part of the split.

    Constant time whatever the embargo: a binary search finds the first row count whose validation
    start leaves room for a window and the embargo (that condition only ever turns true as rows are
    added); a short scan from there, or from where the validation block first spans the embargo
    when there is a test slice, finds the exact answer. Only when validation or test is a tiny
    fraction (under about 1/20,000) can the scan run out; the answer is then the first row count
    past the point where the split is feasible for certain.
    """
    low = window + embargo + 2
    need_start = window + embargo  # val_start - embargo > window - 1

    def starts_late_enough(n: int) -> bool:
        return _bounds(n, validation, test)[0] >= need_start

    high = low
    while not starts_late_enough(high):
        high *= 2
    while low < high:  # the first n with a late enough validation start
        mid = (low + high) // 2
        if starts_late_enough(mid):
            high = mid
        else:
            low = mid + 1
    n = low
    if test > 0:  # the validation block must also outlast the second embargo
        n = max(n, int((embargo - 2) / validation) - 2)
    for candidate in range(n, n + _SCAN):
        if _feasible(candidate, window, embargo, validation, test):
            return candidate
    # past the scan: a row count where every part is certainly wide enough, then a bounded scan
    smallest = max(min(validation, test or 1.0, 1.0 - validation - test), 1e-12)
    n = max(n + _SCAN, math.ceil((embargo + window + 3) / smallest) + 3)
    for candidate in range(n, n + _SCAN):
        if _feasible(candidate, window, embargo, validation, test):
            return candidate
    return n  # fractions so small that floating point cannot place the split: an estimate


def purged_split(
    labels: np.ndarray,
    window: int,
    future_window: int,
    embargo: int,
    validation: float,
    test: float = 0.0,
    where: str = "data",
    breaks: np.ndarray | None = None,
) -> Split:
    """``breaks``: rows that follow a gap in time; a target whose window crosses one is dropped."""
    n = int(labels.shape[0])
    embargo = max(int(embargo), int(future_window))
    if validation + test >= 1.0:
        raise DataError(
            f"{where}: split.validation + split.test = {validation + test:g} leaves no training rows.",
            "Keep validation + test well below 1 (the defaults are 0.2 and 0).",
        )
    need = minimum_rows(window, embargo, validation, test)
    if n < need:
        raise DataError(
            f"{where}: {n:,} rows are too few for sequence_length {window}, an embargo of {embargo} rows "
            f"(the labels' horizon {future_window}) and validation {validation:g}"
            + (f" / test {test:g}" if test else "")
            + f": at least {need:,} rows are needed.",
            "Use more data, or lower train.sequence_length, the labeler's horizon (labels.params) or "
            "split.validation.",
        )
    val_start, test_start = _bounds(n, validation, test)
    rows = np.arange(n, dtype=np.int64)
    # windows t-W+1..t cross a gap when a break lies in (t-W+1, t]
    labelled = _usable_targets(labels, window, breaks)
    train_mask = (rows < val_start - embargo) & labelled
    if test_start is None:
        val_mask = (rows >= val_start) & labelled
        test_mask = np.zeros(n, dtype=bool)
    else:
        val_mask = (rows >= val_start) & (rows < test_start - embargo) & labelled
        test_mask = (rows >= test_start) & labelled
    split = Split(
        n_rows=n,
        window=window,
        future_window=future_window,
        embargo=embargo,
        val_start=val_start,
        test_start=test_start,
        train_idx=rows[train_mask],
        val_idx=rows[val_mask],
        test_idx=rows[test_mask],
    )
    for part, idx in (("training", split.train_idx), ("validation", split.val_idx)):
        if len(idx) == 0:
            raise DataError(
                f"{where}: no labelled {part} targets after the split ({n:,} rows, {int(labelled.sum()):,} labelled).",
                "Use more labelled data, or change split.validation.",
            )
    return split


def walk_forward_splits(
    labels: np.ndarray,
    window: int,
    future_window: int,
    embargo: int,
    validation: float,
    folds: int,
    where: str = "data",
    breaks: np.ndarray | None = None,
) -> list[Split]:
    """K chronological folds, each purged like the single split.

    The last ``folds`` blocks of ``floor(n * validation)`` rows are the validation blocks, oldest
    first; fold k trains on the rows before its block (minus the embargo) and validates on its
    block up to the embargo before the next block. The last fold is exactly the single split.
    """
    n = int(labels.shape[0])
    embargo = max(int(embargo), int(future_window))
    if validation * folds >= 1.0:
        raise DataError(
            f"{where}: split.folds {folds} x split.validation {validation:g} leaves no training rows.",
            "Lower split.folds or split.validation (their product must stay well below 1).",
        )
    block = int(np.floor(n * validation))
    starts = [n - (folds - k) * block for k in range(folds)]
    need_first = window + embargo
    if block < embargo + 2 or starts[0] - embargo <= window - 1:
        raise DataError(
            f"{where}: {n:,} rows are too few for {folds} walk-forward folds of {block:,} validation rows with "
            f"sequence_length {window} and an embargo of {embargo} rows (the first fold needs at least "
            f"{need_first:,} training rows before its block, each block more than {embargo + 1} rows).",
            "Use more data, fewer split.folds, or a larger split.validation.",
        )
    usable = _usable_targets(labels, window, breaks)
    rows = np.arange(n, dtype=np.int64)
    out = []
    for k, start in enumerate(starts):
        end = starts[k + 1] - embargo if k + 1 < folds else n
        train = rows[usable & (rows < start - embargo)]
        val = rows[usable & (rows >= start) & (rows < end)]
        if len(train) == 0 or len(val) == 0:
            raise DataError(
                f"{where}: walk-forward fold {k + 1} has no labelled training or validation targets.",
                "Use more labelled data or fewer folds.",
            )
        out.append(Split(n, window, future_window, embargo, start, None, train, val, rows[:0]))
    return out


def _usable_targets(labels: np.ndarray, window: int, breaks: np.ndarray | None) -> np.ndarray:
    """Labelled rows with a full window that crosses no gap."""
    n = len(labels)
    rows = np.arange(n, dtype=np.int64)
    usable = (labels != NO_LABEL) & (rows >= window - 1)
    if breaks is not None and len(breaks):
        marks = np.zeros(n, dtype=np.int64)
        marks[np.asarray(breaks, dtype=np.int64)] = 1
        crossed = np.cumsum(marks)
        lo = np.clip(rows - window + 1, 0, None)
        usable &= crossed - crossed[lo] == 0
    return usable
