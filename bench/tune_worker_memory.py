"""A search worker's memory and fixed cost across trials in one process, on real candles.

    TRAINER_SHARED_DATA=../shared/data/ohlcv python bench/tune_worker_memory.py --trials 12 --repeats 2

Runs the trials of one pair (4,000 one-minute ETHUSDT candles, a 4-unit LSTM, 2 inner folds, 1
epoch, no pruning) one after another through the worker's own entry point (`run_job`, as a reused
Ray worker runs them, the pair's rows prepared once), in one process, and prints after each trial
its resident memory, the graphs and eager-context functions TensorFlow holds, and the trial's fixed
cost (its time less the Keras training and evaluation it reports). Two variants, each in a fresh
process, alternating run by run: `current` (the worker's clean-up as shipped) and `keras-only` (the
clean-up before the custom-gradient fix: `keras.backend.clear_session()` and `gc.collect()` only).
Both variants see the same params in the same order, so their trial values must be identical.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from tune_trial_cost import DATA, MANIFEST  # noqa: E402


def tf_state() -> tuple[int, int]:
    """(graphs alive, functions in TensorFlow's eager context)."""
    from tensorflow.python.eager import context
    from tensorflow.python.framework import ops

    gc.collect()
    graphs = sum(isinstance(o, ops.Graph) for o in gc.get_objects())
    return graphs, len(context.context().list_function_names())


def one_process(trials: int, variant: str) -> list[dict]:
    import polars as pl

    from trainer_core.tune import trial as worker
    from trainer_core.tune.driver import TuneRun

    if variant == "keras-only":

        def keras_only(_before=None) -> None:
            keras = sys.modules.get("keras")
            if keras is not None:
                keras.backend.clear_session()
            gc.collect()

        worker._clear_keras = keras_only
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        candles = folder / "candles"
        candles.mkdir()
        pl.read_parquet(DATA / "ETHUSDT-1m.parquet").slice(20_000, 4000).write_parquet(
            candles / "ETHUSDT-1m.parquet"
        )
        manifest = folder / "m.yaml"
        manifest.write_text(MANIFEST.format(out=folder / "out", candles=candles, trials=trials, reuse=1))
        run = TuneRun(str(manifest), echo=lambda m: None)
        run.output.mkdir(parents=True, exist_ok=True)
        spec = run.specs[0]
        s = run._open_search(spec, run.settings[spec.name], SimpleNamespace(put=lambda d: d))
        run.searches[spec.name] = s
        rows = []
        for k in range(trials):
            job = run._trial_job(s)
            t0 = time.perf_counter()
            out = worker.run_job(job, s.data_ref)
            wall = time.perf_counter() - t0
            graphs, functions = tf_state()
            tm = out.get("timings", {})
            rows.append(
                {
                    "trial": k,
                    "state": out["state"],
                    "value": out.get("value"),
                    "rss_mb": round(worker.rss_mb(), 1),
                    "graphs": graphs,
                    "functions": functions,
                    "seconds": round(wall, 3),
                    "fixed_seconds": round(tm.get("fixed_seconds", float("nan")), 3),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--variant", choices=["current", "keras-only"], help="run one variant in this process"
    )
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one_process(args.trials, args.variant)))
        return
    runs: dict[str, list[list[dict]]] = {"keras-only": [], "current": []}
    for r in range(args.repeats):
        for variant in runs:  # alternate
            out = subprocess.run(
                [sys.executable, __file__, "--trials", str(args.trials), "--variant", variant],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
            rows = json.loads(out.stdout.strip().splitlines()[-1])
            runs[variant].append(rows)
            rss = [x["rss_mb"] for x in rows]
            growth = (rss[-1] - rss[1]) / (len(rss) - 2)
            print(
                f"{variant}, run {r + 1}: RSS after each trial {[round(x) for x in rss]} MB "
                f"(after the 2nd trial {rss[1]:.0f} -> last {rss[-1]:.0f} MB, {growth:+.1f} MB per trial); "
                f"graphs {rows[1]['graphs']} -> {rows[-1]['graphs']}, context functions "
                f"{rows[1]['functions']} -> {rows[-1]['functions']}; warm fixed cost median "
                f"{statistics.median(x['fixed_seconds'] for x in rows[1:]):.2f} s",
                flush=True,
            )
    values = {v: [[x["value"] for x in rows] for rows in rs] for v, rs in runs.items()}
    same = all(a == b for a, b in zip(values["keras-only"], values["current"]))
    print(f"trial values identical in both variants, run by run: {same}")


if __name__ == "__main__":
    main()
