"""`trainer tune` stopped by SIGTERM or Ctrl-C (SIGINT to its process group, as a terminal sends
it) mid-run: it exits 143 or 130 with one line saying how to continue, the trials it was running
are marked interrupted and queued again, and the same command run again finishes the search
without repeating a finished trial (counted in the study's records)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TRIALS = 6


SPACE = "    model.params.dropout: {uniform: [0.0, 0.3]}\n"


def _trials(journal: Path) -> list:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=True)


def _finished(t) -> bool:
    return t.state.name in ("COMPLETE", "PRUNED") or (
        t.state.name == "FAIL" and not t.user_attrs.get("interrupted")
    )


@pytest.mark.real_candles
@pytest.mark.slow
@pytest.mark.parametrize(
    "how, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "ctrl-c"]
)
def test_tune_stopped_by_a_signal_marks_running_trials_and_resumes(tmp_path, tune_manifest, how, code):
    manifest = tune_manifest(f"  trials: {TRIALS}", epochs=2, space=SPACE)
    command = [sys.executable, "-m", "trainer_core.cli", "tune", str(manifest)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRAINER_RAY_NUM_CPUS": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    seen: list[str] = []
    deadline = time.time() + 300
    try:
        for line in proc.stdout:
            seen.append(line)
            if sum(" complete " in x or " failed" in x for x in seen) >= 2:
                break
            assert time.time() < deadline, "".join(seen)
        assert proc.poll() is None, "".join(seen)  # still searching
        if how == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        else:
            os.kill(proc.pid, signal.SIGTERM)  # the driver only, as a scheduler stops it
        rest, _ = proc.communicate(timeout=120)
        seen.append(rest)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(seen)
    assert proc.returncode == code, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("Interrupted: finished trials are kept in") and last.endswith(
        f"Continue with the same command: trainer tune {manifest}"
    ), out
    assert "Traceback" not in out

    journal = tmp_path / "out" / "tune" / "studies.journal"
    before = _trials(journal)
    finished_before = {t.number: t for t in before if _finished(t)}
    interrupted = [t for t in before if t.state.name == "FAIL" and t.user_attrs.get("interrupted")]
    assert 2 <= len(finished_before) < TRIALS, [(t.number, t.state.name) for t in before]
    assert not [t for t in before if t.state.name == "RUNNING"]  # the driver marked them itself
    assert interrupted and all(t.params for t in interrupted), out  # some trial was really running
    queued = [t for t in before if t.state.name == "WAITING"]
    assert sorted(t.user_attrs["retry_of"] for t in queued) == sorted(t.number for t in interrupted)
    assert f"{len(interrupted)} running trial(s) will be retried" in last

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = _trials(journal)
    finished = [t for t in after if _finished(t)]
    assert len(finished) == TRIALS, [(t.number, t.state.name) for t in after]
    for number, t in finished_before.items():  # not repeated: the same record, untouched
        again = next(x for x in after if x.number == number)
        assert again.state == t.state and again.datetime_complete == t.datetime_complete
        assert not any(x.user_attrs.get("retry_of") == number for x in after)
    for t in interrupted:  # retried once, with the same params, and finished
        retries = [x for x in after if x.user_attrs.get("retry_of") == t.number]
        assert len(retries) == 1 and retries[0].params == t.params and _finished(retries[0])
