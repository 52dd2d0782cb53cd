#!/usr/bin/env bash
# `make image`: build the operator image from the top-level Dockerfile without a Docker daemon.
#
#   release/image.sh base    the base image: Debian bookworm's python3 by debootstrap, imported
#                            with podman (for machines that reach Debian's mirror but no
#                            container registry), unless BASE names an image to use instead
#   release/image.sh build   buildah builds the Dockerfile on that base (chroot isolation)
#
# The base's root filesystem is cached as a tarball outside the clone, keyed by what went into
# it and the month (so Debian's security updates arrive at least monthly): a warm build skips
# debootstrap entirely.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3-venv: the Dockerfile's build stage makes a venv; ca-certificates: HTTPS for outgoing
# notifications.
INCLUDE=python3,python3-venv,ca-certificates
CACHE_DIR=${LAPSE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lapse}/image-base
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)
IMAGE=${IMAGE:-ghcr.io/lapse-dev/lapse:$VERSION}

need() {
  local missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "error: building the Lapse image needs ${missing[*]}, not found on PATH." >&2
    echo "  No Docker daemon is used. On Debian or Ubuntu: sudo apt-get install -y buildah podman debootstrap" >&2
    echo "  With Docker instead: docker build -t $IMAGE --build-arg VERSION=$VERSION ." >&2
    exit 2
  fi
}

base_key() {
  # Everything that decides the base's content, and this script's own recipe for it.
  printf '%s\n' "$SUITE" "$INCLUDE" "$MIRROR" "$(date -u +%Y-%m)" "$(sed -n '/^make_base()/,/^}/p' "$0")" |
    sha256sum | cut -c1-16
}

make_base() {
  local rootfs=$1
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$rootfs" "$MIRROR" >&2
  # What an image never needs: package indexes, caches, documentation, translations.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/log/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/tmp/*
}

base() {
  if [[ -n ${BASE:-} ]]; then
    echo "$BASE"
    return
  fi
  need buildah podman debootstrap
  local key tag tarball
  key=$(base_key)
  tag=localhost/lapse-base:$SUITE-$key
  if buildah inspect --type image "$tag" >/dev/null 2>&1; then
    echo "$tag"
    return
  fi
  tarball=$CACHE_DIR/$SUITE-$key.tar
  if [[ ! -f $tarball ]]; then
    mkdir -p "$CACHE_DIR"
    local work
    work=$(mktemp -d "$CACHE_DIR/.build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "debootstrap: Debian $SUITE with $INCLUDE (cached in $tarball)" >&2
    make_base "$work/rootfs"
    tar --numeric-owner -C "$work/rootfs" -cf "$work/base.tar" .
    mv "$work/base.tar" "$tarball"
    rm -rf "$work"
    trap - EXIT
  fi
  podman import --quiet "$tarball" "$tag" >/dev/null
  echo "$tag"
}

build() {
  need buildah
  local from pull=() secret=()
  from=$(base)
  # A base made here is local only; one named by BASE may have to be pulled.
  [[ $from == localhost/* ]] && pull=(--pull-never)
  # The host's trust store: where a TLS-intercepting proxy sits between the build and PyPI,
  # its CA is in there. A build secret, so it never lands in a layer.
  local bundle=${LAPSE_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
  [[ -f $bundle ]] && secret=(--secret "id=ca-certificates,src=$bundle")
  local revision
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  echo "building $IMAGE on $from" >&2
  buildah bud --isolation=chroot --format=docker --layers "${pull[@]}" "${secret[@]}" \
    --build-arg "BASE=$from" --build-arg "VERSION=$VERSION" --build-arg "REVISION=$revision" \
    --tag "$IMAGE" --file Dockerfile .
}

case ${1:-} in
  base) base ;;
  build) build ;;
  *)
    echo "usage: $0 base|build" >&2
    exit 2
    ;;
esac
