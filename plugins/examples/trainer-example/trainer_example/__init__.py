"""trainer-example: a worked third-party plugin for pair-trainer.

Registers the model builder ``tiny-gru`` and the balancer ``every-other``.
"""

from __future__ import annotations

import numpy as np

from trainer_core import Balance, ConfigError, hookimpl, reject_unknown

#: model.params of tiny-gru, with their defaults
PARAMS = {"units": 16, "dropout": 0.0}


def check_params(params) -> dict:
    """``model.params`` checked and completed with the defaults; a wrong value is a `ConfigError`."""
    reject_unknown(params, PARAMS, "model.params", "the tiny-gru builder")
    units = params.get("units", PARAMS["units"])
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise ConfigError(
            f"model.params.units: expected an integer >= 1, got {units!r}.", "For example: units: 16"
        )
    dropout = params.get("dropout", PARAMS["dropout"])
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model.params.dropout: expected a number in [0, 1), got {dropout!r}.")
    return {"units": units, "dropout": float(dropout)}


class TinyGRU:
    """One GRU layer -> softmax: a small, fast classifier (model.params: units, dropout)."""

    def check(self, params) -> None:
        """Validate ``model.params`` before any work (`trainer validate`, `--config-test`)."""
        check_params(params)

    def build(self, input_shape, n_classes, params):
        import keras  # only the process that trains pays for Keras

        p = check_params(params)
        layers = [
            keras.Input(shape=tuple(input_shape), name="windows"),
            keras.layers.GRU(p["units"], name="gru"),
        ]
        if p["dropout"]:
            layers.append(keras.layers.Dropout(p["dropout"], name="gru_dropout"))
        layers.append(keras.layers.Dense(n_classes, activation="softmax", name="classes"))
        return keras.Sequential(layers, name="tiny_gru")


class EveryOther:
    """Every second training target in time order, no class weights (deterministic)."""

    def balance(self, labels, target_idx, rng, params) -> Balance:
        rows = np.sort(np.asarray(target_idx, dtype=np.int64))
        return Balance(rows[::2], None)


@hookimpl
def trainer_register_model_builders(register):
    register("tiny-gru", TinyGRU)


@hookimpl
def trainer_register_balancers(register):
    register("every-other", EveryOther)
