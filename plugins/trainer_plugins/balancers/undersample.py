"""Balancer `undersample`: per class, keep training targets evenly spaced in time.

Every class is cut down to ``max(minority count, balance.min_per_class)`` targets (a class with
fewer keeps all of them). The kept rows are spread evenly over the class's time span, from an
offset drawn from the run's seed, so the same seed keeps the same rows.
"""

from __future__ import annotations

import numpy as np

from trainer_core import Balance, hookimpl


def systematic_sample(rows: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
    """``keep`` of ``rows`` at a constant stride, starting at a random offset within one stride."""
    n = len(rows)
    if keep >= n:
        return rows
    stride = n / keep
    offset = rng.uniform(0.0, stride)
    positions = np.minimum(np.floor(offset + np.arange(keep) * stride).astype(np.int64), n - 1)
    return rows[positions]


class Undersample:
    """Systematic undersampling to the minority class (with a floor per class)."""

    def balance(self, labels, target_idx, rng, params) -> Balance:
        """Keep ``max(minority count, min_per_class)`` targets per class, evenly spaced; no weights."""
        y = labels[target_idx]
        counts = [int(np.count_nonzero(y == k)) for k in range(3)]
        present = [c for c in counts if c > 0]
        floor = int(params.get("min_per_class", 0) or 0)
        target = max(min(present), floor)
        kept = [systematic_sample(target_idx[y == k], target, rng) for k in range(3) if counts[k]]
        return Balance(np.sort(np.concatenate(kept)), None)


@hookimpl
def trainer_register_balancers(register):
    """Register the ``undersample`` balancer."""
    register("undersample", Undersample)
