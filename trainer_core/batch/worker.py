"""The code that runs inside a Ray task: one pair, trained where Ray placed it.

Nothing here blocks on Ray: a task that waits in `ray.get` (or a blocking queue put) lends its
CPUs back to Ray, which then starts another pair on them and oversubscribes the node.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import traceback
from typing import Any

from ..contract import BatchRow
from ..errors import PreemptedError, TrainerError
from ..manifest import PairSpec
from ..plugins import LOAD_PLUGINS_ENV, MANIFEST_PLUGINS_ENV, TRACE_PLUGINS_ENV, load_plugins
from ..quiet import VERBOSE_ENV

#: environment a worker needs to load the same plugins and reach the same storage as the driver
#: (object-store endpoints and regions; credentials are deliberately not forwarded)
FORWARDED_ENV = (
    LOAD_PLUGINS_ENV,
    TRACE_PLUGINS_ENV,
    MANIFEST_PLUGINS_ENV,
    VERBOSE_ENV,
    "PYTHONPATH",
    "TF_CPP_MIN_LOG_LEVEL",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)
FORWARDED_PREFIXES = ("FSSPEC_",)


def configure_tensorflow_threads(cpus: float) -> int:
    """TensorFlow's thread pools sized to the task's CPUs; call before TensorFlow does any work.

    Ray's OMP_NUM_THREADS does not reach TensorFlow's own pools; without this, two pairs on two
    cores contend for every core and gain nothing over running one after the other.
    """
    from ..windows import THREADS_ENV

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


def progress_actor(ray):
    """The driver's inbox for "a pair started": an actor that only collects, never blocks a task."""

    @ray.remote(num_cpus=0)
    class Progress:
        def __init__(self):
            self.events: list[tuple[str, str, float]] = []

        def started(self, pair: str, when: float) -> None:
            self.events.append(("running", pair, when))

        def drain(self) -> list[tuple[str, str, float]]:
            events, self.events = self.events, []
            return events

    return Progress.remote()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def train_in_worker(spec_dict: dict, progress: Any = None, force: bool = False) -> BatchRow:
    """Train one pair; return its outcome row (errors included, never raised, so others go on).

    ``force`` (``trainer batch --force``) starts over even from a resumable backup. SIGTERM (a
    preempted node) ends the worker process with 143 after the backup is kept, so Ray retries the
    pair elsewhere and the retry resumes it.
    """
    from ..pipeline import run_pair

    spec = PairSpec.from_dict(spec_dict)
    started = time.time()
    if progress is not None:
        try:
            progress.started.remote(spec.name, started)  # fire and forget: no ray.get in a task
        except Exception:  # progress is best effort; training is not
            pass
    try:
        configure_tensorflow_threads(spec.resources.cpus)
        plugins = load_plugins(spec.plugins)
        result = run_pair(spec, plugins, echo=lambda m: print(f"[{spec.name}] {m}", flush=True), force=force)
        return BatchRow(
            spec.name,
            "trained",
            "trained",
            seconds=time.time() - started,
            artifacts=result.pair_dir,
            tag=result.tag,
            metrics=dict(result.summary_metrics()),
            figures=dict(result.figures),
            trained_at=getattr(result, "trained_at", None) or _now(),
        )
    except PreemptedError as exc:
        print(f"[{spec.name}] {exc.message}", flush=True)
        os._exit(exc.exit_code)  # a dead worker, not a failed pair: Ray retries it (it resumes)
    except Exception as exc:  # a failure fails only this pair; an unexpected one keeps its traceback
        if isinstance(exc, TrainerError):
            error, hint, code, trace = exc.message, exc.hint, exc.exit_code, None
        else:
            error, code, trace = f"{type(exc).__name__}: {exc}", 1, traceback.format_exc()
            hint = "The worker's traceback is printed above, under the pair's line."
        return BatchRow(
            spec.name,
            "failed",
            "error",
            seconds=time.time() - started,
            error=error,
            hint=hint,
            exit_code=code,
            traceback=trace,
        )
