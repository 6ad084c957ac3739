"""Bench: the seed's model for a fixed number of steps on this machine's accelerator, default and
fastest settings side by side.

    python bench/gpu_path.py [--steps 200] [--rows 200000]

Trains the seed's LSTM (128-64-32, window 120, 8 features) through the trainer's own input
pipeline with: float32 at batch 256 (the defaults), mixed_float16 at batch 256, and
mixed_float16 at batch 1024. Prints the device, whether every LSTM layer is cuDNN-eligible, and
samples per second of each. On a machine without a GPU it says so and measures the CPU (mixed
precision is then skipped: the trainer ignores it on CPUs).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from trainer_core.pipeline import detect_gpus, device_report
    from trainer_core.windows import window_dataset
    from trainer_plugins.models.lstm import LSTMBuilder

    gpus = detect_gpus()
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(args.rows, 8)).astype(np.float32)
    labels = rng.integers(0, 3, args.rows).astype(np.int32)
    targets = np.arange(119, args.rows, dtype=np.int64)
    settings = [("float32", 256)]
    if gpus:
        settings += [("mixed_float16", 256), ("mixed_float16", 1024)]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}; "
        f"device: {', '.join(g.name for g in gpus) or 'CPU only'}"
    )
    for policy, batch in settings:
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        model = LSTMBuilder().build((120, 8), 3, {})
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"]
        )
        report = device_report(model, gpus, policy)
        ds = window_dataset(feats, labels, targets, 120, batch, shuffle=True, seed=0)
        model.fit(ds, epochs=1, steps_per_epoch=5, verbose=0)  # tracing and warm-up
        t0 = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
        rate = args.steps * batch / (time.perf_counter() - t0)
        print(f"{policy:>14} batch {batch:>5}: {rate:9.0f} samples/s  (LSTM kernel: {report['lstm_kernel']})")
    keras.mixed_precision.set_global_policy("float32")


if __name__ == "__main__":
    main()
