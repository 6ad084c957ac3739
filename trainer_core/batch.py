"""`trainer batch`: every pair of a manifest as a Ray task, resumable, with a summary.

The driver plans (skip pairs whose `_SUCCESS.json` matches the config hash, the data's sha256 and
every artifact's checksum), submits one task per pair with the pair's `resources`, reports each
state change as it happens, and writes `summary.json` / `summary.html` to the output root.
Ray is imported only here, only when a batch runs.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from .artifacts import SUCCESS, dumps
from .errors import ConfigError, TrainerError
from .manifest import Manifest, PairSpec
from .plugins import LOAD_PLUGINS_ENV, TRACE_PLUGINS_ENV, Plugins
from .storage import is_url, open_storage

SUMMARY_JSON = "summary.json"
SUMMARY_HTML = "summary.html"
#: environment a worker needs to load the same plugins and reach the same storage as the driver
#: (object-store endpoints and regions; credentials are deliberately not forwarded)
FORWARDED_ENV = (LOAD_PLUGINS_ENV, TRACE_PLUGINS_ENV, "PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")
FORWARDED_PREFIXES = ("FSSPEC_",)


@dataclass
class Plan:
    spec: PairSpec
    action: str  # "train" | "skip"
    reason: str


@dataclass
class PairOutcome:
    pair: str
    status: str  # trained | skipped | failed | cancelled
    reason: str = ""
    error: str | None = None
    hint: str | None = None
    exit_code: int | None = None
    seconds: float | None = None
    metrics: dict = field(default_factory=dict)
    artifacts: str | None = None
    tag: str | None = None
    trading: dict | None = None

    def as_dict(self) -> dict:
        return {
            "pair": self.pair,
            "status": self.status,
            "reason": self.reason,
            "error": self.error,
            "hint": self.hint,
            "exit_code": self.exit_code,
            "seconds": None if self.seconds is None else round(self.seconds, 2),
            "metrics": self.metrics,
            "trading": self.trading,
            "artifacts": self.artifacts,
            "confusion_matrix_png": f"{self.pair}/confusion_matrix_{self.tag}.png" if self.tag else None,
        }


# -- planning --------------------------------------------------------------------------------------


def absolute_paths(spec: PairSpec) -> PairSpec:
    """Relative local paths resolved in the driver, so workers in other folders find them."""
    output = spec.output if is_url(spec.output) else os.path.abspath(os.path.expanduser(spec.output))
    data = spec.data.path
    if data is not None and not is_url(data):
        data = os.path.abspath(os.path.expanduser(data))
    return spec.with_paths(output, data)


def plan_pair(spec: PairSpec, plugins: Plugins, force: bool) -> Plan:
    if force:
        return Plan(spec, "train", "--force")
    storage = open_storage(spec.output)
    raw = storage.read_bytes(f"{spec.pair}/{SUCCESS}")
    if raw is None:
        return Plan(spec, "train", "no completed run")
    try:
        marker = json.loads(raw)
    except ValueError:
        return Plan(spec, "train", f"{SUCCESS} is unreadable")
    if marker.get("config_hash") != spec.config_hash:
        return Plan(spec, "train", "the settings changed since the last run")
    try:
        loader = plugins.create("loader", spec.data.loader)
        fingerprint = loader.fingerprint(spec) if hasattr(loader, "fingerprint") else None
    except TrainerError as exc:
        return Plan(spec, "train", f"the data cannot be checked ({exc.message})")
    if fingerprint is not None and marker.get("data_sha256") != fingerprint:
        return Plan(spec, "train", "the data changed since the last run")
    from .verify import verify_pair

    problems = verify_pair(storage, spec.pair)
    if problems:
        return Plan(spec, "train", f"artifact {problems[0]}")
    why = "completed with the same settings and data" if fingerprint else "completed with the same settings"
    return Plan(spec, "skip", why)


# -- the task that runs in a Ray worker ------------------------------------------------------------


def configure_tensorflow_threads(cpus: float) -> int:
    """TensorFlow's thread pools sized to the task's CPUs; call before TensorFlow does any work.

    Ray's OMP_NUM_THREADS does not reach TensorFlow's own pools; without this, two pairs on two
    cores contend for every core and gain nothing over running one after the other.
    """
    from .windows import THREADS_ENV

    threads = max(1, int(cpus))
    os.environ[THREADS_ENV] = str(threads)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised in this process: the env vars above applied
        pass
    return threads


def train_in_worker(spec_dict: dict, events=None) -> dict:
    """Train one pair where Ray placed it; return an outcome dict (errors included, not raised)."""
    from .pipeline import run_pair

    spec = PairSpec.from_dict(spec_dict)
    started = time.time()
    if events is not None:
        try:
            events.put(("running", spec.pair, started))
        except Exception:  # progress is best effort; training is not
            pass
    try:
        configure_tensorflow_threads(spec.resources.cpus)
        plugins = Plugins.load(spec.plugins)
        result = run_pair(spec, plugins, echo=lambda m: print(f"[{spec.pair}] {m}", flush=True))
        val = result.validation.summary()
        return {
            "pair": spec.pair, "status": "trained", "seconds": time.time() - started,
            "artifacts": result.pair_dir, "tag": spec.tag,
            "metrics": {
                "val_accuracy": val["accuracy"], "val_loss": val["loss"], "val_samples": val["samples"],
                "epochs": len(result.history.get("loss", [])), "best_epoch": result.best_epoch(),
            },
        }
    except TrainerError as exc:
        return {"pair": spec.pair, "status": "failed", "seconds": time.time() - started, "error": exc.message,
                "hint": exc.hint, "exit_code": exc.exit_code}
    except Exception as exc:  # an unexpected error still fails only this pair
        return {"pair": spec.pair, "status": "failed", "seconds": time.time() - started,
                "error": f"{type(exc).__name__}: {exc}", "hint": "See the worker's traceback above.",
                "exit_code": 1, "traceback": traceback.format_exc()}


# -- the driver ------------------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _metrics_from_artifacts(spec: PairSpec) -> dict:
    raw = open_storage(spec.output).read_bytes(f"{spec.pair}/metadata_{spec.tag}.json")
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
        val = meta["metrics"]["validation"]
        return {"val_accuracy": val["accuracy"], "val_loss": val["loss"], "val_samples": val["samples"],
                "epochs": meta["training"]["completed_epochs"], "best_epoch": meta["training"]["best_epoch"]}
    except (ValueError, KeyError, TypeError):
        return {}


def trading_summary(spec: PairSpec) -> dict | None:
    """The headline trading figures of a finished pair, from its trading report (if it has one)."""
    raw = open_storage(spec.output).read_bytes(f"{spec.pair}/trading_{spec.tag}.json")
    if raw is None:
        return None
    try:
        report = json.loads(raw)
        out = {"mcc": report["model"]["mcc"], "macro_f1": report["model"]["macro_f1"],
               "baseline_hold_macro_f1": report["baselines"]["always_hold"]["macro_f1"],
               "report": f"{spec.pair}/trading_{spec.tag}.html"}
        for side in ("LONG", "SHORT"):
            be = report["break_even"][side]
            out[side] = {"precision": be["precision"], "break_even": be["break_even_win_rate"], "edge": be["edge"]}
        return out
    except (ValueError, KeyError, TypeError):
        return None


class BatchRun:
    """One `trainer batch`: plan, run on Ray, report, summarise."""

    def __init__(self, manifest: Manifest, specs: list[PairSpec], plugins: Plugins,
                 echo: Callable[[str], None] = print):
        self.manifest = manifest
        self.specs = [absolute_paths(s) for s in specs]
        self.plugins = plugins
        self.echo = echo
        self.outcomes: dict[str, PairOutcome] = {}
        self.started = time.time()
        self.interrupted = False

    def plan(self, force: bool) -> list[Plan]:
        return [plan_pair(spec, self.plugins, force) for spec in self.specs]

    # -- progress ----------------------------------------------------------------------------
    def _line(self, state: str, pair: str, detail: str, total: int) -> None:
        finished = [o for o in self.outcomes.values() if o.status in ("trained", "failed")]
        failed = sum(o.status == "failed" for o in finished)
        skipped = sum(o.status == "skipped" for o in self.outcomes.values())
        elapsed = time.time() - self.started
        to_run = total - skipped
        eta = ""
        if finished and len(finished) < to_run:
            eta = f", ETA {_clock(elapsed / len(finished) * (to_run - len(finished)))}"
        self.echo(f"[{_clock(elapsed)}] {state:<9} {pair:<14} {detail}  ({len(finished)}/{to_run} done, "
                  f"{failed} failed{eta})")

    # -- running -----------------------------------------------------------------------------
    def run(self, plans: list[Plan], address: str | None) -> None:
        total = len(plans)
        for p in plans:
            if p.action == "skip":
                self.outcomes[p.spec.pair] = PairOutcome(
                    p.spec.pair, "skipped", p.reason, metrics=_metrics_from_artifacts(p.spec),
                    artifacts=open_storage(p.spec.output).url(p.spec.pair), tag=p.spec.tag,
                    trading=trading_summary(p.spec),
                )
                self.echo(f"[{_clock(0)}] skipped   {p.spec.pair:<14} {p.reason}")
        todo = [p for p in plans if p.action == "train"]
        if not todo:
            return
        import ray
        from ray.util.queue import Empty, Queue

        started_here = self._init_ray(ray, address)
        try:
            events = Queue(actor_options={"num_cpus": 0})
            task = ray.remote(max_calls=1)(train_in_worker)
            retries = int(self.manifest.batch.get("max_retries", 2))
            pending = {}
            for p in todo:
                ref = task.options(
                    num_cpus=p.spec.resources.cpus, num_gpus=p.spec.resources.gpus, max_retries=retries,
                    retry_exceptions=False, name=f"train {p.spec.pair}",
                ).remote(p.spec.to_dict(), events)
                pending[ref] = p.spec
            self.echo(f"Submitted {len(pending)} pair(s) to Ray "
                      f"({ray.cluster_resources().get('CPU', 0):g} CPUs, {ray.cluster_resources().get('GPU', 0):g} GPUs)")
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                    while True:
                        try:
                            state, pair, _ = events.get_nowait()
                        except Empty:
                            break
                        self._line(state, pair, "started", total)
                    for ref in ready:
                        spec = pending.pop(ref)
                        self._collect(ray, ref, spec, total, retries)
            except KeyboardInterrupt:
                self.interrupted = True
                self.echo("Interrupted: cancelling the running pairs; finished pairs keep their artifacts.")
                for ref, spec in pending.items():
                    ray.cancel(ref, force=True)
                    self.outcomes[spec.pair] = PairOutcome(spec.pair, "cancelled", "interrupted (Ctrl-C)",
                                                           error="cancelled before it finished", tag=None)
        finally:
            if started_here:
                ray.shutdown()

    def _init_ray(self, ray, address: str | None) -> bool:
        address = address or os.environ.get("RAY_ADDRESS") or None
        if ray.is_initialized():
            return False
        env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith(FORWARDED_PREFIXES)}
        try:
            if address:
                ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=True)
            else:
                # a local Ray started on demand; its workers inherit this process's environment
                ray.init(include_dashboard=False, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"Cannot connect to the Ray cluster at {address or 'a new local Ray'}: {exc}",
                "Check --address / RAY_ADDRESS (e.g. 127.0.0.1:6379 or ray://host:10001), or leave it out "
                "to start a local Ray; a cluster with token authentication also needs RAY_AUTH_MODE=token "
                "and its RAY_AUTH_TOKEN.",
            ) from exc
        return True

    def _collect(self, ray, ref, spec: PairSpec, total: int, retries: int) -> None:
        try:
            out = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            outcome = PairOutcome(spec.pair, "cancelled", "cancelled", error="cancelled before it finished")
        except ray.exceptions.RayError as exc:  # the worker died (killed, out of memory...) every try
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            outcome = PairOutcome(
                spec.pair, "failed", "system failure",
                error=f"the worker died ({type(exc).__name__}) after {retries + 1} attempt(s): {first}",
                hint="Look for out-of-memory kills; lower train.batch_size or raise batch.max_retries.",
                exit_code=1,
            )
        else:
            outcome = PairOutcome(
                spec.pair, out["status"], "trained" if out["status"] == "trained" else "error",
                error=out.get("error"), hint=out.get("hint"), exit_code=out.get("exit_code"),
                seconds=out.get("seconds"), metrics=out.get("metrics", {}), artifacts=out.get("artifacts"),
                tag=out.get("tag"),
            )
        if outcome.status == "trained":
            outcome.trading = trading_summary(spec)
        self.outcomes[spec.pair] = outcome
        if outcome.status == "trained":
            m = outcome.metrics
            detail = f"val_accuracy {m['val_accuracy']:.4f}, {m['epochs']} epoch(s), {outcome.seconds:.1f}s"
        else:
            detail = outcome.error or outcome.status
        self._line(outcome.status, spec.pair, detail, total)

    # -- results -----------------------------------------------------------------------------
    def ordered(self) -> list[PairOutcome]:
        return [self.outcomes.get(s.pair) or PairOutcome(s.pair, "cancelled", "not started") for s in self.specs]

    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if any(o.status in ("failed", "cancelled") for o in self.ordered()) else 0

    def summary(self) -> dict:
        rows = [o.as_dict() for o in self.ordered()]
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return {
            "format": "pair-trainer batch summary v1",
            "manifest": self.manifest.path,
            "output": self.specs[0].output if self.specs else None,
            "started": dt.datetime.fromtimestamp(self.started, dt.timezone.utc).isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - self.started, 2),
            "interrupted": self.interrupted,
            "exit_code": self.exit_code(),
            "counts": counts,
            "pairs": rows,
        }

    def write_summary(self, output: str) -> dict:
        summary = self.summary()
        storage = open_storage(output)
        storage.write_bytes(SUMMARY_JSON, dumps(summary).encode())
        storage.write_bytes(SUMMARY_HTML, render_html(summary).encode())
        return summary

    def table(self) -> str:
        rows = [("PAIR", "STATUS", "EPOCHS", "VAL_ACC", "VAL_LOSS", "TIME", "ARTIFACTS / ERROR")]
        for o in self.ordered():
            m = o.metrics
            rows.append((
                o.pair, o.status, str(m.get("epochs", "")),
                f"{m['val_accuracy']:.4f}" if m.get("val_accuracy") is not None else "",
                f"{m['val_loss']:.4f}" if m.get("val_loss") is not None else "",
                f"{o.seconds:.0f}s" if o.seconds is not None else "",
                o.artifacts if o.status in ("trained", "skipped") else (o.error or o.reason),
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:6], widths)) + "  " + r[6] for r in rows)


STATUS_COLOURS = {"trained": "#1a7f37", "skipped": "#57606a", "failed": "#cf222e", "cancelled": "#9a6700"}


def render_html(summary: dict) -> str:
    """A self-contained page: one row per pair, links to each pair's confusion matrix."""
    esc = html.escape
    rows = []
    for r in summary["pairs"]:
        m = r.get("metrics") or {}
        acc = f"{m['val_accuracy']:.4f}" if m.get("val_accuracy") is not None else ""
        loss = f"{m['val_loss']:.4f}" if m.get("val_loss") is not None else ""
        cm = ""
        if r.get("confusion_matrix_png") and r["status"] in ("trained", "skipped"):
            href = esc(r["confusion_matrix_png"])
            cm = f'<a href="{href}"><img src="{href}" alt="confusion matrix of {esc(r["pair"])}" width="220"></a>'
        detail = esc(r.get("error") or r.get("reason") or "")
        if r.get("hint"):
            detail += f"<br><small>{esc(r['hint'])}</small>"
        folder = f'<a href="{esc(r["pair"])}/">{esc(r["pair"])}/</a>' if r["status"] in ("trained", "skipped") else ""
        trading = r.get("trading") or {}
        trade_cells = "<td></td><td></td><td></td>"
        if trading:
            def side(name):
                t = trading[name]
                if t["precision"] is None:
                    return f"no {name} predictions (break-even {t['break_even']:.3f})"
                mark = "&#10003;" if t["edge"] > 0 else "&#10007;"
                return f"{t['precision']:.3f} vs {t['break_even']:.3f} {mark}"
            trade_cells = (f"<td>{trading['mcc']:.3f}</td><td>{side('LONG')}</td><td>{side('SHORT')}"
                           f'<br><small><a href="{esc(trading["report"])}">trading report</a></small></td>')
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.0f}s"
        rows.append(
            f"<tr><td><b>{esc(r['pair'])}</b></td>"
            f'<td style="color:{STATUS_COLOURS.get(r["status"], "#000")}"><b>{esc(r["status"])}</b></td>'
            f"<td>{m.get('epochs', '')}</td><td>{acc}</td><td>{loss}</td>"
            f"<td>{seconds}</td>{trade_cells}"
            f"<td>{folder}</td><td>{detail}</td><td>{cm}</td></tr>"
        )
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items())
    note = " <b>Interrupted</b>: pairs still running were cancelled." if summary["interrupted"] else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pair-trainer batch summary</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #d0d7de; padding: .4em .8em; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; }} small {{ color: #57606a; }}
</style></head><body>
<h1>Batch summary</h1>
<p>Manifest <code>{esc(str(summary['manifest']))}</code>, output <code>{esc(str(summary['output']))}</code>.
Started {esc(summary['started'])}, finished {esc(summary['finished'])} ({summary['seconds']:.0f} s): {esc(counts)}.{note}</p>
<table><tr><th>Pair</th><th>Status</th><th>Epochs</th><th>Val. accuracy</th><th>Val. loss</th><th>Time</th>
<th>MCC</th><th>LONG precision vs break-even</th><th>SHORT precision vs break-even</th><th>Artifacts</th><th>Reason / error</th><th>Confusion matrix</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail at once when nothing listens at a host:port address (ray.init retries for minutes)."""
    if not address or address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"Ray address {address!r} is not host:port.",
                          "For example --address 10.0.0.5:6379 (the port of `ray start --head --port`).")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"Cannot reach the Ray cluster at {address}: {exc.strerror or exc}.",
                          "Check --address / RAY_ADDRESS: the head's port (`ray start --head --port`, "
                          "default 6379) must be reachable from here.") from None


def select_pairs(manifest: Manifest, only: str | None) -> list[str]:
    names = manifest.pair_names
    if not only:
        return names
    from .manifest import normalize_pair

    wanted = [normalize_pair(p, "--only") for p in only.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in names]
    if unknown:
        raise ConfigError(f"--only names pair(s) not in the manifest: {', '.join(unknown)}.",
                          f"The manifest's pairs: {', '.join(names)}.")
    return [p for p in names if p in wanted]


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
