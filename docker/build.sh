#!/usr/bin/env bash
# Builds the CPU and GPU images from the repository root, with `docker build` where a Docker engine
# answers, else with Debian's buildah (`buildah bud --isolation chroot --layers`: no daemon, no user
# namespaces, works inside a container or a CI runner as root). Each image has its own name
# (NAME-cpu, NAME-gpu), so a registry digest pins each one on its own, and two tags: the version
# (0.1.0) and the version with the git commit (0.1.0-abc123def456, "-dirty" when tracked files
# differ from it). Prints each image's tags, size, digest and build time.
#
#   docker/build.sh                              # both images, base python:3.11-slim-bookworm
#   docker/build.sh cpu                          # just one (cpu or gpu)
#   docker/build.sh --base pair-trainer-base:bookworm cpu   # the air-gapped base (docker/make-base.sh)
#   docker/build.sh --name registry.example.com/ml/pair-trainer   # -> .../pair-trainer-cpu, -gpu
#
# Environment: BASE_IMAGE (as --base), IMAGE_NAME (as --name, default pair-trainer), BUILDER (docker
# or buildah, default: docker if its engine answers), PIP_CERT or SSL_CERT_FILE (a CA file that pip
# needs to reach the package index through a TLS-intercepting proxy: passed as the build secret
# `pipcert`, mounted only while pip runs, never stored in a layer).
set -euo pipefail
cd "$(dirname "$0")/.."
. docker/prereqs.sh

BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
IMAGE_NAME=${IMAGE_NAME:-pair-trainer}
flavours=()
while [ $# -gt 0 ]; do
    case "$1" in
        --base) BASE_IMAGE=$2; shift 2 ;;
        --name) IMAGE_NAME=$2; shift 2 ;;
        cpu|gpu) flavours+=("$1"); shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument '$1'." >&2
           echo "Usage: docker/build.sh [--base IMAGE] [--name NAME] [cpu] [gpu]" >&2; exit 2 ;;
    esac
done
[ ${#flavours[@]} -gt 0 ] || flavours=(cpu gpu)

version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' trainer_core/version.py)
[ -n "$version" ] || { echo "build.sh: no __version__ in trainer_core/version.py." >&2; exit 2; }
revision=unknown
if git rev-parse --git-dir >/dev/null 2>&1; then
    revision=$(git rev-parse --short=12 HEAD)
    git diff --quiet HEAD -- || revision+=-dirty
fi

# Everything this script needs, checked before it builds anything. A base from a registry is pulled
# by the build; the local base of docker/make-base.sh must exist.
if [ -z "${BUILDER:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then BUILDER=docker; else BUILDER=buildah; fi
fi
base_check=()
case "$BASE_IMAGE" in
    pair-trainer-base:*|localhost/*) base_check=("image:$BASE_IMAGE" "docker/make-base.sh") ;;
esac
if [ "$BUILDER" = buildah ]; then
    need build.sh root "run it as root (sudo docker/build.sh)" buildah "apt-get install buildah" "${base_check[@]}"
else
    need build.sh docker "install Docker 23 or newer" "${base_check[@]}"
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
    tag="$IMAGE_NAME-$flavour:$version-$revision"
    args=(-f "docker/Dockerfile.$flavour" -t "$tag" -t "$IMAGE_NAME-$flavour:$version"
          --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$version" --build-arg "REVISION=$revision"
          "${secret[@]}")
    echo "build.sh: $tag from $BASE_IMAGE with $BUILDER${secret:+ (pip CA file as a build secret)}"
    start=$(date +%s)
    if [ "$BUILDER" = docker ]; then
        DOCKER_BUILDKIT=1 docker build "${args[@]}" .
    else
        # --layers: a rebuild reuses every layer whose inputs did not change (the dependencies'
        # included); the wheel reaches the last stage by COPY, whose content is part of the cache key
        buildah bud --isolation chroot --layers "${args[@]}" .
    fi
    seconds=$(( $(date +%s) - start ))
    echo "build.sh: built $tag (also $IMAGE_NAME-$flavour:$version) in ${seconds}s, $(size_of "$tag")"
done
