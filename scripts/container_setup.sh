#!/usr/bin/env bash
# Prepare this machine to build and run the project's Dockerfile with podman, without a Docker engine and
# without a container registry (see ../shared/docs/CONTAINER_LOCAL.md for the facts behind each step):
#
#   1. Debian's podman, buildah, runc and debootstrap (apt; skipped when present).
#   2. A private podman configuration in .cache/container/: runtime runc (crun refuses hybrid cgroups),
#      default ulimits below this machine's hard limits, overlay storage under .cache/container/storage.
#      `source .cache/container/env` selects it (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, TMPDIR).
#   3. The stand-in for the Dockerfile's base image, made from Debian packages since no image can be pulled:
#      debootstrap bookworm (minbase) -> localhost/debian:bookworm-slim, then Debian 12's Python 3.11 with venv
#      and pip -> docker.io/library/python:3.11-slim-bookworm, so `FROM python:3.11-slim-bookworm` resolves
#      offline (`podman build --pull=never`). It is NOT the upstream image (that one keeps Python in /usr/local):
#      the container test proves the Dockerfile's own steps, user, files and entrypoint, not the upstream base.
#
# Idempotent: each part is skipped when it is already done (the images are rebuilt when this script changes).
# Needs root (apt-get, and podman's rootful storage). Usage: bash scripts/container_setup.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK="$ROOT/.cache/container"
BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
DEBIAN_IMAGE=localhost/debian:bookworm-slim

log() { printf '[container_setup] %s\n' "$*"; }
die() { printf '[container_setup] ERROR: %s\n' "$*" >&2; exit 1; }
START=$(date +%s)

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get installs podman; the test uses podman's rootful storage)"

# ------------------------------------------------------------------------------------------ 1. packages
packages=(podman buildah runc debootstrap)
absent=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || absent+=("$package")
done
if [ ${#absent[@]} -gt 0 ]; then
    log "installing ${absent[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${absent[@]}" uidmap slirp4netns fuse-overlayfs >/dev/null
fi
log "podman $(podman version --format '{{.Client.Version}}' 2>/dev/null), $(buildah --version | cut -d' ' -f1-3)"

# -------------------------------------------------------------------------------- 2. private config
mkdir -p "$WORK/storage" "$WORK/run" "$WORK/tmp"
hard_nofile=$(ulimit -Hn)
[ "$hard_nofile" = unlimited ] && hard_nofile=1048576
nproc=32768
hard_nproc=$(ulimit -Hu)
[ "$hard_nproc" != unlimited ] && [ "$hard_nproc" -lt "$nproc" ] && nproc=$hard_nproc
cat >"$WORK/containers.conf" <<EOF
# Written by scripts/container_setup.sh.
[containers]
default_ulimits = ["nofile=$hard_nofile:$hard_nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
cat >"$WORK/storage.conf" <<EOF
# Written by scripts/container_setup.sh.
[storage]
driver = "overlay"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
cat >"$WORK/env" <<EOF
# source this file to use the project's podman configuration (scripts/container_setup.sh)
export CONTAINERS_CONF="$WORK/containers.conf"
export CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
export TMPDIR="$WORK/tmp"
EOF
# shellcheck source=/dev/null
source "$WORK/env"

# --------------------------------------------------------------------------------- 3. base images
# The images are remade when this script changes (it defines them).
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
STAMP="$WORK/base-images.stamp"
if [ "$(cat "$STAMP" 2>/dev/null)" = "$key" ] && podman image exists "$BASE_IMAGE"; then
    log "stand-in $BASE_IMAGE present"
else
    # The apt mirror this machine uses (deb822 sources first, then the one-line format).
    mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null |
        grep -v security | head -1 || true)
    if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
        mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
    fi
    mirror=${mirror:-http://deb.debian.org/debian}

    ROOTFS="$WORK/rootfs"
    rm -rf "$ROOTFS"
    log "debootstrap bookworm (minbase) from $mirror"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$ROOTFS" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $WORK/debootstrap.log"
    # The security updates too, as the upstream image has them.
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
        "$mirror" "$mirror" >"$ROOTFS/etc/apt/sources.list"
    rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*
    # As Debian's official slim images are configured (and so python:3.11-slim on them): dpkg installs no
    # documentation (copyright files aside), manual pages or translations, and apt keeps no package caches. Without
    # this the stand-in carries ~140 MB the upstream base does not, and every image built on it inherits the rule.
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/lintian/*' 'path-exclude /usr/share/locale/*' >"$ROOTFS/etc/dpkg/dpkg.cfg.d/slim"
    printf '%s\n' 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' >"$ROOTFS/etc/apt/apt.conf.d/slim-clean"
    find "$ROOTFS/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
    rm -rf "$ROOTFS/usr/share/man/"* "$ROOTFS/usr/share/locale/"* "$ROOTFS/usr/share/info/"* "$ROOTFS/var/cache/apt/"*.bin
    tar --numeric-owner -C "$ROOTFS" -c . | podman import --quiet - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$ROOTFS"

    log "building the stand-in $BASE_IMAGE (Debian 12's Python 3.11)"
    podman build --pull=never --network=host --quiet --tag "$BASE_IMAGE" --file - "$WORK" >/dev/null <<EOF
FROM $DEBIAN_IMAGE
ENV LANG=C.UTF-8 PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \\
 && rm -rf /var/lib/apt/lists/* \\
 && ln -s /usr/bin/python3 /usr/local/bin/python \\
 && ln -s /usr/bin/python3 /usr/local/bin/python3 \\
 && ln -s /usr/bin/python3.11 /usr/local/bin/python3.11 \\
 && ln -s /usr/bin/pip3 /usr/local/bin/pip
CMD ["python3"]
EOF
    echo "$key" >"$STAMP"
fi
log "done in $(($(date +%s) - START)) s (podman storage in $WORK)"
