#!/usr/bin/env bash
# Regenerates docker/constraints-gpu.txt: every package the images install, at the version pip
# resolves today for Linux x86_64 and Python 3.11, for the TensorFlow and Ray the Dockerfiles pin.
# The nvidia-* wheels (CUDA, cuDNN, NCCL) that tensorflow[and-cuda] pulls are pinned with the rest,
# so a rebuild months later installs the same CUDA stack. Run it on a Python 3.11 Linux x86_64
# machine; review the diff (docs/deploy.md lists the CUDA versions and the driver they need).
#
#   docker/pin.sh            # rewrites docker/constraints-gpu.txt
set -euo pipefail
cd "$(dirname "$0")/.."

tf=$(sed -n 's/^ARG TENSORFLOW_VERSION=//p' docker/Dockerfile.gpu)
ray=$(sed -n 's/^ARG RAY_VERSION=//p' docker/Dockerfile.gpu)
init=$(sed -n 's/^ARG DUMB_INIT_VERSION=//p' docker/Dockerfile.gpu)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip build hatchling
"$work/venv/bin/python" -m build --wheel --no-isolation --outdir "$work/dist" . >/dev/null
wheel=$(ls "$work"/dist/*.whl)
# PIP_CONFIG_FILE=/dev/null: this machine's own pip settings (local indexes, constraints) stay out.
PIP_CONFIG_FILE=/dev/null "$work/venv/bin/pip" install --quiet --dry-run --ignore-installed \
    --report "$work/report.json" \
    "pair-trainer[s3,gcs] @ file://$wheel" "tensorflow[and-cuda]==$tf" "ray[default]==$ray" "dumb-init==$init"

"$work/venv/bin/python" - "$work/report.json" "$tf" "$ray" > docker/constraints-gpu.txt <<'PY'
import json, re, sys

report, tf, ray = sys.argv[1:]
pins = sorted(
    (re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(), i["metadata"]["version"])
    for i in json.load(open(report))["install"]
)
pins = [(n, v) for n, v in pins if n != "pair-trainer"]
print(f"# Every package of the images, pinned (docker/pin.sh wrote it for tensorflow {tf}, ray {ray},")
print("# Linux x86_64, Python 3.11). Both Dockerfiles install with `-c` this file; the nvidia-* lines")
print("# (CUDA, cuDNN, NCCL) apply only to the GPU image. Refresh: docker/pin.sh, then review the diff.")
print("# NVIDIA's CUDA/cuDNN/NCCL wheels")
for n, v in pins:
    if n.startswith("nvidia-"):
        print(f"{n}=={v}")
print("# everything else")
for n, v in pins:
    if not n.startswith("nvidia-"):
        print(f"{n}=={v}")
PY
echo "docker/pin.sh: $(grep -c '==' docker/constraints-gpu.txt) pins written to docker/constraints-gpu.txt"
