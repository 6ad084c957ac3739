"""Bench: the 8 features plus labels and returns for 1,000,000 one-minute candles.

    python bench/features_labels.py [--rows 1000000] [--repeat 3]

Prints the best wall time of the feature and label code (candles already in memory), the peak
memory it allocated (tracemalloc, numpy's allocations included) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
import tracemalloc

import numpy as np

from trainer_plugins.features.seed import compute_features
from trainer_plugins.labelers.tp_sl import LabelParams, compute_labels
from trainer_plugins.loaders.synthetic import simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    _, _, high, low, close, volume = simulate("BTCUSDT", args.rows)
    candle_mb = sum(a.nbytes for a in (high, low, close, volume)) / 2**20
    params = LabelParams()  # the seed's: FW 120, TP 1 %, SL 0.5 %
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        feats = compute_features(close, high, low, volume)
        labels, long_r, short_r = compute_labels(close, high, low, params)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    compute_features(close, high, low, volume)
    compute_labels(close, high, low, params)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = np.bincount(labels[labels >= 0], minlength=3)
    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores, numpy {np.__version__}")
    print(f"rows: {args.rows:,} candles ({candle_mb:.0f} MB of float64 OHLCV in memory)")
    print(
        f"features + labels: best {min(times):.3f} s of {args.repeat} (all: {', '.join(f'{t:.3f}' for t in times)})"
    )
    print(f"peak allocated by features + labels: {peak / 2**20:.0f} MB; process peak RSS: {rss_mb:.0f} MB")
    print(f"output: features {feats.shape} {feats.dtype}; labels SHORT/HOLD/LONG {counts.tolist()}")


if __name__ == "__main__":
    main()
