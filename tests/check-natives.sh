#!/usr/bin/env bash
# What the natives jar ships must load on the oldest Linux the README promises and carry nothing of this machine
# (tests/run-all.sh runs this after the Maven build):
#   - every library asks glibc for no version newer than natives.glibc (org/distill4j/version.properties, from
#     java/library/pom.xml's d4j.glibc.min: the value `./distill4j info` prints), read from its version references
#     (objdump -p, what the dynamic loader checks), the symbols that need them named from objdump -T;
#   - none needs the system's libstdc++ (GLIBCXX_*, CXXABI_*): it is linked in (CMakeLists.txt, D4J_PORTABLE);
#   - no absolute build path inside (this checkout, /tmp, /root);
#   - every RUNPATH is $ORIGIN or absent, and libgomp.so.1 is bundled. It is gcc's and needs glibc 2.34; below
#     that the system's libgomp.so.1 must be the one found, so libdistill4j_cpu.so must have no RUNPATH at all.
#
#   tests/check-natives.sh [library target dir]      (default: target/library)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$(cd "${1:-$root/target/library}" && pwd)"
natives_jar=$(ls "$target"/distill4j-*-linux-x86_64.jar)
props="$target/classes/org/distill4j/version.properties"
min=$(sed -n 's/^natives\.glibc=//p' "$props")
[[ "$min" =~ ^2\.[0-9]+$ ]] || { echo "FAIL: no natives.glibc=2.N in $props"; exit 1; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
(cd "$dir" && jar xf "$natives_jar")
libs=("$dir"/org/distill4j/natives/linux-x86_64/*.so*)
status=0
fail() { echo "FAIL: $*"; status=1; }

for lib in "${libs[@]}"; do
  name=$(basename "$lib")
  versions=$(objdump -p "$lib" | sed -n '/^Version References:/,/^$/p')
  newest=$( (grep -oE 'GLIBC_2\.[0-9]+' <<<"$versions" || echo GLIBC_2.0) | sort -uV | tail -1)
  if [ "$name" = libgomp.so.1 ]; then
    echo "$name: needs glibc >= ${newest#GLIBC_} (gcc's; below that the system's libgomp.so.1 is used)"
  elif [ "$(printf '%s\n' "$min" "${newest#GLIBC_}" | sort -V | tail -1)" != "$min" ]; then
    too_new=$(objdump -T "$lib" | awk -v min="$min" '
      match($0, /GLIBC_2\.[0-9]+/) { v = substr($0, RSTART + 6, RLENGTH - 6); split(v, a, ".");
        split(min, m, "."); if (a[2] + 0 > m[2] + 0) print $NF "@GLIBC_" v }' | sort -u | tr '\n' ' ')
    fail "$name needs $newest > natives.glibc $min: $too_new"
  fi
  if grep -qE 'GLIBC_PRIVATE|GLIBCXX_|CXXABI_' <<<"$versions"; then
    fail "$name needs" $(grep -oE 'GLIBC_PRIVATE|GLIBCXX_[0-9.]+|CXXABI_[0-9.]+' <<<"$versions" | sort -uV)
  fi
  paths=$(strings -a "$lib" | grep -F -e "$root/" -e /tmp/ -e /root/ | sort -u | head -3 | tr '\n' ' ' || true)
  [ -z "$paths" ] || fail "$name embeds build paths: $paths"
  runpath=$(readelf -d "$lib" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
  case "$name:$runpath" in
    libdistill4j_cpu.so:) ;;
    libdistill4j_cpu.so:*) fail "$name has RUNPATH $runpath: the bundled libgomp.so.1 would shadow the system's" ;;
    *:|*:'$ORIGIN'|*:'$ORIGIN/') ;;
    *) fail "$name has RUNPATH $runpath" ;;
  esac
done
[ -e "$dir/org/distill4j/natives/linux-x86_64/libgomp.so.1" ] || fail "libgomp.so.1 not bundled"
[ "$status" = 0 ] && echo "natives: $((${#libs[@]} - 1)) libraries need no glibc newer than $min and no system" \
  "libstdc++, embed no build path; RUNPATH \$ORIGIN or none (libdistill4j_cpu.so: none); libgomp.so.1 bundled"
exit "$status"
