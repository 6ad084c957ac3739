"""The GPU path as far as a CPU machine can check it: cuDNN eligibility of every LSTM layer."""

from __future__ import annotations

from trainer_core.pipeline import device_report
from trainer_plugins.models.lstm import LSTMBuilder


def test_builtin_lstm_layers_are_cudnn_eligible():
    model = LSTMBuilder().build((10, 8), 3, {"lstm_units": [8, 4], "dense_units": [], "dropout": 0.2})
    report = device_report(model, [], "float32")
    assert [layer["name"] for layer in report["lstm_layers"]] == ["lstm_1", "lstm_2"]
    assert all(layer["cudnn_eligible"] for layer in report["lstm_layers"])
    assert report["device"] == "CPU" and report["lstm_kernel"] == "CPU (no GPU present)"
    assert model.layers[-1].dtype_policy.name == "float32"  # the softmax stays float32 under mixed precision


def test_settings_that_fall_off_the_cudnn_kernel_are_named():
    import keras

    model = keras.Sequential(
        [
            keras.Input((10, 8)),
            keras.layers.LSTM(4, recurrent_dropout=0.1, activation="relu", name="slow"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    (layer,) = device_report(model, [], "float32")["lstm_layers"]
    assert layer["name"] == "slow" and not layer["cudnn_eligible"]
    assert layer["reasons"] == ["activation is not tanh", "recurrent_dropout is not 0"]
