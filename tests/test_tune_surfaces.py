"""`trainer tune`'s other surfaces on real candles: a trading objective end to end (recomputed from
the saved predictions and the rows' trade returns), `budget: {seconds: N}` stopping a search and
saying so in `tuning_{tag}.json`, a study in a database (sqlite) that survives a stopped driver and
resumes; and one clear error per hostile input (objective, budget, storage)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TAG = "ETHUSDT_FW010_SL020_TP020"


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TRAINER_RAY_NUM_CPUS": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _tune(manifest: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer_core.cli", "tune", str(manifest), *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
    )


def _report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "tune" / "ETHUSDT" / f"tuning_{TAG}.json").read_text())


# -- hostile inputs: one clear error each, before any work ---------------------------------------


@pytest.mark.parametrize(
    "tune, message",
    [
        ("  objective: sharpe_ratio", "tune.objective: expected one of val_loss"),
        ("  budget: {seconds: -30}", "tune.budget.seconds: expected a number of seconds > 0"),
    ],
    ids=["objective", "budget"],
)
def test_a_bad_objective_or_budget_is_one_clear_error(tmp_path, tune_manifest, trainer, tune, message):
    result = trainer("tune", tune_manifest(tune, candles=False))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "url, message",
    [
        ("sqlite:///{tmp}/no/such/folder/studies.db", "the study storage cannot be opened"),
        ("nosuchdb://host/studies", "the study storage cannot be opened"),
        ("postgresql://tuner@127.0.0.1:1/studies", None),
    ],
    ids=["sqlite-folder-missing", "unknown-database", "postgresql"],
)
def test_a_storage_that_cannot_be_opened_is_one_clear_error(tmp_path, tune_manifest, trainer, url, message):
    url = url.format(tmp=tmp_path)
    if message is None:  # PostgreSQL: its driver missing here, or nothing listening on port 1
        try:
            import psycopg2  # noqa: F401

            message = "the study storage cannot be opened"
        except ImportError:
            message = "its database driver is not installed"
    result = trainer("tune", tune_manifest("  trials: 2", candles=False), "--storage", url)
    assert result.exit_code == 2, result.output
    assert f"--storage {url}: {message}" in result.output
    assert "sqlite:////shared/studies.db" in result.output  # what to give instead
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.real_candles
@pytest.mark.slow
def test_a_trading_objective_runs_end_to_end(tmp_path, tune_manifest):
    from trainer_core.tune.driver import read_tune_manifest
    from trainer_core.tune.trial import load_data

    manifest = tune_manifest("  trials: 2\n  objective: mean_net_return")
    done = _tune(manifest)
    assert done.returncode == 0, done.stdout + done.stderr
    report = _report(tmp_path)
    assert report["objective"] == "mean_net_return" and report["direction"] == "maximize"
    # recomputed from the saved predictions and the rows' trade returns (spot: 0.1 % a side)
    _, m = read_tune_manifest(manifest)
    spec = m.resolve("ETHUSDT")
    from trainer_core.plugins import Plugins

    data = load_data(spec, Plugins.load(spec.plugins))
    folder = tmp_path / "out" / "tune" / "ETHUSDT"
    complete = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    assert len(complete) == 2
    for t in complete:
        saved = np.load(folder / f"trial_{t['number']:05d}.npz")
        pred = saved["y_prob"].argmax(axis=1)
        rows = saved["rows"]
        net = np.where(
            pred == 2,
            np.nan_to_num(data.long_return[rows]) - 0.002,
            np.where(pred == 0, np.nan_to_num(data.short_return[rows]) - 0.002, 0.0),
        )
        assert np.allclose(saved["net"], net)
        scores = []
        for fold in report["folds"]["inner_folds"]:
            lo, hi = fold["validation_targets"]
            scores.append(float(net[(rows >= lo) & (rows <= hi)].mean()))
        assert t["fold_scores"] == pytest.approx(scores, abs=1e-12)
        assert t["value"] == pytest.approx(np.mean(scores), abs=1e-12)
    best = max(complete, key=lambda t: t["value"])
    assert report["chosen"]["number"] == best["number"]
    outer = np.load(folder / "outer_default.npz")
    assert report["comparison"]["default"] == pytest.approx(float(outer["net"].mean()), abs=1e-12)


@pytest.mark.real_candles
@pytest.mark.slow
def test_a_time_budget_stops_the_search_and_says_so(tmp_path, tune_manifest):
    manifest = tune_manifest("  trials: 200\n  budget: {seconds: 20}")
    done = _tune(manifest)
    assert done.returncode == 0, done.stdout + done.stderr
    report = _report(tmp_path)
    stopped = report["budget"]["stopped"]
    assert report["budget"]["seconds"] == 20
    assert stopped["by"] == "budget.seconds" and stopped["limit"] == 20
    assert stopped["elapsed_seconds"] >= 20 and stopped["trials_planned"] == 200
    assert 1 <= stopped["trials_started"] == len(report["trials"]) < 200
    assert (
        f"budget.seconds (20 s) reached: no new trial after {stopped['trials_started']} of 200" in done.stdout
    )
    assert report["comparison"]["rows"] > 0  # the stopped search still judged its best on the outer slice


@pytest.mark.real_candles
@pytest.mark.slow
def test_a_sqlite_study_survives_the_driver_and_resumes(tmp_path, tune_manifest):
    import optuna

    trials = 4
    manifest = tune_manifest(f"  trials: {trials}")
    url = f"sqlite:///{tmp_path / 'shared' / 'studies.db'}"
    (tmp_path / "shared").mkdir()
    command = [sys.executable, "-m", "trainer_core.cli", "tune", str(manifest), "--storage", url]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    seen: list[str] = []
    deadline = time.time() + 300
    try:
        for line in proc.stdout:
            seen.append(line)
            if any(" complete " in x for x in seen):
                break
            assert time.time() < deadline, "".join(seen)
        os.kill(proc.pid, signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
        seen.append(rest)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, "".join(seen)
    assert not (tmp_path / "out" / "tune" / "studies.journal").exists()  # the database holds the study
    (summary,) = optuna.get_all_study_summaries(url)
    before = optuna.load_study(study_name=summary.study_name, storage=url).get_trials()
    complete_before = {t.number: t for t in before if t.state.name == "COMPLETE"}
    assert 1 <= len(complete_before) < trials

    rerun = _tune(manifest, "--storage", url)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = optuna.load_study(study_name=summary.study_name, storage=url).get_trials()
    finished = [t for t in after if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == trials, [(t.number, t.state.name) for t in after]
    for number, t in complete_before.items():  # not repeated
        again = next(x for x in after if x.number == number)
        assert again.state == t.state and again.datetime_complete == t.datetime_complete
    assert _report(tmp_path)["storage"] == url
