"""Bench: peak RSS of `trainer run` against the size of the float32 feature matrix.

    python bench/memory.py [--rows 200000 1000000]

Each run is a fresh `trainer run` process on the `synthetic` loader (rows candles), one epoch of
a small model (the memory of the data path is what is measured, not the model's), with the seed's
window of 120 candles. Goal: peak RSS under 3 x the feature matrix + 1.5 GB, nothing that scales
with rows x window length.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with status {status}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        baseline, _ = peak_rss_mb([sys.executable, "-c", "import tensorflow, keras, polars, sklearn"])
        print(f"baseline (python + tensorflow + keras + polars + sklearn imported): {baseline:.0f} MB")
        for rows in args.rows:
            cmd = [
                sys.executable,
                "-m",
                "trainer_core.cli",
                "run",
                "--pair",
                "MEMUSDT",
                "--output",
                f"{tmp}/{rows}",
                "--epochs",
                "1",
                "--set",
                "data.loader=synthetic",
                "--set",
                f"data.params.rows={rows}",
                "--set",
                "labels.future_window=60",
                "--set",
                "train.sequence_length=120",
                "--set",
                "train.batch_size=1024",
                "--set",
                "model.params.lstm_units=[4]",
                "--set",
                "model.params.dense_units=[4]",
                "--set",
                "balance.min_per_class=0",
                "--set",
                "train.verbose=0",
                "--set",
                "reporters=[metadata]",
            ]
            rss, seconds = peak_rss_mb(cmd)
            matrix = (rows - 1) * 8 * 4 / 2**20
            goal = 3 * matrix + 1536
            naive = (rows - 120) * 120 * 8 * 4 / 2**20
            print(
                f"{rows:>9,} rows: peak RSS {rss:6.0f} MB ({rss - baseline:+.0f} MB over the baseline); "
                f"feature matrix {matrix:.0f} MB; goal < {goal:.0f} MB; all windows materialised would be "
                f"{naive:,.0f} MB; {seconds:.0f} s"
            )


if __name__ == "__main__":
    main()
