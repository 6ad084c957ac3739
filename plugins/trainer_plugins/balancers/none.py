"""Balancer `none`: train on every training target at its natural class mix."""

from __future__ import annotations

import numpy as np

from trainer_core import Balance, hookimpl


class NoBalancing:
    """Every training target, no weights."""

    def balance(self, labels, target_idx, rng, params) -> Balance:
        """All ``target_idx``, no class weights."""
        return Balance(np.asarray(target_idx), None)


@hookimpl
def trainer_register_balancers(register):
    """Register the ``none`` balancer."""
    register("none", NoBalancing)
