#!/usr/bin/env bash
# The air-gapped base: a minimal Debian bookworm with Python 3.11 (python3, venv, CA certificates),
# made with Debian's mmdebstrap from a Debian mirror (or a local mirror/proxy of one) and imported as
# a local image, for machines that reach Debian's packages but no container registry. It takes the
# packages from bookworm, bookworm-updates and bookworm-security, so the base has the security
# fixes published up to the day it is made, and records its package list (name, version,
# architecture) in the image at /usr/share/pair-trainer-base/packages.txt.
#
#   docker/make-base.sh                      # -> local image pair-trainer-base:bookworm
#   docker/build.sh --base pair-trainer-base:bookworm
#
# Needs, as root: mmdebstrap and buildah (or a Docker engine): apt-get install mmdebstrap buildah.
# Environment: BASE_TAG (image name, default pair-trainer-base:bookworm), MIRROR (default
# http://deb.debian.org/debian), SECURITY_MIRROR (default http://deb.debian.org/debian-security),
# SUITE (default bookworm), SOURCE_DATE_EPOCH (makes the tarball reproducible for the same package
# versions; default: now).
set -euo pipefail
cd "$(dirname "$0")/.."
. docker/prereqs.sh

BASE_TAG=${BASE_TAG:-pair-trainer-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=${SUITE:-bookworm}
PACKAGES=python3,python3-venv,ca-certificates
LIST=/usr/share/pair-trainer-base/packages.txt

# Everything this script needs, checked before it builds anything.
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    importer=docker
    need make-base.sh mmdebstrap "apt-get install mmdebstrap"
else
    importer=buildah
    need make-base.sh root "run it as root (sudo docker/make-base.sh)" \
        mmdebstrap "apt-get install mmdebstrap" buildah "apt-get install buildah"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball="$work/rootfs.tar"
echo "make-base.sh: $SUITE, $SUITE-updates, $SUITE-security from $MIRROR and $SECURITY_MIRROR with $PACKAGES -> $BASE_TAG"
# --variant=apt: essential packages + apt only; docs, man pages and locales are left out (dpkg path
# excludes), as the official slim images do.
mmdebstrap --variant=apt --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook="mkdir -p \"\$1$(dirname $LIST)\" && dpkg-query --admindir=\"\$1/var/lib/dpkg\" -W -f='\${Package} \${Version} \${Architecture}\\n' > \"\$1$LIST\"" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$SUITE" "$tarball" \
    "deb $MIRROR $SUITE main" \
    "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main"

if [ "$importer" = docker ]; then
    docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$BASE_TAG"
    docker image inspect --format '{{.Id}}' "$BASE_TAG"
else
    ctr=$(buildah from scratch)
    buildah add "$ctr" "$tarball" / >/dev/null
    buildah config --cmd '["/bin/bash"]' --env LANG=C.UTF-8 \
        --label "org.opencontainers.image.description=Debian $SUITE + $SUITE-updates + $SUITE-security: $PACKAGES; package list in $LIST" "$ctr"
    buildah commit --rm "$ctr" "$BASE_TAG" >/dev/null
    buildah images --no-trunc --format '{{.Name}}:{{.Tag}} {{.ID}}' "$BASE_TAG"
fi
tar -xOf "$tarball" ".$LIST" > "$work/packages.txt"
echo "make-base.sh: $(wc -l < "$work/packages.txt") packages (listed in the image at $LIST), among them:"
grep -E '^(libssl3|openssl|python3\.11|libc6) ' "$work/packages.txt" | sed 's/^/    /'
