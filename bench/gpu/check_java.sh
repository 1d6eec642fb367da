#!/usr/bin/env bash
# One-shot check of distill4j *from Java* on a lent GPU machine (check.sh checks the kernels from Python; that
# machine has no Java). Pack the bundle here first, then carry it:
#   bash bench/gpu/java_bundle.sh                       here: build/gpu-java.tar.xz (JRE, jars, data subset)
#   bash bench/gpu/check_java.sh                        on the GPU: unpacks the bundle, then
#     1. info                                           which backends open (CudaBackend: the org.bytedeco:cuda
#                                                       preset and our library sharing one libcudart.so.13)
#     2. selftest --backend cuda --op OP                every op but vit: fresh cases against float64 and the CPU
#     3. JUnit, the CPU-vs-CUDA cases that need no libtorch (none may be skipped)
#     4. demo --quick --device cuda                     the shipped teacher, three students trained on the GPU
#     5. eval of the soft student on cuda and on cpu    the same accuracy from both backends
#   bash bench/gpu/check_java.sh --dry-run              here, no GPU: the same steps on cuda-emu (selftest) and
#                                                       cpu (demo); the JUnit CUDA cases skip, step 5 does not run
# libcudart.so.13 and libcublas.so.13 are looked for beside the nvidia wheels of $PYTHON (default python3: the
# one with PyTorch), then in the CUDA toolkit.
# When $OUT is set, the log goes to $OUT/check_java.log and the demo's results.json and accuracy.png to
# $OUT/java_demo_results.json and $OUT/java_demo_accuracy.png (3 files: with check.sh's 4, under the 8 the device
# tool brings back). The last line is "JAVA GPU CHECK PASSED" or "JAVA GPU CHECK FAILED".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
STAGE=$ROOT/build/gpu-java
BUNDLE=$ROOT/build/gpu-java.tar.xz
WORK=$ROOT/build/gpu-java-work  # the demo's models and checkpoints: not brought back
DRY_RUN=0
if [[ ${1:-} == --dry-run ]]; then DRY_RUN=1; fi
OUT_DIR=${OUT:-$WORK}
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/check_java.log
OPS=(kl patch-embed attention layernorm gelu linear token-rows cross-entropy adamw)  # vit needs libtorch
# The CPU-vs-CUDA JUnit cases whose reference is our CPU backend (the others compare with libtorch, not carried).
JUNIT_METHODS=(org.distill4j.nn.VisionTransformerTest#cudaMatchesCpuBackend
  org.distill4j.nn.VisionTransformerPrecisionTest#cudaMatchesTheCpuBackendInEachMixedPrecision
  org.distill4j.ops.KlDivTest#cudaKernelMatchesCpuKernel org.distill4j.ops.PatchEmbedTest#cudaKernelMatchesCpuKernel
  org.distill4j.ops.AttentionTest#cudaKernelMatchesCpuKernel org.distill4j.ops.LayerNormTest#cudaKernelMatchesCpuKernel
  org.distill4j.ops.CrossEntropyTest#cudaKernelMatchesCpuKernel org.distill4j.ops.GradNormTest#cudaKernelMatchesCpuKernel
  org.distill4j.ops.AdamWTest#cudaKernelMatchesCpuKernel
  org.distill4j.backend.CudaGraphTest#replaysTheUncapturedSequenceOnAGpu
  org.distill4j.train.CudaGraphTrainingTest#graphedStepsAreTheUncapturedStepsOnAGpu)

source bench/gpu/check_lib.sh

# The directory of the first file named $1 under PyTorch's nvidia wheels or the CUDA toolkit (empty: none).
find_lib() {
  local site dirs=()
  site=$("${PYTHON:-python3}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)
  [[ -n $site && -d $site/nvidia ]] && dirs+=("$site/nvidia")
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
    [[ -d $d ]] && dirs+=("$d")
  done
  ((${#dirs[@]})) || return 0
  find "${dirs[@]}" -name "$1" -print -quit 2>/dev/null | xargs -r dirname
}

main() {
  set -euo pipefail
  section "environment"
  echo "mode: $([[ $DRY_RUN == 1 ]] && echo dry-run || echo gpu)  host: $(hostname)  $(uname -sr)  cpus: $(nproc)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [[ ! -x $STAGE/jre/bin/java || $BUNDLE -nt $STAGE/jre/bin/java ]]; then
    [[ -f $BUNDLE ]] || { echo "no $BUNDLE: run bash bench/gpu/java_bundle.sh and carry build/gpu-java.tar.xz"; return 1; }
    rm -rf "$STAGE"
    tar -C "$ROOT/build" -xJf "$BUNDLE"
    touch "$STAGE/jre/bin/java"
  fi
  local cuda_dirs=() lib d
  for lib in libcudart.so.13 libcublas.so.13; do
    d=$(find_lib "$lib")
    echo "$lib: ${d:-not found}"
    if [[ -n $d ]]; then cuda_dirs+=("$d"); fi
  done
  if ((${#cuda_dirs[@]})); then
    LD_LIBRARY_PATH=$(IFS=:; echo "${cuda_dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LD_LIBRARY_PATH
  fi
  if [[ $DRY_RUN == 0 ]] && command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv || true
  fi
  local java=("$STAGE/jre/bin/java" -Xmx8g -Djava.awt.headless=true
    -Dorg.bytedeco.javacpp.cachedir="$STAGE/javacpp-cache" -cp "$STAGE/lib/*")
  "${java[@]}" -version 2>&1 | head -n 1
  local device=cuda emu_or_cuda=cuda
  if [[ $DRY_RUN == 1 ]]; then device=cpu; emu_or_cuda=cuda-emu; fi

  local all=0 rc t0
  declare -A verdict
  local steps=(info)
  section "info"
  rc=0
  "${java[@]}" org.distill4j.cli.Main info || rc=$?
  verdict[info]=$([[ $rc == 0 ]] && echo PASSED || echo "FAILED (exit $rc)")
  [[ $rc == 0 ]] || all=1

  local op
  for op in "${OPS[@]}"; do
    section "selftest --op $op --backend $emu_or_cuda"
    steps+=("selftest $op")
    t0=$SECONDS rc=0
    "${java[@]}" org.distill4j.cli.Main selftest --op "$op" --backend "$emu_or_cuda" || rc=$?
    verdict["selftest $op"]=$([[ $rc == 0 ]] && echo "PASSED ($((SECONDS - t0))s)" || echo "FAILED (exit $rc)")
    [[ $rc == 0 ]] || all=1
  done

  section "JUnit: CPU-vs-CUDA cases"
  steps+=(junit)
  local selectors=() m junit_log=$WORK/junit.log
  mkdir -p "$WORK"
  for m in "${JUNIT_METHODS[@]}"; do selectors+=(--select-method "$m"); done
  rc=0
  "${java[@]}" org.junit.platform.console.ConsoleLauncher execute --disable-banner --disable-ansi-colors \
    --details=tree "${selectors[@]}" 2>&1 | tee "$junit_log" || rc=$?
  # A case skipped by its assumption (no GPU) counts as "aborted" in the launcher's summary.
  local passed not_run
  passed=$(grep -Eo '[0-9]+ tests successful' "$junit_log" | grep -Eo '^[0-9]+' || echo 0)
  not_run=$(grep -Eo '[0-9]+ tests (aborted|skipped)' "$junit_log" | awk '{ n += $1 } END { print n + 0 }')
  if [[ $rc != 0 ]]; then
    verdict[junit]="FAILED (exit $rc)"; all=1
  elif [[ $DRY_RUN == 0 && $passed != "${#JUNIT_METHODS[@]}" ]]; then
    verdict[junit]="FAILED ($passed of ${#JUNIT_METHODS[@]} passed, $not_run not run)"; all=1
  else
    verdict[junit]="PASSED ($passed passed, $not_run not run)"
  fi

  section "demo --quick --device $device"
  steps+=(demo)
  local demo=$WORK/demo-$device
  rm -rf "$demo"
  t0=$SECONDS rc=0
  "${java[@]}" org.distill4j.cli.Main demo --quick --device "$device" --data "$STAGE/data" --out "$demo" || rc=$?
  verdict[demo]=$([[ $rc == 0 ]] && echo "PASSED ($((SECONDS - t0))s)" || echo "FAILED (exit $rc)")
  [[ $rc == 0 ]] || all=1
  if [[ -n ${OUT:-} && -f $demo/results.json ]]; then
    cp "$demo/results.json" "$OUT_DIR/java_demo_results.json"
    cp "$demo/accuracy.png" "$OUT_DIR/java_demo_accuracy.png"
  fi

  section "eval: the soft student on cuda and on cpu"
  steps+=(eval)
  if [[ $DRY_RUN == 1 ]]; then
    verdict[eval]="SKIPPED (dry run)"
  elif [[ ! -f $demo/student_soft/model.safetensors ]]; then
    verdict[eval]="FAILED (no model from the demo)"; all=1
  else
    local on_cuda on_cpu
    on_cuda=$("${java[@]}" org.distill4j.cli.Main eval "$demo/student_soft/model.safetensors" --device cuda \
      --data "$STAGE/data" | tail -n 1 | sed 's/.*test accuracy //') || true
    on_cpu=$("${java[@]}" org.distill4j.cli.Main eval "$demo/student_soft/model.safetensors" --device cpu \
      --data "$STAGE/data" | tail -n 1 | sed 's/.*test accuracy //') || true
    echo "cuda: $on_cuda"
    echo "cpu:  $on_cpu"
    # The first figure is the prediction's top-1 (%); fp32 logits of two backends may flip one near-tie.
    local a b
    a=$(grep -Eo '^[0-9.]+' <<<"$on_cuda" || true)
    b=$(grep -Eo '^[0-9.]+' <<<"$on_cpu" || true)
    if [[ -n $a && -n $b ]] && awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; exit !(d <= 0.05 && d >= -0.05) }'; then
      verdict[eval]="PASSED (cuda $a %, cpu $b %: within one image of 2,000)"
    else
      verdict[eval]="FAILED (cuda: '$on_cuda', cpu: '$on_cpu')"; all=1
    fi
  fi

  section "summary"
  local s
  for s in "${steps[@]}"; do echo "$s: ${verdict[$s]}"; done
  return $all
}

dry_note=""
if [[ $DRY_RUN == 1 ]]; then dry_note="(dry run: cuda-emu and cpu, no GPU)"; fi
finish_check "$LOG" "JAVA GPU CHECK" "$dry_note"
