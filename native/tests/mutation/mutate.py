#!/usr/bin/env python3
# The mutation check (README.md here): applies each mutant of mutants.py to a scratch copy of the tree, rebuilds,
# and runs the native tests plain, then under ThreadSanitizer, then under AddressSanitizer, stopping at the first
# configuration that fails (the mutant is killed). Python 3 standard library only.
#
#   native/tests/mutation/mutate.py [--scratch DIR] [--out FILE] [--jobs N] [ID ...]
#   native/tests/mutation/mutate.py --list        (the mutants)
#   native/tests/mutation/mutate.py --prepare     (only copy the tree and build the three trees)
#
# The scratch copy (default /tmp/d4j-mutation) keeps three incremental build trees, so a mutant costs one
# recompiled .cu per configuration it reaches. Within a configuration the tests of the mutated op run first; if
# they kill it the others are not run (they would only add names to the catching list, at minutes per mutant).
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, HERE)
from mutants import MUTANTS  # noqa: E402

CONFIGS = [("plain", []), ("tsan", ["-DD4J_SANITIZE=thread"]), ("asan", ["-DD4J_SANITIZE=address"])]
# native/tests/tensor_core_emu.cpp's CTest entries (the last two under ThreadSanitizer only).
TENSOR_CORE_TESTS = [
    "tensor_core_bf16", "tensor_core_ldmatrix", "tensor_core_mma_layout", "tensor_core_tile",
    "tensor_core_cp_async", "tensor_core_read_after_wait_ok", "tensor_core_ldmatrix_sync_ok",
    "tensor_core_bug_read_before_wait", "tensor_core_bug_mma_lane_exited", "tensor_core_bug_mma_diverged",
    "tensor_core_bug_ldmatrix_misaligned", "tensor_core_bug_ldmatrix_global", "tensor_core_bug_cp_async_global_dst",
    "tensor_core_bug_wait_no_sync", "tensor_core_bug_ldmatrix_no_sync",
]
# The tests that exercise each file's kernels, run first.
OP_TESTS = {
    "reduce.cuh": ["kl_div_emu_vs_cpu", "cross_entropy_emu", "norm_act_emu"],
    "layernorm.cu": ["norm_act_emu"], "gelu.cu": ["norm_act_emu"], "kl_div.cu": ["kl_div_emu_vs_cpu"],
    "cross_entropy.cu": ["cross_entropy_emu"], "attention.cu": ["attention_emu"],
    "attention_bf16.cu": ["attention_bf16_emu"],
    "cast.cu": ["cast_emu"],
    "patch_embed.cu": ["patch_embed_emu"], "token_rows.cu": ["token_rows_emu"], "adamw.cu": ["adamw_emu"],
    "linear.cu": ["linear_emu"], "linear_bf16.cu": ["linear_emu"], "cublas.cu": ["linear_emu"],
    "emu/tensor_core_emu.h": TENSOR_CORE_TESTS, "emu/cuda_bf16_emu.h": TENSOR_CORE_TESTS,
    "tensor_core.cuh": TENSOR_CORE_TESTS + ["cast_emu", "norm_act_emu", "attention_bf16_emu"],
}
# Tests that never load libdistill4j_cudaemu: a mutant of native/cuda cannot change them.
UNRELATED = ["cpu_threads", "cpu_regions_num_threads", "cpu_thread_invariance"]


def die(msg):
    sys.exit("mutate.py: " + msg)


def edits(m):
    return m.get("edits") or [(m["orig"], m["repl"])]


def check_list():
    ids = set()
    for m in MUTANTS:
        if m["id"] in ids:
            die("duplicate mutant id " + m["id"])
        ids.add(m["id"])
        path = os.path.join(ROOT, "native", "cuda", m["file"])
        text = open(path).read()
        for orig, _ in edits(m):
            n = text.count(orig)
            if n != 1:
                die(f"mutant {m['id']}: its snippet occurs {n} times in native/cuda/{m['file']}, not once:\n{orig}")


def sync_tree(scratch):
    """Copies the working tree (tracked and untracked, not ignored) into scratch/src, rewriting only changed files
    so that the build trees there stay incremental. Returns the copy's folder and a hash of its contents."""
    files = subprocess.run(["git", "-C", ROOT, "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                           capture_output=True).stdout.decode().split("\0")
    src = os.path.join(scratch, "src")
    digest = hashlib.sha256()
    for f in sorted(filter(None, files)):
        a, b = os.path.join(ROOT, f), os.path.join(src, f)
        if not os.path.isfile(a):
            continue
        data = open(a, "rb").read()
        digest.update(f.encode() + b"\0" + data)
        if os.path.isfile(b) and open(b, "rb").read() == data:
            continue
        os.makedirs(os.path.dirname(b), exist_ok=True)
        shutil.copy2(a, b)
    return src, digest.hexdigest()


def run(cmd, log, timeout=None):
    """Runs cmd, appending its output to log; returns (exit code, output). A timeout kills the process group."""
    with open(log, "a") as lf:
        lf.write("$ " + " ".join(cmd) + "\n")
        lf.flush()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            out, _ = p.communicate()
            lf.write(out.decode(errors="replace") + "\n[timed out]\n")
            return None, out.decode(errors="replace")
        text = out.decode(errors="replace")
        lf.write(text + "\n")
        return p.returncode, text


def baseline(scratch, src, tree_hash, jobs, log, timeout, build_only=False):
    """Configures and builds the three trees and runs every test unmutated in each: a mutant is only judged against
    a baseline that passes. Skipped when this exact tree passed before (scratch/baseline.ok holds its hash)."""
    stamp = os.path.join(scratch, "baseline.ok")
    for name, flags in CONFIGS:
        build = os.path.join(scratch, name)
        if not os.path.isfile(os.path.join(build, "CMakeCache.txt")):
            rc, _ = run(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DD4J_CUDA=OFF",
                         "-DD4J_NATIVE_TESTS=ON"] + flags, log)
            if rc != 0:
                die(f"cannot configure {build} (see {log})")
        rc, _ = run(["cmake", "--build", build, "-j", str(jobs)], log)
        if rc != 0:
            die(f"the unmutated tree does not build in {build} (see {log})")
    if build_only or (os.path.isfile(stamp) and open(stamp).read().strip() == tree_hash):
        return
    for name, _ in CONFIGS:
        print(f"  baseline: {name} tests", flush=True)
        failed = ctest(os.path.join(scratch, name), None, exact(UNRELATED), log, timeout)
        if failed:
            die(f"the unmutated tree fails {', '.join(failed)} in {name}: fix that first (see {log})")
    with open(stamp, "w") as f:
        f.write(tree_hash + "\n")


def ctest(build, regex, exclude, log, timeout):
    """Failed test names (empty: all passed), or None when no test matched."""
    cmd = ["ctest", "--test-dir", build, "--output-on-failure"]
    if regex:
        cmd += ["-R", regex]
    if exclude:
        cmd += ["-E", exclude]
    rc, out = run(cmd, log, timeout)
    if rc is None:
        return ["(timeout: hang)"]
    if "No tests were found" in out:
        return None
    failed = re.findall(r"^\s*\d+ - (\S+) \(", out, re.M)
    if rc != 0 and not failed:
        failed = ["(ctest exit %d)" % rc]
    return failed


def exact(names):
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def judge(m, scratch, jobs, log, timeout):
    """('killed', config, tests) / ('survived', '', []) / ('invalid', config, [])."""
    first = OP_TESTS.get(m["file"], [])
    for name, _ in CONFIGS:
        build = os.path.join(scratch, name)
        rc, _ = run(["cmake", "--build", build, "-j", str(jobs)], log)
        if rc != 0:
            return "invalid", name, []
        failed = ctest(build, exact(first), None, log, timeout) if first else []
        if not failed:
            failed = ctest(build, None, exact(first + UNRELATED), log, timeout) or []
        if failed:
            return "killed", name, failed
    return "survived", "", []


def main():
    ap = argparse.ArgumentParser(description="Mutation check of the native/cuda kernels against the native tests.")
    ap.add_argument("ids", nargs="*", help="mutant ids to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--scratch", default="/tmp/d4j-mutation", help="scratch folder (default %(default)s)")
    ap.add_argument("--out", help="results file (default SCRATCH/results.txt)")
    ap.add_argument("--prepare", action="store_true", help="only copy the tree and build the three trees")
    ap.add_argument("--jobs", type=int, default=2, help="build jobs (default %(default)s)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per ctest call before a hang counts as a kill")
    a = ap.parse_args()
    check_list()
    if a.list:
        for m in MUTANTS:
            print(f"{m['id']:<28} {m['file']:<17} {m['cls']:<36} {m['why']}")
        return 0
    chosen = MUTANTS
    if a.ids:
        known = {m["id"] for m in MUTANTS}
        for i in a.ids:
            if i not in known:
                die("no mutant " + i + " (--list shows them)")
        chosen = [m for m in MUTANTS if m["id"] in a.ids]

    os.makedirs(a.scratch, exist_ok=True)
    log = os.path.join(a.scratch, "mutate.log")
    out = a.out or os.path.join(a.scratch, "results.txt")
    start = time.time()
    src, tree_hash = sync_tree(a.scratch)
    print(f"scratch {a.scratch}: the unmutated tree (plain, tsan, asan); log {log}", flush=True)
    baseline(a.scratch, src, tree_hash, a.jobs, log, a.timeout, a.prepare)
    if a.prepare:
        return 0

    rows = []
    for k, m in enumerate(chosen, 1):
        path = os.path.join(src, "native", "cuda", m["file"])
        original = open(path).read()
        text = original
        for orig, repl in edits(m):
            text = text.replace(orig, repl)
        t0 = time.time()
        try:
            with open(path, "w") as f:
                f.write(text)
            verdict, config, tests = judge(m, a.scratch, a.jobs, log, a.timeout)
        finally:
            with open(path, "w") as f:
                f.write(original)
        rows.append((m, verdict, config, tests, time.time() - t0))
        print(f"[{k}/{len(chosen)}] {m['id']}: {verdict} {config} {' '.join(tests)} ({time.time() - t0:.0f} s)",
              flush=True)

    valid = [r for r in rows if r[1] != "invalid"]
    killed = sum(1 for r in valid if r[1] == "killed")
    wall = time.time() - start
    lines = [f"{'mutant':<28} {'file':<17} {'class':<36} {'result':<9} {'by':<5} tests",
             "-" * 120]
    for m, verdict, config, tests, secs in rows:
        lines.append(f"{m['id']:<28} {m['file']:<17} {m['cls']:<36} {verdict:<9} {config:<5} {', '.join(tests)}")
    lines.append("-" * 120)
    score = f"{killed} of {len(valid)} valid mutants killed ({100.0 * killed / max(1, len(valid)):.0f} %)"
    invalid = len(rows) - len(valid)
    lines.append(score + (f"; {invalid} not valid (did not compile: fix them)" if invalid else ""))
    lines.append(f"wall time {wall / 60:.1f} min, {time.strftime('%Y-%m-%d %H:%M')}")
    report = "\n".join(lines) + "\n"
    print(report, end="")
    with open(out, "w") as f:
        f.write(report)
    print("written to " + out)
    return 0 if killed == len(valid) and not invalid else 1


if __name__ == "__main__":
    sys.exit(main())
