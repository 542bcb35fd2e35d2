#!/usr/bin/env bash
# Container overhead: the same pipeline on demo:animals with the subprocess runner, then with every
# task in the project image (`make image` first). One state folder, the demo set written out
# beforehand, a model name per runner, so both start from the same point.
# Usage: bench/containers.sh STATE_DIR [cnnops run options...]   (results: bench/results/containers.json)
set -euo pipefail
cd "$(dirname "$0")/.."
export CNNOPS_HOME=${1:?usage: bench/containers.sh STATE_DIR [cnnops run options...]}
shift
options=("$@")
unset MLFLOW_TRACKING_URI
cnnops=.venv/bin/cnnops
$cnnops data report demo:animals --out "$CNNOPS_HOME/report.html" >/dev/null  # writes the demo set out once
# What the report cached about the images would help only the subprocess runner's tasks (a
# container's caches live in its /tmp): start both from no cache.
rm -rf "$CNNOPS_HOME/cache"
declare -A seconds
for runner in subprocess docker; do
  start=$(date +%s.%N)
  $cnnops run --runner "$runner" --model-name "bench-$runner" "${options[@]}" > "$CNNOPS_HOME/$runner.log" 2>&1
  seconds[$runner]=$(echo "$(date +%s.%N) - $start" | bc)
  echo "$runner: ${seconds[$runner]} s"
done
accuracy() { $cnnops status --json --model-name "bench-$1" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["models"][0]["champion"]["test_accuracy"])'; }
mkdir -p bench/results
cat > bench/results/containers.json <<JSON
{"data": "demo:animals", "options": "${options[*]}", "subprocess_s": ${seconds[subprocess]}, "docker_s": ${seconds[docker]},
 "overhead": $(echo "scale=4; (${seconds[docker]} - ${seconds[subprocess]}) / ${seconds[docker]}" | bc),
 "subprocess_accuracy": $(accuracy subprocess), "docker_accuracy": $(accuracy docker)}
JSON
cat bench/results/containers.json
