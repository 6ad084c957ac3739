#!/usr/bin/env bash
# Builds the CPU and GPU images from the repository root, with `docker build` where a Docker engine
# answers, else with Debian's buildah (`buildah bud --isolation chroot`: no daemon, no user namespaces,
# works inside a container or a CI runner as root). Prints each image's size and build time.
#
#   docker/build.sh                              # both images, base python:3.11-slim-bookworm
#   docker/build.sh cpu                          # just one (cpu or gpu)
#   docker/build.sh --base pair-trainer-base:bookworm cpu   # the air-gapped base (docker/make-base.sh)
#   docker/build.sh --name registry.example.com/ml/pair-trainer   # tag for your registry
#
# Environment: BASE_IMAGE (as --base), IMAGE_NAME (as --name, default pair-trainer), BUILDER (docker
# or buildah, default: docker if its engine answers), PIP_CERT or SSL_CERT_FILE (a CA file that pip
# needs to reach the package index through a TLS-intercepting proxy: passed as the build secret
# `pipcert`, mounted only while pip runs, never stored in a layer).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
IMAGE_NAME=${IMAGE_NAME:-pair-trainer}
flavours=()
while [ $# -gt 0 ]; do
    case "$1" in
        --base) BASE_IMAGE=$2; shift 2 ;;
        --name) IMAGE_NAME=$2; shift 2 ;;
        cpu|gpu) flavours+=("$1"); shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument '$1'." >&2
           echo "Usage: docker/build.sh [--base IMAGE] [--name NAME] [cpu] [gpu]" >&2; exit 2 ;;
    esac
done
[ ${#flavours[@]} -gt 0 ] || flavours=(cpu gpu)

version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' trainer_core/version.py)
[ -n "$version" ] || { echo "build.sh: no __version__ in trainer_core/version.py." >&2; exit 2; }

if [ -z "${BUILDER:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then BUILDER=docker; else BUILDER=buildah; fi
fi
if [ "$BUILDER" = buildah ] && ! command -v buildah >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "build.sh: no Docker engine and no buildah: installing Debian's buildah" >&2
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah
    else
        echo "build.sh: no Docker engine answers and buildah is not installed." >&2
        echo "Start Docker, or install buildah (Debian/Ubuntu: sudo apt-get install buildah)." >&2
        exit 2
    fi
fi

secret=()
cert=${PIP_CERT:-${SSL_CERT_FILE:-}}
if [ -n "$cert" ] && [ -s "$cert" ]; then
    secret=(--secret "id=pipcert,src=$cert")
fi

size_of() {  # as the builder shows it, e.g. "3.42 GB"
    if [ "$BUILDER" = docker ]; then
        docker image ls --format '{{.Size}}' "$1"
    else
        buildah images --format '{{.Size}}' "$1"
    fi
}

for flavour in "${flavours[@]}"; do
    tag="$IMAGE_NAME:$version-$flavour"
    args=(-f "docker/Dockerfile.$flavour" -t "$tag" --build-arg "BASE_IMAGE=$BASE_IMAGE" "${secret[@]}")
    echo "build.sh: $tag from $BASE_IMAGE with $BUILDER${secret:+ (pip CA file as a build secret)}"
    start=$(date +%s)
    if [ "$BUILDER" = docker ]; then
        DOCKER_BUILDKIT=1 docker build "${args[@]}" .
    else
        # no --layers: buildah's layer cache ignores what a RUN's `--mount=type=bind,from=wheel`
        # brings, and would keep the previous wheel after a code change
        buildah bud --isolation chroot "${args[@]}" .
    fi
    seconds=$(( $(date +%s) - start ))
    echo "build.sh: built $tag in ${seconds}s, $(size_of "$tag")"
done
