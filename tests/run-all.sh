#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). Everything CI checks, in order:
#   1. mvn -B install (the reactor of pom.xml): native libraries (CPU, CUDA with -Werror and spills as errors,
#      emulated CUDA), JNI glue, the JUnit suite (tests/: libtorch references, CPU vs emulated CUDA), the library's
#      three artifacts, the bench and CLI jars into ~/.m2; then what the natives jar ships (tests/check-natives.sh:
#      glibc symbol versions, no build paths, RUNPATH, libgomp).
#   2. CTest: the emulated CUDA kernels against the CPU kernels, natively, then under ThreadSanitizer and
#      AddressSanitizer, including the planted bugs the sanitizers must catch.
#   3. tests/consumer: a separate project that depends on distill4j-platform only and compiles the README's Java
#      snippets (ReadmeSnippets.java, kept equal to the README by ReadmeSnippetsTest) and runs the fast ones; its
#      classpath must hold none of what only the CLI, the benchmarks or the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=$(nproc)

echo "== 1/3 mvn -B install"
mvn -B install
# Skipped tests are listed with their reason (the GPU cases skip on a machine without one, and say so).
for report in target/tests/surefire-reports/TEST-*.xml; do
  awk '/<testcase /{match($0, /name="[^"]*"/); name=substr($0, RSTART+6, RLENGTH-7); match($0, /classname="[^"]*"/);
                    cls=substr($0, RSTART+11, RLENGTH-12)}
       /Assumption failed: /{sub(/.*Assumption failed: /, ""); print "SKIPPED " cls "." name ": " $0}' "$report"
done
# The no-font chart test hides files in a mount namespace, which needs root: CI is root, so there it must have run.
if [ "$(id -u)" = 0 ]; then
  report=target/tests/surefire-reports/TEST-org.distill4j.cli.HeadlessNoFontTest.xml
  [ -f "$report" ] && ! grep -q '<skipped' "$report" || { echo "FAIL: HeadlessNoFontTest did not run as root"; exit 1; }
fi

# IDEs find the Javadoc and sources of what a user depends on: both jars are installed beside the library's.
version=$(sed -n 's/^version=//p' target/library/classes/org/distill4j/version.properties)
for kind in sources javadoc; do
  jar="$HOME/.m2/repository/org/distill4j/distill4j/$version/distill4j-$version-$kind.jar"
  [ -s "$jar" ] || { echo "FAIL: $jar was not installed"; exit 1; }
done

# What ships loads on the oldest glibc the README states and points into no build directory (RUNPATH, paths).
bash tests/check-natives.sh target/library

echo "== 2/3 native tests (CTest): emulated CUDA kernels, then sanitizers"
cmake -S . -B build/native-tests -DCMAKE_BUILD_TYPE=RelWithDebInfo -DD4J_CUDA=OFF -DD4J_NATIVE_TESTS=ON >/dev/null
cmake --build build/native-tests -j "$jobs" >/dev/null
ctest --test-dir build/native-tests --output-on-failure
bash native/tests/run-sanitizers.sh build/sanitize

echo "== 3/3 platform consumer (depends on org.distill4j:distill4j-platform only)"
cd "$root/tests/consumer"
mvn -B -q package dependency:build-classpath -Dmdep.outputFile=target/classpath.txt
for extra in picocli progressbar jline xchart pytorch onnxruntime opencv distill4j-cli distill4j-bench junit; do
  if tr ':' '\n' <target/classpath.txt | grep -q "/$extra[^/]*\.jar$"; then
    echo "FAIL: distill4j-platform brings $extra to a user's classpath:"; tr ':' '\n' <target/classpath.txt; exit 1
  fi
done
java -cp "target/classes:$(cat target/classpath.txt)" example.ConsumerMain
echo "all test stages passed"
