"""Model builder `lstm`: the seed's stacked LSTM classifier, every size configurable.

Defaults: LSTM 128-64-32, Dense 32-16 (relu), dropout 0.3 after every layer, softmax over 3.
The LSTM layers keep the settings cuDNN needs (tanh, sigmoid, no recurrent dropout, bias,
no unroll), so on a GPU Keras runs them on the fast kernel.
"""

from __future__ import annotations

from trainer_core import ConfigError, hookimpl, reject_unknown

DEFAULT_PARAMS = {"lstm_units": [128, 64, 32], "dense_units": [32, 16], "dropout": 0.3}


def _units(params, key, allow_empty) -> list[int]:
    value = params.get(key, DEFAULT_PARAMS[key])
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in value
    )
    if not ok or (not allow_empty and not value):
        raise ConfigError(
            f"model.params.{key}: expected a list of positive integers"
            + ("" if allow_empty else " (at least one)")
            + f", got {list(value) if isinstance(value, tuple) else value!r}.",
            f"For example: model.params.{key}: {DEFAULT_PARAMS[key]}",
        )
    return list(value)


def check_params(params) -> dict:
    """``model.params`` checked, defaults filled in: ``lstm_units``, ``dense_units`` (lists) and ``dropout``."""
    reject_unknown(params, DEFAULT_PARAMS, "model.params", "the lstm builder")
    dropout = params.get("dropout", DEFAULT_PARAMS["dropout"])
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model.params.dropout: expected a number in [0, 1), got {dropout!r}.")
    return {
        "lstm_units": _units(params, "lstm_units", allow_empty=False),
        "dense_units": _units(params, "dense_units", allow_empty=True),
        "dropout": float(dropout),
    }


class LSTMBuilder:
    """Stacked LSTM -> Dense (relu) -> softmax, dropout after every layer (the seed's model)."""

    def check(self, params) -> None:
        """Validate ``model.params`` without building (used by --config-test and `trainer validate`)."""
        check_params(params)

    def build(self, input_shape, n_classes, params):
        """The uncompiled ``keras.Sequential`` for ``input_shape`` ``(sequence_length, n_features)``."""
        import keras

        p = check_params(params)
        layers = [keras.Input(shape=tuple(input_shape), name="windows")]
        last = len(p["lstm_units"]) - 1
        for i, units in enumerate(p["lstm_units"]):
            layers.append(keras.layers.LSTM(units, return_sequences=i < last, name=f"lstm_{i + 1}"))
            if p["dropout"]:
                layers.append(keras.layers.Dropout(p["dropout"], name=f"lstm_{i + 1}_dropout"))
        for i, units in enumerate(p["dense_units"]):
            layers.append(keras.layers.Dense(units, activation="relu", name=f"dense_{i + 1}"))
            if p["dropout"]:
                layers.append(keras.layers.Dropout(p["dropout"], name=f"dense_{i + 1}_dropout"))
        # float32 output even under mixed precision, so the softmax stays stable
        layers.append(keras.layers.Dense(n_classes, activation="softmax", name="classes", dtype="float32"))
        return keras.Sequential(layers, name="lstm_classifier")


@hookimpl
def trainer_register_model_builders(register):
    """Register the ``lstm`` model builder."""
    register("lstm", LSTMBuilder)
