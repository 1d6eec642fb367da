#!/usr/bin/env bash
# Loads the shipped natives inside Debian 11 (glibc 2.31, libstdc++ of gcc 10) and runs a kernel there
# (tests/old-glibc/load_natives.c, built by that system's gcc): the proof behind README's "Requirements", beyond
# the symbol versions that tests/check-natives.sh reads. Needs root and the Debian mirror (a debootstrap, once,
# into build/bullseye), so it is not a tests/run-all.sh stage.
#
#   tests/old-glibc/run.sh [natives dir]   (default: target/library/classes/org/distill4j/natives/linux-x86_64)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
natives="$(cd "${1:-$root/target/library/classes/org/distill4j/natives/linux-x86_64}" && pwd)"
sysroot="${D4J_BULLSEYE_ROOT:-$root/build/bullseye}"
if [ ! -x "$sysroot/usr/bin/gcc" ]; then
  debootstrap --variant=minbase bullseye "$sysroot" http://deb.debian.org/debian
  cp /etc/resolv.conf "$sysroot/etc/resolv.conf"
  chroot "$sysroot" sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev libgomp1'
fi
work="$sysroot/opt/d4j"
rm -rf "$work" && mkdir -p "$work/natives"
cp "$natives"/*.so* "$work/natives/"
# libdistill4j_cuda.so needs CUDA's runtime beside it (on a user's machine: the org.bytedeco:cuda preset's).
for cudart in /usr/local/cuda/lib64/libcudart.so.13 /usr/local/cuda/lib/libcudart.so.13; do
  if [ -e "$cudart" ]; then cp -L "$cudart" "$work/natives/"; break; fi
done
cp "$root/tests/old-glibc/load_natives.c" "$root/native/include/distill4j.h" "$root/native/include/distill4j_impl.h" \
   "$work/"
chroot "$sysroot" sh -c 'ldd --version | head -1 && cd /opt/d4j && gcc -std=c11 -O2 -Wall -o load_natives \
  load_natives.c -ldl -lm && ./load_natives /opt/d4j/natives'
