#!/usr/bin/env bash
# A real two-node Ray cluster on this machine (a head plus one worker node), for
# trying `ray job submit` of trkx_ray and for tests/test_cluster.py.
#
#   scripts/local_cluster.sh start   # head on 127.0.0.1:$PORT, worker node joins it
#   scripts/local_cluster.sh status  # `ray status` of that cluster
#   scripts/local_cluster.sh stop    # stops ONLY this cluster's processes
#
# Then, from the repository root:
#   export RAY_AUTH_MODE=token
#   .venv/bin/ray job submit --address http://127.0.0.1:$DASHBOARD_PORT --working-dir . \
#       -- python -m trkx_ray.run --config noop --pileup 20 --events 8 --cpu-actors 2
#
# Settings (environment):
#   PORT            head GCS port                        (default 6390)
#   DASHBOARD_PORT  dashboard / job API port             (default 8275)
#   CLUSTER_DIR     state folder: temp dirs, pid lists   (default /tmp/trkx_ray_cluster_$PORT)
#   HEAD_CPUS, WORKER_CPUS   CPUs each node advertises   (default 1 and 1)
#   OBJECT_STORE_BYTES       object store per node       (default 200000000)
#   RAY             the ray CLI                          (default: .venv/bin/ray if present)
#
# Ray 2.60 uses token authentication for clusters made with `ray start`: this script
# exports RAY_AUTH_MODE=token; export it as well for `ray job submit`. Where no token
# is given (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH) and ~/.ray/auth_token is missing, `start`
# makes that file.
# `stop` never runs a machine-wide `ray stop`: it ends the processes whose command
# line names this cluster's temp folders (the head's and the worker's), by pid.
set -euo pipefail

cd "$(dirname "$0")/.."
PORT="${PORT:-6390}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8275}"
CLUSTER_DIR="${CLUSTER_DIR:-/tmp/trkx_ray_cluster_${PORT}}"
HEAD_CPUS="${HEAD_CPUS:-1}"
WORKER_CPUS="${WORKER_CPUS:-1}"
OBJECT_STORE_BYTES="${OBJECT_STORE_BYTES:-200000000}"
if [[ -z "${RAY:-}" ]]; then
  if [[ -x .venv/bin/ray ]]; then RAY=.venv/bin/ray; else RAY=ray; fi
fi
export RAY_AUTH_MODE=token
# the job's `python` is the one next to the ray CLI (the venv's)
export PATH="$(cd "$(dirname "$(command -v "$RAY")")" && pwd):$PATH"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"

pids_of_cluster() {
  # pids whose command line mentions this cluster's folder
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null \
        | grep -qF -- "$CLUSTER_DIR"; then
      [[ "$pid" != "$$" ]] && echo "$pid"
    fi
  done
}

ensure_token() {
  # `ray start` in token mode needs a token and, since Ray 2.60, does not make one. Where
  # the user gives none (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH), make ~/.ray/auth_token,
  # readable by this user only, as `ray get-auth-token --generate` would: `ray job submit`
  # and every node on this machine read it from there.
  [[ -n "${RAY_AUTH_TOKEN:-}" ]] && return 0
  if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
    [[ -s "$RAY_AUTH_TOKEN_PATH" ]] && return 0
    echo "RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH: no token in that file" >&2
    exit 1
  fi
  local path="$HOME/.ray/auth_token"
  [[ -s "$path" ]] && return 0
  mkdir -p "$(dirname "$path")"
  (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$path")
  echo "made a Ray auth token in $path" >&2
}

case "${1:-}" in
  start)
    mkdir -p "$CLUSTER_DIR/head" "$CLUSTER_DIR/worker"
    ensure_token
    "$RAY" start --head --port "$PORT" --node-ip-address 127.0.0.1 \
      --num-cpus "$HEAD_CPUS" --num-gpus 0 \
      --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
      --temp-dir "$CLUSTER_DIR/head" --object-store-memory "$OBJECT_STORE_BYTES" \
      --disable-usage-stats >"$CLUSTER_DIR/head.log" 2>&1 \
      || { cat "$CLUSTER_DIR/head.log" >&2; exit 1; }
    "$RAY" start --address "127.0.0.1:$PORT" --node-ip-address 127.0.0.1 \
      --num-cpus "$WORKER_CPUS" --num-gpus 0 \
      --temp-dir "$CLUSTER_DIR/worker" --object-store-memory "$OBJECT_STORE_BYTES" \
      --disable-usage-stats >"$CLUSTER_DIR/worker.log" 2>&1 \
      || { cat "$CLUSTER_DIR/worker.log" >&2; exit 1; }
    for _ in $(seq 1 60); do  # both nodes registered
      n="$("$RAY" status --address "127.0.0.1:$PORT" 2>/dev/null | grep -c '^ 1 node_' || true)"
      [[ "$n" -ge 2 ]] && break
      sleep 1
    done
    echo "cluster up: gcs 127.0.0.1:$PORT, jobs http://127.0.0.1:$DASHBOARD_PORT, state $CLUSTER_DIR"
    ;;
  status)
    "$RAY" status --address "127.0.0.1:$PORT"
    ;;
  stop)
    pids="$(pids_of_cluster | tr '\n' ' ')"
    if [[ -n "${pids// /}" ]]; then
      kill -TERM $pids 2>/dev/null || true
      for _ in $(seq 1 10); do  # 5 s grace, then SIGKILL (as `ray stop` does)
        alive=""
        for p in $pids; do
          # alive = exists and is not a zombie (state Z) waiting for its parent
          if kill -0 "$p" 2>/dev/null && ! grep -q '^[0-9]* (.*) Z' "/proc/$p/stat" 2>/dev/null; then
            alive="$alive $p"
          fi
        done
        [[ -z "$alive" ]] && break
        sleep 0.5
      done
      [[ -n "${alive:-}" ]] && kill -KILL $alive 2>/dev/null || true
    fi
    echo "cluster on port $PORT stopped"
    ;;
  *)
    echo "usage: $0 start|status|stop   (env: PORT, DASHBOARD_PORT, CLUSTER_DIR, ...)" >&2
    exit 2
    ;;
esac
