"""What a platform team applies as it is: the images, k8s/, and `trainer k8s render`.

Every file under k8s/ and every rendered Job validates against the Kubernetes schemas of 1.30 and of
the newest release kubernetes-validate knows; the kustomizations build with kubectl; the RayJob's
fields are KubeRay's; hadolint passes both Dockerfiles; and the command lines the Job, the RayJob,
the images and docs/deploy.md run are accepted by the CLI. The tools come with the `test` extra;
without one a test skips here and fails in CI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from trainer_core import __version__
from trainer_core.manifest import load_manifest, manifest_from_dict
from trainer_core.testing import resolved

REPO = Path(__file__).resolve().parents[1]

K8S = REPO / "k8s"
DOCKERFILES = {"gpu": REPO / "docker" / "Dockerfile.gpu", "cpu": REPO / "docker" / "Dockerfile.cpu"}
DEPLOY_DOC = REPO / "docs" / "deploy.md"
ALL_PAIRS = "manifests/all_pairs.yaml"
DEMO = "manifests/demo.yaml"
MIN_KUBERNETES = "1.30.0"
POD_MANIFEST = "/etc/trainer/manifest.yaml"
PREEMPTED = 143  # the exit code of a `trainer` stopped by SIGTERM: 128 + 15
SERVICE_ACCOUNT = "pair-trainer"
OBJECT_STORE_SECRET = "trainer-object-store"
CONSTRAINTS = REPO / "docker" / "constraints-gpu.txt"


# -- tools ------------------------------------------------------------------------------------------


def _missing(what: str):
    message = f"{what} is not installed; pip install -e '.[test]' brings it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str) -> str:
    """A command-line tool of the test extra: the one beside this Python first (the venv's), then PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        _missing(name)
    return found


def kubernetes_versions() -> tuple[str, ...]:
    try:
        import kubernetes_validate
    except ImportError:
        _missing("kubernetes-validate")
    return (MIN_KUBERNETES, kubernetes_validate.latest_version())


def validate_kubernetes(obj: dict) -> None:
    """Strict validation (unknown fields are errors) against Kubernetes 1.30 and the newest schemas."""
    import kubernetes_validate

    for version in kubernetes_versions():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version} at {where}: {exc.message}"
            )


# -- KubeRay's RayJob ---------------------------------------------------------------------------------
# The ray.io/v1 RayJob of KubeRay's CRD (ray-operator/config/crd/bases/ray.io_rayjobs.yaml), field by
# field as its Go types define them (ray-operator/apis/ray/v1/rayjob_types.go, raycluster_types.go),
# which generate the CRD. Pod templates are Kubernetes PodTemplateSpecs: checked with the schemas.

RAYJOB_SPEC = {
    "activeDeadlineSeconds": int,
    "backoffLimit": int,
    "clusterSelector": dict,
    "deletionStrategy": dict,
    "entrypoint": str,
    "entrypointNumCpus": (int, float),
    "entrypointNumGpus": (int, float),
    "entrypointResources": str,
    "jobId": str,
    "managedBy": str,
    "metadata": dict,
    "rayClusterSpec": dict,
    "runtimeEnvYAML": str,
    "schedule": str,
    "shutdownAfterJobFinishes": bool,
    "submissionMode": str,
    "submitterConfig": dict,
    "submitterPodTemplate": dict,
    "suspend": bool,
    "ttlSecondsAfterFinished": int,
}
#: the RayJob fields KubeRay 1.1 already had (submissionMode is new in 1.1): docs/deploy.md's minimum
KUBERAY_1_1 = {
    "activeDeadlineSeconds",
    "clusterSelector",
    "entrypoint",
    "entrypointNumCpus",
    "entrypointNumGpus",
    "entrypointResources",
    "jobId",
    "metadata",
    "rayClusterSpec",
    "runtimeEnvYAML",
    "shutdownAfterJobFinishes",
    "submissionMode",
    "submitterPodTemplate",
    "suspend",
    "ttlSecondsAfterFinished",
}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
RAYCLUSTER_SPEC = {
    "headGroupSpec": dict,
    "workerGroupSpecs": list,
    "rayVersion": str,
    "enableInTreeAutoscaling": bool,
    "autoscalerOptions": dict,
    "headServiceAnnotations": dict,
    "suspend": bool,
    "authOptions": dict,
}
#: RayCluster's authOptions (KubeRay 1.5.1 added it; rayVersion must be 2.52 or newer)
AUTH_OPTIONS = {"mode": str, "secretName": str, "enableK8sTokenAuth": bool}
AUTH_MODES = {"disabled", "token"}
HEAD_GROUP = {
    "serviceType": str,
    "headService": dict,
    "enableIngress": bool,
    "rayStartParams": dict,
    "template": dict,
}
WORKER_GROUP = {
    "groupName": str,
    "replicas": int,
    "minReplicas": int,
    "maxReplicas": int,
    "numOfHosts": int,
    "rayStartParams": dict,
    "template": dict,
    "scaleStrategy": dict,
}
# required in the CRD (json tags without omitempty); rayStartParams was required up to KubeRay 1.2
RAYCLUSTER_REQUIRED = {"headGroupSpec"}
HEAD_REQUIRED = {"rayStartParams", "template"}
WORKER_REQUIRED = {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"}


def check_fields(obj: dict, fields: dict, required: set, where: str) -> None:
    assert isinstance(obj, dict), f"{where}: expected an object"
    unknown = set(obj) - set(fields)
    assert not unknown, f"{where}: {sorted(unknown)} are not fields of KubeRay's RayJob CRD"
    missing = required - set(obj)
    assert not missing, f"{where}: the CRD requires {sorted(missing)}"
    for key, value in obj.items():
        kind = fields[key]
        assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), (
            f"{where}.{key}: expected {kind}, got {value!r}"
        )


def validate_pod_template(template: dict, where: str) -> None:
    validate_kubernetes(
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": where.lower()}, "template": template}
    )


def check_rayjob(obj: dict) -> None:
    assert obj["apiVersion"] == "ray.io/v1" and obj["kind"] == "RayJob"
    assert set(obj) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = obj["spec"]
    check_fields(spec, RAYJOB_SPEC, set(), "spec")
    assert set(spec) <= KUBERAY_1_1, (
        f"spec uses fields newer than KubeRay 1.1: {sorted(set(spec) - KUBERAY_1_1)}"
    )
    assert spec.get("submissionMode", "K8sJobMode") in SUBMISSION_MODES
    if "submitterPodTemplate" in spec:
        validate_pod_template(spec["submitterPodTemplate"], "submitterPodTemplate")
    if "clusterSelector" in spec:  # a job for an existing RayCluster: no cluster of its own
        assert "rayClusterSpec" not in spec and "shutdownAfterJobFinishes" not in spec
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in spec["clusterSelector"].items())
        return
    check_raycluster_spec(spec["rayClusterSpec"], "spec.rayClusterSpec")


def check_raycluster(obj: dict) -> None:
    """A ray.io/v1 RayCluster: its spec is a RayJob's rayClusterSpec (the same Go type)."""
    assert obj["apiVersion"] == "ray.io/v1" and obj["kind"] == "RayCluster"
    assert set(obj) <= {"apiVersion", "kind", "metadata", "spec"}
    check_raycluster_spec(obj["spec"], "spec")


def check_ray_object(obj: dict) -> None:
    if obj["kind"] == "RayJob":
        check_rayjob(obj)
    elif obj["kind"] == "RayCluster":
        check_raycluster(obj)
    else:
        validate_kubernetes(obj)


def check_raycluster_spec(cluster: dict, where: str) -> None:
    check_fields(cluster, RAYCLUSTER_SPEC, RAYCLUSTER_REQUIRED, where)
    if "authOptions" in cluster:
        check_fields(cluster["authOptions"], AUTH_OPTIONS, set(), f"{where}.authOptions")
        assert cluster["authOptions"].get("mode", "disabled") in AUTH_MODES
    head = cluster["headGroupSpec"]
    check_fields(head, HEAD_GROUP, HEAD_REQUIRED, "headGroupSpec")
    groups = [("headGroupSpec", head)]
    for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
        check_fields(group, WORKER_GROUP, WORKER_REQUIRED, f"workerGroupSpecs[{i}]")
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        groups.append((f"workerGroupSpecs[{i}]", group))
    for where, group in groups:
        params = group["rayStartParams"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), (
            f"{where}.rayStartParams: strings only"
        )
        validate_pod_template(group["template"], where.split("[")[0])


# -- reading ------------------------------------------------------------------------------------------


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def k8s_files() -> list[Path]:
    """The objects and kustomizations under k8s/ (not kustomize's own configuration files)."""
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomizeconfig.yaml")


def kustomization_dirs() -> list[Path]:
    return sorted(
        p.parent
        for p in K8S.rglob("kustomization.yaml")
        if yaml.safe_load(p.read_text())["kind"] == "Kustomization"
    )


def flavour_of(image: str) -> str:
    """`cpu` or `gpu`: the image's own name (pair-trainer-cpu, pair-trainer-gpu), whatever the registry."""
    match = re.search(r"(?:^|/)pair-trainer-(cpu|gpu)(?::|@|$)", image)
    assert match, f"{image} is neither pair-trainer-cpu nor pair-trainer-gpu"
    return match[1]


def the(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def kustomize(path: Path) -> list[dict]:
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return docs_of(proc.stdout)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


@pytest.fixture(scope="module")
def cli():
    """The `trainer` group with the plugins' commands registered, as `trainer` itself does."""
    from trainer_core.cli import cli
    from trainer_core.plugins import Plugins

    Plugins.load().register_commands(cli)
    return cli


def invoke(cli, *args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def parse(cli, argv: list[str]) -> click.Context | None:
    """Parse a `trainer ...` command line down to its command, as the CLI would, without running it.

    None for a line that stops while parsing, as `--help` and `--version` do (exit code 0)."""
    command, args, name, parent = cli, list(argv), "trainer", None
    while True:
        try:
            ctx = command.make_context(name, args, parent=parent)
        except click.exceptions.Exit as stop:
            assert stop.exit_code == 0, argv
            return None
        if not isinstance(command, click.Group):
            return ctx
        protected = getattr(ctx, "_protected_args", None)
        rest = [*(ctx.protected_args if protected is None else protected), *ctx.args]
        assert rest, f"`{' '.join(argv)}` names no command"
        name, command, args = command.resolve_command(ctx, rest)
        parent = ctx


def render(cli, *args) -> list[dict]:
    result = invoke(cli, "k8s", "render", *args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# trainer k8s render ")
    objects = docs_of(result.output)
    assert [o["kind"] for o in objects] == ["ServiceAccount", "ConfigMap", "Job"]
    return objects


# -- k8s/ -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_under_k8s_validates(path):
    for obj in docs_of(path.read_text()):
        if obj["apiVersion"].startswith("kustomize.config.k8s.io/"):
            assert path.name == "kustomization.yaml"  # built (and so checked) by kubectl below
        else:
            check_ray_object(obj)


def test_the_kustomizations_build_and_every_file_is_in_one():
    shared = {"PersistentVolumeClaim", "ConfigMap", "ServiceAccount"}
    expected = {
        K8S: shared | {"Job"},
        K8S / "base": shared,
        K8S / "rayjob": shared | {"RayJob", "NetworkPolicy", "PodDisruptionBudget"},
        K8S / "data-shell": shared | {"Pod"},
        K8S / "raycluster": shared | {"RayCluster", "NetworkPolicy"},
        K8S / "raycluster" / "submit": {"RayJob"},
    }
    assert set(kustomization_dirs()) == set(expected)
    listed = set()
    for folder in (*expected, K8S / "image", K8S / "retrain"):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        listed |= {(folder / r).resolve() for r in kustomization.get("resources", []) if r.endswith(".yaml")}
        for config in kustomization.get("configurations", []):
            assert (folder / config).is_file(), (folder, config)
    orphans = {p.resolve() for p in k8s_files() if p.name != "kustomization.yaml"} - listed
    assert not orphans, f"files no kustomization applies: {sorted(map(str, orphans))}"
    for folder, kinds in expected.items():
        objects = kustomize(folder)
        assert {o["kind"] for o in objects} == kinds, folder
        for obj in objects:
            check_ray_object(obj)


def test_the_image_component_points_every_pod_at_your_registry(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    component = copy / "image" / "kustomization.yaml"
    text = component.read_text()
    for flavour in ("cpu", "gpu"):
        text = text.replace(
            f"newName: pair-trainer-{flavour}", f"newName: registry.example.com/ml/pair-trainer-{flavour}"
        )
    component.write_text(text)
    for folder, flavours in (
        (copy, {"gpu"}),
        (copy / "rayjob", {"cpu", "gpu"}),
        (copy / "data-shell", {"cpu"}),
        (copy / "raycluster", {"cpu", "gpu"}),
        (copy / "raycluster" / "submit", {"cpu"}),
    ):
        images = re.findall(r"image: (\S+)", yaml.safe_dump_all(kustomize(folder)))
        assert set(images) == {f"registry.example.com/ml/pair-trainer-{f}:{__version__}" for f in flavours}, (
            folder,
            images,
        )


def test_each_image_is_pinned_by_its_own_digest_and_pulled_by_policy(tmp_path):
    """Two image names: a digest for the GPU image reaches only the GPU pods, the CPU one only the others."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    digests = {"cpu": "sha256:" + "c" * 64, "gpu": "sha256:" + "9" * 64}
    component = copy / "image" / "kustomization.yaml"
    text = component.read_text()
    for flavour, digest in digests.items():
        text = text.replace(
            f"newName: pair-trainer-{flavour}\n",
            f"newName: registry.example.com/ml/pair-trainer-{flavour}\n    digest: {digest}\n",
        )
    component.write_text(text)
    seen = set()
    for folder in (
        copy,
        copy / "rayjob",
        copy / "data-shell",
        copy / "raycluster",
        copy / "raycluster" / "submit",
    ):
        for obj in kustomize(folder):
            for where, pod in pod_templates(obj):
                for container in pod["containers"]:
                    flavour = flavour_of(container["image"])
                    assert container["image"] == (
                        f"registry.example.com/ml/pair-trainer-{flavour}@{digests[flavour]}"
                    ), where
                    assert container["imagePullPolicy"] == "Always", where
                    seen.add(flavour)
    assert seen == {"cpu", "gpu"}
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    assert "digest: sha256:" in text and "--image registry.example.com/ml/pair-trainer-gpu@sha256:" in text


def test_the_objects_fit_together():
    files = {p.relative_to(K8S).as_posix(): docs_of(p.read_text()) for p in k8s_files()}
    pvc, configmap = files["base/pvc.yaml"][0], files["base/configmap.yaml"][0]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert configmap["data"]["manifest.yaml"] == (REPO / ALL_PAIRS).read_text(encoding="utf-8")
    pods = {
        "job.yaml": [files["job.yaml"][0]["spec"]["template"]],
        "data-shell/pod.yaml": [{"spec": files["data-shell/pod.yaml"][0]["spec"]}],
        "rayjob/rayjob.yaml": [
            files["rayjob/rayjob.yaml"][0]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"],
            *(
                g["template"]
                for g in files["rayjob/rayjob.yaml"][0]["spec"]["rayClusterSpec"]["workerGroupSpecs"]
            ),
        ],
    }
    for name, templates in pods.items():
        for template in templates:
            volumes = {v["name"]: v for v in template["spec"]["volumes"]}
            container = template["spec"]["containers"][0]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert (
                volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
            ), name
            assert volumes[mounts["/etc/trainer"]]["configMap"]["name"] == configmap["metadata"]["name"], name
            assert "emptyDir" in volumes[mounts["/tmp"]], name
            assert (
                container["workingDir"] == "/data" and {"name": "HOME", "value": "/tmp"} in container["env"]
            ), name
            gpu = "nvidia.com/gpu" in container["resources"]["limits"]
            assert container["image"] == f"pair-trainer-{'gpu' if gpu else 'cpu'}:{__version__}", name
            assert container["imagePullPolicy"] == "Always", name
            assert template["spec"]["securityContext"]["runAsUser"] == 10001, name
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name


def test_the_indexed_job_keeps_its_contract():
    job = docs_of((K8S / "job.yaml").read_text())[0]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == len(load_manifest(str(REPO / ALL_PAIRS)).pairs) == 42
    assert spec["backoffLimitPerIndex"] == load_manifest(str(REPO / ALL_PAIRS)).batch["max_retries"]
    # a broken image fails every pair: the Job stops after 6 failed pairs, not 42 x 3 pod starts,
    # and nothing runs past 48 hours
    assert spec["maxFailedIndexes"] == 5 and spec["activeDeadlineSeconds"] == 48 * 3600
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailIndex",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]},
    }
    # 143 = 128 + SIGTERM, which dumb-init passes on: preempted or deleted, retried without counting
    assert rules[1] == {
        "action": "Ignore",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [PREEMPTED]},
    }
    assert rules[2] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["name"] == "trainer"
    assert container["args"] == ["run", "--manifest", POD_MANIFEST, "--index", "$(JOB_COMPLETION_INDEX)"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    for level in ("requests", "limits"):
        assert container["resources"][level]["nvidia.com/gpu"] == 1
        assert {"cpu", "memory"} <= set(container["resources"][level])
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_the_rayjob_runs_trainer_batch_on_gpu_workers():
    rayjob = docs_of((K8S / "rayjob" / "rayjob.yaml").read_text())[0]
    spec = rayjob["spec"]
    assert shlex.split(spec["entrypoint"]) == ["trainer", "batch", POD_MANIFEST]
    cluster = spec["rayClusterSpec"]
    (workers,) = cluster["workerGroupSpecs"]
    worker = workers["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert (
        cluster["rayVersion"]
        == dockerfile_args("gpu")["RAY_VERSION"]
        == dockerfile_args("cpu")["RAY_VERSION"]
    )


# -- trainer k8s render -------------------------------------------------------------------------------


def test_render_all_pairs_is_what_k8s_holds(cli):
    account, configmap, job = render(cli, ALL_PAIRS, "--gpus", "1")
    assert account == docs_of((K8S / "base" / "serviceaccount.yaml").read_text())[0]
    assert configmap == docs_of((K8S / "base" / "configmap.yaml").read_text())[0]
    assert job == docs_of((K8S / "job.yaml").read_text())[0]
    assert job["spec"]["completions"] == len(load_manifest(ALL_PAIRS).pairs)
    for obj in (account, configmap, job):
        validate_kubernetes(obj)


def container_of(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_render_demo_asks_for_the_manifest_s_one_cpu_and_no_gpu(cli):
    account, configmap, job = render(cli, DEMO)
    container, pod = container_of(job), job["spec"]["template"]["spec"]
    # resources: {cpus: 1, gpus: 0}, memory unset: 4Gi per CPU
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "4Gi"},
        "limits": {"cpu": "1", "memory": "4Gi"},
    }
    assert container["image"] == f"pair-trainer-cpu:{__version__}", (
        "no GPU: the image without NVIDIA variables"
    )
    assert "tolerations" not in pod, "a CPU pod must not be let onto tainted GPU nodes"
    # everything else is k8s/job.yaml's, filled in for the demo
    expected_cm = docs_of((K8S / "base" / "configmap.yaml").read_text())[0]
    expected_job = docs_of((K8S / "job.yaml").read_text())[0]
    for obj in (expected_cm, expected_job, expected_job["spec"]["template"]):
        obj["metadata"]["labels"]["app.kubernetes.io/instance"] = "trainer-demo"
    expected_cm["metadata"]["name"] = expected_job["metadata"]["name"] = "trainer-demo"
    expected_cm["data"]["manifest.yaml"] = (REPO / DEMO).read_text(encoding="utf-8")
    expected_job["spec"].update(completions=3, parallelism=3, backoffLimitPerIndex=2, maxFailedIndexes=1)
    expected_pod = expected_job["spec"]["template"]["spec"]
    del expected_pod["tolerations"]
    expected_pod["containers"][0].update(image=container["image"], resources=container["resources"])
    volumes = {v["name"]: v for v in expected_pod["volumes"]}
    volumes["manifest"]["configMap"]["name"] = "trainer-demo"
    assert (configmap, job) == (expected_cm, expected_job)
    validate_kubernetes(job)


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def test_render_takes_cpu_memory_and_gpus_from_the_manifest_the_largest_pair_s(cli, tmp_path):
    path = write(
        tmp_path,
        (
            "version: 1\ndefaults: {resources: {cpus: 2, gpus: 1, memory: 12Gi}}\n"
            "pairs: [ETHUSDT, {pair: BTCUSDT, resources: {cpus: 6, memory: 24576Mi, gpus: 2}}, "
            "{pair: SOLUSDT, resources: {cpus: 0.5, memory: 20G}}]\n"
        ),
    )
    _, _, job = render(cli, path)
    container = container_of(job)
    wanted = {"cpu": "6", "memory": "24576Mi", "nvidia.com/gpu": 2}  # 24576Mi (24 GiB) > 20G > 12Gi
    assert container["resources"] == {"requests": wanted, "limits": wanted}
    assert container["image"] == f"pair-trainer-gpu:{__version__}"
    assert job["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    validate_kubernetes(job)
    # a retry of just the small pair asks only for what it needs
    _, _, retry = render(cli, path, "--indexes", "2", "--name", "retry")
    assert container_of(retry)["resources"]["limits"] == {"cpu": "500m", "memory": "20G", "nvidia.com/gpu": 1}
    validate_kubernetes(retry)
    # --gpus replaces the manifest's GPUs for every pair, 0 included
    _, _, cpu_only = render(cli, path, "--gpus", "0")
    assert container_of(cpu_only)["resources"]["limits"] == {"cpu": "6", "memory": "24576Mi"}
    assert container_of(cpu_only)["image"] == f"pair-trainer-cpu:{__version__}"
    assert "tolerations" not in cpu_only["spec"]["template"]["spec"]


def test_render_refuses_a_fraction_of_a_gpu_and_names_the_ways_out(cli, tmp_path):
    for path in (
        ALL_PAIRS,
        write(tmp_path, "version: 1\npairs: [ETHUSDT, {pair: BTCUSDT, resources: {gpus: 1.5}}]\n"),
    ):
        result = invoke(cli, "k8s", "render", path)
        assert result.exit_code == 2, result.output
        first, hint = result.output.strip().splitlines()
        assert "resources.gpus" in first and "fraction of a GPU" in first
        assert first.endswith("which a Kubernetes Job's pod cannot request.")
        for option in ("whole GPUs", "--gpus 1", "time-slicing", "MIG", "RayJob"):
            assert option in hint, option
        assert "Traceback" not in result.output


def test_render_options(cli):
    account, configmap, job = render(
        cli,
        ALL_PAIRS,
        "--image",
        "registry.example.com/ml/pair-trainer-gpu:0.1.0",
        "--claim",
        "shared-data",
        "--namespace",
        "ml-train",
        "--name",
        "retry-1",
        "--parallelism",
        "2",
        "--indexes",
        "40,1,3-4",
        "--gpus",
        "1",
    )
    assert (
        account["metadata"]["namespace"]
        == configmap["metadata"]["namespace"]
        == job["metadata"]["namespace"]
        == "ml-train"
    )
    assert configmap["metadata"]["name"] == job["metadata"]["name"] == "retry-1"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/ml/pair-trainer-gpu:0.1.0"
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "shared-data"
    assert volumes["manifest"]["configMap"]["name"] == "retry-1"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (4, 2)
    assert (job["spec"]["maxFailedIndexes"], job["spec"]["activeDeadlineSeconds"]) == (1, 172800)
    # the retry's manifest lists just those pairs, with their own settings, in the original order
    original = load_manifest(ALL_PAIRS)
    subset = manifest_from_dict(yaml.safe_load(configmap["data"]["manifest.yaml"]))
    assert (
        subset.pair_names
        == [original.pairs[i].pair for i in (1, 3, 4, 40)]
        == ["ETHUSDT", "SOLUSDT", "XRPUSDT", "PEPEUSDT"]
    )
    assert (
        resolved(subset.resolve("PEPEUSDT")).config_hash == resolved(original.resolve("PEPEUSDT")).config_hash
    )
    for obj in (account, configmap, job):
        validate_kubernetes(obj)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "Trainer_All"], "--name 'Trainer_All' is not a valid Kubernetes name"),
        (["--name", "x" * 51], "is not a valid Kubernetes name"),
        (["--namespace", "ML"], "--namespace 'ML' is not a valid Kubernetes name"),
        (["--claim", "data volume"], "--claim 'data volume' is not a valid Kubernetes name"),
        (["--image", "my image"], "is not an image reference"),
        (["--indexes", "42", "--name", "r"], "'42' is outside the manifest's 42 pair(s) (0..41)"),
        (["--indexes", "5-2", "--name", "r"], "'5-2' is outside"),
        (["--indexes", "1,x", "--name", "r"], "'x' is not an index or a range"),
        (["--indexes", "1"], "--indexes needs --name"),
    ],
)
def test_render_refuses_bad_options_with_exit_2_and_a_hint(cli, args, message):
    result = invoke(cli, "k8s", "render", ALL_PAIRS, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Hint: " in result.output


@pytest.mark.parametrize(
    "manifest, message",
    [
        (
            "version: 1\noutput: /home/me/artifacts\npairs: [ETHUSDT]\n",
            "output '/home/me/artifacts' is outside the volume",
        ),
        (
            "version: 1\ndefaults: {data: {path: /srv/inputs/}}\npairs: [ETHUSDT]\n",
            "ETHUSDT: data.path '/srv/inputs/' is outside",
        ),
        ("version: 1\npairs: []\n", "the manifest lists no pairs"),
        ("version: 1\npairs: [ETHUSDT]\ndefaults: {train: {epochs: 0}}\n", "defaults.train.epochs"),
    ],
)
def test_render_refuses_manifests_the_pods_could_not_run(cli, tmp_path, manifest, message):
    path = tmp_path / "m.yaml"
    path.write_text(manifest)
    result = invoke(cli, "k8s", "render", path)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Hint: " in result.output


def test_render_accepts_paths_on_the_volume_and_urls(cli, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\noutput: s3://bucket/runs\ndefaults: {data: {path: '/data/inputs/{pair}.feather'}}\npairs: [ETHUSDT]\n"
    )
    (job,) = [o for o in render(cli, path) if o["kind"] == "Job"]
    assert job["metadata"]["name"] == "trainer-m" and job["spec"]["completions"] == 1


def test_render_from_the_installed_command_stays_light():
    code = (
        "import sys\n"
        "from trainer_core.cli import main\n"
        "try:\n"
        f"    main(['k8s', 'render', {ALL_PAIRS!r}, '--gpus', '1'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'ray', 'matplotlib', 'sklearn'}\n"
        "print('HEAVY=' + ','.join(sorted(heavy)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'kind: "Job"' in proc.stdout and "completions: 42" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout.strip().splitlines()[-1]


def test_render_works_from_the_wheel_without_the_repository(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("pair_trainer-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import sys, trainer_plugins.commands.k8s as k\n"
        f"assert k.__file__.startswith({str(site)!r}), k.__file__\n"
        "from trainer_core.cli import main\n"
        f"main(['k8s', 'render', {str(REPO / DEMO)!r}])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert [o["kind"] for o in docs_of(proc.stdout)] == ["ServiceAccount", "ConfigMap", "Job"]


def test_every_render_option_is_in_manifest_md(cli):
    text = (REPO / "docs" / "manifest.md").read_text(encoding="utf-8")
    section = text[text.index("### trainer k8s render") :]
    section = section[: section.index("\n### ", 1)]
    group = cli.commands["k8s"]
    for name, command in group.commands.items():
        assert f"trainer k8s {name}" in text
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("-"):
                    assert f"`{opt}" in section, f"trainer k8s {name} {opt} is not in docs/manifest.md"


# -- trainer k8s render: hostile input --------------------------------------------------------------------


class Yaml12Loader(yaml.SafeLoader):
    """Reads scalars as kubectl's YAML 1.2 does where YAML 1.1 differs: `1e5` is a number there."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"),
)


def test_render_quotes_every_string_so_kubectl_reads_strings(cli, tmp_path):
    manifest = write(tmp_path, "version: 1\noutput: out\npairs: [ETHUSDT]\n")
    result = invoke(cli, "k8s", "render", manifest, "--name", "1e5", "--namespace", "1e3", "--claim", "2e10")
    assert result.exit_code == 0, result.output
    as_kubectl_reads = [d for d in yaml.load_all(result.output, Loader=Yaml12Loader) if d]
    account, configmap, job = as_kubectl_reads
    assert configmap["metadata"]["name"] == job["metadata"]["name"] == "1e5"
    assert job["metadata"]["namespace"] == "1e3"
    assert job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "2e10"
    assert as_kubectl_reads == docs_of(result.output), "kubectl would read another value than the one meant"


def test_render_escapes_the_manifest_path_in_its_header(cli, tmp_path):
    evil = tmp_path / "m\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: pwned}\n#.yaml"
    evil.write_text("version: 1\npairs: [ETHUSDT, BTCUSDT]\n")
    for extra in ([], ["--indexes", "1"]):  # the retry's manifest names its source too
        result = invoke(cli, "k8s", "render", evil, "--name", "m", *extra)
        assert result.exit_code == 0, result.output
        objects = docs_of(result.output)
        assert [o["kind"] for o in objects] == ["ServiceAccount", "ConfigMap", "Job"]
        assert result.output.splitlines()[0].startswith("# trainer k8s render ")
        assert "\\nkind: Namespace" in result.output.splitlines()[0]
        assert yaml.safe_load(objects[1]["data"]["manifest.yaml"])["pairs"] == (
            ["BTCUSDT"] if extra else ["ETHUSDT", "BTCUSDT"]
        )


@pytest.mark.parametrize(
    "output", ["/data/../etc/out", "../etc/out", "/data/./../../tmp", "inputs/../../root"]
)
def test_render_refuses_a_path_that_leaves_the_volume_through_dot_dot(cli, tmp_path, output):
    result = invoke(
        cli, "k8s", "render", write(tmp_path, f"version: 1\noutput: {output}\npairs: [ETHUSDT]\n")
    )
    assert result.exit_code == 2, result.output
    assert f"output {output!r} is outside the volume" in result.output and "Hint: " in result.output


def test_render_refuses_a_configmap_over_one_mebibyte(cli, tmp_path):
    filler = "".join(f"# {i:07d} {'x' * 90}\n" for i in range(11000))  # about 1.1 MB of comments
    result = invoke(cli, "k8s", "render", write(tmp_path, f"version: 1\n{filler}pairs: [ETHUSDT]\n"))
    assert result.exit_code == 2, result.output
    assert "a ConfigMap holds at most 1,048,576 (1 MiB)" in result.output and "Hint: " in result.output
    assert "kind:" not in result.output, "nothing half-rendered"
    # just under the limit renders
    small = "".join(f"# {i:07d} {'x' * 90}\n" for i in range(10000))
    assert (
        invoke(cli, "k8s", "render", write(tmp_path, f"version: 1\n{small}pairs: [ETHUSDT]\n")).exit_code == 0
    )


@pytest.mark.parametrize(
    "setting",
    [
        "model: {builder: lstmm}",
        "balance: {method: oversamplee}",
        "reporters: [metadata, histroy]",
    ],
)
def test_render_checks_the_components_as_validate_does(cli, tmp_path, setting):
    manifest = write(tmp_path, f"version: 1\ndefaults: {{{setting}}}\npairs: [ETHUSDT]\n")
    validate = invoke(cli, "validate", manifest)
    assert validate.exit_code == 2, validate.output
    for args in ([], ["--ray"]):
        result = invoke(cli, "k8s", "render", manifest, *args)
        assert result.exit_code == 2, result.output
        assert result.output.splitlines()[0] == validate.output.splitlines()[0]
        assert "kind:" not in result.output


def test_summary_only_refuses_force(cli):
    result = invoke(cli, "batch", DEMO, "--summary-only", "--force")
    assert result.exit_code == 2 and "--summary-only trains nothing" in result.output


# -- trainer k8s render --ray ----------------------------------------------------------------------------


RAY_KINDS = ["ServiceAccount", "ConfigMap", "RayJob", "NetworkPolicy", "PodDisruptionBudget"]


def render_ray(cli, *args) -> list[dict]:
    result = invoke(cli, "k8s", "render", "--ray", *args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# trainer k8s render --ray ")
    objects = docs_of(result.output)
    assert [o["kind"] for o in objects] == RAY_KINDS
    return objects


def test_render_ray_all_pairs_is_what_k8s_rayjob_holds(cli):
    objects = render_ray(cli, ALL_PAIRS)
    files = [
        K8S / "base" / "serviceaccount.yaml",
        K8S / "base" / "configmap.yaml",
        K8S / "rayjob" / "rayjob.yaml",
        K8S / "rayjob" / "networkpolicy.yaml",
        K8S / "rayjob" / "poddisruptionbudget.yaml",
    ]
    for obj, path in zip(objects, files, strict=True):
        assert obj == docs_of(path.read_text())[0], path


def test_render_ray_every_reference_follows_the_name(cli):
    gpu = "registry.example.com/ml/pair-trainer-gpu@sha256:" + "9" * 64
    cpu = "registry.example.com/ml/pair-trainer-cpu:0.1.0-abc123"
    account, configmap, rayjob, policy, budget = render_ray(
        cli,
        ALL_PAIRS,
        "--name",
        "nightly",
        "--namespace",
        "ml-train",
        "--claim",
        "shared-data",
        "--image",
        gpu,
        "--head-image",
        cpu,
        "--workers",
        "2",
        "--operator-namespace",
        "kuberay",
        "--deadline",
        "3600",
    )
    check_rayjob(rayjob)
    for obj in (account, configmap, policy, budget):
        validate_kubernetes(obj)
        assert obj["metadata"]["namespace"] == "ml-train"
    assert rayjob["metadata"]["namespace"] == "ml-train"
    assert rayjob["metadata"]["name"] == "nightly-ray" and configmap["metadata"]["name"] == "nightly"
    assert rayjob["spec"]["activeDeadlineSeconds"] == 3600
    (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    pods = dict(pod_templates(rayjob))
    templates = {
        "submitter": rayjob["spec"]["submitterPodTemplate"],
        "head": rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"],
        "worker": group["template"],
    }
    assert len(pods) == 3
    for role, template in templates.items():
        pod = template["spec"]
        assert template["metadata"]["labels"]["app.kubernetes.io/instance"] == "nightly", role
        assert pod["serviceAccountName"] == account["metadata"]["name"], role
        (container,) = pod["containers"]
        assert container["image"] == (gpu if role == "worker" else cpu), role
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RAY_USAGE_STATS_ENABLED"] == "0", role
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] == "nightly", role
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] == "shared-data", role
    head, worker, submitter = (templates[r]["metadata"]["labels"] for r in ("head", "worker", "submitter"))
    other = {**head, "app.kubernetes.io/instance": "trainer-all-pairs"}
    assert labels_match(policy["spec"]["podSelector"], head) and labels_match(
        policy["spec"]["podSelector"], worker
    )
    assert not labels_match(policy["spec"]["podSelector"], other), "another run's pods are not this policy's"
    assert admitted(policy, worker, 6379) and not admitted(policy, other, 6379)
    assert admitted(policy, submitter, 8265)
    assert not admitted(policy, {**submitter, "app.kubernetes.io/instance": "trainer-all-pairs"}, 8265)
    operator = {"app.kubernetes.io/name": "kuberay-operator"}
    assert admitted(policy, operator, 8265, {"kubernetes.io/metadata.name": "kuberay"})
    assert not admitted(policy, operator, 8265, {"kubernetes.io/metadata.name": "ray-system"})
    assert labels_match(budget["spec"]["selector"], head) and not labels_match(
        budget["spec"]["selector"], worker
    )
    assert not labels_match(budget["spec"]["selector"], other)
    assert budget["spec"]["maxUnavailable"] == 0


def test_render_ray_of_a_cpu_manifest_has_cpu_workers(cli):
    _, _, rayjob, _, _ = render_ray(cli, DEMO)
    check_rayjob(rayjob)
    (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    assert group["groupName"] == "cpu" and "tolerations" not in group["template"]["spec"]
    assert container["image"] == f"pair-trainer-cpu:{__version__}"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--parallelism", "2"], "--parallelism is for the Indexed Job only"),
        (["--indexes", "1", "--name", "r"], "--indexes is for the Indexed Job only"),
        (["--name", "x" * 44], "is not a valid Kubernetes name"),
        (["--operator-namespace", "Ray System"], "--operator-namespace 'Ray System' is not a valid"),
        (["--head-image", "my image"], "--head-image 'my image' is not an image reference"),
    ],
)
def test_render_ray_refuses_bad_options(cli, args, message):
    result = invoke(cli, "k8s", "render", ALL_PAIRS, "--ray", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Hint: " in result.output


def test_render_ray_refuses_a_pair_no_worker_fits(cli, tmp_path):
    manifest = write(tmp_path, "version: 1\npairs: [ETHUSDT, {pair: BTCUSDT, resources: {cpus: 16}}]\n")
    result = invoke(cli, "k8s", "render", manifest, "--ray")
    assert result.exit_code == 2, result.output
    assert "BTCUSDT: resources {cpus: 16, gpus: 0} do not fit a Ray worker (8 CPUs" in result.output
    job_only = invoke(cli, "k8s", "render", ALL_PAIRS, "--workers", "2")
    assert job_only.exit_code == 2 and "--workers is for --ray only" in job_only.output


def test_the_retry_in_deploy_md_keeps_the_service_account_s_pull_secret(cli):
    """`kubectl apply` of a ServiceAccount without imagePullSecrets would remove the pull secret the
    pull-secret component gave it: the retry leaves the ServiceAccount out."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    (line,) = [l for l in fenced_commands(text) if "--indexes" in l and "kubectl apply" in l]
    argv = shlex.split(line.split(" | ")[0])[1:]
    argv = [a.replace("$FAILED", "3,17").replace("$REGISTRY", "registry.example.com/ml") for a in argv]
    result = invoke(cli, *argv)
    assert result.exit_code == 0, result.output
    assert [o["kind"] for o in docs_of(result.output)] == ["ConfigMap", "Job"]


# -- the command lines the objects and images run --------------------------------------------------------


def test_the_jobs_command_line_is_accepted(cli):
    job = docs_of((K8S / "job.yaml").read_text())[0]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    for index in (0, 41):
        local = [
            a.replace("$(JOB_COMPLETION_INDEX)", str(index)).replace(POD_MANIFEST, ALL_PAIRS) for a in args
        ]
        ctx = parse(cli, local)
        assert ctx.command.name == "run" and ctx.params["index"] == index
        result = invoke(cli, *local, "--config-test")  # resolves pair `index`, reads no data
        assert result.exit_code == 0, result.output
        assert ("BTCUSDT" if index == 0 else "WIFUSDT") in result.output


def test_the_rayjobs_command_line_is_accepted(cli, tmp_path):
    rayjob = docs_of((K8S / "rayjob" / "rayjob.yaml").read_text())[0]
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[0] == "trainer"
    local = [a.replace(POD_MANIFEST, ALL_PAIRS) for a in argv[1:]]
    assert parse(cli, local).command.name == "batch"
    result = invoke(cli, *local, "--dry-run", "--output", tmp_path)
    # here, away from the cluster, the dry run also finds the pods' data path and node sizes missing
    # (exit 2, each listed); the plan itself is the cluster's: every pair would train
    assert result.output.startswith(f"42 pair(s) in {ALL_PAIRS}, output {tmp_path}:"), result.output
    assert result.output.count("would train: no completed run") == 42
    assert result.exit_code in (0, 2) and "Traceback" not in result.output


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_the_images_command_line_is_accepted(cli, flavour):
    instructions = dict(dockerfile_instructions(DOCKERFILES[flavour]))
    entrypoint, cmd = json.loads(instructions["ENTRYPOINT"]), json.loads(instructions["CMD"])
    # an init as PID 1 passes SIGTERM on to `trainer` (Python as PID 1 would ignore it) and reaps
    assert entrypoint == ["dumb-init", "--", "trainer"]
    parse(cli, cmd)
    result = invoke(cli, *cmd)
    assert result.exit_code == 0 and "Example:" in result.output


# -- docker/ --------------------------------------------------------------------------------------------


def dockerfile_args(flavour: str = "gpu") -> dict:
    return dict(
        a.split("=", 1)
        for word, a in dockerfile_instructions(DOCKERFILES[flavour])
        if word == "ARG" and "=" in a
    )


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_hadolint_passes(flavour):
    proc = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILES[flavour])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_the_plugin_image_installs_within_the_pins_and_stays_non_root():
    path = REPO / "docker" / "Dockerfile.plugin"
    proc = subprocess.run(
        [tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
    steps = dockerfile_instructions(path)
    assert [a for w, a in steps if w == "FROM"] == ["${TRAINER_IMAGE}"]
    (run,) = [a for w, a in steps if w == "RUN"]
    assert '--constraint /opt/pair-trainer/constraints.txt "${PLUGIN}"' in run and "pip check" in run
    assert "--mount=type=secret,id=pipcert" in run
    assert [a for w, a in steps if w == "USER"][-1] == "10001:10001"
    for flavour in DOCKERFILES:  # where the pins are in both images
        assert (
            "COPY docker/constraints-gpu.txt /opt/pair-trainer/constraints.txt"
            in DOCKERFILES[flavour].read_text()
        )
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    assert "docker build -f docker/Dockerfile.plugin" in text and "plugins/examples/trainer-example" in text
    assert "Dockerfile.plugin" in (REPO / "docker" / "smoke.sh").read_text()


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_the_images_are_multi_stage_non_root_and_quiet(flavour):
    steps = dockerfile_instructions(DOCKERFILES[flavour])
    froms = [a for word, a in steps if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS wheel")
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    runs = [a for word, a in final if word == "RUN"]
    deps = next(r for r in runs if "--requirement /opt/pair-trainer/requirements.txt" in r)
    assert "pip install --no-cache-dir --constraint /opt/pair-trainer/constraints.txt" in deps
    extra = "[and-cuda]" if flavour == "gpu" else ""
    assert (
        f'"tensorflow{extra}==${{TENSORFLOW_VERSION}}"' in deps and '"ray[default]==${RAY_VERSION}"' in deps
    )
    assert '"dumb-init==${DUMB_INIT_VERSION}"' in deps
    users = [a for word, a in steps if word == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), (
        "a numeric non-root USER, so runAsNonRoot can check it"
    )
    env = " ".join(a for word, a in final if word == "ENV")
    assert "TF_CPP_MIN_LOG_LEVEL=2" in env
    # the device plugin sets it for pods that request a GPU; baked in, a pod that asks for none
    # would see every GPU of its node where NVIDIA's runtime is the default
    assert "NVIDIA_VISIBLE_DEVICES" not in DOCKERFILES[flavour].read_text().replace(
        "No NVIDIA_VISIBLE_DEVICES here", ""
    )
    assert dict(final)["WORKDIR"] == "/data"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_the_dependencies_are_layers_of_their_own_below_the_project(flavour):
    """A code change rebuilds and pushes only the layers after the dependencies: the wheel and its
    install. What the dependency layer sees must not change with the code: the pins and a list made
    of pyproject.toml's dependencies, never the wheel or the sources."""
    steps = dockerfile_instructions(DOCKERFILES[flavour])
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    kinds = [(w, a) for w, a in final if w in ("COPY", "RUN")]
    deps_at = next(i for i, (w, a) in enumerate(kinds) if w == "RUN" and "tensorflow" in a)
    before = kinds[:deps_at]
    assert [a for w, a in before if w == "COPY"] == [
        "docker/constraints-gpu.txt /opt/pair-trainer/constraints.txt",
        "--from=wheel /deps.txt /opt/pair-trainer/requirements.txt",
    ]
    after = kinds[deps_at + 1 :]
    assert after == [
        ("COPY", "--from=wheel /wheels/ /opt/pair-trainer/wheels/"),
        (
            "RUN",
            "pip install --no-cache-dir --no-deps /opt/pair-trainer/wheels/pair_trainer-*.whl && pip check",
        ),
    ]
    assert "--mount=type=bind" not in " ".join(a for _, a in kinds), "the layer cache would not see the wheel"
    # the list the wheel stage writes: pyproject.toml's dependencies and the object-store extras
    wheel_stage = [a for w, a in steps if w == "RUN"][0]
    assert "print(*p['dependencies'], *extra['s3'], *extra['gcs'], sep='\\n')\" > /deps.txt" in wheel_stage
    # the commit's labels come last: a new commit changes no layer below them
    labels = [i for i, (w, a) in enumerate(final) if w == "LABEL" and "revision" in a]
    assert labels and all(w not in ("RUN", "COPY") for w, _ in final[labels[0] :])
    assert "buildah bud --isolation chroot --layers" in (REPO / "docker" / "build.sh").read_text()


def test_the_two_images_differ_only_in_tensorflow_s_cuda():
    def normalised(flavour):
        out = []
        for word, args in dockerfile_instructions(DOCKERFILES[flavour]):
            if word == "LABEL":
                args = args.replace(f"pair-trainer-{flavour}", "pair-trainer-FLAVOUR")
            if word == "ENV":
                args = " ".join(w for w in args.split() if not w.startswith("NVIDIA_"))
            out.append((word, args.replace("tensorflow[and-cuda]", "tensorflow")))
        return out

    assert normalised("gpu") == normalised("cpu")
    assert dockerfile_args("gpu") == dockerfile_args("cpu")


def test_dockerignore_keeps_what_the_images_copy():
    lines = [
        l.strip()
        for l in (REPO / ".dockerignore").read_text().splitlines()
        if l.strip() and not l.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: everything else stays out of the build context"
    kept = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
    for path in DOCKERFILES.values():
        for word, args in dockerfile_instructions(path):
            if word == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert source.rstrip("/") in kept, (
                        f"{path.name} copies {source}, which .dockerignore leaves out"
                    )
                    assert (REPO / source).exists()


# -- docs/deploy.md --------------------------------------------------------------------------------------


def fenced_commands(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
            continue
        if inside and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
    return lines


def trainer_argv(words: list[str]) -> list[str] | None:
    """The `trainer` arguments of `trainer ...`, `kubectl exec POD -- trainer ...` or `docker run ... IMAGE ...`."""
    if words[:1] == ["trainer"]:
        return words[1:]
    if (
        words[:2] == ["kubectl", "exec"]
        and "--" in words
        and words[words.index("--") + 1 :][:1] == ["trainer"]
    ):
        return words[words.index("--") + 2 :]
    if words[:2] == ["docker", "run"]:
        images = [i for i, w in enumerate(words) if re.search(r"/pair-trainer-(cpu|gpu)[:@]", w)]
        return words[images[0] + 1 :] if images else None
    return None


def test_deploy_md_commands_name_what_the_repo_ships(cli):
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    commands = fenced_commands(text)
    trainer_lines = 0
    for line in commands:
        words = shlex.split(line.split(" | ")[0].split(" > ")[0].split(" && ")[0], comments=True)
        argv = trainer_argv(words)
        if argv is not None:
            parse(cli, [a.replace(POD_MANIFEST, ALL_PAIRS) for a in argv])
            trainer_lines += 1
        for flag in ("-k", "-f"):
            if words[:2] in (["kubectl", "apply"], ["kubectl", "delete"]) and flag in words:
                target = words[words.index(flag) + 1]
                if target != "-":
                    assert (REPO / target).exists(), (
                        f"docs/deploy.md applies {target}, which the repo does not have"
                    )
        if words[:2] == ["docker", "build"]:
            assert (REPO / words[words.index("-f") + 1]).is_file()
    assert trainer_lines >= 8
    for path in set(re.findall(r"`((?:k8s|docker|manifests|docs)/[^`\s]*)`", text)):
        assert (REPO / path).exists(), f"docs/deploy.md names {path}, which the repo does not have"


def test_deploy_md_says_what_each_exit_code_means_to_kubernetes():
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    section = text[text.index("## Exit codes") :]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    for code in ("`0`", "`1`", "`2`", "`130`", "`137`"):
        assert code in rows, f"docs/deploy.md's exit code table has no row for {code}"
    assert "FailIndex" in " ".join(rows["`2`"]) and "backoffLimitPerIndex" in " ".join(rows["`1`"])
    assert "DisruptionTarget" in section


# -- building: the base, the pins, the CA file, the extras ------------------------------------------------


def constraints() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[A-Za-z0-9.+!-]+", version), f"{line!r} is not an exact pin"
            pins[name] = version
    return pins


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_both_stages_build_from_the_base_image_argument(flavour):
    steps = dockerfile_instructions(DOCKERFILES[flavour])
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm")  # the default: the official slim image
    assert [a for w, a in steps if w == "FROM"] == ["${BASE_IMAGE} AS wheel", "${BASE_IMAGE}"]


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_pip_gets_the_ca_file_as_a_secret_never_a_layer(flavour):
    steps = dockerfile_instructions(DOCKERFILES[flavour])
    index_runs = [a for w, a in steps if w == "RUN" and ("pip wheel" in a or "--requirement" in a)]
    assert len(index_runs) == 2
    for run in index_runs:  # both reach the package index
        assert "--mount=type=secret,id=pipcert" in run
        assert "if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi" in run
    text = DOCKERFILES[flavour].read_text()
    assert not re.search(r"^(COPY|ADD)\b.*(\.crt|\.pem|cert)", text, re.M | re.I)
    assert "PIP_CERT" not in " ".join(a for w, a in steps if w in ("ENV", "ARG"))
    build = (REPO / "docker" / "build.sh").read_text()
    assert '--secret "id=pipcert,src=$cert"' in build and "${PIP_CERT:-${SSL_CERT_FILE:-}}" in build


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_the_wheel_is_installed_with_the_object_store_extras(flavour):
    wheel_stage = [a for w, a in dockerfile_instructions(DOCKERFILES[flavour]) if w == "RUN"][0]
    assert "*extra['s3'], *extra['gcs']" in wheel_stage
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^s3 = \[.*"s3fs', pyproject, re.M) and re.search(r'^gcs = \[.*"gcsfs', pyproject, re.M)
    pins = constraints()
    assert "s3fs" in pins and "gcsfs" in pins, "the constraints were resolved with the extras"


def test_every_dependency_the_images_install_is_pinned():
    """The images install pyproject.toml's dependencies and the s3 and gcs extras with `-c` the pins:
    a dependency missing from docker/constraints-gpu.txt would be installed at whatever version the
    index has on the day of the build (docker/pin.sh refreshes the pins)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [
        *project["dependencies"],
        *project["optional-dependencies"]["s3"],
        *project["optional-dependencies"]["gcs"],
    ]
    pins = constraints()
    names = {re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~\[;]", w, maxsplit=1)[0]).lower() for w in wanted}
    assert names and not names - set(pins), (
        f"not pinned in docker/constraints-gpu.txt: {sorted(names - set(pins))}"
    )


def test_the_constraints_pin_tensorflow_ray_and_nvidia_s_cuda_wheels():
    pins = constraints()
    args = dockerfile_args("gpu")
    assert pins["tensorflow"] == args["TENSORFLOW_VERSION"] and pins["ray"] == args["RAY_VERSION"]
    assert pins["dumb-init"] == args["DUMB_INIT_VERSION"]
    nvidia = {n: v for n, v in pins.items() if n.startswith("nvidia-")}
    for wheel in ("nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "nvidia-nccl-cu12", "nvidia-cublas-cu12"):
        assert wheel in nvidia, f"{wheel} is not pinned"
    assert (
        len(set(v.split(".")[0] + "." + v.split(".")[1] for n, v in nvidia.items() if "cuda-" in n)) == 1
    ), "the CUDA toolkit wheels disagree on the CUDA version"
    # docs/deploy.md lists what the image gets, and the driver it needs
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    for name, version in nvidia.items():
        assert f"`{name}=={version}`" in text, f"docs/deploy.md does not list {name}=={version}"
    assert "minimum NVIDIA driver" in text.lower() or "Minimum NVIDIA driver" in text


def test_the_build_scripts_parse_and_say_how_to_use_them():
    for script in ("build.sh", "smoke.sh", "make-base.sh", "pin.sh"):
        path = REPO / "docker" / script
        assert os.access(path, os.X_OK), f"docker/{script} is not executable"
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
    build = REPO / "docker" / "build.sh"
    proc = subprocess.run(["bash", str(build), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "docker/build.sh --base pair-trainer-base:bookworm" in proc.stdout
    proc = subprocess.run(["bash", str(build), "--bogus"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "unknown argument '--bogus'" in proc.stderr and "Usage:" in proc.stderr
    text = build.read_text()
    assert "buildah bud --isolation chroot" in text and "docker build" in text
    assert "mmdebstrap" in (REPO / "docker" / "make-base.sh").read_text()


def path_without(tmp_path, *tools: str) -> str:
    """A PATH with every command of this machine's /usr/bin and /bin but `tools`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
            if entry.name not in tools and not (bin_dir / entry.name).exists():
                (bin_dir / entry.name).symlink_to(entry)
    return str(bin_dir)


@pytest.mark.parametrize(
    "script, env, missing",
    [
        (
            "make-base.sh",
            {},
            "missing mmdebstrap, buildah. First: apt-get install mmdebstrap; apt-get install buildah",
        ),
        ("build.sh", {"BUILDER": "buildah"}, "missing buildah. First: apt-get install buildah"),
        (
            "build.sh",
            {"BUILDER": "buildah", "BASE_IMAGE": "pair-trainer-base:nonesuch"},
            "missing buildah, pair-trainer-base:nonesuch. First: apt-get install buildah; docker/make-base.sh",
        ),
        ("smoke.sh", {"BUILDER": "buildah"}, "missing buildah"),
        # the S3 check needs moto_server: without it the smoke would skip a check, which fails it...
        ("smoke.sh", {"BUILDER": "buildah"}, "pip install -e '.[test]' (or SMOKE_ALLOW_SKIP=1)"),
    ],
)
def test_the_scripts_check_what_they_need_first_in_one_line(tmp_path, script, env, missing):
    """Before any work (a base made for minutes, then a failed import), one line names everything
    missing and how to get it; exit 2."""
    path = path_without(tmp_path, "buildah", "mmdebstrap", "docker", "moto_server")
    proc = subprocess.run(
        [str(REPO / "docker" / script)],
        capture_output=True,
        text=True,
        timeout=60,
        # MOTO_SERVER: a path that is not there, so the repository's own venv does not provide one
        env={**os.environ, "PATH": path, "MOTO_SERVER": str(tmp_path / "no-moto_server"), **env},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"{script}: missing "), proc.stderr
    assert missing in proc.stderr, proc.stderr
    assert not proc.stdout.strip(), "nothing started before the check"
    if script == "smoke.sh":  # ...unless skipping is allowed explicitly
        allowed = subprocess.run(
            [str(REPO / "docker" / script)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PATH": path, **env, "SMOKE_ALLOW_SKIP": "1"},
        )
        assert allowed.returncode == 2 and "moto_server" not in allowed.stderr, allowed.stderr


def test_the_base_has_security_updates_and_records_its_packages():
    text = (REPO / "docker" / "make-base.sh").read_text()
    for source in (
        '"deb $MIRROR $SUITE main"',
        '"deb $MIRROR $SUITE-updates main"',
        '"deb $SECURITY_MIRROR $SUITE-security main"',
    ):
        assert source in text, source
    assert "SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}" in text
    assert "LIST=/usr/share/pair-trainer-base/packages.txt" in text and "dpkg-query --admindir" in text
    assert "/usr/share/pair-trainer-base/packages.txt" in (REPO / "docker" / "smoke.sh").read_text()


# -- pods and what they may see --------------------------------------------------------------------------


def every_object() -> list[dict]:
    objects = []
    for folder in kustomization_dirs():
        objects += kustomize(folder)
    return objects


def pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod an object makes."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    if obj["kind"] == "Pod":
        return [(name, obj["spec"])]
    if obj["kind"] == "Job":
        return [(name, obj["spec"]["template"]["spec"])]
    if obj["kind"] in ("RayJob", "RayCluster"):
        out = []
        if obj["kind"] == "RayJob":
            out.append((f"{name} submitter", obj["spec"]["submitterPodTemplate"]["spec"]))
        cluster = obj["spec"].get("rayClusterSpec") if obj["kind"] == "RayJob" else obj["spec"]
        if cluster:
            out.append((f"{name} head", cluster["headGroupSpec"]["template"]["spec"]))
            out += [(f"{name} {g['groupName']}", g["template"]["spec"]) for g in cluster["workerGroupSpecs"]]
        return out
    return []


def all_pods(cli) -> list[tuple[str, dict]]:
    pods = [p for obj in every_object() for p in pod_templates(obj)]
    for args in ([DEMO], [ALL_PAIRS, "--gpus", "1"], [ALL_PAIRS, "--gpus", "0"]):
        pods += [(f"render {' '.join(args)}", p) for _, p in pod_templates(render(cli, *args)[-1])]
    # Job, RayJob submitter + head + workers, data shell, RayCluster head + workers, the submitter of
    # the RayJob that selects it, three renders
    assert len(pods) == 11
    return pods


def test_only_pods_that_request_a_gpu_run_the_gpu_image(cli):
    seen = set()
    for where, pod in all_pods(cli):
        for container in pod["containers"]:
            gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)
            flavour = flavour_of(container["image"])
            seen.add(flavour)
            assert flavour == ("gpu" if gpus else "cpu"), f"{where}: {container['image']} with {gpus} GPU(s)"
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("NVIDIA_VISIBLE_DEVICES") in (None, "void"), where
            if not gpus:
                assert "tolerations" not in pod or all(
                    t["key"] != "nvidia.com/gpu" for t in pod["tolerations"]
                ), where
    assert seen == {"cpu", "gpu"}
    cpu_env = " ".join(a for w, a in dockerfile_instructions(DOCKERFILES["cpu"]) if w == "ENV")
    assert "NVIDIA_" not in cpu_env
    # the head and the submitter: the CPU image, with the same Ray as the GPU workers
    rayjob = the(kustomize(K8S / "rayjob"), "RayJob")
    assert flavour_of(rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"]) == "cpu"
    assert (
        flavour_of(
            rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
        )
        == "cpu"
    )
    assert dockerfile_args("cpu")["RAY_VERSION"] == dockerfile_args("gpu")["RAY_VERSION"]


def test_every_pod_runs_as_the_dedicated_service_account_without_a_token(cli):
    accounts = [o for o in kustomize(K8S) if o["kind"] == "ServiceAccount"]
    assert [a["metadata"]["name"] for a in accounts] == [SERVICE_ACCOUNT]
    assert accounts[0]["automountServiceAccountToken"] is False
    for where, pod in all_pods(cli):
        assert pod.get("serviceAccountName") == SERVICE_ACCOUNT, where
        assert pod.get("automountServiceAccountToken") is False, where
        assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch", where


def test_object_store_credentials_come_from_an_optional_secret(cli):
    wanted = [{"secretRef": {"name": OBJECT_STORE_SECRET, "optional": True}}]
    training = 0
    for where, pod in all_pods(cli):
        for container in pod["containers"]:
            if "submitter" in where:  # it only talks to the head
                assert "envFrom" not in container, where
                continue
            assert container.get("envFrom") == wanted, where
            training += 1
    assert training >= 6
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    assert f"kubectl create secret generic {OBJECT_STORE_SECRET}" in text


def labels_match(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a pod's labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


#: the namespace the objects are applied in, as Kubernetes labels it
HOME_NAMESPACE = {"kubernetes.io/metadata.name": "trainer"}


def admitted(policy: dict, source: dict, port: int, namespace: dict | None = None) -> bool:
    """Whether an ingress rule admits a pod labelled `source` in a namespace labelled `namespace`
    (None: the policy's own namespace) to `port`."""
    for rule in policy["spec"].get("ingress", []):
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        for peer in rule.get("from", []):
            if "ipBlock" in peer:
                return True
            if "namespaceSelector" in peer:
                if not labels_match(peer["namespaceSelector"], namespace or HOME_NAMESPACE):
                    continue
            elif namespace is not None:
                continue
            if labels_match(peer.get("podSelector", {}), source):
                return True
    return False


def test_the_ray_dashboard_wants_a_token_and_only_the_ray_pods_reach_it():
    objects = kustomize(K8S / "rayjob")
    rayjob, policy = the(objects, "RayJob"), the(objects, "NetworkPolicy")
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert tuple(map(int, cluster["rayVersion"].split("."))) >= (2, 52), "token authentication needs Ray 2.52"
    validate_kubernetes(policy)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    head = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
    (workers,) = [g["template"]["metadata"]["labels"] for g in cluster["workerGroupSpecs"]]
    submitter = rayjob["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    shell = the(kustomize(K8S / "data-shell"), "Pod")["metadata"]["labels"]
    job = the(kustomize(K8S), "Job")["spec"]["template"]["metadata"]["labels"]
    assert labels_match(policy["spec"]["podSelector"], head) and labels_match(
        policy["spec"]["podSelector"], workers
    )
    assert not labels_match(policy["spec"]["podSelector"], submitter)
    for port in (8265, 6379, 10001, 52365):
        assert admitted(policy, workers, port) and admitted(policy, head, port), port
        assert not admitted(policy, shell, port) and not admitted(policy, job, port), port
        assert not admitted(policy, {"app": "anything"}, port), port
    assert admitted(policy, submitter, 8265) and not admitted(policy, submitter, 6379)
    # the operator: by its namespace AND its label, together
    operator, ray_system = (
        {"app.kubernetes.io/name": "kuberay-operator"},
        {"kubernetes.io/metadata.name": "ray-system"},
    )
    assert admitted(policy, operator, 8265, ray_system)
    assert not admitted(policy, operator, 6379, ray_system)
    assert not admitted(policy, operator, 8265, {"kubernetes.io/metadata.name": "someone-else"})
    assert not admitted(policy, {"app": "anything"}, 8265, ray_system)
    text = (K8S / "rayjob" / "rayjob.yaml").read_text()
    assert "wget" not in text, "the probe comment about KubeRay's wget probes is stale"


COMPONENTS = ["pull-secret", "priority-class", "gpu-nodes", "deadline"]


def test_the_optional_patches_apply_and_validate(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    for folder, prefix in (
        (copy, "components"),
        (copy / "rayjob", "../components"),
        (copy / "data-shell", "../components"),
    ):
        kustomization = folder / "kustomization.yaml"
        names = COMPONENTS if folder.name != "data-shell" else ["pull-secret"]
        text = yaml.safe_load(kustomization.read_text())
        text["components"] = text.get("components", []) + [f"{prefix}/{n}" for n in names]
        kustomization.write_text(yaml.safe_dump(text, sort_keys=False))
    for folder in (copy, copy / "rayjob", copy / "data-shell"):
        objects = kustomize(folder)
        for obj in objects:
            check_ray_object(obj)
        account = the(objects, "ServiceAccount")
        assert account["imagePullSecrets"] == [{"name": "registry-credentials"}], folder
        if folder.name == "data-shell":
            continue
        workload = the(objects, "Job" if folder == copy else "RayJob")
        assert workload["spec"]["activeDeadlineSeconds"] == 172800
        for where, pod in pod_templates(workload):
            assert pod["priorityClassName"] == "batch-low", where
            gpu = "nvidia.com/gpu" in pod["containers"][0]["resources"]["limits"]
            assert ("nodeSelector" in pod) == gpu and ("affinity" in pod) == gpu, where
            if gpu:
                assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # each patch is documented where a platform team looks
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    for name in COMPONENTS:
        assert f"`k8s/components/{name}/`" in text, name


def test_deploy_md_documents_the_preemption_exit_code():
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    section = text[text.index("## Exit codes") :]
    (row,) = [l for l in section.splitlines() if l.startswith(f"| `{PREEMPTED}`")]
    assert "SIGTERM" in row and "Ignore" in row
    assert "dumb-init" in text


# -- after an Indexed Job: the summary from the pairs' markers ---------------------------------------------


@pytest.mark.slow
def test_summary_only_rebuilds_the_summary_from_the_job_s_pairs_without_training(tmp_path):
    """What the Indexed Job's last step runs: two pods trained pairs 0 and 1, pair 2 failed; the
    summary lists the two with their metrics, names the third as not trained, and exits 1."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        (REPO / DEMO)
        .read_text()
        .replace("output: artifacts/demo/", f"output: {tmp_path / 'out'}/")
        .replace("epochs: 3", "epochs: 1")
        .replace("rows: 20000", "rows: 6000")
    )
    for index in (0, 1):  # as the Job's pods: one pair each, no summary
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "trainer_core.cli",
                "run",
                "--manifest",
                str(manifest),
                "--index",
                str(index),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "out"
    assert not (out / "summary.json").exists()
    markers = {p: (out / p / "_SUCCESS.json").stat().st_mtime_ns for p in ("BTCUSDT", "ETHUSDT")}
    proc = subprocess.run(
        [sys.executable, "-m", "trainer_core.cli", "batch", str(manifest), "--summary-only"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a pair did not train: the step fails
    assert "Submitted" not in proc.stdout, "nothing goes to Ray"
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["pair"]: r for r in summary["pairs"]}
    assert set(rows) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    for pair in ("BTCUSDT", "ETHUSDT"):
        marker = json.loads((out / pair / "_SUCCESS.json").read_text())
        shown = rows[pair]["metrics"]  # the summary's figures, each the marker's own
        assert shown and all(marker["metrics"][k] == v for k, v in shown.items()), (shown, marker["metrics"])
        assert (out / pair / "_SUCCESS.json").stat().st_mtime_ns == markers[pair], "retrained"
    assert rows["SOLUSDT"]["status"] == "cancelled" and "not trained" in rows["SOLUSDT"]["reason"]
    assert not (out / "SOLUSDT" / "_SUCCESS.json").exists()
    assert (out / "summary.html").stat().st_size > 0


# -- a long-lived Ray cluster ----------------------------------------------------------------------------


def test_the_long_lived_ray_cluster_is_the_rayjob_s_cluster_and_admits_only_its_own():
    cluster = the(kustomize(K8S / "raycluster"), "RayCluster")
    policy = the(kustomize(K8S / "raycluster"), "NetworkPolicy")
    submit = the(kustomize(K8S / "raycluster" / "submit"), "RayJob")
    rayjob = the(kustomize(K8S / "rayjob"), "RayJob")
    # the same cluster as the RayJob's, but for its instance label
    own = json.loads(json.dumps(rayjob["spec"]["rayClusterSpec"]))
    for group in (own["headGroupSpec"], *own["workerGroupSpecs"]):
        group["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] = "trainer-ray"
    assert cluster["spec"] == own
    assert cluster["spec"]["authOptions"] == {"mode": "token"}
    # the RayJob that selects it: the cluster's name, no cluster of its own, its submitter labelled for it
    assert submit["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert shlex.split(submit["spec"]["entrypoint"]) == ["trainer", "batch", POD_MANIFEST]
    submitter = submit["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    head = cluster["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    (workers,) = [g["template"]["metadata"]["labels"] for g in cluster["spec"]["workerGroupSpecs"]]
    for port in (8265, 6379, 10001):
        assert admitted(policy, workers, port) and admitted(policy, head, port)
    assert admitted(policy, submitter, 8265) and not admitted(policy, submitter, 6379)
    # the RayJob's own pods (another instance) are not this cluster's
    job_head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    job_submitter = rayjob["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    assert not labels_match(policy["spec"]["podSelector"], job_head)
    assert not admitted(policy, job_head, 6379) and not admitted(policy, job_submitter, 8265)
    operator = {"app.kubernetes.io/name": "kuberay-operator"}
    assert admitted(policy, operator, 8265, {"kubernetes.io/metadata.name": "ray-system"})
    assert not admitted(policy, operator, 8265, {"kubernetes.io/metadata.name": "elsewhere"})
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    assert "kubectl apply -k k8s/raycluster/" in text and "kubectl apply -k k8s/raycluster/submit/" in text
    assert "clusterSelector" in text


# -- renaming with kustomize -------------------------------------------------------------------------------


def suffixed(tmp_path, folder: str, suffix: str) -> list[dict]:
    """k8s/FOLDER built through an overlay with a nameSuffix and the instance label, as docs/deploy.md says."""
    copy = tmp_path / "k8s"
    if not copy.exists():
        shutil.copytree(K8S, copy)
    overlay = tmp_path / f"overlay{suffix}"
    overlay.mkdir()
    text = DEPLOY_DOC.read_text(encoding="utf-8").split("# k8s/overlays/nightly/kustomization.yaml\n", 1)[1]
    text = text[: text.index("```")].replace("../../rayjob", f"../k8s/{folder}").replace("-nightly", suffix)
    (overlay / "kustomization.yaml").write_text(text)
    return kustomize(overlay)


def test_a_name_suffix_renames_the_rayjob_and_every_reference_follows(tmp_path):
    objects = suffixed(tmp_path, "rayjob", "-b")
    for obj in objects:
        check_ray_object(obj)
    names = {o["kind"]: o["metadata"]["name"] for o in objects}
    assert all(name.endswith("-b") for name in names.values()), names
    instance = "trainer-all-pairs-b"
    assert all(o["metadata"]["labels"]["app.kubernetes.io/instance"] == instance for o in objects)
    rayjob, policy, budget = (
        the(objects, "RayJob"),
        the(objects, "NetworkPolicy"),
        the(objects, "PodDisruptionBudget"),
    )
    pods = pod_templates(rayjob)
    assert len(pods) == 3
    for where, pod in pods:
        assert pod["serviceAccountName"] == names["ServiceAccount"], where
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        if "manifest" in volumes:
            assert volumes["manifest"]["configMap"]["name"] == names["ConfigMap"], where
            assert volumes["data"]["persistentVolumeClaim"]["claimName"] == names["PersistentVolumeClaim"], (
                where
            )
    cluster = rayjob["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
    (worker,) = [g["template"]["metadata"]["labels"] for g in cluster["workerGroupSpecs"]]
    submitter = rayjob["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    for labels in (head, worker, submitter):
        assert labels["app.kubernetes.io/instance"] == instance
    # this run's policy admits this run's pods, and not those of the run without the suffix
    original = the(kustomize(K8S / "rayjob"), "RayJob")["spec"]["rayClusterSpec"]
    other_head = original["headGroupSpec"]["template"]["metadata"]["labels"]
    assert labels_match(policy["spec"]["podSelector"], head) and labels_match(
        policy["spec"]["podSelector"], worker
    )
    assert not labels_match(policy["spec"]["podSelector"], other_head)
    assert admitted(policy, worker, 6379) and admitted(policy, submitter, 8265)
    assert not admitted(policy, other_head, 6379)
    operator = {"app.kubernetes.io/name": "kuberay-operator"}
    assert admitted(policy, operator, 8265, {"kubernetes.io/metadata.name": "ray-system"}), (
        "the operator still gets in"
    )
    assert labels_match(budget["spec"]["selector"], head) and not labels_match(
        budget["spec"]["selector"], other_head
    )


def test_a_name_suffix_renames_the_long_lived_cluster_too(tmp_path):
    objects = suffixed(tmp_path, "raycluster", "-b")
    cluster = the(objects, "RayCluster")
    check_raycluster(cluster)
    names = {o["kind"]: o["metadata"]["name"] for o in objects}
    for where, pod in pod_templates(cluster):
        assert pod["serviceAccountName"] == names["ServiceAccount"], where
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["manifest"]["configMap"]["name"] == names["ConfigMap"], where
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == names["PersistentVolumeClaim"], where
    head = cluster["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert labels_match(the(objects, "NetworkPolicy")["spec"]["podSelector"], head)


def test_ray_sends_no_usage_statistics_from_any_ray_pod():
    seen = 0
    for folder in (K8S / "rayjob", K8S / "raycluster", K8S / "raycluster" / "submit"):
        for obj in kustomize(folder):
            for where, pod in pod_templates(obj):
                for container in pod["containers"]:
                    env = {e["name"]: e.get("value") for e in container.get("env", [])}
                    assert env.get("RAY_USAGE_STATS_ENABLED") == "0", where
                    seen += 1
    assert seen == 6  # RayJob submitter, head, workers; RayCluster head, workers; its RayJob's submitter
