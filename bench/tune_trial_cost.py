"""The fixed cost of one `trainer tune` trial (process start, imports, data, model build) with warm
workers against a fresh process per trial, and the worker's memory across trials, on real candles.

    TRAINER_RAY_NUM_CPUS=2 TRAINER_SHARED_DATA=/path/to/ohlcv python bench/tune_trial_cost.py --repeats 2

Each run is a real `trainer tune` of one pair (4,000 one-minute ETHUSDT candles, 8 trials of a tiny
LSTM, 2 inner folds, 1 epoch, no pruning) with `worker_reuse: 1` (a new worker process per trial,
as `trainer batch` runs a pair) or `worker_reuse: 8` (the default: a worker runs up to 8 jobs, the
pair's data prepared once by the driver). A trial's fixed cost is what the driver waits for it less
the Keras training and evaluation it reports: the driver's wait from submitting to its result,
less the worker's time, is Ray's scheduling and the worker's start; the worker's time less training
and evaluation is imports, data, folds, scaling, balancing and model build. Modes alternate run by
run (a shared machine's drift hits both); the best run per mode is reported with the spread of all
runs, and each run's command wall time. The trial values of the modes are compared: reuse must not
change any result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: real candles: ../shared/data/ohlcv beside the checkout, or TRAINER_SHARED_DATA
DATA = Path(os.environ.get("TRAINER_SHARED_DATA") or REPO.parent / "shared" / "data" / "ohlcv")

MANIFEST = """version: 1
output: {out}
defaults:
  data: {{loader: ohlcv, path: {candles}, gaps: split}}
  labels: {{future_window: 10, take_profit_pct: 0.2, stop_loss_pct: 0.2}}
  features: {{ma_short: 30, ma_long: 120}}
  balance: {{method: undersample, min_per_class: 0}}
  model: {{builder: lstm, params: {{lstm_units: [4], dense_units: [4], dropout: 0.1}}}}
  train: {{epochs: 1, batch_size: 64, sequence_length: 8, verbose: 0}}
  resources: {{cpus: 1}}
tune:
  trials: {trials}
  space:
    train.learning_rate: {{log_uniform: [1.0e-4, 1.0e-2]}}
    model.params.dropout: {{uniform: [0.0, 0.3]}}
  folds: 2
  worker_reuse: {reuse}
pairs: [ETHUSDT]
"""


#: label -> worker_reuse
MODES = {"process per trial": 1, "reused workers": 8}


def one_run(folder: Path, reuse: int, trials: int) -> dict:
    import polars as pl

    candles = folder / "candles"
    candles.mkdir(parents=True, exist_ok=True)
    pl.read_parquet(DATA / "ETHUSDT-1m.parquet").slice(20_000, 4000).write_parquet(
        candles / "ETHUSDT-1m.parquet"
    )
    manifest = folder / "m.yaml"
    manifest.write_text(MANIFEST.format(out=folder / "out", candles=candles, trials=trials, reuse=reuse))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "trainer_core.cli", "tune", str(manifest)],
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    report = json.loads(next((folder / "out" / "tune" / "ETHUSDT").glob("tuning_*.json")).read_text())
    rows = sorted(report["trials"], key=lambda t: t["number"])
    fixed = [
        t["timings"]["queued_seconds"] + t["timings"]["fixed_seconds"]
        for t in rows
        if t["state"] == "COMPLETE"
    ]
    return {
        "fixed_seconds": fixed,
        "train_seconds": [t["timings"]["train_seconds"] for t in rows],
        "values": [t["value"] for t in rows],
        "params": [t["params"] for t in rows],
        "worker_rss_mb": [t["worker_rss_mb"] for t in rows],
        "workers": len({t["worker_pid"] for t in rows}),
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated labels of MODES")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {m: [] for m in args.modes.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for k, mode in enumerate(runs):  # alternate
                res = one_run(Path(tmp) / f"r{r}-m{k}", MODES[mode], args.trials)
                runs[mode].append(res)
                f = res["fixed_seconds"]
                print(
                    f"{mode}, run {r + 1}: fixed cost per trial mean {statistics.mean(f):.2f} s "
                    f"(first {f[0]:.2f} s, later median {statistics.median(f[1:]):.2f} s) over {len(f)} trials, "
                    f"{res['workers']} worker process(es), command wall time {res['wall_seconds']:.1f} s; "
                    f"worker RSS after each trial {[round(x) for x in res['worker_rss_mb']]} MB",
                    flush=True,
                )
    for mode, results in runs.items():
        means = [statistics.mean(x["fixed_seconds"]) for x in results]
        walls = [x["wall_seconds"] for x in results]
        print(
            f"{mode}: best mean fixed cost {min(means):.2f} s per trial, runs {[round(m, 2) for m in means]}; "
            f"command wall time best {min(walls):.1f} s, runs {[round(w, 1) for w in walls]}"
        )
    # the sampler may draw other params once results arrive in another order; the same params must
    # give the same value, to the bit
    modes = list(runs)
    pairs = [
        (va, vb)
        for i, ma in enumerate(modes)
        for mb in modes[i + 1 :]
        for a, b in zip(runs[ma], runs[mb])
        for pa, pb, va, vb in zip(a["params"], b["params"], a["values"], b["values"])
        if pa == pb
    ]
    same = sum(va == vb for va, vb in pairs)
    print(f"trials with the same params in two modes (pairwise): {len(pairs)}; identical values: {same}")
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
