"""A batch's log redirected to a file reads per pair: Ray's forwarded worker lines carry no colour
codes and are not folded into "[repeated Nx across cluster]". Checked on Ray's own printing and
de-duplication code, in a process whose output is a pipe, as `trainer batch > log` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CODE = """
import io, json
from trainer_core.batch.driver import plain_ray_output

plain_ray_output()
from ray._private import worker
from ray._private.ray_logging import LogDeduplicator

out = io.StringIO()
line = {"ip": "10.0.0.1", "localhost": "10.0.0.1", "task_name": "train_pair"}
worker.print_worker_logs({**line, "pid": 11, "lines": ["BTCUSDT: Epoch 1/3"]}, out)
dedup = LogDeduplicator(5, None, None, _timesource=lambda: 0.0)
kept = []
for pid in (11, 12, 13):  # three pairs printing the same line at once
    for batch in dedup.deduplicate({**line, "pid": pid, "lines": ["Epoch 1/3"]}):
        kept += batch["lines"]
print(json.dumps({"printed": out.getvalue(), "kept": kept}))
"""


def test_ray_worker_lines_are_plain_and_each_kept_when_not_a_terminal():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_DEDUP_LOGS", "RAY_COLOR_PREFIX")}
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["printed"] == "(train_pair pid=11) BTCUSDT: Epoch 1/3\n"  # no \x1b[36m ... \x1b[0m
    assert got["kept"] == ["Epoch 1/3"] * 3  # not one line and a "[repeated 2x across cluster]"
