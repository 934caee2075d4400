#!/usr/bin/env bash
# Re-measure every figure of docs/benchmarks.md on this machine, one after the other
# (run it on an otherwise idle machine). Outputs go to runs/bench/.
#   scripts/run_benchmarks.sh            # all
#   scripts/run_benchmarks.sh bench io   # only some: bench edges labeling models io study driver soak run serve
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/bench}
mkdir -p "$OUT"
want() { [[ $# -eq 0 || " $ALL " == *" $1 "* ]]; }
ALL="${*:-bench edges labeling models io study driver soak run serve}"
run() { echo "+ $*" | tee -a "$OUT/commands.txt"; "$@"; }
for what in $ALL; do
  case "$what" in
    bench)    run $PY -m trkx_ray.bench --events 3 --pileup 200 --device cpu --threads 1 \
                --json "$OUT/bench_cpu.json" | tee "$OUT/bench_cpu.txt" ;;
    edges)    run $PY -m trkx_ray.bench --backends edges --include-slow --repeats 2 --events 1 \
                --pileup 200 --device cpu \
                --threads 1 --json "$OUT/edges.json" | tee "$OUT/edges.txt" ;;
    labeling) run $PY -m trkx_ray.bench --backends labeling --events 1 --pileup 200 --device cpu \
                --threads 1 --json "$OUT/labeling.json" | tee "$OUT/labeling.txt" ;;
    models)   run $PY -m trkx_ray.bench --backends models --events 1 --pileup 200 --device cpu \
                --threads 1 --json "$OUT/models.json" | tee "$OUT/models.txt" ;;
    io)       run $PY scripts/bench_io.py | tee "$OUT/io.txt" ;;
    study)    run $PY -m trkx_ray.study --cpu-actors 1,2 --cores-per-actor 1,2 --skip-unfit \
                --gpus 0 --events 16 --pileup 200 --out "$OUT/scaling" | tee "$OUT/study.txt" ;;
    run)      run $PY -m trkx_ray.run --report "$OUT/run.json" 2>&1 | tee "$OUT/run.txt" ;;
    serve)    # the service beside run: 2 x 1-core replicas, pile-up 200, then noop
              # (Serve's direct ingress, the default, then the replicas' raw HTTP servers)
              for variant in default:direct noop:direct noop:raw; do
                cfg=${variant%%:*}; ingress=${variant##*:}; tag=$cfg; [[ $ingress == raw ]] && tag=${cfg}_raw
                $PY -m trkx_ray.serve --cpu-replicas 2 --cores-per-replica 1 --port 8765 \
                  --config $cfg --ingress $ingress > "$OUT/serve_$tag.log" 2>&1 &
                pid=$!
                for _ in $(seq 120); do
                  curl -sf http://127.0.0.1:8765/v1/healthz >/dev/null 2>&1 && break; sleep 2
                done
                # ~9 s per pile-up-200 event: 120 s gives each client thread >= 13 answers
                dur=${SERVE_DURATION:-120}; [[ $cfg == noop ]] && dur=${NOOP_DURATION:-15}
                run $PY -m trkx_ray.loadgen --url http://127.0.0.1:8765 --pileup 200 --events 4 \
                  --concurrency 1,2 --duration $dur --out "$OUT/loadgen_$tag" \
                  | tee "$OUT/loadgen_$tag.txt"
                kill -TERM $pid; wait $pid || true  # (a background job ignores SIGINT)
              done ;;
    driver)   run $PY -m trkx_ray.run --config noop --pileup 200 --pool 4 --events 3000 \
                --cpu-actors 2 --quiet --report "$OUT/driver.json" | tee "$OUT/driver.txt" ;;
    soak)     run $PY scripts/soak.py --events 1000 --pileup 10 --out "$OUT/soak.json" \
                | tee "$OUT/soak.txt" ;;
    *) echo "unknown benchmark $what" >&2; exit 2 ;;
  esac
done
