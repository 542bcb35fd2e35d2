#!/usr/bin/env bash
# Run a command with a Docker daemon: start one if none answers, and stop it afterwards, so a
# daemon that was already running is left as it was.
set -uo pipefail
here=$(dirname "$0")
if docker info >/dev/null 2>&1; then
  exec "$@"
fi
export CNNOPS_DOCKERD_DIR=${CNNOPS_DOCKERD_DIR:-$(mktemp -d /tmp/cnnops-dockerd.XXXXXX)}
"$here/dockerd.sh" start || exit 1
trap '"$here/dockerd.sh" stop' EXIT
"$@"
