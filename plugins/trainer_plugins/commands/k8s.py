"""Command `trainer k8s render`: the ServiceAccount, ConfigMap and Indexed Job that train a manifest on Kubernetes.

The templates live beside this module (k8s_templates/) so that the command works from the wheel;
k8s/ in the repository holds the same objects, annotated, for `kubectl apply -k` (a test keeps them equal).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from importlib import resources
from pathlib import Path, PurePosixPath

import click
import yaml

from trainer_core import ConfigError, __version__, hookimpl, load_manifest

#: where the pods mount the shared volume; also their working directory, so relative paths land on it
MOUNT = "/data"
MANIFEST_KEY = "manifest.yaml"
#: pods with a GPU run the GPU image; the others the CPU image, which has no NVIDIA variables baked in
GPU_IMAGE = f"pair-trainer:{__version__}-gpu"
CPU_IMAGE = f"pair-trainer:{__version__}-cpu"
#: a pod's memory when the manifest's resources.memory is null, per CPU it asks for
MEMORY_PER_CPU_GI = 4
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
DEFAULT_CLAIM = "trainer-data"
DEFAULT_PARALLELISM = 8
#: a Job's pods are named and hostnamed `{name}-{index}`, which must stay a 63-character DNS label
MAX_NAME = 50
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def template(name: str) -> dict:
    """The YAML template ``k8s_templates/{name}`` shipped with the plugin, parsed."""
    text = resources.files(__package__).joinpath("k8s_templates", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity_bytes(value: str) -> Decimal:
    """A Kubernetes memory quantity (`16Gi`, `512M`, `1e9`) in bytes, to compare two of them."""
    match = re.fullmatch(r"([0-9.]+(?:[eE][+-]?[0-9]+)?)([KMGTPE]i|[kMGTPE])?", value)
    if not match:
        raise ConfigError(
            f"resources.memory {value!r} is not a memory quantity.", "For example: memory: 16Gi"
        )
    return Decimal(match[1]) * _SUFFIX[match[2] or ""]


def cpu_quantity(cpus: float) -> str:
    """4.0 -> "4", 0.5 -> "500m": the form kubectl shows."""
    if float(cpus).is_integer():
        return str(int(cpus))
    return f"{math.ceil(cpus * 1000)}m"


def pod_resources(manifest_path: str, specs: list, gpus: int | None) -> dict:
    """The Job pod's requests (= limits): the most any pair of the manifest asks for.

    One pod template serves every index, so it must fit the largest pair. A fractional GPU cannot be
    requested by a pod; `gpus` (the --gpus option) replaces the manifest's for every pair."""
    cpus = max(float(getattr(s.resources, "cpus", 1) or 1) for s in specs)
    if gpus is None:
        for spec in specs:
            wanted = float(getattr(spec.resources, "gpus", 0) or 0)
            if not wanted.is_integer():
                raise ConfigError(
                    f"{manifest_path}: {spec.pair}: resources.gpus {wanted:g} is a fraction of a GPU, "
                    "which a Kubernetes Job's pod cannot request.",
                    "Give whole GPUs (resources.gpus: 1, or --gpus 1 for this Job); to share GPUs, have the "
                    "cluster set up GPU time-slicing or MIG (each nvidia.com/gpu is then a slice or an "
                    "instance), or run the manifest as the RayJob (k8s/rayjob/), which shares GPUs by fractions.",
                )
        gpus = int(max(float(getattr(s.resources, "gpus", 0) or 0) for s in specs))
    memories = [m for m in (getattr(s.resources, "memory", None) for s in specs) if m is not None]
    if memories:
        memory = max(memories, key=quantity_bytes)
    else:
        memory = f"{max(1, math.ceil(cpus * MEMORY_PER_CPU_GI))}Gi"
    out = {"cpu": cpu_quantity(cpus), "memory": memory}
    if gpus:
        out[GPU_RESOURCE] = gpus
    return out


def default_name(manifest_path: str) -> str:
    """`manifests/all_pairs.yaml` -> `trainer-all-pairs`."""
    stem = re.sub(r"[^a-z0-9]+", "-", Path(manifest_path).stem.lower()).strip("-")
    return f"trainer-{stem}" if stem else "trainer"


def parse_indexes(text: str, count: int) -> list[int]:
    """`1,3-5` (the form of a Job's status.failedIndexes) -> [1, 3, 4, 5], each checked against `count`."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ConfigError(
                f"--indexes {text!r}: {part!r} is not an index or a range.",
                "Give indexes from 0 and ranges, e.g. --indexes 1,3-5 (what a Job's status.failedIndexes shows).",
            )
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low or high >= count:
            raise ConfigError(
                f"--indexes {text!r}: {part!r} is outside the manifest's {count} pair(s) (0..{count - 1}).",
                "Use the indexes of the Job that ran this manifest: kubectl get job NAME -o jsonpath='{.status.failedIndexes}'",
            )
        out.extend(i for i in range(low, high + 1) if i not in out)
    return sorted(out)


def _check_path(value: str | None, where: str) -> None:
    """A local absolute path outside the volume would be written to the pod's read-only root filesystem."""
    if not value or "://" in value:
        return
    path = PurePosixPath(value.replace("{pair}", "PAIR"))
    if path.is_absolute() and not (path == PurePosixPath(MOUNT) or PurePosixPath(MOUNT) in path.parents):
        raise ConfigError(
            f"{where} {value!r} is outside the volume the pods mount at {MOUNT}.",
            f"Use a path under {MOUNT}/, a relative path (the pods resolve it against {MOUNT}), or an fsspec URL.",
        )


def _check_name(value: str, option: str, pattern: re.Pattern, limit: int, then: str = "") -> None:
    if len(value) > limit or not pattern.fullmatch(value):
        raise ConfigError(
            f"{option} {value!r} is not a valid Kubernetes name.",
            f"Use at most {limit} lowercase letters, digits and '-', starting and ending with a letter or digit.{then}",
        )


def _manifest_text(path: str, indexes: list[int] | None) -> str:
    text = Path(path).read_text(encoding="utf-8")
    if indexes is None:
        return text
    raw = yaml.safe_load(text)
    raw["pairs"] = [raw["pairs"][i] for i in indexes]
    header = f"# Pairs {','.join(map(str, indexes))} of {path}, rendered by `trainer k8s render --indexes`.\n"
    return header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)


def render_objects(
    manifest_path: str,
    *,
    image: str | None = None,
    claim: str = DEFAULT_CLAIM,
    namespace: str | None = None,
    name: str | None = None,
    parallelism: int = DEFAULT_PARALLELISM,
    indexes: str | None = None,
    gpus: int | None = None,
) -> list[dict]:
    """The ServiceAccount, the ConfigMap and the Indexed Job for a manifest, as dicts in the order to apply them.

    `image` defaults to the GPU image when the pods get a GPU, else to the CPU image; `gpus`
    replaces the manifest's resources.gpus (whole GPUs per pod)."""
    manifest = load_manifest(manifest_path)
    if not manifest.pairs:
        raise ConfigError(f"{manifest_path}: the manifest lists no pairs.", "Add pairs under `pairs:`.")
    specs = manifest.resolve_all()
    for spec in specs:  # a bad value fails here, not in every pod
        _check_path(spec.output, f"{manifest_path}: output")
        _check_path(spec.data.path, f"{manifest_path}: {spec.pair}: data.path")
    chosen = parse_indexes(indexes, len(manifest.pairs)) if indexes is not None else None
    if chosen is not None and not name:
        raise ConfigError(
            "--indexes needs --name: the first Job and its ConfigMap keep their name.",
            f"Name the retry, e.g. --name {default_name(manifest_path)}-retry1",
        )
    if name:
        _check_name(name, "--name", DNS_LABEL, MAX_NAME)
    else:
        name = default_name(manifest_path)
        _check_name(
            name, "The name made of the manifest's file name,", DNS_LABEL, MAX_NAME, " Give one with --name."
        )
    _check_name(claim, "--claim", DNS_SUBDOMAIN, 253)
    if namespace is not None:
        _check_name(namespace, "--namespace", DNS_LABEL, 63)
    if image is not None and (not image or any(c.isspace() for c in image)):
        raise ConfigError(
            f"--image {image!r} is not an image reference.",
            "For example: --image registry.example.com/pair-trainer:0.1.0-gpu",
        )
    limits = pod_resources(manifest_path, [specs[i] for i in chosen] if chosen is not None else specs, gpus)
    if image is None:
        image = GPU_IMAGE if GPU_RESOURCE in limits else CPU_IMAGE

    completions = len(chosen) if chosen is not None else len(manifest.pairs)
    account = template("serviceaccount.yaml")
    configmap = template("configmap.yaml")
    job = template("job.yaml")
    for obj in (configmap, job):
        obj["metadata"]["name"] = name
        obj["metadata"]["labels"]["app.kubernetes.io/instance"] = name
    if namespace is not None:
        for obj in (account, configmap, job):
            obj["metadata"]["namespace"] = namespace
    configmap["data"][MANIFEST_KEY] = _manifest_text(manifest_path, chosen)

    spec = job["spec"]
    spec["completions"] = completions
    spec["parallelism"] = min(parallelism, completions)
    spec["backoffLimitPerIndex"] = int(manifest.batch["max_retries"])
    pod = spec["template"]
    pod["metadata"]["labels"]["app.kubernetes.io/instance"] = name
    container = pod["spec"]["containers"][0]
    container["image"] = image
    container["resources"] = {"requests": dict(limits), "limits": dict(limits)}
    if GPU_RESOURCE in limits:  # GPU node pools are often tainted so that only GPU pods land there
        items = list(pod["spec"].items())
        at = [k for k, _ in items].index("containers")
        pod["spec"] = dict(items[:at] + [("tolerations", [dict(GPU_TOLERATION)])] + items[at:])
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    volumes["data"]["persistentVolumeClaim"]["claimName"] = claim
    volumes["manifest"]["configMap"]["name"] = name
    return [account, configmap, job]


class _Dumper(yaml.SafeDumper):
    def increase_indent(
        self, flow=False, indentless=False
    ):  # lists indented under their key, as kubectl shows them
        return super().increase_indent(flow, False)


def _str(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(objects: list[dict], header: str = "") -> str:
    """``objects`` as one multi-document YAML stream after ``header``, keys in their order."""
    docs = [yaml.dump(o, Dumper=_Dumper, sort_keys=False, width=1000) for o in objects]
    return header + "---\n" + "---\n".join(docs)


@click.group(context_settings=CONTEXT_SETTINGS)
def k8s():
    """Kubernetes: print the objects that train a manifest's pairs as an Indexed Job.

    Example:

        trainer k8s render manifests/all_pairs.yaml | kubectl apply -f -
    """


@k8s.command(name="render", context_settings=CONTEXT_SETTINGS)
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@click.option(
    "--image",
    metavar="IMAGE",
    help=f"The trainer image the pods run, pushed to your registry [default: {GPU_IMAGE} for pods "
    f"with a GPU, else {CPU_IMAGE}].",
)
@click.option(
    "--claim",
    default=DEFAULT_CLAIM,
    show_default=True,
    metavar="PVC",
    help="The ReadWriteMany PersistentVolumeClaim mounted at /data (k8s/base/pvc.yaml).",
)
@click.option(
    "--namespace", metavar="NS", help="Put both objects in this namespace (default: kubectl's current one)."
)
@click.option(
    "--name",
    metavar="NAME",
    help="Name of the Job and the ConfigMap [default: trainer-<manifest file name>].",
)
@click.option(
    "--parallelism",
    type=click.IntRange(min=1),
    default=DEFAULT_PARALLELISM,
    show_default=True,
    metavar="N",
    help="At most N pairs train at once.",
)
@click.option(
    "--gpus",
    type=click.IntRange(min=0),
    metavar="N",
    help="Whole GPUs per pod, instead of the manifest's resources.gpus (which may be a fraction for Ray).",
)
@click.option(
    "--indexes",
    metavar="I,J-K",
    help="Only these pairs of the manifest (from 0), e.g. a finished Job's status.failedIndexes; needs --name.",
)
def render_command(manifest_path, image, claim, namespace, name, parallelism, indexes, gpus):
    """Print the ServiceAccount, ConfigMap and Indexed Job that train every pair of MANIFEST.

    Pod i runs `trainer run --manifest /etc/trainer/manifest.yaml --index i`; completions is the
    number of pairs, backoffLimitPerIndex the manifest's batch.max_retries. Each pod requests the
    manifest's resources (the largest of its pairs): cpus, memory (4Gi per CPU when unset) and
    whole GPUs. The output is ready for `kubectl apply -f -`; the volume comes from k8s/base/pvc.yaml.

    Example:

        trainer k8s render manifests/all_pairs.yaml --gpus 1 --image registry.example.com/pair-trainer:0.1.0-gpu | kubectl apply -f -

        trainer k8s render manifests/all_pairs.yaml --gpus 1 --indexes 3,17 --name trainer-all-pairs-retry
    """
    objects = render_objects(
        manifest_path,
        image=image,
        claim=claim,
        namespace=namespace,
        name=name,
        parallelism=parallelism,
        indexes=indexes,
        gpus=gpus,
    )
    job = objects[-1]
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    header = (
        f"# trainer k8s render {manifest_path} (pair-trainer {__version__}): "
        f"{job['spec']['completions']} pair(s) -> completions {job['spec']['completions']}, "
        f"parallelism {job['spec']['parallelism']}, backoffLimitPerIndex {job['spec']['backoffLimitPerIndex']}; "
        f"each pod {limits['cpu']} CPU, {limits['memory']}, {limits.get(GPU_RESOURCE, 0)} GPU\n"
    )
    click.echo(to_yaml(objects, header), nl=False)


@hookimpl
def trainer_register_commands(cli):
    """Add the ``k8s`` command group."""
    cli.add_command(k8s)
