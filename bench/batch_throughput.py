"""Bench: a node's aggregate training throughput in `trainer batch` against cores x the one-thread rate.

    python bench/batch_throughput.py [--rows 30000] [--epochs 2] [--steps 20]

one-thread rate: the seed's model (LSTM 128-64-32, window 120, batch 256) trained on one in-memory
batch in a process whose TensorFlow uses one thread (compute-bound, no input pipeline).
batch: `trainer batch` with as many equal pairs as cores, resources.cpus 1 (one thread each, side
by side); each pair's rate is its training targets over the training seconds of its last epoch (the first
epoch overlaps the other pair's start-up: TensorFlow import, simulation, features; its training
pass only, `timings.epoch_train_seconds`, without the validation pass), and the rates are summed:
those epochs ran at the same time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ONE_THREAD = r"""
import os, sys, time
os.environ["TF_NUM_INTRAOP_THREADS"] = "1"; os.environ["TF_NUM_INTEROP_THREADS"] = "1"
import numpy as np, keras, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1); tf.config.threading.set_inter_op_parallelism_threads(1)
from trainer_plugins.models.lstm import LSTMBuilder
keras.utils.set_random_seed(0)
model = LSTMBuilder().build((120, 8), 3, {})
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
x = np.random.default_rng(0).normal(size=(256, 120, 8)).astype("float32")
y = keras.utils.to_categorical(np.random.default_rng(1).integers(0, 3, 256), 3)
ds = tf.data.Dataset.from_tensors((x, y)).repeat()
steps = int(sys.argv[1])
model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0)
t0 = time.perf_counter(); model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
print(steps * 256 / (time.perf_counter() - t0))
"""

MANIFEST = """version: 1
output: {output}
defaults:
  data: {{loader: synthetic, params: {{rows: {rows}}}}}
  labels: {{future_window: 60, take_profit_pct: 0.5, stop_loss_pct: 0.5}}
  balance: {{min_per_class: 0}}
  train: {{epochs: {epochs}, verbose: 0, early_stopping_patience: 50}}
  resources: {{cpus: 1, gpus: 0}}
  reporters: [metadata]
pairs: [{pairs}]
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    one = float(
        subprocess.run(
            [sys.executable, "-c", ONE_THREAD, str(args.steps)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    with tempfile.TemporaryDirectory() as tmp:
        pairs = ", ".join(f"P{i}USDT" for i in range(cores))
        Path(tmp, "m.yaml").write_text(
            MANIFEST.format(output=f"{tmp}/out", rows=args.rows, pairs=pairs, epochs=args.epochs)
        )
        subprocess.run(
            [sys.executable, "-m", "trainer_core.cli", "batch", f"{tmp}/m.yaml"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        rates = []
        for path in sorted(Path(tmp, "out").glob("*/metadata_*.json")):
            meta = json.loads(path.read_text())
            rates.append(
                meta["balancing"]["train_targets_after"] / meta["timings"]["epoch_train_seconds"][-1]
            )
    total = sum(rates)
    print(f"machine: {platform.machine()}, {cores} cores; the seed's model, window 120, batch 256")
    print(f"one-thread compute-bound rate: {one:.0f} samples/s")
    print(
        f"trainer batch, {cores} pairs x 1 thread: {', '.join(f'{r:.0f}' for r in rates)} samples/s -> {total:.0f} aggregate"
    )
    print(f"aggregate / (cores x one-thread rate): {total / (cores * one):.3f}")


if __name__ == "__main__":
    main()
