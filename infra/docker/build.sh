#!/usr/bin/env bash
# Build the project image: build.sh DOCKER IMAGE BASE_IMAGE [CA_BUNDLE] [EXTRAS] [DOCKERFILE]
# (DOCKERFILE infra/docker/serve.Dockerfile builds the ONNX serving image instead).
# BuildKit is required (secret and cache mounts); the CA bundle, if given, is a build secret and
# stays out of every layer.
set -euo pipefail
docker=$1 image=$2 base=$3 ca=${4:-} extras=${5:-} dockerfile=${6:-infra/docker/Dockerfile}
cd "$(dirname "$0")/../.."
"$docker" info >/dev/null 2>&1 || { echo "build.sh: no Docker daemon answers: run \`make docker-start\` (or start yours)" >&2; exit 1; }
"$docker" image inspect "$base" >/dev/null 2>&1 || {
  echo "build.sh: base image $base is not in the local Docker store: run \`make base-image\` (Debian via debootstrap), or \`docker pull $base\` where a registry is reachable" >&2; exit 1; }
version=${image##*:}
args=(--file "$dockerfile" --tag "$image" --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version"
      --build-arg "GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)")
[ -n "$ca" ] && args+=(--secret "id=ca,src=$ca")
if [ -n "$extras" ]; then
  args+=(--build-arg "EXTRAS=$extras")
fi
DOCKER_BUILDKIT=1 "$docker" build "${args[@]}" .
