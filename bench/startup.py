"""Bench: start-up costs a user waits for.

    python bench/startup.py [--repeat 5]

`trainer --help` and `trainer validate manifests/demo.yaml` (best of N, a fresh process each), and
the time from launching `trainer run` to its first training step (a callback notes the moment the
first batch starts).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FIRST_STEP_PLUGIN = """
import time
import keras
from trainer_core import hookimpl

class FirstStep(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0 and not hasattr(self, "_done"):
            self._done = True
            print(f"FIRST_STEP_AT={time.time()!r}", flush=True)

@hookimpl
def trainer_keras_callbacks(spec, pair_dir):
    return [FirstStep()]
"""


def best_of(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    trainer = [os.path.join(os.path.dirname(sys.executable), "trainer")]
    help_s = best_of([*trainer, "--help"], args.repeat)
    validate_s = best_of([*trainer, "validate", str(REPO / "manifests" / "demo.yaml")], args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "first_step_plugin.py").write_text(FIRST_STEP_PLUGIN)
        Path(tmp, "m.yaml").write_text("version: 1\nplugins: [first_step_plugin]\npairs: [BTCUSDT]\n")
        env = {**os.environ, "PYTHONPATH": tmp, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        cmd = [
            *trainer,
            "run",
            "--manifest",
            f"{tmp}/m.yaml",
            "--pair",
            "BTCUSDT",
            "--output",
            f"{tmp}/out",
            "--epochs",
            "1",
            "--set",
            "data.loader=synthetic",
            "--set",
            "data.params.rows=20000",
            "--set",
            "labels.future_window=60",
            "--set",
            "train.verbose=0",
        ]
        t0 = time.time()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        first = float(
            next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("FIRST_STEP_AT="))
        )
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; best of {args.repeat}")
    print(f"trainer --help:                          {help_s:.2f} s")
    print(f"trainer validate manifests/demo.yaml:    {validate_s:.2f} s")
    print(
        f"trainer run -> first training step:      {first - t0:.2f} s (seed model, 20,000 simulated candles)"
    )


if __name__ == "__main__":
    main()
