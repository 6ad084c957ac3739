"""Command `trainer k8s render`: the objects that train a manifest on Kubernetes.

By default the ServiceAccount, ConfigMap and Indexed Job; with `--ray`, the ServiceAccount, ConfigMap,
KubeRay RayJob, its NetworkPolicy and the Ray head's PodDisruptionBudget. The templates live beside
this module (k8s_templates/) so that the command works from the wheel; k8s/ and k8s/rayjob/ in the
repository hold the same objects, annotated, for `kubectl apply -k` (tests keep them equal).
"""

from __future__ import annotations

import math
import posixpath
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
#: pods with a GPU run the GPU image; the others the CPU image. Two names, so that a registry digest
#: pins each one on its own (docs/deploy.md)
GPU_IMAGE = f"pair-trainer-gpu:{__version__}"
CPU_IMAGE = f"pair-trainer-cpu:{__version__}"
#: a pod's memory when the manifest's resources.memory is null, per CPU it asks for
MEMORY_PER_CPU_GI = 4
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
DEFAULT_CLAIM = "trainer-data"
DEFAULT_PARALLELISM = 8
#: a run still going after 48 hours is stopped (the Job's and the RayJob's activeDeadlineSeconds)
DEFAULT_DEADLINE = 48 * 3600
#: the Job stops once more than this share of its pairs failed: a broken image or volume fails every
#: pair, and without a cap each of them would be tried backoffLimitPerIndex + 1 times
FAILED_SHARE = 0.1
#: KubeRay's Ray workers: a pair must fit one (k8s/rayjob/rayjob.yaml's worker group)
DEFAULT_WORKERS = 4
#: the namespace of the KubeRay operator, admitted by the RayJob's NetworkPolicy
DEFAULT_OPERATOR_NAMESPACE = "ray-system"
#: Kubernetes refuses a ConfigMap whose keys and values exceed 1 MiB in all
CONFIGMAP_LIMIT = 1024 * 1024
#: a Job's pods are named and hostnamed `{name}-{index}`, which must stay a 63-character DNS label
MAX_NAME = 50
#: KubeRay refuses a RayJob name over 47 characters; the RayJob is NAME-ray
MAX_RAY_NAME = 43
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
    # where the pod's file system puts it: relative to the working directory /data, `..` resolved
    path = PurePosixPath(posixpath.normpath(posixpath.join(MOUNT, value.replace("{pair}", "PAIR"))))
    if not (path == PurePosixPath(MOUNT) or PurePosixPath(MOUNT) in path.parents):
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


def comment_safe(text: str) -> str:
    """`text` for a YAML comment line: control characters (a newline would end the comment and start
    YAML of its own) and non-ASCII written as escapes."""
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in text)


def _manifest_text(path: str, indexes: list[int] | None) -> str:
    text = Path(path).read_text(encoding="utf-8")
    if indexes is None:
        return text
    raw = yaml.safe_load(text)
    raw["pairs"] = [raw["pairs"][i] for i in indexes]
    header = (
        f"# Pairs {','.join(map(str, indexes))} of {comment_safe(path)}, "
        "rendered by `trainer k8s render --indexes`.\n"
    )
    return header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)


def _check_components(manifest, specs: list) -> None:
    """What `trainer validate` checks: every model, loader, balancer and reporter is registered here,
    with valid params. The pods need the same plugins in their image."""
    from trainer_core import validate_components

    ctx = click.get_current_context(silent=True)
    refused = bool(ctx and (ctx.find_root().obj or {}).get("no_manifest_plugins"))
    validate_components(manifest, specs, manifest_plugins=False if refused else None)


def _checked_manifest(manifest_path: str):
    """The manifest and its resolved pairs, checked as `trainer validate` does, with their paths on the volume."""
    manifest = load_manifest(manifest_path)
    if not manifest.pairs:
        raise ConfigError(f"{manifest_path}: the manifest lists no pairs.", "Add pairs under `pairs:`.")
    specs = manifest.resolve_all()
    for spec in specs:  # a bad value fails here, not in every pod
        _check_path(spec.output, f"{manifest_path}: output")
        _check_path(spec.data.path, f"{manifest_path}: {spec.pair}: data.path")
    _check_components(manifest, specs)
    return manifest, specs


def _configmap(manifest_path: str, name: str, indexes: list[int] | None) -> dict:
    configmap = template("configmap.yaml")
    configmap["metadata"]["name"] = name
    configmap["metadata"]["labels"]["app.kubernetes.io/instance"] = name
    text = _manifest_text(manifest_path, indexes)
    size = len(MANIFEST_KEY.encode()) + len(text.encode("utf-8"))
    if size > CONFIGMAP_LIMIT:
        raise ConfigError(
            f"{manifest_path}: the manifest is {size:,} bytes; a ConfigMap holds at most "
            f"{CONFIGMAP_LIMIT:,} (1 MiB), so Kubernetes would refuse it.",
            "Shorten it (settings shared by pairs go under `defaults:`, comments can go), or split the "
            "pairs into several manifests, each rendered with its own --name.",
        )
    configmap["data"][MANIFEST_KEY] = text
    return configmap


def _check_image(image: str | None, option: str, example: str) -> None:
    if image is not None and (not image or any(c.isspace() for c in image)):
        raise ConfigError(
            f"{option} {image!r} is not an image reference.",
            f"For example: {option} registry.example.com/ml/{example}",
        )


def _common_names(manifest_path, name, claim, namespace, limit) -> str:
    if name:
        _check_name(name, "--name", DNS_LABEL, limit)
    else:
        name = default_name(manifest_path)
        _check_name(
            name, "The name made of the manifest's file name,", DNS_LABEL, limit, " Give one with --name."
        )
    _check_name(claim, "--claim", DNS_SUBDOMAIN, 253)
    if namespace is not None:
        _check_name(namespace, "--namespace", DNS_LABEL, 63)
    return name


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
    deadline: int = DEFAULT_DEADLINE,
    max_failed: int | None = None,
    service_account: bool = True,
) -> list[dict]:
    """The ServiceAccount, the ConfigMap and the Indexed Job for a manifest, as dicts in the order to apply them.

    `image` defaults to the GPU image when the pods get a GPU, else to the CPU image; `gpus`
    replaces the manifest's resources.gpus (whole GPUs per pod); `max_failed` (the Job's
    maxFailedIndexes) defaults to a tenth of the pairs, at least 1."""
    manifest, specs = _checked_manifest(manifest_path)
    chosen = parse_indexes(indexes, len(manifest.pairs)) if indexes is not None else None
    if chosen is not None and not name:
        raise ConfigError(
            "--indexes needs --name: the first Job and its ConfigMap keep their name.",
            f"Name the retry, e.g. --name {default_name(manifest_path)}-retry1",
        )
    name = _common_names(manifest_path, name, claim, namespace, MAX_NAME)
    _check_image(image, "--image", f"pair-trainer-gpu:{__version__}")
    limits = pod_resources(manifest_path, [specs[i] for i in chosen] if chosen is not None else specs, gpus)
    if image is None:
        image = GPU_IMAGE if GPU_RESOURCE in limits else CPU_IMAGE

    completions = len(chosen) if chosen is not None else len(manifest.pairs)
    if max_failed is None:
        max_failed = max(1, math.ceil(completions * FAILED_SHARE))
    elif max_failed > completions:
        raise ConfigError(
            f"--max-failed-indexes {max_failed} is more than the Job's {completions} pair(s).",
            f"Give at most {completions}: the Job stops once more pairs than that have failed.",
        )
    account = template("serviceaccount.yaml")
    configmap = _configmap(manifest_path, name, chosen)
    job = template("job.yaml")
    job["metadata"]["name"] = name
    job["metadata"]["labels"]["app.kubernetes.io/instance"] = name

    spec = job["spec"]
    spec["completions"] = completions
    spec["parallelism"] = min(parallelism, completions)
    spec["backoffLimitPerIndex"] = int(manifest.batch["max_retries"])
    spec["maxFailedIndexes"] = max_failed
    spec["activeDeadlineSeconds"] = deadline
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
    objects = [account, configmap, job] if service_account else [configmap, job]
    if namespace is not None:
        for obj in objects:
            obj["metadata"]["namespace"] = namespace
    return objects


def _fill(obj, values: dict):
    """`obj` with every string equal to a key of `values` replaced by its value (the templates'
    placeholders: NAME, NAME-ray, CLAIM, IMAGE, ...)."""
    if isinstance(obj, dict):
        return {k: _fill(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, values) for v in obj]
    if isinstance(obj, str):
        return values.get(obj, obj)
    return obj


def _pod_specs(rayjob: dict) -> list[dict]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    return [
        rayjob["spec"]["submitterPodTemplate"]["spec"],
        cluster["headGroupSpec"]["template"]["spec"],
        *(g["template"]["spec"] for g in cluster["workerGroupSpecs"]),
    ]


def render_ray_objects(
    manifest_path: str,
    *,
    image: str | None = None,
    head_image: str | None = None,
    claim: str = DEFAULT_CLAIM,
    namespace: str | None = None,
    name: str | None = None,
    workers: int = DEFAULT_WORKERS,
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE,
    deadline: int = DEFAULT_DEADLINE,
    service_account: bool = True,
) -> list[dict]:
    """The ServiceAccount, ConfigMap, RayJob, NetworkPolicy and the head's PodDisruptionBudget that run
    `trainer batch` on a KubeRay cluster made for it: k8s/rayjob/ for any manifest, name and images.

    Every reference follows `name`: the ConfigMap, the pods' instance label and the NetworkPolicy's
    and the budget's selectors. The workers are k8s/rayjob/'s (8 CPUs, 32 GiB, one GPU each; no GPU
    when no pair asks for one); a pair that does not fit one is refused."""
    manifest, specs = _checked_manifest(manifest_path)
    name = _common_names(manifest_path, name, claim, namespace, MAX_RAY_NAME)
    _check_name(operator_namespace, "--operator-namespace", DNS_LABEL, 63)
    _check_image(image, "--image", f"pair-trainer-gpu:{__version__}")
    _check_image(head_image, "--head-image", f"pair-trainer-cpu:{__version__}")
    rayjob = template("rayjob.yaml")
    (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    worker = group["template"]["spec"]["containers"][0]
    size = worker["resources"]["limits"]
    for spec in specs:
        cpus = float(getattr(spec.resources, "cpus", 1) or 1)
        wanted = float(getattr(spec.resources, "gpus", 0) or 0)
        if cpus > float(size["cpu"]) or wanted > size[GPU_RESOURCE]:
            raise ConfigError(
                f"{manifest_path}: {spec.pair}: resources {{cpus: {cpus:g}, gpus: {wanted:g}}} do not fit "
                f"a Ray worker ({size['cpu']} CPUs, {size[GPU_RESOURCE]} GPU), so Ray would never start it.",
                "Ask for at most that in the manifest's resources, or render, then edit the worker "
                "group's resources (spec.rayClusterSpec.workerGroupSpecs).",
            )
    gpu_workers = any(float(getattr(s.resources, "gpus", 0) or 0) > 0 for s in specs)
    if not gpu_workers:  # a CPU-only manifest: CPU workers on the CPU image, off the GPU nodes
        for level in ("requests", "limits"):
            del worker["resources"][level][GPU_RESOURCE]
        del group["template"]["spec"]["tolerations"]
        group["groupName"] = "cpu"
    group["replicas"] = group["minReplicas"] = group["maxReplicas"] = workers
    values = {
        "NAME": name,
        "NAME-ray": f"{name}-ray",
        "NAME-ray-head": f"{name}-ray-head",
        "CLAIM": claim,
        "IMAGE": image or (GPU_IMAGE if gpu_workers else CPU_IMAGE),
        "HEAD_IMAGE": head_image or CPU_IMAGE,
        "OPERATOR_NAMESPACE": operator_namespace,
    }
    rayjob = _fill(rayjob, values)
    rayjob["spec"]["activeDeadlineSeconds"] = deadline
    policy = _fill(template("networkpolicy.yaml"), values)
    budget = _fill(template("poddisruptionbudget.yaml"), values)
    objects = [_configmap(manifest_path, name, None), rayjob, policy, budget]
    if service_account:
        objects.insert(0, template("serviceaccount.yaml"))
    if namespace is not None:
        for obj in objects:
            obj["metadata"]["namespace"] = namespace
    return objects


class _Dumper(yaml.SafeDumper):
    def increase_indent(
        self, flow=False, indentless=False
    ):  # lists indented under their key, as kubectl shows them
        return super().increase_indent(flow, False)

    def represent_mapping(self, tag, mapping, flow_style=None):
        # keys plain (quoted only where YAML needs it); values quoted by _str
        node = super().represent_mapping(tag, mapping, flow_style)
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag == "tag:yaml.org,2002:str":
                key.style = None
        return node


def _str(dumper, value: str):
    # every string value quoted: kubectl's YAML 1.2 reads `1e5`, `0x1F` or `.inf` unquoted as numbers
    style = "|" if "\n" in value else '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(objects: list[dict], header: str = "") -> str:
    """``objects`` as one multi-document YAML stream after ``header``, keys in their order."""
    docs = [yaml.dump(o, Dumper=_Dumper, sort_keys=False, width=1000) for o in objects]
    return header + "---\n" + "---\n".join(docs)


def _count_option(*decls: str, minimum: int, help: str, default: int | None = None, metavar: str = "N"):
    """A whole-number option of at least ``minimum``; one with a default shows it in --help."""
    shown = {} if default is None else {"default": default, "show_default": True}
    return click.option(*decls, type=click.IntRange(min=minimum), metavar=metavar, help=help, **shown)


@click.group(context_settings=CONTEXT_SETTINGS)
def k8s():
    """Kubernetes: print the objects that train a manifest's pairs as an Indexed Job or a RayJob.

    Example:

        trainer k8s render manifests/all_pairs.yaml --gpus 1 | kubectl apply -f -
    """


@k8s.command(name="render", context_settings=CONTEXT_SETTINGS)
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@click.option(
    "--ray",
    is_flag=True,
    help="Print the KubeRay RayJob (with its NetworkPolicy and the head's PodDisruptionBudget) that runs "
    "`trainer batch` instead of the Indexed Job.",
)
@click.option(
    "--image",
    metavar="IMAGE",
    help=f"The image of the pods that train (the Job's; with --ray the workers'), pushed to your registry "
    f"[default: {GPU_IMAGE} for pods with a GPU, else {CPU_IMAGE}]; a digest (repo@sha256:...) pins it.",
)
@click.option(
    "--head-image",
    metavar="IMAGE",
    help=f"With --ray: the image of the Ray head and the submitter [default: {CPU_IMAGE}].",
)
@click.option(
    "--claim",
    default=DEFAULT_CLAIM,
    show_default=True,
    metavar="PVC",
    help="The ReadWriteMany PersistentVolumeClaim mounted at /data (k8s/base/pvc.yaml).",
)
@click.option(
    "--namespace", metavar="NS", help="Put the objects in this namespace (default: kubectl's current one)."
)
@click.option(
    "--name",
    metavar="NAME",
    help="Name of the Job and the ConfigMap; with --ray the RayJob is NAME-ray [default: "
    "trainer-<manifest file name>].",
)
@_count_option(
    "--parallelism", minimum=1, default=DEFAULT_PARALLELISM, help="At most N pairs train at once (the Job)."
)
@_count_option(
    "--gpus",
    minimum=0,
    help="Whole GPUs per pod, instead of the manifest's resources.gpus (which may be a fraction for Ray).",
)
@click.option(
    "--indexes",
    metavar="I,J-K",
    help="Only these pairs of the manifest (from 0), e.g. a finished Job's status.failedIndexes; needs --name.",
)
@_count_option(
    "--deadline",
    minimum=1,
    default=DEFAULT_DEADLINE,
    metavar="SECONDS",
    help="Stop the run (activeDeadlineSeconds) after this long; finished pairs keep their artifacts.",
)
@_count_option(
    "--max-failed-indexes",
    "max_failed",
    minimum=0,
    help="Stop the Job once more than N pairs have failed [default: a tenth of its pairs, at least 1].",
)
@_count_option(
    "--workers",
    minimum=1,
    default=DEFAULT_WORKERS,
    help="With --ray: the Ray workers (one GPU each when the manifest asks for GPUs).",
)
@click.option(
    "--operator-namespace",
    default=DEFAULT_OPERATOR_NAMESPACE,
    show_default=True,
    metavar="NS",
    help="With --ray: the KubeRay operator's namespace, which the NetworkPolicy admits.",
)
@click.option(
    "--no-service-account",
    "no_account",
    is_flag=True,
    help="Leave the ServiceAccount out (it exists already, with its pull secret: a retry).",
)
def render_command(
    manifest_path,
    ray,
    image,
    head_image,
    claim,
    namespace,
    name,
    parallelism,
    gpus,
    indexes,
    deadline,
    max_failed,
    workers,
    operator_namespace,
    no_account,
):
    """Print the objects that train every pair of MANIFEST: the ServiceAccount, the ConfigMap and the
    Indexed Job, or with --ray a KubeRay RayJob.

    The Job's pod i runs `trainer run --manifest /etc/trainer/manifest.yaml --index i`; completions
    is the number of pairs, backoffLimitPerIndex the manifest's batch.max_retries. Each pod requests
    the manifest's resources (the largest of its pairs): cpus, memory (4Gi per CPU when unset) and
    whole GPUs. The manifest is checked as `trainer validate` checks it. The output is ready for
    `kubectl apply -f -`; the volume comes from k8s/base/pvc.yaml.

    Example:

        trainer k8s render manifests/all_pairs.yaml --gpus 1 --image registry.example.com/ml/pair-trainer-gpu:0.1.0 | kubectl apply -f -

        trainer k8s render manifests/all_pairs.yaml --gpus 1 --indexes 3,17 --name trainer-all-pairs-retry1 --no-service-account

        trainer k8s render manifests/all_pairs.yaml --ray --name nightly --namespace ml-train
    """
    job_only = {"parallelism": parallelism != DEFAULT_PARALLELISM, "gpus": gpus is not None}
    job_only.update(indexes=indexes is not None, max_failed_indexes=max_failed is not None)
    ray_only = {"head_image": head_image is not None, "workers": workers != DEFAULT_WORKERS}
    ray_only["operator_namespace"] = operator_namespace != DEFAULT_OPERATOR_NAMESPACE
    misplaced = [k for k, given in (job_only if ray else ray_only).items() if given]
    if misplaced:
        option = "--" + misplaced[0].replace("_", "-")
        raise ConfigError(
            f"{option} is for {'the Indexed Job' if ray else '--ray'} only.",
            "Leave it out, or render the other kind: see trainer k8s render --help.",
        )
    if ray:
        objects = render_ray_objects(
            manifest_path,
            image=image,
            head_image=head_image,
            claim=claim,
            namespace=namespace,
            name=name,
            workers=workers,
            operator_namespace=operator_namespace,
            deadline=deadline,
            service_account=not no_account,
        )
        rayjob = next(o for o in objects if o["kind"] == "RayJob")
        (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        header = (
            f"# trainer k8s render --ray {comment_safe(manifest_path)} (pair-trainer {__version__}): "
            f"RayJob {rayjob['metadata']['name']}, {group['replicas']} worker(s) of {limits['cpu']} CPU, "
            f"{limits['memory']}, {limits.get(GPU_RESOURCE, 0)} GPU; deadline {deadline} s\n"
        )
    else:
        objects = render_objects(
            manifest_path,
            image=image,
            claim=claim,
            namespace=namespace,
            name=name,
            parallelism=parallelism,
            indexes=indexes,
            gpus=gpus,
            deadline=deadline,
            max_failed=max_failed,
            service_account=not no_account,
        )
        job = objects[-1]
        spec = job["spec"]
        limits = spec["template"]["spec"]["containers"][0]["resources"]["limits"]
        header = (
            f"# trainer k8s render {comment_safe(manifest_path)} (pair-trainer {__version__}): "
            f"{spec['completions']} pair(s) -> completions {spec['completions']}, "
            f"parallelism {spec['parallelism']}, backoffLimitPerIndex {spec['backoffLimitPerIndex']}, "
            f"maxFailedIndexes {spec['maxFailedIndexes']}, deadline {deadline} s; "
            f"each pod {limits['cpu']} CPU, {limits['memory']}, {limits.get(GPU_RESOURCE, 0)} GPU\n"
        )
    click.echo(to_yaml(objects, header), nl=False)


@hookimpl
def trainer_register_commands(cli):
    """Add the ``k8s`` command group."""
    cli.add_command(k8s)
