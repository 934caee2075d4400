#!/usr/bin/env bash
# Re-measure every figure of docs/benchmarks.md on this machine, one after the other
# (run it on an otherwise idle machine). Outputs go to runs/bench/.
#   scripts/run_benchmarks.sh            # all
#   scripts/run_benchmarks.sh bench io   # only some: bench edges labeling models io study driver soak
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/bench}
mkdir -p "$OUT"
want() { [[ $# -eq 0 || " $ALL " == *" $1 "* ]]; }
ALL="${*:-bench edges labeling models io study driver soak}"
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
    study)    run $PY -m trkx_ray.study --cpu-actors 1,2 --gpus 0 --events 16 --pileup 200 \
                --out "$OUT/scaling" | tee "$OUT/study.txt" ;;
    driver)   run $PY -m trkx_ray.run --config noop --pileup 200 --pool 4 --events 3000 \
                --cpu-actors 2 --quiet --report "$OUT/driver.json" | tee "$OUT/driver.txt" ;;
    soak)     run $PY scripts/soak.py --events 1000 --pileup 10 --out "$OUT/soak.json" \
                | tee "$OUT/soak.txt" ;;
    *) echo "unknown benchmark $what" >&2; exit 2 ;;
  esac
done
