#!/usr/bin/env bash
# Builds and tests the native code twice more, under ThreadSanitizer and under AddressSanitizer (CI runs this).
# The emulated CUDA kernels (native/cuda/emu) are where it matters: a missing __syncthreads is a data race for
# TSan, an off-by-one in a kernel a heap-buffer-overflow for ASan. nvcc is not involved (-DD4J_CUDA=OFF).
#
#   native/tests/run-sanitizers.sh [build-dir]      (default build-sanitize; trees <dir>/thread, <dir>/address)
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-build-sanitize}"
jobs="$(nproc 2>/dev/null || echo 2)"
status=0
for sanitizer in thread address; do
  dir="$out/$sanitizer"
  echo "=== $sanitizer sanitizer: $dir"
  if cmake -S "$root" -B "$dir" -DD4J_SANITIZE="$sanitizer" -DD4J_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      && cmake --build "$dir" -j "$jobs" \
      && ctest --test-dir "$dir" --output-on-failure; then
    echo "=== $sanitizer sanitizer: passed"
  else
    echo "=== $sanitizer sanitizer: FAILED"
    status=1
  fi
done
exit "$status"
