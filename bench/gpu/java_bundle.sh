#!/usr/bin/env bash
# Packs build/gpu-java.tar.xz: what bench/gpu/check_java.sh needs on the lent GPU machine, which has no Java and
# no network. Run here (nvcc needed: the natives jar must hold libdistill4j_cuda.so), from anywhere:
#   bash bench/gpu/java_bundle.sh
# then carry it:  run(command="bash bench/gpu/check_java.sh", carry=["build/gpu-java.tar.xz"]).
# The device tool carries 64 MiB in all, so the bundle holds only what the check runs:
#   jre/    a jlink'd Java 17 (java.desktop included: XChart draws accuracy.png with AWT, headless); its
#           modules and the cut-down jars are stored uncompressed, so that xz compresses them (17 MB for the
#           JRE instead of 28 MB with jlink's own compression)
#   lib/    our jars (library, natives, bench, CLI), their runtime dependencies, the test classes with the CUDA
#           emulator library (the op tests open it) and the JUnit console launcher; the openblas and cuda presets' natives jars cut down to
#           the libraries we load (libjniopenblas_nolapack.so and the libopenblas.so.0 it is linked to under
#           that name; libjnicudart.so), the pytorch preset's classes without libtorch (90 MB: the tests that
#           need libtorch are not run there)
#   data/   the first 10,000 training and 2,000 test images of Fashion-MNIST (IDX, gzip), for demo --quick
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
STAGE=$ROOT/build/gpu-java
BUNDLE=$ROOT/build/gpu-java.tar.xz
FASHION=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
JUNIT_CONSOLE=org.junit.platform:junit-platform-console-standalone:1.14.1

if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then export PATH=/usr/local/cuda/bin:$PATH; fi
command -v nvcc >/dev/null 2>&1 || { echo "java_bundle.sh: nvcc not found: the bundle needs the CUDA library" >&2; exit 1; }
[[ -f $FASHION/train-images-idx3-ubyte.gz ]] ||
  { echo "java_bundle.sh: Fashion-MNIST not in $FASHION (apt-get install dataset-fashion-mnist)" >&2; exit 1; }

echo "== build (mvn package, tests compiled, not run)"
# The tests module's classpath (target/tests/classpath.txt) holds every module's jar and what they need.
mvn -B -q -DskipTests package dependency:build-classpath
mvn -B -q -N dependency:copy -Dartifact=$JUNIT_CONSOLE -DoutputDirectory=target/junit-console
natives=target/library/distill4j-0.1.0-linux-x86_64.jar
# The listing first, then grep: `unzip | grep -q` under pipefail fails when grep exits at the first match and unzip
# dies of SIGPIPE on the rest of the listing.
listing=$(unzip -l "$natives")
grep -q libdistill4j_cuda.so <<<"$listing" ||
  { echo "java_bundle.sh: $natives has no libdistill4j_cuda.so (built with -Dd4j.cuda=OFF?)" >&2; exit 1; }

rm -rf "$STAGE" "$BUNDLE"
mkdir -p "$STAGE/lib" "$STAGE/data"

echo "== jre"
jlink --add-modules java.base,java.desktop,java.logging,java.management,java.sql,jdk.unsupported \
  --strip-debug --no-header-files --no-man-pages --compress=0 --output "$STAGE/jre"

echo "== jars"
cp target/junit-console/*.jar "$STAGE/lib/"
# The test classes, with the CUDA emulator (tests only, not in the natives jar; the op tests open it in @BeforeAll).
(cd target/tests/test-classes && jar cf "$STAGE/lib/distill4j-tests.jar" .)
# keep: a jar's entries matching the pattern (plus its manifest), written as a new jar in lib/.
keep() {
  local jar=$1 pattern=$2 tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && unzip -q "$jar" && find . -type f ! -path './META-INF/MANIFEST.MF' | grep -Ev "$pattern" | xargs -r rm -f &&
    zip -q -0 -r "$STAGE/lib/$(basename "$jar")" .)
  rm -rf "$tmp"
}
tr ':' '\n' <target/tests/classpath.txt | while read -r jar; do
  case $(basename "$jar") in
    junit-*|opentest4j-*|apiguardian-*) ;;  # in the console launcher
    pytorch-*-linux-x86_64.jar) ;;          # libtorch: not carried
    opencv-*.jar) ;;                        # JPEG decoding: ImageIO does without it (33 MB)
    onnxruntime-*.jar) keep "$jar" '\.class$|native/linux-x64/' ;;  # 75 MB for every platform; Linux x64 only
    openblas-*-linux-x86_64.jar) keep "$jar" 'libjniopenblas_nolapack\.so|libopenblas\.so\.0|libgfortran|libquadmath|libgcc_s|jnijavacpp|jniopenblas_nolapack/' ;;
    cuda-*-linux-x86_64.jar) keep "$jar" 'libjnicudart\.so|jnicudart/|jnijavacpp' ;;
    *) cp "$jar" "$STAGE/lib/" ;;
  esac
done

echo "== data"
python3 - "$FASHION" "$STAGE/data" <<'PYEOF'
import gzip, struct, sys
src, dst = sys.argv[1], sys.argv[2]
for name, n in (("train", 10000), ("t10k", 2000)):
    for kind, header in (("images-idx3-ubyte", 16), ("labels-idx1-ubyte", 8)):
        with gzip.open(f"{src}/{name}-{kind}.gz") as f:
            head = bytearray(f.read(header))
            row = 28 * 28 if kind.startswith("images") else 1
            body = f.read(n * row)
        head[4:8] = struct.pack(">I", n)
        with gzip.open(f"{dst}/{name}-{kind}.gz", "wb") as f:
            f.write(bytes(head) + body)
PYEOF

echo "== pack"
tar -C "$ROOT/build" -cf - gpu-java | xz -T0 -6 >"$BUNDLE"
du -sh "$STAGE/jre" "$STAGE/lib" "$STAGE/data"
ls -l "$BUNDLE"
size=$(stat -c %s "$BUNDLE")
if ((size > 56 * 1024 * 1024)); then
  echo "java_bundle.sh: $BUNDLE is over 56 MiB: with the work tree it will not fit the 64 MiB the device tool carries" >&2
  exit 1
fi
