"""Balancer `class-weights`: keep every training target and weight the loss per class instead."""

from __future__ import annotations

import numpy as np

from trainer_core import Balance, hookimpl


class ClassWeights:
    """No resampling; loss weights 'balanced' (n / (classes x count)) or from balance.class_weights."""

    def balance(self, labels, target_idx, rng, params) -> Balance:
        """All ``target_idx``, with a weight per class: balanced, or ``class_weights`` (1.0 for a class not named)."""
        setting = params.get("class_weights", "balanced")
        if setting == "balanced":
            y = labels[target_idx]
            counts = np.array([np.count_nonzero(y == k) for k in range(3)], dtype=np.float64)
            present = counts > 0
            weights = np.ones(3)
            weights[present] = len(y) / (present.sum() * counts[present])
        else:
            weights = np.array([float(setting.get(k, 1.0)) for k in range(3)])
        return Balance(np.asarray(target_idx), {k: float(weights[k]) for k in range(3)})


@hookimpl
def trainer_register_balancers(register):
    """Register the ``class-weights`` balancer."""
    register("class-weights", ClassWeights)
