"""Whether each pair's `resources` fit on a node of the cluster it will run on (this machine, or
the Ray cluster joined), so an impossible request is an error before anything is submitted."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

from ..errors import ConfigError
from ..manifest import PairSpec

#: a local Ray started with this many CPUs instead of every core (tests, shared machines)
RAY_NUM_CPUS_ENV = "TRAINER_RAY_NUM_CPUS"
#: "1" lets pairs ask for more than any node has now, for a cluster whose autoscaler Ray does not report
AUTOSCALING_ENV = "TRAINER_RAY_AUTOSCALING"


@dataclass(frozen=True)
class Node:
    """What one node offers a task: its CPUs and GPUs."""

    cpus: float
    gpus: float


def local_num_cpus() -> int | None:
    """The CPUs a local Ray is started with: TRAINER_RAY_NUM_CPUS, else None (Ray's own count)."""
    value = os.environ.get(RAY_NUM_CPUS_ENV, "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(
            f"{RAY_NUM_CPUS_ENV}={value!r}: expected a whole number of CPUs >= 1.",
            f"For example {RAY_NUM_CPUS_ENV}=2, or unset it to use every core.",
        )
    return n


def local_gpus() -> int:
    """The GPUs a local Ray would see, without importing CUDA: CUDA_VISIBLE_DEVICES, else /dev/nvidiaN."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return len(ids)
    return len(glob.glob("/dev/nvidia[0-9]*"))


def this_machine() -> Node:
    """The one node of a local Ray started on demand."""
    return Node(float(local_num_cpus() or os.cpu_count() or 1), float(local_gpus()))


def ray_nodes(ray) -> list[Node]:
    """The alive nodes of the joined Ray cluster."""
    return [
        Node(float(n.get("Resources", {}).get("CPU", 0)), float(n.get("Resources", {}).get("GPU", 0)))
        for n in ray.nodes()
        if n.get("Alive")
    ]


def cluster_autoscales() -> bool:
    """True when the joined cluster has an autoscaler with configured node types (it can add nodes).

    A fixed cluster (`ray start`, a local Ray) reports only its running nodes, each its own type
    ``node_<id>``; an autoscaling one (KubeRay, the cluster launcher) names its node types.
    """
    if os.environ.get(AUTOSCALING_ENV, "") not in ("", "0"):
        return True
    try:
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get("__autoscaling_status")
        report = json.loads(raw).get("autoscaler_report") if raw else None
    except Exception:  # no status published: treat the cluster as fixed
        return False
    if not isinstance(report, dict):
        return False
    types = (report.get("node_type_mapping") or {}).values()
    return bool(report.get("pending_launches")) or any(not str(t).startswith("node_") for t in types)


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_fit(specs: list[PairSpec], nodes: list[Node], where: str) -> None:
    """Raise a ConfigError when some pair's cpus+gpus fit on no single node."""
    if not nodes:
        raise ConfigError(
            f"{where} has no alive node.",
            "Start the cluster's nodes, or leave out --address to use a local Ray.",
        )
    misfits = [
        s for s in specs if not any(s.resources.cpus <= n.cpus and s.resources.gpus <= n.gpus for n in nodes)
    ]
    if not misfits:
        return
    first = misfits[0]
    cpus, gpus = first.resources.cpus, first.resources.gpus
    same = [s.pair for s in misfits if (s.resources.cpus, s.resources.gpus) == (cpus, gpus)]
    names = ", ".join(same[:5]) + (f" and {len(same) - 5} more" if len(same) > 5 else "")
    largest = (
        max(nodes, key=lambda n: (n.gpus, n.cpus)) if gpus else max(nodes, key=lambda n: (n.cpus, n.gpus))
    )
    biggest_cpus = max(n.cpus for n in nodes)
    fit_gpus = min(gpus, largest.gpus) if largest.gpus else 0
    fit_cpus = min(cpus, largest.cpus if fit_gpus else biggest_cpus)
    verb = "asks" if len(same) == 1 else "each ask"
    raise ConfigError(
        f"{names} {verb} for {_fmt(cpus)} CPU(s) and {_fmt(gpus)} GPU(s) on one node, but the largest node of "
        f"{where} has {_fmt(largest.cpus)} CPU(s) and {_fmt(largest.gpus)} GPU(s): Ray would wait for ever.",
        f"Ask for what a node has: --set resources.cpus={_fmt(fit_cpus)} "
        f"--set resources.gpus={_fmt(fit_gpus)} (or run on a cluster with bigger nodes).",
    )
