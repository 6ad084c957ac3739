"""The fixed cost of one search trial (process start, imports, data, model build) and a worker's
memory across trials, measured on real candles with the code `trainer tune` runs.

    python bench/tune_trial_cost.py --trials 8 --repeats 3     # warm worker vs a process per trial

warm: one process runs every trial (as a reused Ray worker does), the pair's data prepared once and
handed to each trial; cold: a new Python process per trial that imports, loads the candles and
builds everything itself (what a process-per-trial design pays). The fixed cost of a trial is its
wall time less the Keras training and evaluation it reports. Runs alternate warm and cold, and
the best of the repeats is reported with the spread.
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

MANIFEST = """
version: 1
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
  trials: 8
  space:
    train.learning_rate: {{log_uniform: [1.0e-4, 1.0e-2]}}
  folds: 2
pairs: [ETHUSDT]
"""


def setup(folder: Path) -> Path:
    import polars as pl

    candles = folder / "candles"
    candles.mkdir(parents=True, exist_ok=True)
    pl.read_parquet(DATA / "ETHUSDT-1m.parquet").slice(20_000, 4000).write_parquet(
        candles / "ETHUSDT-1m.parquet"
    )
    path = folder / "m.yaml"
    path.write_text(MANIFEST.format(out=folder / "out", candles=candles))
    return path


def jobs(manifest: Path, n: int, storage: str) -> tuple[list[dict], object]:
    """n trial jobs of one study, as the driver builds them, and the pair's data."""
    import optuna

    from trainer_core.pipeline import resolve_tag
    from trainer_core.tune.driver import TuneRun, apply_params, distributions, study_name
    from trainer_core.tune.trial import load_data

    run = TuneRun(str(manifest), output=str(Path(storage).parent), echo=lambda m: None)
    spec = run.specs[0]
    settings = run.settings[spec.pair]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name(spec, settings) + f"-{time.time_ns()}",
        storage=run._storage(),
        direction="minimize",
    )
    data = load_data(spec, run.plugins)
    out = []
    for _ in range(n):
        t = study.ask(distributions(settings))
        params = dict(t.params)
        out.append(
            {
                "kind": "trial",
                "pair": spec.pair,
                "number": t.number,
                "trial_id": t._trial_id,
                "params": params,
                "spec": resolve_tag(apply_params(spec, params), run.plugins).to_dict(),
                "embargo": 120,
                "folds": 2,
                "test": 0.2,
                "objective": "val_loss",
                "direction": "minimize",
                "record_dir": str(Path(storage).parent),
                "storage": storage,
                "study": study.study_name,
                "pruner": None,
            }
        )
    return out, data


def warm(manifest: Path, n: int, storage: str) -> list[dict]:
    from trainer_core.tune.trial import run_job

    todo, data = jobs(manifest, n, storage)
    return [run_job(job, data) for job in todo]


COLD = """
import json, sys, time
t0 = time.perf_counter()
from trainer_core.tune.trial import run_job
job = json.loads(sys.argv[1])
rec = run_job(job, None)
rec["process_seconds"] = time.perf_counter() - t0
print("RECORD" + json.dumps(rec))
"""


def cold(manifest: Path, n: int, storage: str) -> list[dict]:
    todo, _ = jobs(manifest, n, storage)
    out = []
    for job in todo:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", COLD, json.dumps(job)], capture_output=True, text=True, check=True
        )
        wall = time.perf_counter() - t0
        rec = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RECORD"))[6:])
        rec["timings"]["fixed_seconds"] = (
            wall - rec["timings"]["train_seconds"] - rec["timings"]["evaluate_seconds"]
        )
        out.append(rec)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default="warm,cold")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    results: dict[str, list] = {m: [] for m in args.modes.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = setup(Path(tmp))
        for r in range(args.repeats):
            for mode in results:  # alternate the modes so drift on a shared machine hits both
                storage = str(Path(tmp) / f"{mode}-{r}" / "studies.journal")
                Path(storage).parent.mkdir(parents=True, exist_ok=True)
                if mode == "warm":  # a fresh process, as a fresh Ray worker would be
                    proc = subprocess.run(
                        [sys.executable, __file__, "--inner", str(manifest), str(args.trials), storage],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    recs = json.loads(proc.stdout.strip().splitlines()[-1])
                else:
                    recs = cold(manifest, args.trials, storage)
                fixed = [x["timings"]["fixed_seconds"] for x in recs]
                results[mode].append(
                    {
                        "fixed_seconds": fixed,
                        "train_seconds": [x["timings"]["train_seconds"] for x in recs],
                        "rss_mb": [x["worker_rss_mb"] for x in recs],
                        "values": [x.get("value") for x in recs],
                        "params": [x.get("params") for x in recs],
                    }
                )
                print(
                    f"{mode} run {r + 1}: fixed per trial (after the first) median "
                    f"{statistics.median(fixed[1:] or fixed):.2f} s, first {fixed[0]:.2f} s; "
                    f"RSS after each trial {[round(m) for m in results[mode][-1]['rss_mb']]} MB",
                    flush=True,
                )
    print(json.dumps(results))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        recs = warm(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        print(json.dumps(recs))
    else:
        main()
