#!/usr/bin/env bash
# GPU kit: prove and measure every CUDA path of trkx_ray in one short run on a GPU
# machine that has no network (issue 12).
#
#   scripts/gpu_kit.sh prepare [--with-faiss] [--kit DIR] [--python-version X.Y]
#       Run where PyPI is reachable. Builds DIR (default .gpukit/, git-ignored, < 60 MiB)
#       with cp312 manylinux x86_64 wheels for the GPU machine's Python 3.12:
#         - Ray 2.60.0 slimmed (scripts/gpukit_wheels.py): without ray/jars/ray_dist.jar
#           (Java, 32 MB), ray/rllib/ and the dashboard's web client, RECORD rewritten;
#         - what Ray needs and the image lacks: jsonschema and its requirements;
#         - scikit-network (the labeling backend 'sknetwork');
#         - fallback/: small wheels of packages the image is believed to have (pyyaml,
#           psutil, msgpack, click, requests, pytest, hypothesis, ...); `check` installs
#           one only where the image lacks that project, so the image's own versions win.
#       --with-faiss trades scikit-network and the larger fallbacks for faiss-cpu
#       (18 MB; the bench's Faiss, +CC and +AMP columns need it) and also drops
#       ray/data, serve, tune, train, llm and air from the Ray wheel (the kit runs none
#       of them). Without faiss those columns say "faiss unavailable".
#       --python-version 3.11 builds the same kit for another CPython (a rehearsal of the
#       install on a machine whose Python is not 3.12; `check` installs a kit for real only
#       on the Python it was built for, else it only validates the wheels).
#       Every version is pinned below, so the kit is reproducible; the raw downloads are
#       cached in DIR.cache/ (also ignored). The device image's package list (2026-11-17,
#       /work/.library/device/KINDS.md) decided what is "missing".
#
#   scripts/gpu_kit.sh check --out DIR [--device cuda|cpu] [--kit DIR] [--budget S]
#       Run on the GPU machine with the kit carried along (device tool: carry
#       [".gpukit"], command `bash scripts/gpu_kit.sh check --out $OUT`), no network.
#       Installs the kit's wheels into a target folder (pip --no-index --no-deps
#       --target, then PYTHONPATH=target:repo; the image's torch is used), then runs,
#       each step with its own timeout inside an overall budget (default 470 s on cuda,
#       175 s on cpu), a failing step recorded and the next one run:
#         env, install, pytest -m cuda, bench cuda (pile-up 200, 5 events after 1
#         warm-up), bench cpu (pile-up 200, 2 events, all cores), onnxruntime (CUDA
#         provider or why not; models parity/timing), scaling study (--gpus 1
#         --actors-per-gpu 1,2,4 --cpu-actors 1,2,4,8,15).
#       Writes DIR/summary.json, DIR/summary.md, DIR/logs.tar.gz and DIR/study/
#       (scaling.json/.md/.png): 6 files, inside the device tool's 8-file limit.
#       --device cpu runs the same steps at toy sizes (pile-up 10, 1-2 events, CPU
#       actors 1,2) in under 3 minutes on a 2-core machine; the CUDA-only parts are
#       skipped with the reason recorded. tests/test_gpu_kit.py runs it.
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 2
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# ---- pins (cp312, manylinux x86_64) -------------------------------------------------
RAY_PIN="ray==2.60.0"
# Ray's requirements the device image lacks (jsonschema's tree; attrs and
# typing-extensions are in the image and also in fallback/).
REQUIRED_PINS=(jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
               rpds-py==2026.9.1)
LEAN_EXTRA_PINS=(scikit-network==0.33.5)
FAISS_PINS=(faiss-cpu==1.15.1)
# Installed on the device only where the image lacks the project.
FALLBACK_SMALL_PINS=(pyyaml==6.0.4 psutil==7.2.2 msgpack==1.2.4 pytest==9.2.0 pluggy==1.7.0
                     iniconfig==2.3.1 pytest-timeout==2.4.0)
FALLBACK_MORE_PINS=(click==8.5.1 filelock==4.3.1 packaging==26.4 protobuf==7.36.2
                    requests==2.34.2 urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1
                    charset-normalizer==3.5.3 attrs==26.1.0 typing-extensions==4.16.0
                    hypothesis==6.170.17 sortedcontainers==2.4.0)
RAY_DROP=(ray/jars/ ray/rllib/ ray/dashboard/client/build/)
RAY_DROP_FAISS=(ray/data/ ray/serve/ ray/tune/ ray/train/ ray/llm/ ray/air/)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)
KIT_LIMIT_MIB=60     # the kit folder
TRAVEL_LIMIT_MIB=63  # kit + repo working tree (the device tool carries at most 64 MiB)

usage() { sed -n '2,44p' "$0" | sed 's/^# \{0,1\}//'; }

download() {  # download DEST PYVER PIN...
  local dest=$1 pyver=$2; shift 2
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --python-version "$pyver" --implementation cp "${PLATFORMS[@]}" \
    -d "$dest" "$@"
}

wheel_of() {  # wheel_of DIR PROJECT: the one downloaded wheel of PROJECT in DIR
  local norm
  norm=$(echo "$2" | tr 'A-Z-.' 'a-z__')
  ls "$1"/*.whl 2>/dev/null | while read -r f; do
    b=$(basename "$f" | cut -d- -f1 | tr 'A-Z-.' 'a-z__')
    [[ "$b" == "$norm" ]] && echo "$f"
  done | head -1
}

prepare() {
  local kit=.gpukit with_faiss=0 pyver=3.12
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --kit) kit=$2; shift 2 ;;
      --python-version) pyver=$2; shift 2 ;;
      --with-faiss) with_faiss=1; shift ;;
      -h|--help) usage; return 0 ;;
      *) echo "prepare: unknown argument $1" >&2; return 2 ;;
    esac
  done
  local cache="${kit%/}.cache/cp${pyver/./}"
  mkdir -p "$cache" || return 1
  rm -rf "$kit" && mkdir -p "$kit/fallback" || return 1
  local pins=("${REQUIRED_PINS[@]}") fallback=("${FALLBACK_SMALL_PINS[@]}") drop=("${RAY_DROP[@]}")
  local note="lean: Ray slimmed, jsonschema tree, scikit-network; no faiss"
  if [[ $with_faiss == 1 ]]; then
    pins+=("${FAISS_PINS[@]}")
    drop+=("${RAY_DROP_FAISS[@]}")
    note="with-faiss: Ray slimmed further, jsonschema tree, faiss-cpu; no scikit-network"
  else
    pins+=("${LEAN_EXTRA_PINS[@]}")
    fallback+=("${FALLBACK_MORE_PINS[@]}")
  fi
  echo "prepare: downloading $RAY_PIN ${pins[*]} ${fallback[*]} (cp${pyver/./} manylinux x86_64)"
  download "$cache" "$pyver" "$RAY_PIN" "${pins[@]}" "${fallback[@]}" || {
    echo "prepare: pip download failed (needs PyPI)" >&2; return 1; }
  local ray_whl
  ray_whl=$(wheel_of "$cache" ray)
  [[ -n "$ray_whl" ]] || { echo "prepare: no Ray wheel in $cache" >&2; return 1; }
  local args=()
  for d in "${drop[@]}"; do args+=(--drop "$d"); done
  "$PYTHON" scripts/gpukit_wheels.py slim "$ray_whl" "$kit" "${args[@]}" || return 1
  local pin name f
  for pin in "${pins[@]}"; do
    name=${pin%%==*}; f=$(wheel_of "$cache" "$name")
    [[ -n "$f" ]] || { echo "prepare: no wheel for $pin in $cache" >&2; return 1; }
    cp "$f" "$kit/"
  done
  for pin in "${fallback[@]}"; do
    name=${pin%%==*}; f=$(wheel_of "$cache" "$name")
    [[ -n "$f" ]] || { echo "prepare: no wheel for $pin in $cache" >&2; return 1; }
    cp "$f" "$kit/fallback/"
  done
  "$PYTHON" scripts/gpukit_wheels.py verify "$kit"/*.whl "$kit"/fallback/*.whl >/dev/null || return 1
  "$PYTHON" scripts/gpukit_wheels.py manifest "$kit" --note "$note" --python "$pyver" || return 1
  local kit_b repo_b
  kit_b=$(du -sb "$kit" | cut -f1)
  repo_b=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  awk -v k="$kit_b" -v r="$repo_b" -v n="$kit" -v kl=$KIT_LIMIT_MIB -v tl=$TRAVEL_LIMIT_MIB 'BEGIN {
    printf "prepare: %s = %.1f MiB (limit %d); repo working tree %.1f MiB; travel %.1f MiB (limit %d)\n",
      n, k / 1048576, kl, r / 1048576, (k + r) / 1048576, tl }'
  if (( kit_b > KIT_LIMIT_MIB * 1048576 )); then
    echo "prepare: $kit is over $KIT_LIMIT_MIB MiB" >&2; return 1
  fi
  if (( kit_b + repo_b > TRAVEL_LIMIT_MIB * 1048576 )); then
    echo "prepare: kit + repo is over $TRAVEL_LIMIT_MIB MiB: the device tool would refuse it" >&2
    return 1
  fi
  if ! git check-ignore -q "$kit"; then
    echo "prepare: warning: $kit is not git-ignored (it must not be committed)" >&2
  fi
  echo "prepare: done. On the GPU machine: bash scripts/gpu_kit.sh check --out \$OUT (carry $kit)"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  check) shift; exec "$PYTHON" scripts/gpukit_check.py "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
