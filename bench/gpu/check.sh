#!/usr/bin/env bash
# One-shot GPU check of the native kernels (DESIGN.md, "Testing", 4). Run once on a lent GPU machine, from the
# repository root:
#   bash bench/gpu/check.sh             build with CMake (nvcc, for the GPU's own architecture only, e.g. 90-real
#                                       on an H100: D4J_CUDA_ARCHITECTURES=... overrides), then on the GPU
#                                       bench/gpu/check_{kl,patch_embed,attention,attention_bf16,linear,loss,norm,model}.py and
#                                       native/tests/tensor_core_emu.cpp built by nvcc (each runs whatever the
#                                       others say)
#   bash bench/gpu/check.sh --dry-run   no GPU: emulated CUDA library vs CPU library vs numpy; the checks that need
#                                       torch (linear, loss, norm, model) run on torch CPU tensors when $PYTHON
#                                       has torch, and say SKIPPED otherwise, e.g.
#                                       PYTHON=/path/to/venv/bin/python bash bench/gpu/check.sh --dry-run
# Other arguments go to every script (e.g. --seed N, --skip-timing). $PYTHON (default python3) runs the scripts.
# When $OUT is set, the full log goes to $OUT/check.log, the build log (with nvcc's --resource-usage) to
# $OUT/build.log, every script's JSON rows to one file $OUT/gpu_checks.json ({"gpu_kl.json": [rows], ...}; the
# device tool brings back at most 8 files) and check_model.py's reference logits of timm's deit_tiny_distilled to
# $OUT/deit_tiny_distilled_logits.json (4 files in all). The last line is always "GPU CHECK PASSED" (the build
# and every check passed) or "GPU CHECK FAILED".
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

PY=${PYTHON:-python3}
JSON_DIR=$BUILD/json  # one file per script; merged into $OUT/gpu_checks.json at the end
# Most informative first: a cut-short run keeps them. tensor_core is not a script (check_tensor_core below).
CHECKS=(model norm linear attention attention_bf16 tensor_core patch_embed kl loss)
if [[ -n ${D4J_CHECKS:-} ]]; then read -r -a CHECKS <<<"$D4J_CHECKS"; fi  # e.g. D4J_CHECKS="norm loss"
OUT_DIR=${OUT:-}
if [[ -n $OUT_DIR ]]; then
  mkdir -p "$OUT_DIR"
  LOG=$OUT_DIR/check.log
  BUILD_LOG=$OUT_DIR/build.log
  MERGED=$OUT_DIR/gpu_checks.json
  REF_JSON=$OUT_DIR/deit_tiny_distilled_logits.json
else
  LOG=/dev/null
  BUILD_LOG=$BUILD/build.log
  MERGED=$BUILD/gpu_checks.json
  REF_JSON=$BUILD/deit_tiny_distilled_logits.json
fi

source bench/gpu/check_lib.sh

# native/tests/tensor_core_emu.cpp, the emulator's test of mma.sync/ldmatrix/cp.async/bf16 (fragment layouts from
# the PTX ISA's text), compiled by nvcc for this GPU and run on it: the layouts the emulator assumes, confirmed on
# hardware. In a dry run g++ compiles it against the emulator instead. Uses main's $archs.
check_tensor_core() {
  local bin=$BUILD/tensor_core_check
  if [[ $DRY_RUN == 1 ]]; then
    g++ -std=c++20 -O2 -pthread -Inative/include -Inative/cuda -Inative/tests -x c++ native/tests/tensor_core_emu.cpp \
      -o "$bin" || return 1
  else
    local arch=native
    if [[ -n ${archs:-} ]]; then arch=sm_${archs%%[-;]*}; fi
    nvcc -std=c++17 -O2 -x cu -arch="$arch" -Inative/include -Inative/cuda -Inative/tests \
      native/tests/tensor_core_emu.cpp -o "$bin" || return 1
  fi
  "$bin" all
}

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
  echo "python: $(command -v "$PY") $("$PY" --version 2>&1)"
  "$PY" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo "torch: not importable"
  "$PY" -c 'import timm; print("timm", timm.__version__)' 2>/dev/null || echo "timm: not importable"
  if [[ $DRY_RUN == 0 ]]; then
    if command -v nvidia-smi >/dev/null 2>&1; then
      nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu,utilization.gpu \
        --format=csv || true
      nvidia-smi || true
    else
      echo "nvidia-smi: not found"
    fi
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
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
  # Only the GPU's own architecture on the GPU run (one arch instead of five: minutes of nvcc saved); the
  # five-arch build is CI's compile check. D4J_CUDA_ARCHITECTURES in the environment overrides.
  local arch_flag=()
  local archs=${D4J_CUDA_ARCHITECTURES:-}
  if [[ -z $archs && $DRY_RUN == 0 ]] && command -v nvidia-smi >/dev/null 2>&1; then
    local cc
    cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .' || true)
    if [[ $cc =~ ^[0-9]+$ ]]; then archs="${cc}-real"; fi
  fi
  if [[ -n $archs ]]; then arch_flag=(-DD4J_CUDA_ARCHITECTURES="$archs"); fi
  echo "CUDA architectures: ${archs:-the CMakeLists default}"
  local rc=0
  {
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DD4J_NATIVE_TESTS=OFF -DD4J_OUTPUT_DIR="$LIB" \
      -DD4J_CUDA=$cuda_flag "${arch_flag[@]}" &&
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
  rm -rf "$JSON_DIR"
  mkdir -p "$JSON_DIR"
  local name all=0
  declare -A verdict
  for name in "${CHECKS[@]}"; do
    if [[ $name == tensor_core ]]; then section "tensor_core_emu.cpp"; else section "check_$name.py"; fi
    local extra=()
    if [[ $name == model ]]; then extra=(--logits-json "$REF_JSON"); fi
    local t0=$SECONDS rc=0
    if [[ $name == tensor_core ]]; then
      check_tensor_core || rc=$?
    else
      "$PY" "bench/gpu/check_$name.py" --lib-dir "$LIB" --json "$JSON_DIR/gpu_$name.json" "${extra[@]}" \
        "${PY_ARGS[@]}" || rc=$?
    fi
    if [[ $rc == 0 ]]; then
      verdict[$name]="PASSED ($((SECONDS - t0))s)"
    elif [[ $rc == 75 && $DRY_RUN == 1 ]]; then
      verdict[$name]="SKIPPED (no torch in $PY)"
    else
      verdict[$name]="FAILED (exit $rc, $((SECONDS - t0))s)"
      all=1
    fi
  done
  section "summary"
  # One JSON file for all scripts (the device tool brings back at most 8 files).
  "$PY" - "$JSON_DIR" "$MERGED" <<'PYEOF' || true
import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
merged = {}
for f in sorted(os.listdir(src)):
    with open(os.path.join(src, f)) as fh:
        merged[f] = json.load(fh)
with open(dst, "w") as fh:
    json.dump(merged, fh, indent=1)
    fh.write("\n")
print(f"merged {len(merged)} JSON files ({', '.join(merged)}) into {dst}")
PYEOF
  for name in "${CHECKS[@]}"; do
    local label=check_$name.py
    if [[ $name == tensor_core ]]; then label=tensor_core_emu.cpp; fi
    echo "$label: ${verdict[$name]}"
  done
  return $all
}

dry_note=""
if [[ $DRY_RUN == 1 ]]; then dry_note="(dry run: emulated CUDA and CPU libraries, no GPU)"; fi
finish_check "$LOG" "GPU CHECK" "$dry_note"
