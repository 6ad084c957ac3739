"""Bench: the training loop's throughput against the model's compute-bound rate, in one process.

    python bench/train_loop.py [--rows 200000] [--steps 30] [--repeat 2]

compute-bound: `fit` on one in-memory batch repeated (no input pipeline at all);
pipeline:      `fit` on `trainer run`'s own input (features in one tensor, start indices shuffled
               per epoch, each batch gathered with tf.gather), same model, same steps.
The two are measured alternately in the same process; the ratio of their medians is reported.
Defaults are the seed's model: LSTM 128-64-32, Dense 32-16, window 120, 8 features, batch 256.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--sequence-length", type=int, default=120)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    from trainer_core.windows import window_dataset
    from trainer_plugins.models.lstm import LSTMBuilder

    keras.utils.set_random_seed(0)
    w, b = args.sequence_length, args.batch_size
    model = LSTMBuilder().build((w, 8), 3, {})
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"]
    )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(b, w, 8)).astype(np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 3, b), 3)
    one_batch = tf.data.Dataset.from_tensors((x, y)).repeat()

    feats = rng.normal(size=(args.rows, 8)).astype(np.float32)
    labels = rng.integers(0, 3, args.rows).astype(np.int32)
    targets = np.arange(w - 1, args.rows, dtype=np.int64)
    pipeline = window_dataset(feats, labels, targets, w, b, shuffle=True, seed=0)

    def rate(ds) -> float:
        t0 = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
        return args.steps * b / (time.perf_counter() - t0)

    rate(one_batch)  # warm up: tracing and the first steps
    rate(pipeline)
    compute, fed = [], []
    for _ in range(args.repeat):
        compute.append(rate(one_batch))
        fed.append(rate(pipeline))
    c, f = statistics.median(compute), statistics.median(fed)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'} intra-op threads"
    )
    print(
        f"model: LSTM 128-64-32, window {w}, batch {b}; {args.steps} steps per measurement, {args.repeat} rounds"
    )
    print(f"compute-bound (one in-memory batch): {', '.join(f'{r:.0f}' for r in compute)} samples/s")
    print(f"trainer's input pipeline ({args.rows:,} rows): {', '.join(f'{r:.0f}' for r in fed)} samples/s")
    print(f"ratio (median / median): {f / c:.3f}")


if __name__ == "__main__":
    main()
