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

from conftest import REPO
from trainer_core import __version__
from trainer_core.manifest import load_manifest, manifest_from_dict

K8S = REPO / "k8s"
DOCKERFILES = {"gpu": REPO / "docker" / "Dockerfile.gpu", "cpu": REPO / "docker" / "Dockerfile.cpu"}
DEPLOY_DOC = REPO / "docs" / "deploy.md"
ALL_PAIRS = "manifests/all_pairs.yaml"
DEMO = "manifests/demo.yaml"
MIN_KUBERNETES = "1.30.0"
POD_MANIFEST = "/etc/trainer/manifest.yaml"


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
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version} at {where}: {exc.message}")


# -- KubeRay's RayJob ---------------------------------------------------------------------------------
# The ray.io/v1 RayJob of KubeRay's CRD (ray-operator/config/crd/bases/ray.io_rayjobs.yaml), field by
# field as its Go types define them (ray-operator/apis/ray/v1/rayjob_types.go, raycluster_types.go),
# which generate the CRD. Pod templates are Kubernetes PodTemplateSpecs: checked with the schemas.

RAYJOB_SPEC = {
    "activeDeadlineSeconds": int, "backoffLimit": int, "clusterSelector": dict, "deletionStrategy": dict,
    "entrypoint": str, "entrypointNumCpus": (int, float), "entrypointNumGpus": (int, float),
    "entrypointResources": str, "jobId": str, "managedBy": str, "metadata": dict, "rayClusterSpec": dict,
    "runtimeEnvYAML": str, "schedule": str, "shutdownAfterJobFinishes": bool, "submissionMode": str,
    "submitterConfig": dict, "submitterPodTemplate": dict, "suspend": bool, "ttlSecondsAfterFinished": int,
}
#: the RayJob fields KubeRay 1.1 already had (submissionMode is new in 1.1): docs/deploy.md's minimum
KUBERAY_1_1 = {
    "activeDeadlineSeconds", "clusterSelector", "entrypoint", "entrypointNumCpus", "entrypointNumGpus",
    "entrypointResources", "jobId", "metadata", "rayClusterSpec", "runtimeEnvYAML", "shutdownAfterJobFinishes",
    "submissionMode", "submitterPodTemplate", "suspend", "ttlSecondsAfterFinished",
}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
RAYCLUSTER_SPEC = {
    "headGroupSpec": dict, "workerGroupSpecs": list, "rayVersion": str, "enableInTreeAutoscaling": bool,
    "autoscalerOptions": dict, "headServiceAnnotations": dict, "suspend": bool,
}
HEAD_GROUP = {"serviceType": str, "headService": dict, "enableIngress": bool, "rayStartParams": dict, "template": dict}
WORKER_GROUP = {
    "groupName": str, "replicas": int, "minReplicas": int, "maxReplicas": int, "numOfHosts": int,
    "rayStartParams": dict, "template": dict, "scaleStrategy": dict,
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
    validate_kubernetes({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": where.lower()}, "template": template})


def check_rayjob(obj: dict) -> None:
    assert obj["apiVersion"] == "ray.io/v1" and obj["kind"] == "RayJob"
    assert set(obj) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = obj["spec"]
    check_fields(spec, RAYJOB_SPEC, set(), "spec")
    assert set(spec) <= KUBERAY_1_1, f"spec uses fields newer than KubeRay 1.1: {sorted(set(spec) - KUBERAY_1_1)}"
    assert spec.get("submissionMode", "K8sJobMode") in SUBMISSION_MODES
    if "submitterPodTemplate" in spec:
        validate_pod_template(spec["submitterPodTemplate"], "submitterPodTemplate")
    cluster = spec["rayClusterSpec"]
    check_fields(cluster, RAYCLUSTER_SPEC, RAYCLUSTER_REQUIRED, "spec.rayClusterSpec")
    head = cluster["headGroupSpec"]
    check_fields(head, HEAD_GROUP, HEAD_REQUIRED, "headGroupSpec")
    groups = [("headGroupSpec", head)]
    for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
        check_fields(group, WORKER_GROUP, WORKER_REQUIRED, f"workerGroupSpecs[{i}]")
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        groups.append((f"workerGroupSpecs[{i}]", group))
    for where, group in groups:
        params = group["rayStartParams"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), f"{where}.rayStartParams: strings only"
        validate_pod_template(group["template"], where.split("[")[0])


# -- reading ------------------------------------------------------------------------------------------


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def k8s_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml") if yaml.safe_load(p.read_text())["kind"] == "Kustomization")


def the(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def kustomize(path: Path) -> list[dict]:
    proc = subprocess.run([tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
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
    return docs_of(result.output)


# -- k8s/ -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_under_k8s_validates(path):
    for obj in docs_of(path.read_text()):
        if obj["apiVersion"].startswith("kustomize.config.k8s.io/"):
            assert path.name == "kustomization.yaml"  # built (and so checked) by kubectl below
        elif obj["kind"] == "RayJob":
            check_rayjob(obj)
        else:
            validate_kubernetes(obj)


def test_the_kustomizations_build_and_every_file_is_in_one():
    expected = {
        K8S: {"PersistentVolumeClaim", "ConfigMap", "Job"},
        K8S / "base": {"PersistentVolumeClaim", "ConfigMap"},
        K8S / "rayjob": {"PersistentVolumeClaim", "ConfigMap", "RayJob"},
        K8S / "data-shell": {"PersistentVolumeClaim", "ConfigMap", "Pod"},
    }
    assert set(kustomization_dirs()) == set(expected)
    listed = set()
    for folder in (*expected, K8S / "image"):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        listed |= {(folder / r).resolve() for r in kustomization.get("resources", []) if r.endswith(".yaml")}
    orphans = {p.resolve() for p in k8s_files() if p.name != "kustomization.yaml"} - listed
    assert not orphans, f"files no kustomization applies: {sorted(map(str, orphans))}"
    for folder, kinds in expected.items():
        objects = kustomize(folder)
        assert {o["kind"] for o in objects} == kinds, folder
        for obj in objects:
            check_rayjob(obj) if obj["kind"] == "RayJob" else validate_kubernetes(obj)


def test_the_image_component_points_every_pod_at_your_registry(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    component = copy / "image" / "kustomization.yaml"
    component.write_text(component.read_text().replace("newName: pair-trainer", "newName: registry.example.com/ml/pair-trainer"))
    for folder, flavour in ((copy, "gpu"), (copy / "rayjob", "gpu"), (copy / "data-shell", "cpu")):
        images = re.findall(r"image: (\S+)", yaml.safe_dump_all(kustomize(folder)))
        assert images and set(images) == {f"registry.example.com/ml/pair-trainer:{__version__}-{flavour}"}, (folder, images)


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
            *(g["template"] for g in files["rayjob/rayjob.yaml"][0]["spec"]["rayClusterSpec"]["workerGroupSpecs"]),
        ],
    }
    for name, templates in pods.items():
        for template in templates:
            volumes = {v["name"]: v for v in template["spec"]["volumes"]}
            container = template["spec"]["containers"][0]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"], name
            assert volumes[mounts["/etc/trainer"]]["configMap"]["name"] == configmap["metadata"]["name"], name
            assert "emptyDir" in volumes[mounts["/tmp"]], name
            assert container["workingDir"] == "/data" and {"name": "HOME", "value": "/tmp"} in container["env"], name
            assert container["image"] == f"pair-trainer:{__version__}-{'cpu' if 'shell' in name else 'gpu'}", name
            assert template["spec"]["securityContext"]["runAsUser"] == 10001, name
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name


def test_the_indexed_job_keeps_its_contract():
    job = docs_of((K8S / "job.yaml").read_text())[0]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == len(load_manifest(str(REPO / ALL_PAIRS)).pairs) == 42
    assert spec["backoffLimitPerIndex"] == load_manifest(str(REPO / ALL_PAIRS)).batch["max_retries"]
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailIndex", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]}}
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
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
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
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
    assert cluster["rayVersion"] == dockerfile_args("gpu")["RAY_VERSION"] == dockerfile_args("cpu")["RAY_VERSION"]


# -- trainer k8s render -------------------------------------------------------------------------------


def test_render_all_pairs_is_what_k8s_holds(cli):
    configmap, job = render(cli, ALL_PAIRS)
    assert configmap == docs_of((K8S / "base" / "configmap.yaml").read_text())[0]
    assert job == docs_of((K8S / "job.yaml").read_text())[0]
    assert job["spec"]["completions"] == len(load_manifest(ALL_PAIRS).pairs)
    validate_kubernetes(configmap)
    validate_kubernetes(job)


def test_render_demo_differs_from_k8s_only_in_what_it_fills_in(cli):
    configmap, job = render(cli, DEMO)
    expected_cm = docs_of((K8S / "base" / "configmap.yaml").read_text())[0]
    expected_job = docs_of((K8S / "job.yaml").read_text())[0]
    for obj in (expected_cm, expected_job, expected_job["spec"]["template"]):
        obj["metadata"]["labels"]["app.kubernetes.io/instance"] = "trainer-demo"
    expected_cm["metadata"]["name"] = expected_job["metadata"]["name"] = "trainer-demo"
    expected_cm["data"]["manifest.yaml"] = (REPO / DEMO).read_text(encoding="utf-8")
    expected_job["spec"].update(completions=3, parallelism=3, backoffLimitPerIndex=2)
    volumes = {v["name"]: v for v in expected_job["spec"]["template"]["spec"]["volumes"]}
    volumes["manifest"]["configMap"]["name"] = "trainer-demo"
    assert (configmap, job) == (expected_cm, expected_job)
    validate_kubernetes(job)


def test_render_options(cli):
    configmap, job = render(
        cli, ALL_PAIRS, "--image", "registry.example.com/ml/pair-trainer:0.1.0-gpu", "--claim", "shared-data",
        "--namespace", "ml-train", "--name", "retry-1", "--parallelism", "2", "--indexes", "40,1,3-4",
    )
    assert configmap["metadata"]["namespace"] == job["metadata"]["namespace"] == "ml-train"
    assert configmap["metadata"]["name"] == job["metadata"]["name"] == "retry-1"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/ml/pair-trainer:0.1.0-gpu"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "shared-data"
    assert volumes["manifest"]["configMap"]["name"] == "retry-1"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (4, 2)
    # the retry's manifest lists just those pairs, with their own settings, in the original order
    original = load_manifest(ALL_PAIRS)
    subset = manifest_from_dict(yaml.safe_load(configmap["data"]["manifest.yaml"]))
    assert subset.pair_names == [original.pairs[i].pair for i in (1, 3, 4, 40)] == ["ETHUSDT", "SOLUSDT", "XRPUSDT", "PEPEUSDT"]
    assert subset.resolve("PEPEUSDT").config_hash == original.resolve("PEPEUSDT").config_hash
    validate_kubernetes(configmap)
    validate_kubernetes(job)


@pytest.mark.parametrize("args, message", [
    (["--name", "Trainer_All"], "--name 'Trainer_All' is not a valid Kubernetes name"),
    (["--name", "x" * 51], "is not a valid Kubernetes name"),
    (["--namespace", "ML"], "--namespace 'ML' is not a valid Kubernetes name"),
    (["--claim", "data volume"], "--claim 'data volume' is not a valid Kubernetes name"),
    (["--image", "my image"], "is not an image reference"),
    (["--indexes", "42", "--name", "r"], "'42' is outside the manifest's 42 pair(s) (0..41)"),
    (["--indexes", "5-2", "--name", "r"], "'5-2' is outside"),
    (["--indexes", "1,x", "--name", "r"], "'x' is not an index or a range"),
    (["--indexes", "1"], "--indexes needs --name"),
])
def test_render_refuses_bad_options_with_exit_2_and_a_hint(cli, args, message):
    result = invoke(cli, "k8s", "render", ALL_PAIRS, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Hint: " in result.output


@pytest.mark.parametrize("manifest, message", [
    ("version: 1\noutput: /home/me/artifacts\npairs: [ETHUSDT]\n", "output '/home/me/artifacts' is outside the volume"),
    ("version: 1\ndefaults: {data: {path: /srv/inputs/}}\npairs: [ETHUSDT]\n", "ETHUSDT: data.path '/srv/inputs/' is outside"),
    ("version: 1\npairs: []\n", "the manifest lists no pairs"),
    ("version: 1\npairs: [ETHUSDT]\ndefaults: {train: {epochs: 0}}\n", "defaults.train.epochs"),
])
def test_render_refuses_manifests_the_pods_could_not_run(cli, tmp_path, manifest, message):
    path = tmp_path / "m.yaml"
    path.write_text(manifest)
    result = invoke(cli, "k8s", "render", path)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Hint: " in result.output


def test_render_accepts_paths_on_the_volume_and_urls(cli, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\noutput: s3://bucket/runs\ndefaults: {data: {path: '/data/inputs/{pair}.feather'}}\npairs: [ETHUSDT]\n")
    (job,) = [o for o in render(cli, path) if o["kind"] == "Job"]
    assert job["metadata"]["name"] == "trainer-m" and job["spec"]["completions"] == 1


def test_render_from_the_installed_command_stays_light():
    code = (
        "import sys\n"
        "from trainer_core.cli import main\n"
        "try:\n"
        f"    main(['k8s', 'render', {ALL_PAIRS!r}])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'ray', 'matplotlib', 'sklearn'}\n"
        "print('HEAVY=' + ','.join(sorted(heavy)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "kind: Job" in proc.stdout and "completions: 42" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout.strip().splitlines()[-1]


def test_render_works_from_the_wheel_without_the_repository(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("pair_trainer-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    code = (
        "import sys, trainer_plugins.commands.k8s as k\n"
        f"assert k.__file__.startswith({str(site)!r}), k.__file__\n"
        "from trainer_core.cli import main\n"
        f"main(['k8s', 'render', {str(REPO / DEMO)!r}])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [o["kind"] for o in docs_of(proc.stdout)] == ["ConfigMap", "Job"]


def test_every_render_option_is_in_manifest_md(cli):
    text = (REPO / "docs" / "manifest.md").read_text(encoding="utf-8")
    section = text[text.index("### trainer k8s render"):]
    section = section[: section.index("\n### ", 1)]
    group = cli.commands["k8s"]
    for name, command in group.commands.items():
        assert f"trainer k8s {name}" in text
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("-"):
                    assert f"`{opt}" in section, f"trainer k8s {name} {opt} is not in docs/manifest.md"


# -- the command lines the objects and images run --------------------------------------------------------


def test_the_jobs_command_line_is_accepted(cli):
    job = docs_of((K8S / "job.yaml").read_text())[0]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    for index in (0, 41):
        local = [a.replace("$(JOB_COMPLETION_INDEX)", str(index)).replace(POD_MANIFEST, ALL_PAIRS) for a in args]
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
    assert result.exit_code == 0, result.output
    assert "42 pair(s)" in result.output


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_the_images_command_line_is_accepted(cli, flavour):
    instructions = dict(dockerfile_instructions(DOCKERFILES[flavour]))
    entrypoint, cmd = json.loads(instructions["ENTRYPOINT"]), json.loads(instructions["CMD"])
    assert entrypoint == ["trainer"]
    parse(cli, cmd)
    result = invoke(cli, *cmd)
    assert result.exit_code == 0 and "Example:" in result.output


# -- docker/ --------------------------------------------------------------------------------------------


def dockerfile_args(flavour: str = "gpu") -> dict:
    return dict(
        a.split("=", 1) for word, a in dockerfile_instructions(DOCKERFILES[flavour]) if word == "ARG" and "=" in a
    )


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_hadolint_passes(flavour):
    proc = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILES[flavour])], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_the_images_are_multi_stage_non_root_and_quiet(flavour):
    steps = dockerfile_instructions(DOCKERFILES[flavour])
    froms = [a for word, a in steps if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS wheel")
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM"):]
    assert not any(word == "COPY" for word, _ in final), "the image gets the wheel through a bind mount, nothing else"
    (run,) = [a for word, a in final if word == "RUN"]
    assert "--mount=type=bind,from=wheel" in run and "pip install --no-cache-dir /wheels/*.whl" in run
    extra = "[and-cuda]" if flavour == "gpu" else ""
    assert f'"tensorflow{extra}==${{TENSORFLOW_VERSION}}"' in run and '"ray[default]==${RAY_VERSION}"' in run
    users = [a for word, a in steps if word == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "a numeric non-root USER, so runAsNonRoot can check it"
    env = " ".join(a for word, a in final if word == "ENV")
    assert "TF_CPP_MIN_LOG_LEVEL=2" in env
    assert ("NVIDIA_VISIBLE_DEVICES=all" in env) == (flavour == "gpu")
    assert dict(final)["WORKDIR"] == "/data"


def test_the_two_images_differ_only_in_tensorflow_s_cuda():
    def normalised(flavour):
        out = []
        for word, args in dockerfile_instructions(DOCKERFILES[flavour]):
            if word == "LABEL":
                continue
            if word == "ENV":
                args = " ".join(w for w in args.split() if not w.startswith("NVIDIA_"))
            out.append((word, args.replace("tensorflow[and-cuda]", "tensorflow")))
        return out

    assert normalised("gpu") == normalised("cpu")
    assert dockerfile_args("gpu") == dockerfile_args("cpu")


def test_dockerignore_keeps_what_the_images_copy():
    lines = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "*", "an allow-list: everything else stays out of the build context"
    kept = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
    for path in DOCKERFILES.values():
        for word, args in dockerfile_instructions(path):
            if word == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert source.rstrip("/") in kept, f"{path.name} copies {source}, which .dockerignore leaves out"
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
    if words[:2] == ["kubectl", "exec"] and "--" in words and words[words.index("--") + 1:][:1] == ["trainer"]:
        return words[words.index("--") + 2:]
    if words[:2] == ["docker", "run"]:
        images = [i for i, w in enumerate(words) if "/pair-trainer:" in w]
        return words[images[0] + 1:] if images else None
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
                    assert (REPO / target).exists(), f"docs/deploy.md applies {target}, which the repo does not have"
        if words[:2] == ["docker", "build"]:
            assert (REPO / words[words.index("-f") + 1]).is_file()
    assert trainer_lines >= 8
    for path in set(re.findall(r"`((?:k8s|docker|manifests|docs)/[^`\s]*)`", text)):
        assert (REPO / path).exists(), f"docs/deploy.md names {path}, which the repo does not have"


def test_deploy_md_says_what_each_exit_code_means_to_kubernetes():
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    section = text[text.index("## Exit codes"):]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    for code in ("`0`", "`1`", "`2`", "`130`", "`137`"):
        assert code in rows, f"docs/deploy.md's exit code table has no row for {code}"
    assert "FailIndex" in " ".join(rows["`2`"]) and "backoffLimitPerIndex" in " ".join(rows["`1`"])
    assert "DisruptionTarget" in section
