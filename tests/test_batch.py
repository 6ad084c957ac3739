"""`trainer batch` end to end, as a user runs it: a real local Ray, a Ray head started with
`ray start`, and an S3 output on a local S3-compatible server (moto in server mode).

Ray starts in the `trainer` subprocess (several seconds each time), so one module-scoped fixture
runs the three local batches that most tests below read: the first run (two good pairs, one
broken), the same command again (resume), and `--force --only ETHUSDT`. Its manifest names a
recording plugin (`batch_recorder`, written by `write_recorder`) whose hooks and batch reporter
append what they saw to a JSON-lines file, so removing a hook call from the engine fails a test.
The `--dry-run`, `--only` and pre-flight checks run in this process: they start no Ray.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from trainer_core.manifest import parse_set
from trainer_core.testing import TINY_SETTINGS, training_ready_name

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
GOOD = ("BTCUSDT", "ETHUSDT")
BAD = "BADUSDT"
FW, SL, TP = 10, 0.3, 0.3  # about a third of the synthetic rows in each class
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tag(pair: str) -> str:
    return f"{pair}_FW{FW:03d}_SL{round(SL * 100):03d}_TP{round(TP * 100):03d}"


def model_name(pair: str) -> str:
    return f"model_{tag(pair)}.keras"


# -- helpers -----------------------------------------------------------------------------------


def tiny_defaults() -> dict:
    """TINY_SETTINGS as a manifest's `defaults`, on 2,000 simulated candles per pair, 1 epoch."""
    defaults: dict = {}
    for text in TINY_SETTINGS:
        dotted, value, _ = parse_set(text)
        node = defaults
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    defaults["data"] = {"loader": "synthetic", "params": {"rows": 2000}}
    defaults["labels"] = {"future_window": FW, "take_profit_pct": TP, "stop_loss_pct": SL}
    defaults["features"] = {"ma_short": 60, "ma_long": 240}
    defaults["train"]["epochs"] = 1
    defaults["resources"] = {"cpus": 1, "gpus": 0}
    return defaults


RECORDER = "batch_recorder"


def write_recorder(folder: Path, log: Path, sleep: float = 0.0) -> str:
    """A plugin module `batch_recorder` in `folder`: every batch and pair hook, and the `report_batch`
    of its reporter `recorder`, append one JSON line to `log` (pair hooks with the time, from the
    workers); with `sleep`, each epoch sleeps that long. Returns the module name."""
    (folder / f"{RECORDER}.py").write_text(f'''"""Records the hooks a batch calls (a test plugin)."""
import json, os, time
import keras
from trainer_core import hookimpl

LOG = {str(log)!r}


def note(**event):
    with open(LOG, "a") as fh:
        fh.write(json.dumps(dict(event, pid=os.getpid(), t=time.time())) + "\\n")


class Slow(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep({sleep})


class Recorder:
    """Records report_batch (a test batch reporter)."""

    def report_pair(self, result, out):
        return None

    def report_batch(self, batch):
        note(hook="report_batch", output=batch.output, counts=batch.counts, exit_code=batch.exit_code,
             rows=[{{k: r[k] for k in ("pair", "status", "reason", "metrics", "figures", "trained_at", "tag")}}
                   for r in batch.rows])


@hookimpl
def trainer_register_reporters(register):
    register("recorder", Recorder)


@hookimpl
def trainer_before_batch(manifest, specs):
    note(hook="before_batch", pairs=[s.pair for s in specs])


@hookimpl
def trainer_after_batch(manifest, results):
    note(hook="after_batch", results=[{{"pair": r["pair"], "status": r["status"]}} for r in results])


@hookimpl
def trainer_before_pair(spec):
    note(hook="before_pair", pair=spec.pair)


@hookimpl
def trainer_after_pair(spec, result):
    note(hook="after_pair", pair=spec.pair)


@hookimpl
def trainer_keras_callbacks(spec, pair_dir):
    return [Slow()] if {sleep} else []
''')
    return RECORDER


def records(log: Path) -> list[dict]:
    """What the recording plugin wrote, oldest first (nothing: [])."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def with_path(env: dict, folder: Path) -> dict:
    """`env` with `folder` first on PYTHONPATH (where a manifest's plugin module lives)."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))}


def write_manifest(folder: Path, pairs=(*GOOD, BAD), output: str = "out", plugins=(), batch=None) -> Path:
    """A manifest in `folder`; BADUSDT reads a training-ready file that does not exist."""
    entries: list = []
    for pair in pairs:
        if pair == BAD:
            missing = folder / "inputs" / training_ready_name(BAD, fw=FW, sl_pct=SL, tp_pct=TP)
            entries.append({"pair": BAD, "data": {"loader": "training-ready", "path": str(missing)}})
        else:
            entries.append(pair)
    doc = {
        "version": 1,
        "output": str(folder / output),
        "batch": {"max_retries": 1, **(batch or {})},
        "defaults": tiny_defaults(),
        "pairs": entries,
    }
    if plugins:
        doc["plugins"] = list(plugins)
    path = folder / "m.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "FSSPEC_", "AWS_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def trainer_batch(*args, env: dict | None = None, timeout: int = 300) -> SimpleNamespace:
    """`trainer batch ARGS` in a subprocess: Ray starts and stops there, not in pytest."""
    proc = subprocess.run(
        [sys.executable, "-m", "trainer_core.cli", "batch", *map(str, args)],
        capture_output=True,
        text=True,
        env=env or base_env(),
        timeout=timeout,
    )
    out = ANSI.sub("", proc.stdout)
    return SimpleNamespace(
        code=proc.returncode,
        out=out,
        err=ANSI.sub("", proc.stderr),
        both=f"--- stdout\n{out}\n--- stderr\n{ANSI.sub('', proc.stderr)[-4000:]}",
    )


def progress(out: str, state: str, pair: str) -> list[str]:
    """The driver's progress lines `[mm:ss] STATE PAIR ...` (not the workers' own output).

    Ray's log thread and the driver share stdout, so a worker's line sometimes lacks its newline
    when a progress line follows it: the pattern is searched, not anchored at the line start."""
    pattern = re.compile(rf"\[\d\d:\d\d(?::\d\d)?\] {state}\s+{pair}\b")
    return [line[pattern.search(line).start() :] for line in out.splitlines() if pattern.search(line)]


def table(out: str) -> dict[str, list[str]]:
    """The final table's rows by pair: [status, epochs, ...]."""
    lines = out.splitlines()
    headers = [i for i, line in enumerate(lines) if line.split()[:2] == ["PAIR", "STATUS"]]
    if not headers:
        return {}
    rows = {}
    start = headers[-1]
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


def snapshot(out: Path) -> dict:
    """What a re-run must (not) touch: each good pair's marker bytes and model mtime, the summary."""
    snap = {
        "summary": json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    }
    for pair in GOOD:
        marker, model = out / pair / "_SUCCESS.json", out / pair / model_name(pair)
        snap[pair] = (
            marker.read_bytes() if marker.exists() else None,
            model.stat().st_mtime_ns if model.exists() else None,
        )
    return snap


def rows_by_pair(summary: dict) -> dict[str, dict]:
    return {row["pair"]: row for row in summary["pairs"]}


# -- one local batch, run three times ---------------------------------------------------------


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    log = root / "hooks.jsonl"
    write_recorder(root, log)
    manifest = write_manifest(root, plugins=[RECORDER], batch={"reporters": ["summary", "recorder"]})
    out = root / "out"
    env = with_path(base_env(), root)
    seen = {}

    def run(name, *args):
        result = trainer_batch(manifest, *args, env=env)
        seen[name] = records(log)
        log.unlink(missing_ok=True)
        return result

    first = run("first")
    after_first = snapshot(out)
    html = (out / "summary.html").read_text() if (out / "summary.html").exists() else None
    again = run("again")
    after_again = snapshot(out)
    forced = run("forced", "--force", "--only", "ETHUSDT")
    after_forced = snapshot(out)
    with pytest.MonkeyPatch.context() as mp:  # the in-process --dry-run tests import the plugin too
        mp.syspath_prepend(str(root))
        yield SimpleNamespace(
            root=root,
            manifest=manifest,
            out=out,
            first=first,
            after_first=after_first,
            html=html,
            again=again,
            after_again=after_again,
            forced=forced,
            after_forced=after_forced,
            hooks=seen,
        )


def test_first_run_exits_1_and_reports_every_pair_as_it_goes(batch):
    r = batch.first
    assert r.code == 1, r.both
    for pair in GOOD:
        assert progress(r.out, "running", pair), r.both
        (line,) = progress(r.out, "trained", pair)
        assert re.search(r"val_accuracy \d\.\d{4}, 1 epoch\(s\)", line), line
    (line,) = progress(r.out, "failed", BAD)
    assert "data path not found" in line, line
    rows = table(r.out)
    assert sorted(rows) == sorted([*GOOD, BAD]) and list(rows)[-1] == BAD, r.both  # by MCC, failed last
    for pair in GOOD:
        assert rows[pair][:2] == ["trained", "1"]
        assert rows[pair][-1] == str(batch.out / pair)
    assert rows[BAD][0] == "failed" and "data path not found" in " ".join(rows[BAD])
    assert re.search(
        r"^2 trained, 1 failed in \d+s\. Summary: .*summary\.json, .*summary\.html$", r.out, re.M
    ), r.out


def test_summary_json_has_a_row_per_pair(batch):
    summary = batch.after_first["summary"]
    assert summary is not None, batch.first.both
    assert summary["exit_code"] == 1 and summary["interrupted"] is False
    assert summary["counts"] == {"trained": 2, "failed": 1}
    assert [row["pair"] for row in summary["pairs"]] == [*GOOD, BAD]
    rows = rows_by_pair(summary)
    for pair in GOOD:
        row = rows[pair]
        assert row["status"] == "trained" and row["error"] is None
        assert 0.0 <= row["metrics"]["val_accuracy"] <= 1.0
        assert row["metrics"]["epochs"] == 1 and row["metrics"]["val_samples"] > 0
        assert row["artifacts"] == str(batch.out / pair)
        assert row["seconds"] > 0
    bad = rows[BAD]
    assert bad["status"] == "failed" and bad["metrics"] == {} and bad["artifacts"] is None
    assert "data path not found" in bad["error"] and training_ready_name(BAD, FW, SL, TP) in bad["error"]
    assert bad["hint"] and bad["exit_code"] == 2


def test_summary_html_is_self_contained_and_links_the_confusion_matrices(batch):
    assert batch.html is not None, batch.first.both

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.urls, self.tags = [], []

        def handle_starttag(self, name, attrs):
            self.tags.append(name)
            self.urls += [v for k, v in attrs if k in ("href", "src") and v]

    page = Links()
    page.feed(batch.html)
    assert not re.search(r"https?://", batch.html), "summary.html must not load anything from the network"
    assert "script" not in page.tags and "link" not in page.tags
    assert all(not u.startswith(("/", "//")) and "://" not in u for u in page.urls), page.urls
    for pair in GOOD:
        assert f"{pair}/confusion_matrix_{tag(pair)}.png" in page.urls, page.urls
    for url in page.urls:  # no broken link: every one resolves next to summary.html
        assert (batch.out / url).exists(), f"summary.html links {url}, which does not exist"
    assert not any(u.startswith(f"{BAD}/") for u in page.urls)
    assert "data path not found" in batch.html


def test_good_pairs_are_committed_and_the_broken_one_is_not(batch):
    for pair in GOOD:
        marker, model = batch.after_first[pair]
        assert marker is not None and model is not None, batch.first.both
        assert json.loads(marker)["pair"] == pair
    assert not (batch.out / BAD / "_SUCCESS.json").exists()


def test_rerun_skips_the_good_pairs_without_retraining_them(batch):
    r = batch.again
    assert r.code == 1, r.both
    for pair in GOOD:
        (line,) = progress(r.out, "skipped", pair)
        assert "completed with the same settings and data" in line
        assert not progress(r.out, "running", pair) and not progress(r.out, "trained", pair)
        assert batch.after_again[pair] == batch.after_first[pair], f"{pair} was rewritten"
    assert progress(r.out, "failed", BAD), r.both
    summary = batch.after_again["summary"]
    assert summary["counts"] == {"skipped": 2, "failed": 1}
    rows = rows_by_pair(summary)
    for pair in GOOD:  # a skipped pair still shows its last metrics
        assert rows[pair]["status"] == "skipped"
        assert rows[pair]["metrics"]["epochs"] == 1
    assert rows[BAD]["status"] == "failed" and "data path not found" in rows[BAD]["error"]
    assert re.search(r"^2 skipped, 1 failed in \d+s\.", r.out, re.M)


def test_force_only_retrains_that_pair_alone(batch):
    r = batch.forced
    assert r.code == 0, r.both
    assert progress(r.out, "trained", "ETHUSDT"), r.both
    assert "BTCUSDT" not in r.out and BAD not in r.out
    assert list(table(r.out)) == ["ETHUSDT"]
    assert batch.after_forced["BTCUSDT"] == batch.after_first["BTCUSDT"]
    assert batch.after_forced["ETHUSDT"][1] != batch.after_first["ETHUSDT"][1], (
        "ETHUSDT's model was not rewritten"
    )
    # summary.json merges per pair: this batch's pair first, the others kept as the last batch left them
    summary = batch.after_forced["summary"]
    assert summary["this_batch"] == {"pairs": ["ETHUSDT"], "counts": {"trained": 1}}
    assert [row["pair"] for row in summary["pairs"]] == ["ETHUSDT", "BTCUSDT", BAD]
    before, after = rows_by_pair(batch.after_again["summary"]), rows_by_pair(summary)
    assert after["BTCUSDT"] == before["BTCUSDT"] and after[BAD]["status"] == "failed"
    assert after["ETHUSDT"]["trained_at"] != before["ETHUSDT"]["trained_at"]


# -- the batch hooks and the batch reporters, as `trainer batch` calls them -------------------


def hooks_named(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e["hook"] == name]


def test_hook_trainer_before_batch(batch):
    for run, pairs in (("first", [*GOOD, BAD]), ("again", [*GOOD, BAD]), ("forced", ["ETHUSDT"])):
        events = batch.hooks[run]
        (before,) = hooks_named(events, "before_batch")
        assert before["pairs"] == pairs, events
        assert events[0]["hook"] == "before_batch", [e["hook"] for e in events]
    # the driver calls it before any pair starts, in the driver process
    first = batch.hooks["first"]
    assert all(e["t"] >= first[0]["t"] for e in hooks_named(first, "before_pair"))
    assert {e["pid"] for e in hooks_named(first, "before_pair")}.isdisjoint({first[0]["pid"]})


def test_hook_trainer_after_batch(batch):
    expected = {
        "first": {"BTCUSDT": "trained", "ETHUSDT": "trained", BAD: "failed"},
        "again": {"BTCUSDT": "skipped", "ETHUSDT": "skipped", BAD: "failed"},
        "forced": {"ETHUSDT": "trained"},
    }
    for run, statuses in expected.items():
        events = batch.hooks[run]
        (after,) = hooks_named(events, "after_batch")
        assert {r["pair"]: r["status"] for r in after["results"]} == statuses
        assert events[-1]["hook"] == "after_batch", [e["hook"] for e in events]  # last, after the reporters


def test_a_batch_reporter_named_in_batch_reporters_gets_report_batch(batch):
    (first,) = hooks_named(batch.hooks["first"], "report_batch")
    assert first["counts"] == {"trained": 2, "failed": 1} and first["exit_code"] == 1
    assert first["output"] == str(batch.out)
    rows = {r["pair"]: r for r in first["rows"]}
    assert list(rows) == [*GOOD, BAD]
    for pair in GOOD:
        row = rows[pair]
        assert row["status"] == "trained" and row["tag"] == tag(pair)
        assert row["metrics"]["epochs"] == 1 and 0 <= row["metrics"]["val_accuracy"] <= 1
        assert set(row["figures"]) >= {"confusion-matrix", "trading"}, row["figures"]
        assert row["trained_at"]
    assert rows[BAD]["status"] == "failed" and rows[BAD]["figures"] == {}
    # both reporters ran: the summary's files and the recorder's line
    assert batch.after_first["summary"]["counts"] == first["counts"]


def test_a_skipped_pair_keeps_its_last_figures_and_time(batch):
    """A skipped pair's row comes from its _SUCCESS.json: same metrics, figures and time as the run
    that trained it, in the batch reporter's rows and in summary.json."""
    (first,) = hooks_named(batch.hooks["first"], "report_batch")
    (again,) = hooks_named(batch.hooks["again"], "report_batch")
    trained, skipped = ({r["pair"]: r for r in x["rows"]} for x in (first, again))
    before, after = rows_by_pair(batch.after_first["summary"]), rows_by_pair(batch.after_again["summary"])
    for pair in GOOD:
        assert skipped[pair]["status"] == "skipped"
        for key in ("metrics", "figures", "trained_at"):
            assert skipped[pair][key] == trained[pair][key], key
        for key in ("metrics", "trading", "confusion_matrix_png", "trained_at"):
            assert after[pair][key] == before[pair][key], key
        assert after[pair]["trading"]["report"] == f"{pair}/trading_{tag(pair)}.html"
        assert (batch.out / after[pair]["confusion_matrix_png"]).is_file()


# -- the plan, without Ray --------------------------------------------------------------------


def plan_lines(output: str) -> dict[str, str]:
    """`  PAIR   would train: reason` -> {PAIR: "would train: reason"}."""
    found = re.findall(r"^  ([A-Z0-9]+)\s+(would (?:train|skip): .*)$", output, re.M)
    return dict(found)


def test_dry_run_prints_the_plan_and_trains_nothing(batch, trainer):
    before = {p: sorted(x.name for x in (batch.out / p).rglob("*")) for p in GOOD}
    summary_before = (batch.out / "summary.json").read_bytes()
    result = trainer("batch", batch.manifest, "--dry-run")
    assert result.exit_code == 0, result.output
    plan = plan_lines(result.output)
    assert plan == {
        "BTCUSDT": "would skip: completed with the same settings and data",
        "ETHUSDT": "would skip: completed with the same settings and data",
        BAD: "would train: no completed run",
    }, result.output
    assert "Submitted" not in result.output
    assert (batch.out / "summary.json").read_bytes() == summary_before
    assert {p: sorted(x.name for x in (batch.out / p).rglob("*")) for p in GOOD} == before
    assert not (batch.out / BAD).exists()


def test_dry_run_with_force_and_only(batch, trainer):
    result = trainer("batch", batch.manifest, "--dry-run", "--force", "--only", "btc/usdt")
    assert result.exit_code == 0, result.output
    assert plan_lines(result.output) == {"BTCUSDT": "would train: --force"}


def test_dry_run_says_the_settings_changed(batch, trainer):
    result = trainer("batch", batch.manifest, "--dry-run", "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    plan = plan_lines(result.output)
    for pair in GOOD:
        assert plan[pair] == "would train: the settings changed since the last run"


def test_dry_run_checks_every_artifact(batch, trainer, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(batch.out, copy)
    model = copy / "ETHUSDT" / model_name("ETHUSDT")
    with open(model, "r+b") as fh:
        fh.truncate(model.stat().st_size // 2)
    (copy / "BTCUSDT" / f"history_{tag('BTCUSDT')}.csv").unlink()
    result = trainer("batch", batch.manifest, "--dry-run", "--output", copy)
    assert result.exit_code == 0, result.output
    plan = plan_lines(result.output)
    assert plan["ETHUSDT"] == f"would train: artifact {model.name} does not match its checksum"
    assert plan["BTCUSDT"] == f"would train: artifact history_{tag('BTCUSDT')}.csv is missing"


def test_dry_run_says_the_code_changed_and_what(batch, trainer, tmp_path, monkeypatch):
    """A plugin module's source edited, or the trainer upgraded: the pairs it trained retrain."""
    edited = tmp_path / "edited"
    edited.mkdir()
    source = (batch.root / f"{RECORDER}.py").read_text()
    (edited / f"{RECORDER}.py").write_text(source + "\n# a changed line\n")
    monkeypatch.syspath_prepend(str(edited))
    monkeypatch.delitem(sys.modules, RECORDER, raising=False)
    result = trainer("batch", batch.manifest, "--dry-run")
    assert result.exit_code == 0, result.output
    plan = plan_lines(result.output)
    old = hashlib.sha256(source.encode()).hexdigest()[:12]
    new = hashlib.sha256((edited / f"{RECORDER}.py").read_bytes()).hexdigest()[:12]
    for pair in GOOD:
        assert plan[pair] == (
            f"would train: the code changed (plugin {RECORDER}: {RECORDER} sha256:{old} -> "
            f"{RECORDER} sha256:{new})"
        ), result.output

    monkeypatch.delitem(sys.modules, RECORDER, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(edited)])
    import trainer_core.version

    monkeypatch.setattr(trainer_core.version, "__version__", "99.0")  # as after an upgrade
    result = trainer("batch", batch.manifest, "--dry-run")
    assert result.exit_code == 0, result.output
    reason = plan_lines(result.output)["BTCUSDT"]
    assert reason.startswith("would train: the code changed (trainer: 0.1.0 -> 99.0; "), reason
    assert "balancer undersample: pair-trainer 0.1.0 -> pair-trainer 99.0" in reason


def assert_untouched(before: dict[str, bytes], out: Path) -> None:
    after = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    assert after == before, "the output root changed"


def test_a_batch_that_fails_its_preflight_touches_nothing(batch, trainer, tmp_path, monkeypatch):
    """A typo in a component name, resources no node has, an output that cannot be written: exit
    before Ray starts, in well under a second of work, summary.json/html byte-identical."""
    monkeypatch.setenv("TRAINER_RAY_NUM_CPUS", "2")  # the local Ray this batch would start
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    before = {p.name: p.read_bytes() for p in sorted(batch.out.iterdir()) if p.is_file()}
    assert {"summary.json", "summary.html"} <= set(before)
    markers = {pair: batch.out.joinpath(pair, "_SUCCESS.json").read_bytes() for pair in GOOD}
    cases = {
        (
            "--set",
            "reporters=[metadata, histroy]",
        ): "BTCUSDT (and 2 more pair(s)): Unknown reporter 'histroy'",
        ("--set", "balance.method=undersampel"): "Unknown balancer 'undersampel'",
        ("--set", "resources.cpus=64"): (
            "BTCUSDT, ETHUSDT, BADUSDT each ask for 64 CPU(s) and 0 GPU(s) on one "
            "node, but the largest node of this machine has 2 CPU(s) and 0 GPU(s)"
        ),
        ("--set", "resources.gpus=1"): "each ask for 1 CPU(s) and 1 GPU(s) on one node",
    }
    outputs = {}
    for args, message in cases.items():
        started = time.monotonic()
        result = trainer("batch", batch.manifest, "--force", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert time.monotonic() - started < 10
        assert "Submitted" not in result.output and "PAIR" not in result.output
        assert_untouched(before, batch.out)
        outputs[args[1]] = result.output
    assert (
        "Hint: Ask for what a node has: --set resources.cpus=2 --set resources.gpus=0"
        in outputs["resources.cpus=64"]
    )
    assert (
        "Hint: Ask for what a node has: --set resources.cpus=1 --set resources.gpus=0"
        in outputs["resources.gpus=1"]
    )
    for pair in GOOD:
        assert batch.out.joinpath(pair, "_SUCCESS.json").read_bytes() == markers[pair]

    doc = yaml.safe_load(batch.manifest.read_text())
    doc["batch"]["reporters"] = ["summry"]
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(doc))
    result = trainer("batch", typo, "--force")
    assert result.exit_code == 2 and "Unknown reporter 'summry'" in result.output, result.output
    assert_untouched(before, batch.out)

    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("keep me")
    result = trainer("batch", batch.manifest, "--force", "--output", in_the_way / "out")
    assert result.exit_code != 0 and "is not a folder" in result.output, result.output
    assert in_the_way.read_text() == "keep me"
    assert_untouched(before, batch.out)


def test_only_a_pair_not_in_the_manifest_exits_2(tmp_path, trainer):
    manifest = write_manifest(tmp_path)
    result = trainer("batch", manifest, "--only", "XRPUSDT")
    assert result.exit_code == 2, result.output
    assert "--only names pair(s) not in the manifest: XRPUSDT." in result.output
    assert "BTCUSDT, ETHUSDT, BADUSDT" in result.output  # the hint lists what there is
    assert not (tmp_path / "out").exists()


def test_demo_manifest_validates(trainer):
    result = trainer("validate", REPO / "manifests" / "demo.yaml")
    assert result.exit_code == 0, result.output
    assert "OK, 3 pair(s)" in result.output
    assert "loader=synthetic" in result.output


# -- a Ray head started with `ray start` ------------------------------------------------------

#: the nodes' S3 keys: the ones the loopback S3 server (conftest's `moto_s3`) is given
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _pids_using(marker: str) -> list[int]:
    """Processes whose command line names `marker` (the head's private temp dir)."""
    pids = []
    if not Path("/proc").is_dir():
        return pids
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory, free_port, console_script):
    """`ray start --head --block` on loopback, with token authentication (Ray's default) on.

    Stopped by killing its own process group (and anything left that names its temp dir), not by
    `ray stop --force`, which would kill every Ray on the machine, a developer's own included.
    3 logical CPUs, so the batch's "Submitted ... (3 CPUs" shows that it joined this cluster.
    The nodes hold S3 credentials (as an instance role would) but no endpoint.
    """
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayt-")  # short: Ray's socket paths must fit in 107 bytes
    env = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), **S3_CREDENTIALS)
    log = tmp_path_factory.mktemp("ray-head") / "ray-head.log"
    with open(log, "wb") as fh:
        head = subprocess.Popen(
            [
                console_script("ray"),
                "start",
                "--head",
                "--block",
                "--port",
                str(port),
                "--node-ip-address",
                "127.0.0.1",
                "--num-cpus",
                "3",
                "--disable-usage-stats",
                "--include-dashboard=false",
                "--temp-dir",
                temp_dir,
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.time() + 120
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if head.poll() is not None or time.time() > deadline:
                pytest.fail(f"ray start --head did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield SimpleNamespace(address=f"127.0.0.1:{port}", env=env)
    finally:
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait(timeout=30)
        for pid in _pids_using(temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_batch_joins_a_ray_head_by_address_and_by_ray_address(tmp_path, ray_head):
    manifest = write_manifest(tmp_path, pairs=GOOD)
    r = trainer_batch(manifest, "--address", ray_head.address, env=ray_head.env)
    assert r.code == 0, r.both
    assert "Submitted 2 pair(s) to Ray (3 CPUs, 0 GPUs)" in r.out, r.both
    for pair in GOOD:
        assert progress(r.out, "trained", pair), r.both
        assert (tmp_path / "out" / pair / "_SUCCESS.json").is_file()
    assert (
        rows_by_pair(json.loads((tmp_path / "out" / "summary.json").read_text()))["ETHUSDT"]["status"]
        == "trained"
    )

    r = trainer_batch(
        manifest,
        "--only",
        "BTCUSDT",
        "--output",
        tmp_path / "again",
        env={**ray_head.env, "RAY_ADDRESS": ray_head.address},
    )
    assert r.code == 0, r.both
    assert "Submitted 1 pair(s) to Ray (3 CPUs, 0 GPUs)" in r.out, r.both
    assert progress(r.out, "trained", "BTCUSDT"), r.both
    assert (tmp_path / "again" / "BTCUSDT" / model_name("BTCUSDT")).is_file()


def test_an_unreachable_address_fails_fast_keeps_the_last_summary_and_calls_after_batch(tmp_path, free_port):
    log = tmp_path / "hooks.jsonl"
    write_recorder(tmp_path, log)
    manifest = write_manifest(
        tmp_path, pairs=["ETHUSDT"], plugins=[RECORDER], batch={"reporters": ["summary", "recorder"]}
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text('{"last": "run"}\n')
    for address in ("127.0.0.1:1", f"127.0.0.1:{free_port()}"):  # nothing listens there
        log.unlink(missing_ok=True)
        try:
            r = trainer_batch(manifest, "--address", address, timeout=20, env=with_path(base_env(), tmp_path))
        except subprocess.TimeoutExpired:
            pytest.fail(f"trainer batch --address {address} still hung after 20 s")
        assert r.code == 2, r.both
        assert address in r.err and "Error:" in r.err
        assert "PAIR" not in r.out
        assert (tmp_path / "out" / "summary.json").read_text() == '{"last": "run"}\n'
        events = records(log)
        assert [e["hook"] for e in events] == ["before_batch", "after_batch"], events  # no report_batch
        assert events[1]["results"] == [{"pair": "ETHUSDT", "status": "cancelled"}]


# -- an S3 output on a local S3-compatible server --------------------------------------------


@pytest.fixture(scope="module")
def s3(moto_s3):
    """The loopback S3 server with a bucket; ``.env`` a batch's environment for it."""
    bucket = "pair-trainer-test"
    moto_s3.create_bucket(bucket)
    return SimpleNamespace(
        endpoint=moto_s3.endpoint, bucket=bucket, fs=moto_s3.fs, env=base_env(**moto_s3.env)
    )


def test_batch_to_s3_commits_the_pair_and_resumes(tmp_path, s3):
    manifest = write_manifest(tmp_path, pairs=["ETHUSDT"])
    prefix = f"{s3.bucket}/runs/2026-11"
    url = f"s3://{prefix}"

    r = trainer_batch(manifest, "--output", url, env=s3.env)
    assert r.code == 0, r.both
    assert progress(r.out, "trained", "ETHUSDT"), r.both
    assert f"Summary: {url}/summary.json, {url}/summary.html" in r.out
    fs = s3.fs
    for key in (
        "ETHUSDT/_SUCCESS.json",
        f"ETHUSDT/{model_name('ETHUSDT')}",
        f"ETHUSDT/metadata_{tag('ETHUSDT')}.json",
        f"ETHUSDT/scaler_{tag('ETHUSDT')}.json",
        "summary.json",
        "summary.html",
    ):
        assert fs.exists(f"{prefix}/{key}"), f"{key} missing; the bucket has {fs.find(prefix)}"
    assert not (tmp_path / "out").exists(), "nothing goes to the manifest's local output"

    marker_bytes = fs.cat_file(f"{prefix}/ETHUSDT/_SUCCESS.json")
    marker = json.loads(marker_bytes)
    assert model_name("ETHUSDT") in marker["artifacts"]
    for name, info in marker["artifacts"].items():
        data = fs.cat_file(f"{prefix}/ETHUSDT/{name}")
        assert "sha256:" + hashlib.sha256(data).hexdigest() == info["sha256"], name
        assert len(data) == info["bytes"], name
    summary = json.loads(fs.cat_file(f"{prefix}/summary.json"))
    assert summary["output"] == url
    assert rows_by_pair(summary)["ETHUSDT"]["artifacts"] == f"{url}/ETHUSDT"

    again = trainer_batch(manifest, "--output", url, env=s3.env)
    assert again.code == 0, again.both
    (line,) = progress(again.out, "skipped", "ETHUSDT")
    assert "completed with the same settings and data" in line
    assert "Submitted" not in again.out
    assert fs.cat_file(f"{prefix}/ETHUSDT/_SUCCESS.json") == marker_bytes
    assert rows_by_pair(json.loads(fs.cat_file(f"{prefix}/summary.json")))["ETHUSDT"]["status"] == "skipped"


def test_batch_on_a_cluster_writes_to_the_drivers_s3_endpoint(tmp_path, ray_head, s3):
    manifest = write_manifest(tmp_path, pairs=["BTCUSDT"])
    prefix = f"{s3.bucket}/cluster"
    r = trainer_batch(
        manifest, "--output", f"s3://{prefix}", "--address", ray_head.address, env={**ray_head.env, **s3.env}
    )
    assert r.code == 0, r.both
    assert s3.fs.exists(f"{prefix}/BTCUSDT/_SUCCESS.json")


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_a_worker_killed_mid_training_is_retried_and_resumes(tmp_path, sig):
    """The worker process gets SIGKILL (dies) or SIGTERM (a preempted node: it stops at the next
    step and exits 143) at the end of its second epoch: Ray retries the pair, which resumes from
    its backup and completes."""
    (tmp_path / "killer_plugin.py").write_text(
        "import os, signal\nfrom pathlib import Path\nimport keras\nfrom trainer_core import hookimpl\n\n"
        f"FLAG = Path({str(tmp_path / 'killed-once')!r})\n\n"
        "class KillOnce(keras.callbacks.Callback):\n"
        "    def on_epoch_end(self, epoch, logs=None):\n"
        "        if epoch == 1 and not FLAG.exists():\n"
        "            FLAG.write_text('x')\n"
        f"            os.kill(os.getpid(), signal.{sig})\n\n"
        "@hookimpl\ndef trainer_keras_callbacks(spec, pair_dir):\n    return [KillOnce()]\n"
    )
    manifest = write_manifest(tmp_path, pairs=["ETHUSDT"])
    doc = yaml.safe_load(manifest.read_text())
    doc["plugins"] = ["killer_plugin"]
    doc["defaults"]["train"]["epochs"] = 3
    doc["defaults"]["train"]["early_stopping_patience"] = 10
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {
        **base_env(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
    }
    r = trainer_batch(manifest, env=env)
    assert (tmp_path / "killed-once").exists(), r.both  # the first attempt really died
    assert r.code == 0, r.both
    assert progress(r.out, "trained", "ETHUSDT"), r.both
    meta = json.loads((tmp_path / "out" / "ETHUSDT" / f"metadata_{tag('ETHUSDT')}.json").read_text())
    assert meta["training"]["resumed"] is True and meta["training"]["completed_epochs"] == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [row["status"] for row in summary["pairs"]] == ["trained"]
    if sig == "SIGTERM":
        assert "stopped by SIGTERM" in r.both, r.both


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_and_sigterm_cancel_running_pairs_and_say_so(tmp_path, sig, code):
    log = tmp_path / "hooks.jsonl"
    write_recorder(tmp_path, log)
    manifest = write_manifest(
        tmp_path,
        pairs=["ETHUSDT", "BTCUSDT"],
        plugins=[RECORDER],
        batch={"reporters": ["summary", "recorder"]},
    )
    doc = yaml.safe_load(manifest.read_text())
    doc["defaults"]["train"]["epochs"] = 200  # long enough to be interrupted
    doc["defaults"]["train"]["early_stopping_patience"] = 500
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer_core.cli", "batch", str(manifest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=with_path(base_env(), tmp_path),
    )
    seen = []
    try:
        for line in proc.stdout:
            seen.append(ANSI.sub("", line))
            if re.match(r"\[\d\d:\d\d\] running ", seen[-1]):
                time.sleep(2)
                proc.send_signal(getattr(signal, sig))
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    out = "".join(seen) + ANSI.sub("", rest)
    said = "Ctrl-C" if sig == "SIGINT" else sig
    assert proc.returncode == code, out
    assert f"Interrupted ({said}): cancelling the running pairs" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["exit_code"] == code
    assert {row["status"] for row in summary["pairs"]} == {"cancelled"}
    assert {row["reason"] for row in summary["pairs"]} == {f"interrupted ({said})"}
    assert not list((tmp_path / "out").glob("*/_SUCCESS.json"))
    driver = [e for e in records(log) if e["hook"] in ("before_batch", "report_batch", "after_batch")]
    assert [e["hook"] for e in driver] == ["before_batch", "report_batch", "after_batch"], driver
    assert driver[1]["exit_code"] == code
    assert {r["status"] for r in driver[2]["results"]} == {"cancelled"}


# -- scheduling on a 2-CPU local Ray, and what reaches the terminal ---------------------------

#: lines TensorFlow and Ray print on their own at start-up, which a user cannot act on
NOISE = (
    "oneDNN custom operations",
    "cuInit",
    "absl::InitializeLog",
    "I0000 ",
    "W0000 ",
    "Token authentication is enabled",
    "Could not find cuda drivers",
)


def max_overlap(events: list[dict]) -> int:
    """The most pairs between their before_pair and after_pair at one moment."""
    marks = sorted(
        [(e["t"], 1) for e in events if e["hook"] == "before_pair"]
        + [(e["t"], -1) for e in events if e["hook"] == "after_pair"],
        key=lambda m: (m[0], m[1]),
    )
    now = most = 0
    for _, step in marks:
        now += step
        most = max(most, now)
    return most


def test_four_one_cpu_pairs_on_two_cpus_train_two_at_a_time_quietly(tmp_path):
    """No blocking Ray call in a task: Ray never lends a training pair's CPU to a third pair. A
    pair that waits longer than batch.schedule_timeout gets a `waiting` line. Neither TensorFlow's
    nor Ray's start-up lines reach the terminal; the trainer's own lines do."""
    log = tmp_path / "hooks.jsonl"
    write_recorder(tmp_path, log, sleep=1.0)
    pairs = ["BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT"]
    manifest = write_manifest(tmp_path, pairs=pairs, plugins=[RECORDER], batch={"schedule_timeout": 2})
    env = with_path(base_env(TRAINER_RAY_NUM_CPUS="2"), tmp_path)
    r = trainer_batch(manifest, env=env, timeout=400)
    assert r.code == 0, r.both
    assert "Submitted 4 pair(s) to Ray (2 CPUs, 0 GPUs)" in r.out, r.both
    events = records(log)
    assert sorted(e["pair"] for e in events if e["hook"] == "after_pair") == sorted(pairs), events
    assert max_overlap(events) <= 2, events
    waiting = [line for pair in pairs for line in progress(r.out, "waiting", pair)]
    assert waiting, r.both  # two pairs wait for the first two
    assert re.search(
        r"not started after \d\d:\d\d: waits for 1 CPU\(s\) and 0 GPU\(s\); free now 0 of 2 CPUs", waiting[0]
    ), waiting
    for pair in pairs:
        assert f"[{pair}] Loaded " in r.out and progress(r.out, "trained", pair)
    for noise in NOISE:
        assert noise not in r.out + r.err, f"{noise!r} reached the terminal:\n{r.both}"


def test_trainer_run_is_quiet_unless_verbose(tmp_path):
    from trainer_core.testing import write_training_ready

    inputs = tmp_path / "inputs"
    write_training_ready(inputs, "ETHUSDT", rows=600, seed=1)
    args = [
        sys.executable,
        "-m",
        "trainer_core.cli",
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        str(inputs),
        "--output",
        str(tmp_path / "out"),
        "--epochs",
        "1",
    ]
    for text in TINY_SETTINGS:
        args += ["--set", text]
    proc = subprocess.run(
        args + ["--set", "train.verbose=2"], capture_output=True, text=True, env=base_env(), timeout=300
    )
    both = proc.stdout + proc.stderr
    assert proc.returncode == 0, both
    assert (
        "Done: " in proc.stdout and " - val_loss: " in proc.stdout
    )  # the trainer's own and the epoch's lines stay
    for noise in NOISE:
        assert noise not in both, f"{noise!r} reached the terminal:\n{both}"
