"""A reused search worker: its memory stays flat across trials, and a trial scores the same whatever
ran before it in the process (real candles, a tiny LSTM, the worker's own entry point)."""

from __future__ import annotations

import gc
from pathlib import Path
from types import SimpleNamespace

import pytest

TRIALS = 6
#: the worker's growth allowed from its 2nd trial to its last: without the clean-up of the traced
#: graphs a trial of this model left about 27 MB behind (over 100 MB across these trials)
RSS_TOLERANCE_MB = 40


def _search(manifest: Path):
    from trainer_core.tune.driver import TuneRun

    run = TuneRun(str(manifest), echo=lambda m: None)
    run.output.mkdir(parents=True, exist_ok=True)
    spec = run.specs[0]
    search = run._open_search(spec, run.settings[spec.name], SimpleNamespace(put=lambda d: d))
    run.searches[spec.name] = search
    return run, search


def _graphs() -> int:
    from tensorflow.python.framework import ops

    gc.collect()
    return sum(isinstance(o, ops.Graph) for o in gc.get_objects())


@pytest.mark.real_candles
@pytest.mark.slow
def test_a_reused_worker_stays_flat_and_a_trial_scores_the_same_after_others(tmp_path, tune_manifest):
    from trainer_core.tune.trial import rss_mb, run_job

    run, search = _search(
        tune_manifest(f"  trials: {TRIALS + 1}", space="    model.params.dropout: {uniform: [0.0, 0.3]}\n")
    )
    records, rss, graphs = [], [], []
    for _ in range(TRIALS):
        out = run_job(run._trial_job(search), search.data_ref)
        assert out["state"] == "COMPLETE", out
        records.append(out)
        rss.append(rss_mb())
        graphs.append(_graphs())
    assert len({r["worker_pid"] for r in records}) == 1 and records[-1]["worker_job"] >= TRIALS
    # flat: what the 2nd trial left is what the last one leaves (the 1st imports and keeps
    # TensorFlow's process-wide state)
    assert rss[-1] - rss[1] <= RSS_TOLERANCE_MB, rss
    assert graphs[-1] <= graphs[1], graphs
    # the same params again, after every other trial ran in this process: the same score, to the bit
    first = records[1]
    search.study.enqueue_trial(
        {k: v for k, v in search.study.trials[first["number"]].params.items()}, skip_if_exists=False
    )
    again = run_job(run._trial_job(search), search.data_ref)
    assert again["params"] == first["params"]
    assert again["fold_scores"] == first["fold_scores"] and again["value"] == first["value"]
