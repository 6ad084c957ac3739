"""Nested, purged folds for a search: an outer test slice at the end that the search never sees,
and walk-forward inner folds inside the span before it that choose the parameters.

    rows:  | inner fold 1 train | gap | val 1 | ... | val K | gap | outer test |
           '------------------ search span ------------------'

Each gap is the embargo (at least the labels' horizon), so no training label's horizon reaches the
rows it is judged on. The outer comparison trains on the last inner fold's rows (its validation block
picks the best epoch, as in `trainer run`) and scores the outer test targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import PairData
from ..errors import DataError
from ..split import Split, purged_split, walk_forward_splits


@dataclass
class NestedFolds:
    """The inner folds (search) and the outer split (tuned vs default), in row positions of the data."""

    embargo: int
    horizon: int
    search_end: int
    test_start: int
    inner: list[Split]
    outer: Split

    def describe(self) -> dict:
        """First and last target row of every part, for the report."""

        def span(idx):
            return [int(idx[0]), int(idx[-1])] if len(idx) else None

        return {
            "embargo_rows": self.embargo,
            "horizon_rows": self.horizon,
            "search_rows": [0, self.search_end - 1],
            "outer_test_targets": span(self.outer.test_idx),
            "outer_test_count": int(len(self.outer.test_idx)),
            "inner_folds": [
                {"train_targets": span(s.train_idx), "validation_targets": span(s.val_idx)}
                for s in self.inner
            ],
            "outer_train_targets": span(self.outer.train_idx),
            "outer_validation_targets": span(self.outer.val_idx),
        }


def inner_validation(split_validation: float, folds: int) -> float:
    """Each inner fold's validation block as a share of the search span: the pair's
    ``split.validation``, capped so the K blocks leave at least 40 % of the span to train on."""
    return min(float(split_validation), 0.6 / folds)


def nested_folds(
    data: PairData,
    window: int,
    horizon: int,
    embargo: int,
    validation: float,
    folds: int,
    test: float,
    breaks: np.ndarray | None = None,
    where: str = "data",
) -> NestedFolds:
    """The outer test slice (the last ``test`` share of rows) and ``folds`` inner walk-forward folds
    in the rows before it, every part separated by ``max(embargo, horizon)`` rows."""
    embargo = max(int(embargo), int(horizon))
    # the outer slice: purged_split places it and its targets exactly as `split.test` would
    # (its validation part, half the rows before the test slice, is not used)
    outer_cut = purged_split(
        data.labels,
        window,
        horizon,
        embargo,
        validation=(1 - test) / 2,
        test=test,
        where=where,
        breaks=breaks,
    )
    test_start = int(outer_cut.test_start)
    test_idx = outer_cut.test_idx
    if len(test_idx) == 0:
        raise DataError(
            f"{where}: the outer test slice has no labelled targets.", "Use more data or a larger tune.test."
        )
    search_end = test_start - embargo
    inner_breaks = None if breaks is None else np.asarray(breaks)[np.asarray(breaks) < search_end]
    inner = walk_forward_splits(
        data.labels[:search_end],
        window,
        horizon,
        embargo,
        inner_validation(validation, folds),
        folds,
        where=f"{where} (search span of {search_end:,} rows)",
        breaks=inner_breaks,
    )
    last = inner[-1]
    outer = Split(
        n_rows=len(data),
        window=window,
        future_window=horizon,
        embargo=embargo,
        val_start=last.val_start,
        test_start=test_start,
        train_idx=last.train_idx,
        val_idx=last.val_idx,
        test_idx=test_idx,
    )
    return NestedFolds(embargo, int(horizon), search_end, test_start, inner, outer)


__all__ = ["NestedFolds", "inner_validation", "nested_folds"]
