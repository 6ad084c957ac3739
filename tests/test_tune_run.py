"""`trainer tune` end to end on real candles: two pairs x eight tiny trials with ASHA on a 2-CPU
local Ray; the driver SIGKILLed mid-run and the same command run again repeats no finished trial;
worker and driver memory stay flat across trials; the overlay retrains through `trainer batch`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

PAIRS = ("ETHUSDT", "BTCUSDT")
TRIALS = 8


SPACE = """    model.params.lstm_units: {choice: [[4], [8]]}
    model.params.dropout: {uniform: [0.0, 0.3]}
"""
TUNE = f"""  trials: {TRIALS}
  pruner: {{asha: {{grace: 1, max_epochs: 2, reduction: 2}}}}
  worker_reuse: 4"""


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TRAINER_RAY_NUM_CPUS": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _trials(journal: Path) -> dict[str, list]:
    """Every study's trials as Optuna stored them, by pair."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    out = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        out[summary.study_name.split("_")[0]] = study.get_trials(deepcopy=True)
    return out


def _finished(t) -> bool:
    return t.state.name in ("COMPLETE", "PRUNED") or (
        t.state.name == "FAIL" and not t.user_attrs.get("interrupted")
    )


@pytest.mark.real_candles
@pytest.mark.slow
def test_tune_two_real_pairs_killed_and_resumed_then_retrained(tmp_path, tune_manifest):
    manifest = tune_manifest(TUNE, pairs=PAIRS, epochs=2, space=SPACE)
    command = [sys.executable, "-m", "trainer_core.cli", "tune", str(manifest)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(tmp_path),
        start_new_session=True,
    )
    seen: list[str] = []
    deadline = time.time() + 400
    try:
        for line in proc.stdout:
            seen.append(line)
            if sum(" complete " in x or " pruned " in x for x in seen) >= 4:
                break
            assert time.time() < deadline, "".join(seen)
        assert proc.poll() is None, "".join(seen)  # still searching
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, mid-run
        proc.wait(timeout=30)
    finally:
        time.sleep(2)
        try:  # what the driver started (a local Ray's agents) goes with it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(15)  # a worker left without its raylet stops at its next epoch
    assert proc.returncode == -signal.SIGKILL
    journal = tmp_path / "out" / "tune" / "studies.journal"
    before = _trials(journal)
    assert set(before) == set(PAIRS)
    finished_before = {(p, t.number): t for p, ts in before.items() for t in ts if _finished(t)}
    running_before = {(p, t.number): t for p, ts in before.items() for t in ts if t.state.name == "RUNNING"}
    assert len(finished_before) >= 4, "".join(seen)
    assert all(len([t for t in ts if _finished(t)]) < TRIALS for ts in before.values())  # truly mid-run

    rerun = subprocess.run(
        [*command, "--adopt", "best"], capture_output=True, text=True, env=_env(tmp_path), timeout=900
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    after = _trials(journal)
    for pair, trials in after.items():
        finished = [t for t in trials if _finished(t)]
        assert len(finished) == TRIALS, (pair, [(t.number, t.state.name) for t in trials])
        assert sum(t.state.name == "PRUNED" for t in finished) >= 1  # ASHA stopped some
    for (pair, number), t in finished_before.items():  # not repeated: the same record, untouched
        again = next(x for x in after[pair] if x.number == number)
        assert again.state == t.state and again.datetime_complete == t.datetime_complete
        assert not any(x.user_attrs.get("retry_of") == number for x in after[pair])
    for (pair, number), t in running_before.items():  # retried once, with the same params
        again = next(x for x in after[pair] if x.number == number)
        assert again.state.name == "FAIL" and again.user_attrs.get("interrupted")
        retries = [x for x in after[pair] if x.user_attrs.get("retry_of") == number]
        if t.params:
            assert len(retries) == 1 and retries[0].params == t.params and _finished(retries[0])
        else:  # killed while the driver was asking for it: it never ran, nothing to retry
            assert retries == []
    assert any(t.params for t in running_before.values())  # some trial was really running
    assert "left running by an earlier run are retried" in rerun.stdout

    out = tmp_path / "out" / "tune"
    for pair in PAIRS:
        tag = f"{pair}_FW010_SL020_TP020"
        report = json.loads((out / pair / f"tuning_{tag}.json").read_text())
        records = [t for t in report["trials"] if t["state"] in ("COMPLETE", "PRUNED", "FAIL")]
        assert len(records) == TRIALS  # counting trial records: none repeated
        assert len(report["trials"]) == TRIALS + sum(p == pair for p, _ in running_before)
        for t in records:
            assert set(t["params"]) == {
                "train.learning_rate",
                "model.params.lstm_units",
                "model.params.dropout",
            }
            assert t["start"] and t["end"] and t["start"] <= t["end"]
            if t["state"] == "COMPLETE":
                assert len(t["fold_scores"]) == 2 and t["value"] == pytest.approx(sum(t["fold_scores"]) / 2)
        cmp = report["comparison"]
        assert cmp["rows"] == report["folds"]["outer_test_count"] > 0
        assert cmp["improvement"]["low"] <= cmp["improvement"]["difference"] <= cmp["improvement"]["high"]
        assert cmp["improvement"]["difference"] == pytest.approx(cmp["default"] - cmp["tuned"], abs=1e-9)
        # the search never saw the outer slice: every inner target lies before it, a gap apart
        last_inner = report["folds"]["inner_folds"][-1]["validation_targets"][1]
        assert last_inner + report["folds"]["embargo_rows"] < report["folds"]["outer_test_targets"][0]
        assert (
            0 <= report["overfitting"]["dsr"]["dsr"] <= 1 and report["overfitting"]["dsr"]["trials"] == TRIALS
        )
        pbo = report["overfitting"]["pbo"]
        assert pbo["pbo"] is None or 0 <= pbo["pbo"] <= 1
        proven = cmp["improvement"]["low"] > 0
        assert report["adopted"] is True  # --adopt best: proven or not
        assert report["adopted_because"] == (
            "the outer comparison's lower bound is above zero"
            if proven
            else "--adopt best (not proven on the outer slice)"
        )
        assert (out / pair / f"search_{tag}.png").stat().st_size > 1000
        # memory: workers are replaced every 4 jobs; no later worker grows past the first ones
        rss = report["memory"]["worker_rss_mb"]
        assert len(rss) >= TRIALS
        assert max(rss[4:]) <= max(rss[:4]) + 150, rss
        driver = report["memory"]["driver_rss_mb"]  # at each trial the rerun's driver collected
        assert len(driver) >= 3 and max(driver) - driver[0] < 40, driver
    summary = (out / "search_summary.html").read_text()
    assert all(pair in summary for pair in PAIRS)

    tuned = yaml.safe_load((out / "tuned.yaml").read_text())
    assert "tune" not in tuned
    eth = next(p for p in tuned["pairs"] if isinstance(p, dict) and p["pair"] == "ETHUSDT")
    chosen = json.loads((out / "ETHUSDT" / "tuning_ETHUSDT_FW010_SL020_TP020.json").read_text())["chosen"][
        "params"
    ]
    assert eth["train"]["learning_rate"] == chosen["train.learning_rate"]
    batch = subprocess.run(
        [sys.executable, "-m", "trainer_core.cli", "batch", str(out / "tuned.yaml"), "--only", "ETHUSDT"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=600,
    )
    assert batch.returncode == 0, batch.stdout + batch.stderr
    spec = json.loads((tmp_path / "out" / "ETHUSDT" / "spec_ETHUSDT_FW010_SL020_TP020.json").read_text())[
        "spec"
    ]
    assert spec["train"]["learning_rate"] == chosen["train.learning_rate"]
    assert spec["model"]["params"]["lstm_units"] == chosen["model.params.lstm_units"]
    assert spec["model"]["params"]["dropout"] == chosen["model.params.dropout"]
