"""`BatchRun`: one `trainer batch` from pre-flight to `trainer_after_batch`, in the driver process.

Pre-flight (components, resources, output; no Ray), plan, `trainer_before_batch`, run on Ray,
`report_batch` on the batch reporters, `trainer_after_batch` whatever happened after the first
hook. Ray is imported only here, only when a pair is to be trained.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..contract import BatchEvent, BatchReport, BatchRow
from ..errors import ConfigError, TrainerError
from ..features import resolve_spec
from ..manifest import Manifest, PairSpec
from ..plugins import Plugins
from ..quiet import verbose
from ..storage import open_storage
from . import cluster
from .planning import (
    Plan,
    absolute_paths,
    check_output,
    component_problems,
    data_problems,
    plan_pair,
)
from .worker import FORWARDED_ENV, FORWARDED_PREFIXES, progress_actor, train_in_worker


def plain_ray_output() -> None:
    """Ray's forwarded worker lines, readable per pair in a redirected log: every line as printed
    (no "[repeated Nx across cluster]" folding) and, when the output is not a terminal, no colour
    codes. Ray reads these variables when it is imported; a value already set is kept."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


DEFAULT_BATCH_REPORTERS = ("summary",)
DEFAULT_SCHEDULE_TIMEOUT = 600
#: the engine's own figures `trainer batch --sort` orders pairs by, each with whether a larger value
#: is better (those sort descending, the others ascending; `pair` alphabetically). Reporters add
#: theirs through a ``figures`` attribute (``{figure: larger_is_better}``).
SORT_FIGURES = {
    "mcc": True,
    "balanced_accuracy": True,
    "val_accuracy": True,
    "val_loss": False,
    "pair": False,
}
DEFAULT_SORT = "mcc"


@dataclass
class Preflight:
    """What the pre-flight found: batch-wide problems, each pair's component problem, pairs that fit
    on no node, the output's problem, and (dry run) each pair's data problems."""

    batch: list[TrainerError] = field(default_factory=list)
    components: dict[str, str] = field(default_factory=dict)
    fit: list[tuple[str | None, ConfigError]] = field(default_factory=list)
    output: TrainerError | None = None
    data: dict[str, list[str]] = field(default_factory=dict)


def _row(pair: str, status: str, reason: str = "", **values: Any) -> BatchRow:
    return BatchRow(pair, status, reason, **values)


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail at once when nothing listens at a host:port address (ray.init retries for minutes)."""
    if not address or address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f"Ray address {address!r} is not host:port.",
            "For example --address 10.0.0.5:6379 (the port of `ray start --head --port`).",
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"Cannot reach the Ray cluster at {address}: {exc.strerror or exc}.",
            "Check --address / RAY_ADDRESS: the head's port (`ray start --head --port`, "
            "default 6379) must be reachable from here.",
        ) from None


class BatchRun:
    """One `trainer batch`: pre-flight, plan, hooks, Ray, batch reporters.

    ``run(force)`` does it all and returns the `BatchReport` (None when it stopped before any pair
    ran); ``dry_run(force)`` prints the plan and the problems without running anything.
    """

    def __init__(
        self,
        manifest: Manifest,
        specs: list[PairSpec],
        plugins: Plugins,
        echo: Callable[[str], None] = print,
        address: str | None = None,
        sort: str = DEFAULT_SORT,
    ):
        self.manifest = manifest
        self.specs = [absolute_paths(s) for s in specs]
        self.plugins = plugins
        figures = self.sort_figures()
        if sort not in figures:
            raise ConfigError(f"Cannot sort pairs by {sort!r}.", f"Sort by one of: {', '.join(figures)}.")
        self.sort = sort
        self.larger_is_better = figures[sort]
        self.echo = echo
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.rows: dict[str, BatchRow] = {}
        self.started = time.time()
        self.interrupted = False
        #: the signal that stopped the batch: ``Ctrl-C`` or ``SIGTERM`` (None while none did)
        self.stopped_by: str | None = None

    @property
    def output(self) -> str:
        """The output root: the first pair's resolved output, else the manifest's."""
        return self.specs[0].output if self.specs else self.manifest.output

    @property
    def reporters(self) -> list[str]:
        """The batch reporters to run after the batch (``batch.reporters``, default ``["summary"]``)."""
        return list(self.manifest.batch.get("reporters", DEFAULT_BATCH_REPORTERS))

    @property
    def schedule_timeout(self) -> float:
        """Seconds a pair may wait to be scheduled before it is reported (``batch.schedule_timeout``)."""
        return float(self.manifest.batch.get("schedule_timeout", DEFAULT_SCHEDULE_TIMEOUT))

    def sort_figures(self) -> dict[str, bool]:
        """The figures pairs can be sorted by: the engine's, then those the pairs' reporters declare
        (a reporter's ``figures`` attribute, ``{figure: larger_is_better}``)."""
        figures = dict(SORT_FIGURES)
        names = dict.fromkeys(name for spec in self.specs for name in spec.reporters)
        for name in names:
            try:
                declared = getattr(self.plugins.create("reporter", name), "figures", None) or {}
            except TrainerError:  # an unknown reporter is reported by the pre-flight
                continue
            for figure, larger_is_better in dict(declared).items():
                figures.setdefault(str(figure), bool(larger_is_better))
        return figures

    # -- before anything runs ----------------------------------------------------------------
    def _where(self) -> str:
        return f"the Ray cluster at {self.address}" if self.address else "this machine"

    def _check_batch_reporters(self) -> None:
        for name in self.reporters:
            self.plugins.registry.get("reporter", name)

    def check(self, nodes: list | None, per_pair: bool = False) -> Preflight:
        """The pre-flight: every check that needs no Ray, run the same way for ``--dry-run`` and the
        run. ``nodes``: where pairs must fit (None: not checked); ``per_pair`` (the dry run) checks
        each pair's fit on its own and asks each loader whether it finds its data."""
        found = Preflight()
        for name in self.reporters:
            try:
                self.plugins.registry.get("reporter", name)
            except TrainerError as exc:
                found.batch.append(exc)
        for spec in self.specs:
            problems = component_problems(spec, self.plugins)
            if problems:
                found.components[spec.name] = problems[0]
        if nodes is not None:
            for specs in [[s] for s in self.specs] if per_pair else [self.specs]:
                try:
                    cluster.check_fit(specs, nodes, self._where())
                except ConfigError as exc:
                    found.fit.append((specs[0].name if per_pair else None, exc))
        try:
            check_output(self.output)
        except TrainerError as exc:
            found.output = exc
        if per_pair:
            found.data = {spec.name: data_problems(spec, self.plugins) for spec in self.specs}
        return found

    def preflight(self) -> None:
        """The pre-flight of a run: raise its first problem before anything is started or written."""
        found = self.check([cluster.this_machine()] if not self.address else None)
        if found.batch:
            raise found.batch[0]
        if found.components:
            first, problem = next(iter(found.components.items()))
            same = [name for name, other in found.components.items() if other == problem]
            who = first if len(same) == 1 else f"{first} (and {len(same) - 1} more pair(s))"
            raise ConfigError(
                f"{who}: {problem}",
                "Nothing was started. Fix the name in the manifest or install the plugin "
                "(`trainer plugins` lists what is registered).",
            )
        if found.fit:
            raise found.fit[0][1]
        if found.output is not None:
            raise found.output

    def _resolve(self) -> None:
        """Each pair's feature set and labeler resolved once (tag, horizon, embargo: the config
        hash counts them); a pair whose components do not resolve keeps its settings, and its
        problem is reported by the pre-flight."""
        resolved = []
        for spec in self.specs:
            try:
                resolved.append(spec if spec.is_resolved else resolve_spec(spec, self.plugins))
            except TrainerError:
                resolved.append(spec)
        self.specs = resolved

    def plan(self, force: bool) -> list[Plan]:
        """Train or skip, per pair (reads each pair's marker; writes nothing)."""
        self._resolve()
        return [plan_pair(spec, self.plugins, force) for spec in self.specs]

    def dry_run(self, force: bool) -> int:
        """Print the plan and every problem per pair; raise when the batch would not start."""
        plans = self.plan(force)
        fatal: list[TrainerError] = []
        nodes = self._cluster_nodes_for_dry_run(fatal) if self.address else [cluster.this_machine()]
        found = self.check(nodes, per_pair=True)
        fatal = found.batch + fatal + ([found.output] if found.output is not None else [])
        fits = {name: exc for name, exc in found.fit}
        self.echo(f"{len(plans)} pair(s) in {self.manifest.path}, output {self.output}:")
        for p in plans:
            name = p.spec.name
            self.echo(f"  {name:<14} {'would train' if p.action == 'train' else 'would skip'}: {p.reason}")
            problems = []
            if name in found.components:
                problems.append(found.components[name])
                fatal.append(ConfigError(f"{name}: {found.components[name]}"))
            if name in fits:
                problems.append(fits[name].message)
                fatal.append(fits[name])
            problems += found.data.get(name, [])
            for problem in problems:
                self.echo(f"  {'':<14}   problem: {problem}")
        if fatal:
            first = fatal[0]
            raise ConfigError(
                f"The batch would not start: {first.message}"
                if len(fatal) == 1
                else f"The batch would not start ({len(fatal)} problems, listed above); the first: "
                f"{first.message}",
                first.hint,
            )
        return 0

    def _cluster_nodes_for_dry_run(self, fatal: list) -> list | None:
        try:
            check_reachable(self.address)
            plain_ray_output()
            import ray

            started_here = self._init_ray(ray)
            try:
                if cluster.cluster_autoscales():
                    return None
                return cluster.ray_nodes(ray)
            finally:
                if started_here:
                    ray.shutdown()
        except TrainerError as exc:
            fatal.append(exc)
            return None

    # -- the lifecycle -----------------------------------------------------------------------
    def run(self, force: bool = False) -> BatchReport | None:
        """The whole batch. ``trainer_after_batch`` runs whenever ``trainer_before_batch`` did."""
        self.preflight()
        plans = self.plan(force)
        self.plugins.before_batch(self.manifest, self.specs)
        report = None
        try:
            try:
                self._run(plans)
            except KeyboardInterrupt:
                self._interrupt({})
            report = self.report()
            self._report_batch(report)
        finally:
            self.plugins.after_batch(self.manifest, self.ordered())
        return report

    def summarize(self) -> BatchReport:
        """`trainer batch --summary-only`: the batch reporters over the rows the pairs' markers give,
        training nothing (the last step after an Indexed Job, whose pods train one pair each). A pair
        without a completed run that matches its settings and data is reported as not trained."""
        self._check_batch_reporters()
        for p in self.plan(False):
            if p.action == "skip":
                self.rows[p.spec.name] = self._skipped_row(p)
            else:
                self.rows[p.spec.name] = _row(p.spec.name, "cancelled", f"not trained: {p.reason}")
        report = self.report()
        self._report_batch(report)
        return report

    def _report_batch(self, report: BatchReport) -> None:
        for name in self.reporters:
            reporter = self.plugins.create("reporter", name)
            if hasattr(reporter, "report_batch"):
                written = reporter.report_batch(report)
                if isinstance(written, (list, tuple)):
                    report.written.extend(str(where) for where in written)

    def _interrupt(self, pending: dict) -> None:
        import sys

        self.interrupted = True
        self.stopped_by = self.stopped_by or "Ctrl-C"
        self.echo(
            f"Interrupted ({self.stopped_by}): cancelling the running pairs; finished pairs keep their "
            "artifacts. Run the same command again to train what is left."
        )
        if pending:
            ray = sys.modules.get("ray")
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # cancelling is best effort; the row says what happened
                    pass
        for spec in self.specs:
            if spec.name not in self.rows:
                self.rows[spec.name] = _row(
                    spec.name,
                    "cancelled",
                    f"interrupted ({self.stopped_by})",
                    error="cancelled before it finished",
                )

    # -- progress: events for trainer_batch_progress (the console plugin prints them) ------------
    def _emit(
        self,
        kind: str,
        pair: str | None,
        detail: str = "",
        row: BatchRow | None = None,
        report: BatchReport | None = None,
        waited: float | None = None,
    ) -> None:
        finished = [r for r in self.rows.values() if r["status"] in ("trained", "failed")]
        skipped = sum(r["status"] == "skipped" for r in self.rows.values())
        event = BatchEvent(
            kind,
            pair,
            detail,
            done=len(finished),
            to_run=len(self.specs) - skipped,
            failed=sum(r["status"] == "failed" for r in finished),
            elapsed=time.time() - self.started,
            echo=self.echo,
            row=row,
            report=report,
            waited=waited,
        )
        self.plugins.batch_progress(event)

    # -- running -----------------------------------------------------------------------------
    def _skipped_row(self, p: Plan) -> BatchRow:
        marker = p.marker or {}
        return _row(
            p.spec.name,
            "skipped",
            p.reason,
            metrics=dict(marker.get("metrics") or {}),
            figures=dict(marker.get("figures") or {}),
            artifacts=open_storage(p.spec.output).url(p.spec.name),
            tag=marker.get("tag") or p.spec.tag,
            trained_at=marker.get("finished"),
        )

    def _run(self, plans: list[Plan]) -> None:
        total = len(plans)
        for p in plans:
            if p.action == "skip":
                self.rows[p.spec.name] = self._skipped_row(p)
                self._emit("skipped", p.spec.name, p.reason)
        todo = [p for p in plans if p.action == "train"]
        if not todo:
            return
        check_reachable(self.address)
        plain_ray_output()
        import ray

        started_here = self._init_ray(ray)
        previous = self._stop_on_sigterm()
        pending: dict = {}
        try:
            if self.address and not cluster.cluster_autoscales():
                cluster.check_fit([p.spec for p in todo], cluster.ray_nodes(ray), self._where())
            progress = progress_actor(ray)
            task = ray.remote(max_calls=1)(train_in_worker)
            retries = int(self.manifest.batch.get("max_retries", 2))
            submitted = time.time()
            for p in todo:
                ref = task.options(
                    num_cpus=p.spec.resources.cpus,
                    num_gpus=p.spec.resources.gpus,
                    max_retries=retries,
                    retry_exceptions=False,
                    name=f"train {p.spec.name}",
                ).remote(p.spec.to_dict(), progress, p.reason == "--force")
                pending[ref] = p.spec
            resources = ray.cluster_resources()
            self.echo(
                f"Submitted {len(pending)} pair(s) to Ray "
                f"({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)"
            )
            running: set[str] = set()
            waited: dict[str, float] = {}
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                    for state, pair, _ in ray.get(progress.drain.remote()):
                        running.add(pair)
                        self._emit(state, pair, "started")
                    for ref in ready:
                        spec = pending.pop(ref)
                        running.add(spec.name)
                        self._collect(ray, ref, spec, total, retries)
                    self._report_waiting(ray, pending, running, waited, submitted, total)
            except KeyboardInterrupt:
                self._interrupt(pending)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if started_here:
                ray.shutdown()

    def _stop_on_sigterm(self):
        """SIGTERM (what Kubernetes sends a pod it stops) ends the batch as Ctrl-C does: the running
        pairs are cancelled, the summary is written and the exit code is 143. Installed after
        `ray.init`, which sets a SIGTERM handler of its own that exits at once. Returns the handler it
        replaced (None outside the main thread, where no handler can be set)."""

        def stop(signum, frame):
            self.stopped_by = "SIGTERM"
            raise KeyboardInterrupt

        try:
            return signal.signal(signal.SIGTERM, stop)
        except ValueError:  # not the main thread
            return None

    def _report_waiting(
        self, ray, pending: dict, running: set, waited: dict, submitted: float, total: int
    ) -> None:
        """A pair Ray has not started within batch.schedule_timeout gets a line, once per timeout."""
        now = time.time()
        timeout = self.schedule_timeout
        for spec in pending.values():
            if spec.name in running:
                continue
            last = waited.get(spec.name, submitted)
            if now - last < timeout:
                continue
            waited[spec.name] = now
            free = ray.available_resources()
            total_res = ray.cluster_resources()
            self._emit(
                "waiting",
                spec.name,
                f"waits for {spec.resources.cpus:g} CPU(s) "
                f"and {spec.resources.gpus:g} GPU(s); free now {free.get('CPU', 0):g} of "
                f"{total_res.get('CPU', 0):g} CPUs, {free.get('GPU', 0):g} of {total_res.get('GPU', 0):g} GPUs",
                waited=now - submitted,
            )

    def _init_ray(self, ray) -> bool:
        if ray.is_initialized():
            return False
        env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith(FORWARDED_PREFIXES)}
        level = logging.INFO if verbose() else logging.ERROR  # Ray's start-up and token lines
        try:
            if self.address:
                ray.init(
                    address=self.address,
                    runtime_env={"env_vars": env} if env else None,
                    log_to_driver=True,
                    logging_level=level,
                )
            else:
                # a local Ray started on demand; its workers inherit this process's environment
                ray.init(
                    include_dashboard=False,
                    log_to_driver=True,
                    logging_level=level,
                    num_cpus=cluster.local_num_cpus(),
                )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"Cannot connect to the Ray cluster at {self.address or 'a new local Ray'}: {exc}",
                "Check --address / RAY_ADDRESS (e.g. 127.0.0.1:6379 or ray://host:10001), or leave it out "
                "to start a local Ray; a cluster with token authentication also needs RAY_AUTH_MODE=token "
                "and its RAY_AUTH_TOKEN.",
            ) from exc
        return True

    def _collect(self, ray, ref, spec: PairSpec, total: int, retries: int) -> None:
        try:
            out = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            row = _row(spec.name, "cancelled", "cancelled", error="cancelled before it finished")
        except ray.exceptions.RayError as exc:  # the worker died (killed, out of memory...) every try
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            row = _row(
                spec.name,
                "failed",
                "system failure",
                error=f"the worker died ({type(exc).__name__}) after {retries + 1} attempt(s): {first}",
                hint="Look for out-of-memory kills; lower train.batch_size or raise batch.max_retries.",
                exit_code=1,
            )
        else:
            row = out if isinstance(out, BatchRow) else BatchRow(**dict(out))
        self.rows[spec.name] = row
        self._emit(row.status, spec.name, row=row)

    # -- results -----------------------------------------------------------------------------
    def ordered(self) -> list[BatchRow]:
        """One row per selected pair, in the manifest's order (not run: cancelled, not started)."""
        return [self.rows.get(s.name) or _row(s.name, "cancelled", "not started") for s in self.specs]

    def exit_code(self) -> int:
        """130 after Ctrl-C, 143 after SIGTERM, 1 when a pair failed or was cancelled, else 0."""
        if self.interrupted:
            return 143 if self.stopped_by == "SIGTERM" else 130
        return 1 if any(r["status"] in ("failed", "cancelled") for r in self.ordered()) else 0

    def report(self) -> BatchReport:
        """The batch as the batch reporters see it."""
        rows = self.ordered()
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return BatchReport(
            manifest=self.manifest,
            output=self.output,
            storage=open_storage(self.output),
            started=_iso(self.started),
            finished=_iso(time.time()),
            seconds=time.time() - self.started,
            interrupted=self.interrupted,
            exit_code=self.exit_code(),
            counts=counts,
            rows=rows,
            sort=self.sort,
            larger_is_better=self.larger_is_better,
        )

    def show(self, report: BatchReport) -> None:
        """The batch is over: ``trainer_batch_progress`` with a ``finished`` event (the console
        plugin prints the final table)."""
        self._emit("finished", None, report=report)
