#!/usr/bin/env bash
# Start or stop a background dockerd on a machine without systemd (root only; overlay2, cgroupfs).
# `start` does nothing when a daemon already answers; `stop` stops only the one `start` started,
# by the PID it recorded.
set -euo pipefail
state=${CNNOPS_DOCKERD_DIR:-/tmp/cnnops-dockerd}
pidfile=$state/dockerd.pid
case ${1:-} in
  start)
    if docker info >/dev/null 2>&1; then exit 0; fi
    command -v dockerd >/dev/null || { echo "dockerd.sh: dockerd is missing: apt-get install docker.io" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "dockerd.sh: no Docker daemon answers; start yours (sudo systemctl start docker)" >&2; exit 1; }
    mkdir -p "$state"
    nohup dockerd --host unix:///var/run/docker.sock >"$state/dockerd.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 60); do
      if docker info >/dev/null 2>&1; then echo "dockerd.sh: dockerd started (pid $(cat "$pidfile"); log $state/dockerd.log)"; exit 0; fi
      kill -0 "$(cat "$pidfile")" 2>/dev/null || break
      sleep 1
    done
    echo "dockerd.sh: dockerd did not start; see $state/dockerd.log" >&2
    exit 1
    ;;
  stop)
    [ -f "$pidfile" ] || exit 0
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    ;;
  *) echo "usage: dockerd.sh start|stop" >&2; exit 2 ;;
esac
