#!/usr/bin/env bash
# One-shot GPU check of the native kernels (DESIGN.md, "Testing", 4). Run once on a lent GPU machine, from the
# repository root:
#   bash bench/gpu/check.sh             build with CMake (nvcc), then on the GPU bench/gpu/check_kl.py,
#                                       bench/gpu/check_patch_embed.py and bench/gpu/check_attention.py (each runs
#                                       whatever the others say)
#   bash bench/gpu/check.sh --dry-run   no GPU, no torch: emulated CUDA library vs CPU library vs numpy
# Other arguments go to every script (e.g. --seed N, --skip-timing). When $OUT is set, the full log goes to
# $OUT/check.log, the build log (with nvcc's --resource-usage) to $OUT/build.log and the rows to
# $OUT/gpu_kl.json, $OUT/gpu_patch_embed.json and $OUT/gpu_attention.json (5 files in all). The last line is
# always "GPU CHECK PASSED" (the build and all three checks passed) or "GPU CHECK FAILED".
set -euo pipefail
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ beside the scripts in the work tree

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
BUILD=$ROOT/build/gpu
LIB=$BUILD/lib

DRY_RUN=0
PY_ARGS=()
for arg in "$@"; do
  if [[ $arg == --dry-run ]]; then DRY_RUN=1; fi
  PY_ARGS+=("$arg")
done

OUT_DIR=${OUT:-}
if [[ -n $OUT_DIR ]]; then
  mkdir -p "$OUT_DIR"
  LOG=$OUT_DIR/check.log
  BUILD_LOG=$OUT_DIR/build.log
  JSON=$OUT_DIR/gpu_kl.json
  JSON_PE=$OUT_DIR/gpu_patch_embed.json
  JSON_AT=$OUT_DIR/gpu_attention.json
else
  LOG=/dev/null
  BUILD_LOG=$BUILD/build.log
  JSON=$BUILD/gpu_kl.json
  JSON_PE=$BUILD/gpu_patch_embed.json
  JSON_AT=$BUILD/gpu_attention.json
fi

section() { printf '\n===== %s (%s, +%ds) =====\n' "$1" "$(date -u +%H:%M:%S)" "$SECONDS"; }

main() {
  # main runs as a pipeline element with the caller's `set +e`: turn errexit back on for its own steps.
  set -euo pipefail
  section "environment"
  echo "mode: $([[ $DRY_RUN == 1 ]] && echo dry-run || echo gpu)  host: $(hostname)  $(uname -sr)  cpus: $(nproc)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  # nvcc is often installed without being on PATH.
  if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH=/usr/local/cuda/bin:$PATH
  fi
  local have_nvcc=0
  if command -v nvcc >/dev/null 2>&1; then have_nvcc=1; nvcc --version | tail -n 2; else echo "nvcc: not found"; fi
  cmake --version | head -n 1
  echo "python3: $(command -v python3) $(python3 --version 2>&1)"
  if [[ $DRY_RUN == 0 ]]; then
    if command -v nvidia-smi >/dev/null 2>&1; then
      nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu,utilization.gpu \
        --format=csv || true
      nvidia-smi || true
    else
      echo "nvidia-smi: not found"
    fi
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  fi

  section "build"
  local cuda_flag=ON
  if [[ $have_nvcc == 0 ]]; then
    if [[ $DRY_RUN == 1 ]]; then
      cuda_flag=OFF
    else
      echo "nvcc is required for the GPU check"
      return 1
    fi
  fi
  # A cache from another source tree (a build folder copied from elsewhere) makes CMake refuse to configure.
  if [[ -f $BUILD/CMakeCache.txt ]] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT" "$BUILD/CMakeCache.txt"; then
    echo "removing $BUILD: its CMakeCache.txt belongs to another source tree"
    rm -rf "$BUILD"
  fi
  mkdir -p "$BUILD"
  local rc=0
  {
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DD4J_NATIVE_TESTS=OFF -DD4J_OUTPUT_DIR="$LIB" \
      -DD4J_CUDA=$cuda_flag &&
      cmake --build "$BUILD" -j
  } >"$BUILD_LOG" 2>&1 || rc=$?
  if [[ $rc != 0 ]]; then
    echo "BUILD FAILED (exit $rc); last lines of $BUILD_LOG:"
    tail -n 80 "$BUILD_LOG"
    return 1
  fi
  echo "build OK in ${SECONDS}s so far; full log (with --resource-usage) in $BUILD_LOG"
  # Register, spill and shared-memory use of each kernel for sm_90 (the H100/H200 code), from ptxas.
  grep -A 3 "for 'sm_90'" "$BUILD_LOG" | grep -E "Compiling entry|spill|Used [0-9]+ registers" |
    sed -E "s/ptxas info +: //; s/Compiling entry function '([^']+)' for 'sm_90'/\1:/" |
    if command -v c++filt >/dev/null 2>&1; then c++filt; else cat; fi || true
  ls -l "$LIB"
  for f in "$LIB"/libdistill4j_cuda.so "$LIB"/libdistill4j_cpu.so; do
    if [[ -f $f ]]; then echo "ldd $(basename "$f"):"; ldd "$f" | sed 's/^/  /'; fi
  done
  if [[ $DRY_RUN == 0 && ! -f $LIB/libdistill4j_cuda.so ]]; then
    echo "libdistill4j_cuda.so was not built"
    return 1
  fi

  # Every check runs whatever the others say; main fails if any does.
  local kl=PASSED pe=PASSED at=PASSED ls=PASSED
  section "check_kl.py"
  python3 bench/gpu/check_kl.py --lib-dir "$LIB" --json "$JSON" "${PY_ARGS[@]}" || kl=FAILED
  section "check_patch_embed.py"
  python3 bench/gpu/check_patch_embed.py --lib-dir "$LIB" --json "$JSON_PE" "${PY_ARGS[@]}" || pe=FAILED
  section "check_attention.py"
  python3 bench/gpu/check_attention.py --lib-dir "$LIB" --json "$JSON_AT" "${PY_ARGS[@]}" || at=FAILED
  if [[ $DRY_RUN == 0 ]]; then  # torch on the GPU only: no dry-run mode (cuda_emu CTests cover these kernels)
    section "check_loss.py"
    python3 bench/gpu/check_loss.py --lib-dir "$LIB" --json "${JSON%/*}/gpu_loss.json" "${PY_ARGS[@]}" || ls=FAILED
  fi
  section "summary"
  echo "check_kl.py: $kl"
  echo "check_patch_embed.py: $pe"
  echo "check_attention.py: $at"
  echo "check_loss.py: $ls"
  [[ $kl == PASSED && $pe == PASSED && $at == PASSED && $ls == PASSED ]]
}

# The pipe keeps the log complete when main fails halfway; PIPESTATUS gives main's own exit status.
set +e
main 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
if [[ $status == 0 ]]; then verdict="GPU CHECK PASSED"; else verdict="GPU CHECK FAILED"; fi
{
  echo
  if [[ $DRY_RUN == 1 ]]; then echo "(dry run: emulated CUDA and CPU libraries, no GPU)"; fi
  echo "check.sh: exit status $status after ${SECONDS}s"
  echo "$verdict"
} | tee -a "$LOG"
exit "$status"
