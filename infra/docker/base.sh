#!/usr/bin/env bash
# Build the local base image offline-friendly: Debian bookworm (Python 3.11) from debootstrap,
# imported into Docker. Only Debian's package mirror is reached; no container registry is needed.
# Usage: infra/docker/base.sh IMAGE_TAG
set -euo pipefail
tag=${1:?usage: base.sh IMAGE_TAG}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || { echo "base.sh: debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "base.sh: no Docker daemon answers: start dockerd (make docker-start)" >&2; exit 1; }
root=$(mktemp -d /tmp/cnnops-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { echo "base.sh: debootstrap failed (log: $root.log)" >&2; exit 1; }
rm -f "$root.log"
# Nothing of the build host stays behind: no apt lists, caches, docs or the host's resolver.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
       "$root"/usr/share/locale/* "$root"/etc/resolv.conf "$root"/etc/hostname
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap bookworm minbase + python3, python3-venv, ca-certificates" - "$tag" >/dev/null
echo "base.sh: built $tag"
