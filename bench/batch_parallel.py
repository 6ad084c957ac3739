"""Bench: two equal pairs one after the other vs. side by side as Ray tasks, and Ray's fixed cost.

    python bench/batch_parallel.py [--rows 20000] [--epochs 2]

Both ways train the same two simulated pairs (the `synthetic` loader) with the same model:
  serial: `trainer run` for one pair, then the other (TensorFlow uses every core);
  ray:    `trainer batch` with resources.cpus 1, so both pairs run at once, one TensorFlow
          thread each (the batch sizes TensorFlow's thread pools from resources.cpus).
Wall times include process start, TensorFlow import and, for Ray, starting the local cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MANIFEST = """version: 1
output: {output}
defaults:
  data: {{loader: synthetic, params: {{rows: {rows}}}}}
  labels: {{future_window: 60, take_profit_pct: 0.5, stop_loss_pct: 0.5}}
  balance: {{method: none}}           # equal pairs: the same number of training targets each
  model: {{params: {{lstm_units: [64, 32], dense_units: [16], dropout: 0.1}}}}
  train: {{epochs: {epochs}, batch_size: 256, sequence_length: 60, early_stopping_patience: 50, verbose: 0}}
  resources: {{cpus: 1, gpus: 0}}
pairs: [AAAUSDT, BBBUSDT]
"""


def timed(cmd: list[str], env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def train_seconds(output: Path) -> list[float]:
    out = []
    for meta in sorted(output.glob("*/metadata_*.json")):
        out.append(json.loads(meta.read_text())["timings"]["train_seconds"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    trainer = [sys.executable, "-m", "trainer_core.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("serial", "ray"):
            (tmp / f"{name}.yaml").write_text(
                MANIFEST.format(output=tmp / name, rows=args.rows, epochs=args.epochs)
            )

        t0 = time.perf_counter()
        for index in (0, 1):
            timed([*trainer, "run", "--manifest", str(tmp / "serial.yaml"), "--index", str(index)], env)
        serial = time.perf_counter() - t0
        ray_wall = timed([*trainer, "batch", str(tmp / "ray.yaml")], env)
        startup = timed(
            [sys.executable, "-c", "import ray; ray.init(include_dashboard=False); ray.shutdown()"], env
        )
        serial_train = train_seconds(tmp / "serial")
        ray_train = train_seconds(tmp / "ray")

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.rows:,} candles per pair, {args.epochs} epochs"
    )
    print(
        f"serial (trainer run x2):         {serial:7.1f} s   training loops {', '.join(f'{s:.1f}' for s in serial_train)} s"
    )
    print(
        f"ray (trainer batch, 1 cpu/pair): {ray_wall:7.1f} s   training loops {', '.join(f'{s:.1f}' for s in ray_train)} s"
    )
    print(
        f"speed-up, wall: {serial / ray_wall:.2f}x; training loops only: {sum(serial_train) / max(ray_train):.2f}x"
    )
    print(f"ray.init + ray.shutdown in a fresh process: {startup:.1f} s")


if __name__ == "__main__":
    main()
