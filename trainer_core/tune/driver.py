"""`TuneRun`: one `trainer tune` in the driver process: one Optuna study per pair in one shared
storage, trials as Ray tasks with the pair's resources, every free slot kept busy across pairs.

The driver asks each study for a trial only when a slot is free (so the sampler sees every result
finished so far), chooses the pair with the fewest trials under way, and submits outer fits (tuned and
default on the outer test slice) into the same slots. Workers report epochs and their result to the
study themselves, so a result reached survives the driver; a rerun marks trials left running by a
killed driver as failed and retries their parameters, and never repeats a finished trial.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, TrainerError
from ..manifest import PairSpec, manifest_from_dict
from ..manifest.reading import safe_load_limited
from ..plugins import Plugins
from .settings import TUNE_HINT, Dimension, TuneManifest, TuneSettings, split_manifest
from .trial import rss_mb

JOURNAL = "studies.journal"
SIGNATURE_KEYS = ("space", "pruner", "folds", "test", "embargo", "objective", "seed")


class TuneInterrupted(Exception):
    """The driver was asked to stop (Ctrl-C or SIGTERM); ``exit_code`` 130 or 143."""

    def __init__(self, exit_code: int):
        super().__init__(exit_code)
        self.exit_code = exit_code


def read_tune_manifest(path: str | Path) -> tuple[TuneManifest, Any]:
    """Read a manifest holding a `tune:` section: the search settings and the ordinary manifest."""
    from ..manifest import load_manifest

    path = Path(path)
    load_error = None
    if not path.is_file():
        load_manifest(path)  # the manifest module's own message for a missing file or a folder
    try:
        raw = safe_load_limited(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as exc:
        load_error = exc
    if load_error is not None or raw is None:
        load_manifest(path)  # its message names the YAML problem
        raise ConfigError(f"Manifest {path} could not be read.", TUNE_HINT)
    tune = split_manifest(raw, str(path))
    manifest = manifest_from_dict(tune.manifest_raw, str(path))
    return tune, manifest


# -- parameters and specs -----------------------------------------------------------------------


def encode(dim: Dimension, value: Any) -> Any:
    """A value as Optuna stores it: categorical choices as JSON text (lists are not Optuna values)."""
    return json.dumps(value) if dim.kind == "choice" else value


def decode(dim: Dimension, value: Any) -> Any:
    """The inverse of `encode`."""
    return json.loads(value) if dim.kind == "choice" else value


def distributions(settings: TuneSettings) -> dict:
    """Optuna distributions of the search space, by dotted name."""
    import optuna.distributions as od

    out = {}
    for d in settings.space:
        if d.kind == "choice":
            out[d.name] = od.CategoricalDistribution([json.dumps(v) for v in d.values])
        elif d.kind == "int":
            out[d.name] = od.IntDistribution(int(d.values[0]), int(d.values[1]))
        else:
            out[d.name] = od.FloatDistribution(
                float(d.values[0]), float(d.values[1]), log=d.kind == "log_uniform"
            )
    return out


def apply_params(spec: PairSpec, params: dict, epochs: int | None = None) -> PairSpec:
    """The spec with each dotted setting of ``params`` set (and ``train.epochs`` when given)."""
    d = spec.to_dict()
    for name, value in params.items():
        node = d
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = copy.deepcopy(value)
    if epochs is not None:
        d["train"]["epochs"] = int(epochs)
    return PairSpec.from_dict(d)


def nested(params: dict) -> dict:
    """``{"model.params.dropout": 0.1}`` -> ``{"model": {"params": {"dropout": 0.1}}}``."""
    out: dict = {}
    for name, value in params.items():
        node = out
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def default_params(spec: PairSpec, settings: TuneSettings) -> dict:
    """The pair's own value of every searched setting (None where the spec has none)."""
    d = spec.to_dict()
    out = {}
    for dim in settings.space:
        node: Any = d
        for part in dim.name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[dim.name] = node
    return out


def check_space(spec: PairSpec, settings: TuneSettings, plugins: Plugins) -> None:
    """Every extreme of every dimension makes a valid spec (schema and component checks), so no
    trial fails on a value the manifest could have refused."""
    from ..manifest.schema import check_section
    from ..pipeline import check_components

    for dim in settings.space:
        for value in dim.extremes:
            where = f"tune.space.{dim.name} ({dim.kind} value {json.dumps(value)})"
            section, _, key = dim.name.partition(".")
            try:
                if section == "train":
                    check_section("train", {key: value}, f"{spec.pair}: {where}: train")
                else:
                    check_components(apply_params(spec, {dim.name: value}), plugins)
            except TrainerError as exc:
                raise ConfigError(f"{spec.pair}: {where}: {exc.message}", exc.hint or TUNE_HINT) from None


def study_name(spec: PairSpec, settings: TuneSettings) -> str:
    """The study of one pair and one search definition: rerunning the same command finds it again;
    a changed space, objective, fold layout or pair setting starts a new study."""
    sig = {k: settings.raw.get(k) for k in SIGNATURE_KEYS}
    blob = json.dumps({"search": sig, "config": spec.config_hash}, sort_keys=True, default=str)
    return f"{spec.tag}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


# -- one pair's search ---------------------------------------------------------------------------


@dataclass
class PairSearch:
    """The driver's view of one pair: its study, what runs, what is finished."""

    spec: PairSpec
    settings: TuneSettings
    study: Any
    name: str
    folder: Path
    embargo: int
    data_ref: Any = None
    own_data: bool = True  # False when the space changes the data: each trial loads its own
    running: dict = field(default_factory=dict)  # ref -> trial number
    outer: dict = field(default_factory=dict)  # label -> record
    outer_running: dict = field(default_factory=dict)  # ref -> label
    chosen: dict | None = None
    finished: bool = False
    retried: int = 0
    records: dict = field(default_factory=dict)  # trial number -> the worker's record
    folds: dict = field(default_factory=dict)  # the nested folds of the pair's own settings
    report: dict | None = None
    #: why the search stopped before its planned trials: {"by": "budget.seconds" | "budget.trials", ...}
    stopped: dict | None = None

    @property
    def pair(self) -> str:
        return self.spec.name  # the pair's folder name (`PairSpec.name`)

    def counts(self) -> dict:
        """Trials of this study by state; interrupted ones (retried) are not counted as finished."""
        import optuna

        states = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "INTERRUPTED": 0}
        for t in self.study.get_trials(deepcopy=False):
            if t.state == optuna.trial.TrialState.COMPLETE:
                states["COMPLETE"] += 1
            elif t.state == optuna.trial.TrialState.PRUNED:
                states["PRUNED"] += 1
            elif t.state == optuna.trial.TrialState.FAIL:
                states["INTERRUPTED" if t.user_attrs.get("interrupted") else "FAIL"] += 1
        return states

    def done_count(self) -> int:
        c = self.counts()
        return c["COMPLETE"] + c["PRUNED"] + c["FAIL"]

    def best(self):
        """The best complete trial, or None."""
        import optuna

        complete = [
            t for t in self.study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
        ]
        if not complete:
            return None
        key = (lambda t: t.value) if self.settings.direction == "minimize" else (lambda t: -t.value)
        return min(complete, key=key)


class TuneRun:
    """One `trainer tune MANIFEST`: pre-flight, the searches, the outer comparisons, the reports."""

    def __init__(
        self,
        manifest_path: str,
        output: str | None = None,
        address: str | None = None,
        only: list[str] | None = None,
        storage: str | None = None,
        adopt: str = "proven",
        echo: Callable[[str], None] = print,
    ):
        self.manifest_path = manifest_path
        self.tune, self.manifest = read_tune_manifest(manifest_path)
        self.address = address
        self.adopt = adopt
        self.echo = echo
        names = self.manifest.pair_names
        if only:
            from ..manifest import normalize_pair

            wanted = [
                p if p in names else normalize_pair(p, "--only") for p in only
            ]  # a folder name as it is
            unknown = [p for p in wanted if p not in names]
            if unknown:
                raise ConfigError(
                    f"--only names {', '.join(unknown)}, which the manifest does not list.",
                    f"The manifest lists: {', '.join(names)}.",
                )
            names = [p for p in names if p in wanted]
        if not names:
            raise ConfigError(f"{manifest_path} lists no pairs to tune.", "Add pairs: [ETHUSDT, ...].")
        self.plugins = Plugins.load(self.manifest.plugins)
        self.output = Path(output or os.path.join(self.manifest.output, "tune"))
        if "://" in str(output or ""):
            raise ConfigError(
                f"--output {output}: the search's records are written to a local or mounted folder.",
                "Give a path on a local disk or a shared volume; the study itself may live in a database (--storage).",
            )
        self.storage_location = storage or str(self.output / JOURNAL)
        if storage and "://" in storage:
            check_storage(storage)
        from ..pipeline import resolve_tag

        self.specs: list[PairSpec] = []
        self.settings: dict[str, TuneSettings] = {}
        for pair in names:
            spec = self.manifest.resolve(pair)
            settings = self.tune.settings_for(pair if pair in self.tune.per_pair else spec.pair)
            from ..pipeline import check_components

            check_components(spec, self.plugins)
            check_space(spec, settings, self.plugins)
            self.specs.append(resolve_tag(spec, self.plugins))
            self.settings[pair] = settings
        first = self.settings[names[0]]
        self.budget_trials = first.budget_trials
        self.budget_seconds = first.budget_seconds
        self.worker_reuse = first.worker_reuse
        self.searches: dict[str, PairSearch] = {}
        self.started = time.time()
        self.driver_rss: list[float] = []
        self.submitted_trials = 0
        #: the exit code of the signal received (SIGTERM 143, SIGINT 130), None while none was
        self.stop_code: int | None = None

    # -- set-up -----------------------------------------------------------------------------
    def _storage(self):
        from .trial import open_storage_of

        return open_storage_of(self.storage_location)

    def _open_search(self, spec: PairSpec, settings: TuneSettings, ray) -> PairSearch:
        import optuna

        from ..features import components, history_of

        name = study_name(spec, settings)
        sampler = optuna.samplers.TPESampler(
            seed=settings.seed, n_startup_trials=max(1, min(10, settings.trials // 2))
        )
        study = optuna.create_study(
            study_name=name,
            storage=self._storage(),
            direction=settings.direction,
            sampler=sampler,
            pruner=make_pruner(settings),
            load_if_exists=True,
        )
        folder = self.output / spec.name
        folder.mkdir(parents=True, exist_ok=True)
        changes_data = any(d.name.startswith(("features.", "labels.")) for d in settings.space)
        from .trial import load_data

        data = load_data(spec, self.plugins)
        horizon = int(data.extra.get("horizon", spec.resolved["horizon"]))
        windows = [spec.train.sequence_length]
        dim = settings.dimension("train.sequence_length")
        if dim is not None:
            windows += [int(v) for v in dim.values]
        feature_set, fparams, _, _ = components(spec, self.plugins)
        history = history_of(feature_set, fparams)
        if settings.embargo == "auto":
            embargo = max(horizon, max(windows), history, spec.embargo)
        else:
            embargo = max(horizon, int(settings.embargo))
        search = PairSearch(spec, settings, study, name, folder, embargo)
        # the folds must fit before any trial starts: the same function the workers call
        from .trial import folds_for

        job = {"embargo": embargo, "folds": settings.folds, "test": settings.test}
        for window in windows:
            folds_for(apply_params(spec, {"train.sequence_length": window}), data, job)
        search.folds = folds_for(spec, data, job).describe()
        search.folds["rows"] = len(data)
        search.folds["time_range"] = data.time_range()
        search.own_data = not changes_data
        search.data_ref = ray.put(data) if search.own_data else None
        del data
        self._recover(search)
        self._load_outer(search)
        return search

    def _recover(self, search: PairSearch, quiet: bool = False) -> None:
        """Trials left running (by a killed driver, or this one when interrupted): marked failed
        (interrupted) and their params queued again."""
        import optuna

        before = search.retried
        storage = search.study._storage
        for t in search.study.get_trials(deepcopy=False):
            if t.state != optuna.trial.TrialState.RUNNING:
                continue
            try:
                storage.set_trial_user_attr(t._trial_id, "interrupted", True)
                search.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            except (RuntimeError, ValueError):  # finished meanwhile by its worker
                continue
            if t.params:  # (a trial killed while it was being asked for has none: nothing to retry)
                search.study.enqueue_trial(
                    dict(t.params), user_attrs={"retry_of": t.number}, skip_if_exists=False
                )
                search.retried += 1
        if search.retried > before and not quiet:
            self.echo(
                f"{search.pair}: {search.retried - before} trial(s) left running by an earlier run are retried"
            )

    def _load_outer(self, search: PairSearch) -> None:
        for label in ("default", "tuned"):
            path = search.folder / f"outer_{label}.json"
            if path.exists():
                try:
                    search.outer[label] = json.loads(path.read_text())
                except (OSError, ValueError):
                    path.unlink(missing_ok=True)

    # -- scheduling ---------------------------------------------------------------------------
    def _wants_trial(self, s: PairSearch) -> bool:
        if s.finished or s.chosen is not None:
            return False
        wants = s.done_count() + len(s.running) < s.settings.trials
        if not wants:
            return False
        if self.budget_seconds is not None and time.time() - self.started >= self.budget_seconds:
            self._stop_search(s, "budget.seconds", self.budget_seconds)
            return False
        if self.budget_trials is not None and self._total_trials() >= self.budget_trials:
            self._stop_search(s, "budget.trials", self.budget_trials)
            return False
        return True

    def _stop_search(self, s: PairSearch, by: str, limit: float) -> None:
        """Note (once) that the budget ended this pair's search before its planned trials."""
        if s.stopped is not None:
            return
        started = s.done_count() + len(s.running)
        s.stopped = {
            "by": by,
            "limit": limit,
            "elapsed_seconds": round(time.time() - self.started, 3),
            "trials_started": started,
            "trials_planned": s.settings.trials,
        }
        unit = " s" if by == "budget.seconds" else " trials"
        self.echo(
            f"[{self._clock()}] {s.pair:<12} {by} ({limit:g}{unit}) reached: no new trial after "
            f"{started} of {s.settings.trials}"
        )

    def _total_trials(self) -> int:
        return sum(x.done_count() + len(x.running) for x in self.searches.values())

    def _search_over(self, s: PairSearch) -> bool:
        return not s.running and not self._wants_trial(s)

    def _next_job(self, ray) -> tuple[PairSearch, dict] | None:
        """The next job for a free slot: a trial of the pair with the fewest under way, else an outer fit."""
        candidates = [s for s in self.searches.values() if self._wants_trial(s)]
        if candidates:
            s = min(candidates, key=lambda x: (len(x.running), x.done_count()))
            return s, self._trial_job(s)
        for s in self.searches.values():
            if s.finished:
                continue
            for label in ("default", "tuned"):
                if label in s.outer or label in s.outer_running.values():
                    continue
                if label == "tuned":
                    if not self._search_over(s):
                        continue
                    best = s.best()
                    if best is None:
                        continue
                    params = self._decoded(s, best.params)
                    return s, self._outer_job(s, "tuned", params)
                return s, self._outer_job(s, "default", {})
        return None

    def _decoded(self, s: PairSearch, params: dict) -> dict:
        return {d.name: decode(d, params[d.name]) for d in s.settings.space if d.name in params}

    def _base_job(self, s: PairSearch) -> dict:
        return {
            "pair": s.pair,
            "embargo": s.embargo,
            "folds": s.settings.folds,
            "test": s.settings.test,
            "objective": s.settings.objective,
            "direction": s.settings.direction,
            "record_dir": str(s.folder),
            "storage": self.storage_location,
            "study": s.name,
        }

    def _trial_job(self, s: PairSearch) -> dict:
        if s.settings.warm_start and not s.study.get_trials(deepcopy=False):
            self._warm_start(s)
        trial = s.study.ask(distributions(s.settings))
        params = self._decoded(s, trial.params)
        epochs = s.settings.pruner.max_epochs if s.settings.pruner else None
        spec = apply_params(s.spec, params, epochs)
        self.submitted_trials += 1
        return {
            **self._base_job(s),
            "kind": "trial",
            "number": trial.number,
            "trial_id": trial._trial_id,
            "params": params,
            "spec": spec.to_dict(),
            "pruner": None if s.settings.pruner is None else vars(s.settings.pruner),
        }

    def _outer_job(self, s: PairSearch, label: str, params: dict) -> dict:
        return {
            **self._base_job(s),
            "kind": "outer",
            "label": label,
            "params": params,
            "spec": apply_params(s.spec, params).to_dict(),
        }

    def _warm_start(self, s: PairSearch) -> None:
        """Seed a new study with the best params of the other pairs' finished studies that fit its space."""
        import optuna

        seeds: list[tuple[str, dict]] = []
        for other in self.searches.values():
            if other is s or other.settings.direction != s.settings.direction:
                continue
            best = other.best()
            if best is None or not self._search_over(other):
                continue
            if set(best.params) != {d.name for d in s.settings.space}:
                continue
            decoded = self._decoded(other, best.params)
            if all(s.settings.dimension(k).contains(v) for k, v in decoded.items()):
                if all(decoded != p for _, p in seeds):
                    seeds.append((other.pair, decoded))
        if not seeds:  # from earlier runs' studies in the same storage
            for summary in optuna.get_all_study_summaries(self._storage(), include_best_trial=True):
                best = summary.best_trial
                if (
                    summary.study_name == s.name
                    or best is None
                    or summary.direction.name.lower() != s.settings.direction
                ):
                    continue
                if set(best.params) != {d.name for d in s.settings.space}:
                    continue
                try:
                    decoded = {d.name: decode(d, best.params[d.name]) for d in s.settings.space}
                except (ValueError, TypeError):
                    continue
                if all(s.settings.dimension(k).contains(v) for k, v in decoded.items()):
                    if all(decoded != p for _, p in seeds):
                        seeds.append((summary.study_name, decoded))
        for source, params in seeds[:2]:
            encoded = {d.name: encode(d, params[d.name]) for d in s.settings.space}
            s.study.enqueue_trial(encoded, user_attrs={"warm_start_from": source})
            self.echo(f"{s.pair}: warm start from {source}'s best params")

    def _fits(self, spec: PairSpec, free: dict) -> bool:
        return spec.resources.cpus <= free["CPU"] + 1e-9 and spec.resources.gpus <= free["GPU"] + 1e-9

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        """Search every pair, compare tuned with default on each outer slice, write the reports.

        Returns the exit code: 0 when every pair finished its search, 1 when a pair failed."""
        from ..locks import PairLock

        self.output.mkdir(parents=True, exist_ok=True)
        lock = PairLock(self.output / ".tune.lock", "the search", str(self.output))
        lock.acquire()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._handle_signals()
            return self._run()
        finally:
            try:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
            lock.release()

    def _on_signal(self, signum, frame) -> None:
        # noted here, acted on at the loop's next safe point (never inside a write to the study)
        if self.stop_code is None:
            self.stop_code = 143 if signum == signal.SIGTERM else 130

    def _handle_signals(self) -> None:
        """SIGTERM and SIGINT stop the search cleanly (installed again after `ray.init`, which sets
        its own SIGTERM handler in the driver)."""
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread: Ctrl-C raises KeyboardInterrupt as usual
            pass

    def _run(self) -> int:
        import ray

        from ..batch.driver import check_reachable

        check_reachable(self.address)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        started_here = False
        pending: dict = {}
        try:
            started_here = self._init_ray(ray)
            self._handle_signals()
            for spec in self.specs:
                self._check_stop()
                self.searches[spec.name] = self._open_search(spec, self.settings[spec.name], ray)
            self._check_stop()
            total = ray.cluster_resources()
            capacity = {"CPU": float(total.get("CPU", 0)), "GPU": float(total.get("GPU", 0))}
            self.echo(
                f"Tuning {len(self.searches)} pair(s) on Ray ({capacity['CPU']:g} CPUs, {capacity['GPU']:g} GPUs); "
                f"studies in {self.storage_location}"
            )
            task = ray.remote(max_calls=self.worker_reuse)(_remote_job)
            self._loop(ray, task, pending, capacity)
        except (KeyboardInterrupt, TuneInterrupted) as exc:
            code = exc.exit_code if isinstance(exc, TuneInterrupted) else 130
            self._interrupted(ray, pending)
            raise TuneInterrupted(code) from None
        finally:
            if started_here:
                ray.shutdown()
        return self._finish()

    def _interrupted(self, ray, pending: dict) -> None:
        """Stop on SIGTERM or Ctrl-C: schedule nothing more, end the jobs under way, mark the trials
        that were running interrupted (their params queued again, so the rerun retries them), and
        say in one line how to continue. A second signal meanwhile does not cut this short."""
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # best effort: a rerun retries what was left running
                pass
        retried = 0
        for s in self.searches.values():
            before = s.retried
            try:
                self._recover(s, quiet=True)
            except Exception:  # the storage is unreachable: the rerun recovers them instead
                continue
            retried += s.retried - before
        self.echo(
            f"Interrupted: finished trials are kept in {self.storage_location}; {retried} running trial(s) "
            f"will be retried. Continue with the same command: trainer tune {self.manifest_path}"
        )

    def _check_stop(self) -> None:
        """Raise `TuneInterrupted` once SIGTERM or SIGINT has been received."""
        if self.stop_code is not None:
            raise TuneInterrupted(self.stop_code)

    def _loop(self, ray, task, pending: dict, capacity: dict) -> None:
        used = {"CPU": 0.0, "GPU": 0.0}
        while True:
            self._check_stop()
            while True:  # fill every free slot
                free = {k: capacity[k] - used[k] for k in capacity}
                job = self._next_job_fitting(free)
                if job is None:
                    break
                s, payload = job
                r = s.spec.resources
                ref = task.options(
                    num_cpus=r.cpus,
                    num_gpus=r.gpus,
                    max_retries=int(self.manifest.batch.get("max_retries", 2)),
                    retry_exceptions=False,
                    name=f"tune {s.pair} {payload['kind']} {payload.get('number', payload.get('label'))}",
                ).remote(payload, s.data_ref)
                pending[ref] = (s, payload, time.time())
                used["CPU"] += r.cpus
                used["GPU"] += r.gpus
                if payload["kind"] == "trial":
                    s.running[ref] = payload["number"]
                else:
                    s.outer_running[ref] = payload["label"]
            self._finalize_ready()
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                s, payload, submitted = pending.pop(ref)
                used["CPU"] -= s.spec.resources.cpus
                used["GPU"] -= s.spec.resources.gpus
                self._collect(ray, ref, s, payload, submitted)
            self._check_stop()
        self._finalize_ready()

    def _next_job_fitting(self, free: dict):
        # only pairs whose resources fit the free slots compete for them
        saved = {p: s for p, s in self.searches.items()}
        try:
            self.searches = {p: s for p, s in saved.items() if self._fits(s.spec, free)}
            return self._next_job(None) if self.searches else None
        finally:
            self.searches = saved

    def _collect(self, ray, ref, s: PairSearch, payload: dict, submitted: float) -> None:
        import optuna

        try:
            record = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker died every try (killed, out of memory)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            record = {"kind": payload["kind"], "state": "FAIL", "error": f"worker lost: {first}"}
            if payload["kind"] == "trial":
                try:
                    s.study.tell(payload["number"], state=optuna.trial.TrialState.FAIL)
                except (RuntimeError, ValueError):
                    pass
        record["queued_seconds"] = max(0.0, time.time() - submitted - float(record.get("seconds") or 0.0))
        self.driver_rss.append(rss_mb())
        record["driver_rss_mb"] = self.driver_rss[-1]
        if payload["kind"] == "trial":
            s.running.pop(ref, None)
            s.records[payload["number"]] = record
            self._progress(s, payload, record)
        else:
            s.outer_running.pop(ref, None)
            label = payload["label"]
            if record.get("state") == "COMPLETE":
                record["params"] = payload["params"]
                s.outer[label] = record
                _write_json(s.folder / f"outer_{label}.json", record)
                self.echo(
                    f"[{self._clock()}] {s.pair:<12} outer {label}: {s.settings.objective} {record['value']:.4f} "
                    f"on {record['test_rows']:,} test rows"
                )
            else:
                s.outer[label] = record
                self.echo(f"[{self._clock()}] {s.pair:<12} outer {label} failed: {record.get('error')}")

    def _clock(self) -> str:
        e = int(time.time() - self.started)
        return f"{e // 3600:02d}:{e // 60 % 60:02d}:{e % 60:02d}"

    def _progress(self, s: PairSearch, payload: dict, record: dict) -> None:
        c = s.counts()
        best = s.best()
        state = record.get("state", "FAIL").lower()
        value = record.get("value")
        what = f"trial {payload['number']} {state}"
        if state == "complete" and value is not None:
            what += f" {s.settings.objective} {value:.4f}"
        elif state == "pruned" and record.get("intermediate"):
            what += f" at step {record['intermediate'][-1][0]}"
        elif state == "fail":
            what += f": {record.get('error')}"
        best_text = f"best {best.value:.4f} (#{best.number})" if best is not None else "no complete trial yet"
        self.echo(
            f"[{self._clock()}] {s.pair:<12} {what} | {c['COMPLETE'] + c['PRUNED'] + c['FAIL']}/{s.settings.trials} done "
            f"({c['PRUNED']} pruned, {c['FAIL']} failed), {len(s.running)} running | {best_text}"
        )

    def _finalize_ready(self) -> None:
        from .report import write_pair_report

        for s in self.searches.values():
            if s.finished or not self._search_over(s) or s.outer_running:
                continue
            best = s.best()
            if "default" not in s.outer or (best is not None and "tuned" not in s.outer):
                continue
            s.finished = True
            s.report = write_pair_report(self, s)
            self.echo(f"[{self._clock()}] {s.pair:<12} {s.report['verdict']}")

    def _finish(self) -> int:
        from .report import write_batch_report

        write_batch_report(self)
        failed = [s.pair for s in self.searches.values() if not s.report or s.report.get("error")]
        return 1 if failed else 0

    def _init_ray(self, ray) -> bool:
        from ..batch.driver import BatchRun

        return BatchRun._init_ray(self, ray)


def check_storage(url: str) -> None:
    """A database URL given to --storage must open before any work starts (a missing driver, a
    host that does not answer, a folder that does not exist are one clear error)."""
    from .trial import open_storage_of

    hint = (
        "Give a database the driver and every worker can reach, e.g. sqlite:////shared/studies.db on a "
        "shared volume or postgresql://user@host/db (its driver installed), or leave --storage out for "
        "the journal file in the output folder."
    )
    try:
        open_storage_of(url)
    except ImportError as exc:
        raise ConfigError(f"--storage {url}: its database driver is not installed ({exc}).", hint) from None
    except Exception as exc:  # sqlalchemy's errors: unknown scheme, refused connection, unopenable file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"--storage {url}: the study storage cannot be opened: {first[:300]}", hint
        ) from None


def make_pruner(settings: TuneSettings):
    """Successive halving on epochs for `pruner: {asha: ...}`; no pruning otherwise."""
    from .trial import pruner_of

    return pruner_of(settings.pruner)


def _remote_job(job: dict, data: Any = None) -> dict:
    """The Ray task body (a module-level function, so Ray ships it by reference)."""
    from .trial import run_job

    return run_job(job, data)


def _write_json(path: Path, obj: Any) -> None:
    from ..artifacts import dumps
    from ..storage import atomic_write_bytes

    atomic_write_bytes(path, dumps(obj).encode())


__all__ = [
    "JOURNAL",
    "PairSearch",
    "TuneInterrupted",
    "TuneRun",
    "apply_params",
    "check_space",
    "check_storage",
    "decode",
    "default_params",
    "distributions",
    "encode",
    "make_pruner",
    "nested",
    "read_tune_manifest",
    "study_name",
]
