"""A run killed in the middle of training resumes at the next epoch from its backup."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from trainer_core.testing import success_markers, write_training_ready

EPOCHS = 5


def _command(tmp_path):
    return [
        sys.executable,
        "-m",
        "trainer_core.cli",
        "run",
        "--manifest",
        str(tmp_path / "m.yaml"),
        "--pair",
        "ETHUSDT",
        "--data",
        str(tmp_path / "inputs"),
        "--output",
        str(tmp_path / "out"),
        "--epochs",
        str(EPOCHS),
        "--set",
        "train.verbose=2",
        "--set",
        "train.early_stopping_patience=50",
    ]


def _slow_run_setup(tmp_path, write_slow_epochs_plugin) -> dict:
    """Data, a manifest whose epochs take over a second (time to act mid-run), and the env to run it."""
    write_training_ready(tmp_path / "inputs", "ETHUSDT", rows=1500, seed=4)
    module = write_slow_epochs_plugin(tmp_path, 1.0)
    (tmp_path / "m.yaml").write_text(
        f"version: 1\nplugins: [{module}]\npairs: [ETHUSDT]\n"
        "defaults:\n  labels: {future_window: 5}\n  balance: {min_per_class: 0}\n"
        "  model: {params: {lstm_units: [4], dense_units: [4]}}\n  train: {sequence_length: 8, batch_size: 64}\n"
    )
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _signal_at_epoch_3(tmp_path, env: dict, sig: int) -> tuple[int, str, float]:
    """Run `trainer run`, send ``sig`` when epoch 3 starts; its exit code, output, and the seconds
    from the signal to its exit."""
    proc = subprocess.Popen(
        _command(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    seen = []
    deadline = time.time() + 120
    signalled = None
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("Epoch 3/"):
                signalled = time.monotonic()
                proc.send_signal(sig)
                break
            assert time.time() < deadline, "".join(seen)
        rest, _ = proc.communicate(timeout=30)
        seen.append(rest or "")
        took = time.monotonic() - signalled if signalled is not None else float("inf")
    finally:
        proc.kill()
        proc.wait()
    return proc.returncode, "".join(seen), took


@pytest.mark.slow
def test_killed_run_resumes_at_the_next_epoch(tmp_path, write_slow_epochs_plugin):
    env = _slow_run_setup(tmp_path, write_slow_epochs_plugin)
    returncode, output, _ = _signal_at_epoch_3(tmp_path, env, signal.SIGKILL)  # epochs 1 and 2 backed up
    assert returncode == -signal.SIGKILL, output
    out = tmp_path / "out"
    assert success_markers(out) == [], "a killed run must not look complete"
    assert not (out / "ETHUSDT").exists()

    again = subprocess.run(_command(tmp_path), capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Resuming an interrupted run after epoch 2" in again.stdout
    assert "Epoch 1/" not in again.stdout and "Epoch 3/5" in again.stdout  # it did not start over

    pair = out / "ETHUSDT"
    meta = json.loads(next(pair.glob("metadata_*.json")).read_text())
    assert meta["training"]["resumed"] is True
    assert meta["training"]["completed_epochs"] == EPOCHS
    assert len(meta["timings"]["epoch_seconds"]) == EPOCHS
    rows = list(csv.DictReader(next(pair.glob("history_*.csv")).open()))
    assert [r["epoch"] for r in rows] == [str(i) for i in range(1, EPOCHS + 1)]
    # the best epoch is chosen over the whole run, the epochs before the kill included
    val = [float(r["val_accuracy"]) for r in rows]
    assert meta["training"]["best_epoch"] == val.index(max(val)) + 1
    # nothing temporary or from the backup is left anywhere
    leftovers = [
        p
        for p in out.rglob("*")
        if ".tmp" in p.name
        or "backup" in p.parts
        or p.name.endswith(".partial.json")
        or p.name == ".trainer-staging"
        or p.name.endswith(".lock")
    ]
    assert leftovers == []
    assert set(json.loads((pair / "_SUCCESS.json").read_text())["artifacts"]) >= {
        p.name for p in pair.iterdir() if p.is_file() and p.name != "_SUCCESS.json"
    }


@pytest.mark.slow
def test_sigterm_stops_at_the_step_keeps_the_backup_and_the_rerun_resumes(tmp_path, write_slow_epochs_plugin):
    """What a preempted pod sees: SIGTERM mid-epoch, a prompt exit 143, a resumable backup."""
    import re

    env = _slow_run_setup(tmp_path, write_slow_epochs_plugin)
    returncode, output, took = _signal_at_epoch_3(
        tmp_path, env, signal.SIGTERM
    )  # epoch 3's steps are running
    assert returncode == 143, output
    assert took < 10, f"{took:.1f}s from SIGTERM to exit (Kubernetes' default grace is 30 s)"
    assert "stopped by SIGTERM" in output and "Run the same command again" in output
    assert "Traceback" not in output
    out = tmp_path / "out"
    assert success_markers(out) == []

    again = subprocess.run(_command(tmp_path), capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    resumed = re.search(r"Resuming an interrupted run after epoch (\d+)", again.stdout)
    assert resumed and int(resumed.group(1)) in (2, 3), again.stdout
    assert "Epoch 1/" not in again.stdout
    meta = json.loads(next((out / "ETHUSDT").glob("metadata_*.json")).read_text())
    assert meta["training"]["completed_epochs"] == EPOCHS and meta["training"]["resumed"] is True
