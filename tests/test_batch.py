"""`trainer batch` end to end, as a user runs it: a real local Ray, a Ray head started with
`ray start`, and an S3 output on a local S3-compatible server (moto in server mode).

Ray starts in the `trainer` subprocess (several seconds each time), so one module-scoped fixture
runs the three local batches that most tests below read: the first run (two good pairs, one
broken), the same command again (resume), and `--force --only ETHUSDT`. The `--dry-run` and
`--only` checks run in this process: they plan without starting Ray.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
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


def write_manifest(folder: Path, pairs=(*GOOD, BAD), output: str = "out") -> Path:
    """A manifest in `folder`; BADUSDT reads a training-ready file that does not exist."""
    entries: list = []
    for pair in pairs:
        if pair == BAD:
            missing = folder / "inputs" / training_ready_name(BAD, fw=FW, sl_pct=SL, tp_pct=TP)
            entries.append({"pair": BAD, "data": {"loader": "training-ready", "path": str(missing)}})
        else:
            entries.append(pair)
    doc = {"version": 1, "output": str(folder / output), "batch": {"max_retries": 1},
           "defaults": tiny_defaults(), "pairs": entries}
    path = folder / "m.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def tool(name: str) -> str:
    """A console script of this interpreter's environment (the one pytest runs in)."""
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "FSSPEC_", "AWS_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def trainer_batch(*args, env: dict | None = None, timeout: int = 300) -> SimpleNamespace:
    """`trainer batch ARGS` in a subprocess: Ray starts and stops there, not in pytest."""
    proc = subprocess.run(
        [sys.executable, "-m", "trainer_core.cli", "batch", *map(str, args)],
        capture_output=True, text=True, env=env or base_env(), timeout=timeout,
    )
    out = ANSI.sub("", proc.stdout)
    return SimpleNamespace(code=proc.returncode, out=out, err=ANSI.sub("", proc.stderr),
                           both=f"--- stdout\n{out}\n--- stderr\n{ANSI.sub('', proc.stderr)[-4000:]}")


def progress(out: str, state: str, pair: str) -> list[str]:
    """The driver's progress lines `[mm:ss] STATE PAIR ...` (not the workers' own output).

    Ray's log thread and the driver share stdout, so a worker's line sometimes lacks its newline
    when a progress line follows it: the pattern is searched, not anchored at the line start."""
    pattern = re.compile(rf"\[\d\d:\d\d(?::\d\d)?\] {state}\s+{pair}\b")
    return [line[pattern.search(line).start():] for line in out.splitlines() if pattern.search(line)]


def table(out: str) -> dict[str, list[str]]:
    """The final table's rows by pair: [status, epochs, ...]."""
    lines = out.splitlines()
    headers = [i for i, line in enumerate(lines) if line.split()[:2] == ["PAIR", "STATUS"]]
    if not headers:
        return {}
    rows = {}
    start = headers[-1]
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


def snapshot(out: Path) -> dict:
    """What a re-run must (not) touch: each good pair's marker bytes and model mtime, the summary."""
    snap = {"summary": json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None}
    for pair in GOOD:
        marker, model = out / pair / "_SUCCESS.json", out / pair / model_name(pair)
        snap[pair] = (marker.read_bytes() if marker.exists() else None,
                      model.stat().st_mtime_ns if model.exists() else None)
    return snap


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows_by_pair(summary: dict) -> dict[str, dict]:
    return {row["pair"]: row for row in summary["pairs"]}


# -- one local batch, run three times ---------------------------------------------------------


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    manifest = write_manifest(root)
    out = root / "out"
    first = trainer_batch(manifest)
    after_first = snapshot(out)
    html = (out / "summary.html").read_text() if (out / "summary.html").exists() else None
    again = trainer_batch(manifest)
    after_again = snapshot(out)
    forced = trainer_batch(manifest, "--force", "--only", "ETHUSDT")
    after_forced = snapshot(out)
    return SimpleNamespace(root=root, manifest=manifest, out=out, first=first, after_first=after_first,
                           html=html, again=again, after_again=after_again, forced=forced,
                           after_forced=after_forced)


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
    assert list(rows) == [*GOOD, BAD], r.both
    for pair in GOOD:
        assert rows[pair][:2] == ["trained", "1"]
        assert rows[pair][-1] == str(batch.out / pair)
    assert rows[BAD][0] == "failed" and "data path not found" in " ".join(rows[BAD])
    assert re.search(r"^2 trained, 1 failed in \d+s\. Summary: .*summary\.json, .*summary\.html$", r.out, re.M), r.out


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
    assert batch.after_forced["ETHUSDT"][1] != batch.after_first["ETHUSDT"][1], "ETHUSDT's model was not rewritten"
    assert [row["pair"] for row in batch.after_forced["summary"]["pairs"]] == ["ETHUSDT"]
    assert batch.after_forced["summary"]["counts"] == {"trained": 1}


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

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


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
def ray_head(tmp_path_factory):
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
            [tool("ray"), "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
             "--num-cpus", "3", "--disable-usage-stats", "--include-dashboard=false", "--temp-dir", temp_dir],
            stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
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
    assert rows_by_pair(json.loads((tmp_path / "out" / "summary.json").read_text()))["ETHUSDT"]["status"] == "trained"

    r = trainer_batch(manifest, "--only", "BTCUSDT", "--output", tmp_path / "again",
                      env={**ray_head.env, "RAY_ADDRESS": ray_head.address})
    assert r.code == 0, r.both
    assert "Submitted 1 pair(s) to Ray (3 CPUs, 0 GPUs)" in r.out, r.both
    assert progress(r.out, "trained", "BTCUSDT"), r.both
    assert (tmp_path / "again" / "BTCUSDT" / model_name("BTCUSDT")).is_file()


def test_an_unreachable_address_fails_fast_and_keeps_the_last_summary(tmp_path):
    manifest = write_manifest(tmp_path, pairs=["ETHUSDT"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text('{"last": "run"}\n')
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    try:
        r = trainer_batch(manifest, "--address", address, timeout=12)
    except subprocess.TimeoutExpired:
        pytest.fail(f"trainer batch --address {address} still hung after 12 s")
    assert r.code == 2, r.both
    assert address in r.err and "Error:" in r.err
    assert "PAIR" not in r.out
    assert (tmp_path / "out" / "summary.json").read_text() == '{"last": "run"}\n'


# -- an S3 output on a local S3-compatible server --------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """`moto_server` on loopback (a real HTTP S3 API, not an in-process patch) and a bucket."""
    s3fs = pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as fh:
        server = subprocess.Popen([tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"moto_server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        bucket = "pair-trainer-test"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=bucket)
        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint, skip_instance_cache=True,
                               use_listings_cache=False)
        # fsspec reads FSSPEC_{PROTOCOL}_{KWARG} into its config: endpoint_url for every s3:// it opens
        env = base_env(**S3_CREDENTIALS, FSSPEC_S3_ENDPOINT_URL=endpoint)
        yield SimpleNamespace(endpoint=endpoint, bucket=bucket, fs=fs, env=env)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_batch_to_s3_commits_the_pair_and_resumes(tmp_path, s3):
    manifest = write_manifest(tmp_path, pairs=["ETHUSDT"])
    prefix = f"{s3.bucket}/runs/2026-11"
    url = f"s3://{prefix}"

    r = trainer_batch(manifest, "--output", url, env=s3.env)
    assert r.code == 0, r.both
    assert progress(r.out, "trained", "ETHUSDT"), r.both
    assert f"Summary: {url}/summary.json, {url}/summary.html" in r.out
    fs = s3.fs
    for key in ("ETHUSDT/_SUCCESS.json", f"ETHUSDT/{model_name('ETHUSDT')}", f"ETHUSDT/metadata_{tag('ETHUSDT')}.json",
                f"ETHUSDT/scaler_{tag('ETHUSDT')}.json", "summary.json", "summary.html"):
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
    r = trainer_batch(manifest, "--output", f"s3://{prefix}", "--address", ray_head.address,
                      env={**ray_head.env, **s3.env})
    assert r.code == 0, r.both
    assert s3.fs.exists(f"{prefix}/BTCUSDT/_SUCCESS.json")


def test_a_worker_killed_mid_training_is_retried_and_resumes(tmp_path):
    """The worker process dies (SIGKILL) at the end of its second epoch: Ray retries the pair,
    which resumes from its backup after epoch 1 and completes."""
    (tmp_path / "killer_plugin.py").write_text(
        "import os, signal\nfrom pathlib import Path\nimport keras\nfrom trainer_core import hookimpl\n\n"
        f"FLAG = Path({str(tmp_path / 'killed-once')!r})\n\n"
        "class KillOnce(keras.callbacks.Callback):\n"
        "    def on_epoch_end(self, epoch, logs=None):\n"
        "        if epoch == 1 and not FLAG.exists():\n"
        "            FLAG.write_text('x')\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n\n"
        "@hookimpl\ndef trainer_keras_callbacks(spec, pair_dir):\n    return [KillOnce()]\n"
    )
    manifest = write_manifest(tmp_path, pairs=["ETHUSDT"])
    doc = yaml.safe_load(manifest.read_text())
    doc["plugins"] = ["killer_plugin"]
    doc["defaults"]["train"]["epochs"] = 3
    doc["defaults"]["train"]["early_stopping_patience"] = 10
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**base_env(), "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    r = trainer_batch(manifest, env=env)
    assert (tmp_path / "killed-once").exists(), r.both  # the first attempt really died
    assert r.code == 0, r.both
    assert progress(r.out, "trained", "ETHUSDT"), r.both
    meta = json.loads((tmp_path / "out" / "ETHUSDT" / f"metadata_{tag('ETHUSDT')}.json").read_text())
    assert meta["training"]["resumed"] is True and meta["training"]["completed_epochs"] == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [row["status"] for row in summary["pairs"]] == ["trained"]


def test_ctrl_c_cancels_running_pairs_and_says_so(tmp_path):
    manifest = write_manifest(tmp_path, pairs=["ETHUSDT", "BTCUSDT"])
    doc = yaml.safe_load(manifest.read_text())
    doc["defaults"]["train"]["epochs"] = 200  # long enough to be interrupted
    doc["defaults"]["train"]["early_stopping_patience"] = 500
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = subprocess.Popen([sys.executable, "-m", "trainer_core.cli", "batch", str(manifest)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=base_env())
    seen = []
    try:
        for line in proc.stdout:
            seen.append(ANSI.sub("", line))
            if re.match(r"\[\d\d:\d\d\] running ", seen[-1]):
                time.sleep(2)
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    out = "".join(seen) + ANSI.sub("", rest)
    assert proc.returncode == 130, out
    assert "Interrupted: cancelling the running pairs" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["exit_code"] == 130
    assert {row["status"] for row in summary["pairs"]} == {"cancelled"}
    assert not list((tmp_path / "out").glob("*/_SUCCESS.json"))
