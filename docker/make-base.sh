#!/usr/bin/env bash
# The air-gapped base: a minimal Debian bookworm with Python 3.11 (python3, venv, CA certificates),
# made with Debian's mmdebstrap from a Debian mirror (or a local mirror/proxy of one) and imported as
# a local image, for machines that reach Debian's packages but no container registry.
#
#   docker/make-base.sh                      # -> local image pair-trainer-base:bookworm
#   docker/build.sh --base pair-trainer-base:bookworm
#
# Environment: BASE_TAG (image name, default pair-trainer-base:bookworm), MIRROR (default
# http://deb.debian.org/debian), SUITE (default bookworm), SOURCE_DATE_EPOCH (makes the tarball
# reproducible for the same package versions; default: now).
set -euo pipefail

BASE_TAG=${BASE_TAG:-pair-trainer-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-bookworm}
PACKAGES=python3,python3-venv,ca-certificates

if ! command -v mmdebstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap
    else
        echo "make-base.sh: mmdebstrap is not installed." >&2
        echo "Install Debian's package: sudo apt-get install mmdebstrap" >&2
        exit 2
    fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball="$work/rootfs.tar"
echo "make-base.sh: $SUITE from $MIRROR with $PACKAGES -> $BASE_TAG"
# --variant=apt: essential packages + apt only; docs, man pages and locales are left out (dpkg path
# excludes), as the official slim images do.
mmdebstrap --variant=apt --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$SUITE" "$tarball" "$MIRROR"

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$BASE_TAG"
    docker image inspect --format '{{.Id}}' "$BASE_TAG"
else
    if ! command -v buildah >/dev/null; then
        echo "make-base.sh: neither a Docker engine nor buildah is available to import the base." >&2
        echo "Install Debian's package: sudo apt-get install buildah" >&2
        exit 2
    fi
    ctr=$(buildah from scratch)
    buildah add "$ctr" "$tarball" / >/dev/null
    buildah config --cmd '["/bin/bash"]' --env LANG=C.UTF-8 "$ctr"
    buildah commit --rm "$ctr" "$BASE_TAG" >/dev/null
    buildah images --no-trunc --format '{{.Name}}:{{.Tag}} {{.ID}}' "$BASE_TAG"
fi
