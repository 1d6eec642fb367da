#!/usr/bin/env python3
"""Shared plumbing of the one-shot GPU checks (bench/gpu/check_kl.py, check_patch_embed.py, check_attention.py).

The implementation libraries loaded with ctypes (every d4j_impl_* signature of native/include/distill4j_impl.h),
float32 buffers as numpy arrays (host: cpu, cuda-emu) or torch tensors (device: cuda), the timing loop, the
command line every check accepts, the table/JSON output, and what the per-op checks share (guarded output
buffers, the TF32 switches, the end of a run). No torch import here: the dry run has no torch.
"""

import argparse
import ctypes
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

# ---------------------------------------------------------------------------------------------------------
# The implementation libraries
# ---------------------------------------------------------------------------------------------------------

class ImplError(RuntimeError):
    """A d4j_impl_* entry returned nonzero; the message is d4j_impl_last_error()."""


_vp, _i64, _f32, _int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
# The other entries of distill4j_impl.h, for Impl.call (check_linear, check_loss, check_norm, check_model).
MORE_SIGNATURES = {
    "d4j_impl_linear_forward": [_vp] * 5 + [_i64] * 3 + [_vp, _int],
    "d4j_impl_linear_backward": [_vp] * 4 + [_i64] * 3 + [_vp] * 3 + [_int],
    "d4j_impl_linear_bf16_forward": [_vp] * 5 + [_i64] * 3 + [_vp],
    "d4j_impl_linear_bf16_backward": [_vp] * 4 + [_i64] * 3 + [_vp] * 3,
    "d4j_impl_layernorm_workspace": [_i64, _i64],
    "d4j_impl_layernorm_forward": [_vp] * 4 + [_i64, _i64, _f32] + [_vp] * 3,
    "d4j_impl_layernorm_backward": [_vp] * 6 + [_i64, _i64] + [_vp] * 4,
    "d4j_impl_layernorm_forward_bf16": [_vp] * 4 + [_i64, _i64, _f32] + [_vp] * 3,
    "d4j_impl_gelu_forward": [_vp, _vp, _i64, _vp],
    "d4j_impl_gelu_backward": [_vp, _vp, _vp, _i64, _vp],
    "d4j_impl_gelu_forward_bf16": [_vp, _vp, _i64, _vp],
    "d4j_impl_gelu_backward_bf16": [_vp, _vp, _vp, _i64, _vp],
    "d4j_impl_cross_entropy": [_vp, _vp, _vp, _i64, _i64, _f32, _f32, _vp, _vp, _vp],
    "d4j_impl_argmax": [_vp, _vp, _i64, _i64, _vp],
    "d4j_impl_sum_squares": [_vp, _vp, _i64, _int, _vp],
    "d4j_impl_clip_scale": [_vp, _vp, _f32, _vp, _vp],
    "d4j_impl_adamw": [_vp, _vp, _vp, _vp, _vp, _i64, _f32, _f32, _f32, _f32, _f32, _i64, _vp],
    "d4j_impl_token_rows_forward": [_vp, _vp] + [_i64] * 4 + [_vp],
    "d4j_impl_token_rows_backward": [_vp, _vp] + [_i64] * 4 + [_vp],
    "d4j_impl_attention_bf16_forward": [_vp, _vp] + [_i64] * 4 + [_f32, _vp, _vp],
    "d4j_impl_attention_bf16_backward": [_vp] * 5 + [_i64] * 4 + [_f32, _vp],
    "d4j_impl_cast_bf16": [_vp, _vp, _i64, _vp],
    "d4j_impl_cast_f32": [_vp, _vp, _i64, _vp],
    # streams and CUDA graphs (void ** arguments: a ctypes.c_void_p passed by reference)
    "d4j_impl_stream_create": [_vp],
    "d4j_impl_stream_destroy": [_vp],
    "d4j_impl_zero_async": [_vp, _vp, ctypes.c_size_t],
    "d4j_impl_copy_async": [_vp, _vp, _vp, ctypes.c_size_t],
    "d4j_impl_graph_begin": [_vp],
    "d4j_impl_graph_end": [_vp, _vp],
    "d4j_impl_graph_launch": [_vp, _vp],
    "d4j_impl_graph_destroy": [_vp],
}


class Impl:
    """One implementation library (cpu, cuda, cuda-emu) behind its own ctypes handle."""

    def __init__(self, name, path):
        self.name = name
        self.path = path
        # RTLD_LOCAL: the libraries export identical names; a global handle would let the first one loaded
        # answer for all of them.
        self.lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        lib = self.lib
        lib.d4j_impl_init.argtypes = [ctypes.c_int]
        lib.d4j_impl_init.restype = ctypes.c_int
        lib.d4j_impl_last_error.argtypes = []
        lib.d4j_impl_last_error.restype = ctypes.c_char_p
        lib.d4j_impl_synchronize.argtypes = [ctypes.c_void_p]
        lib.d4j_impl_synchronize.restype = ctypes.c_int
        vp = ctypes.c_void_p
        lib.d4j_impl_kl_div.argtypes = [vp, vp, vp, ctypes.c_int64, ctypes.c_int64, ctypes.c_float, ctypes.c_int,
                                        ctypes.c_int, ctypes.c_float, vp, vp, vp, vp]
        lib.d4j_impl_kl_div.restype = ctypes.c_int
        i64 = ctypes.c_int64
        shape = [i64] * 6  # B, Cin, H, W, P, D
        lib.d4j_impl_patch_embed_workspace.argtypes = shape
        lib.d4j_impl_patch_embed_workspace.restype = i64
        lib.d4j_impl_patch_embed_forward.argtypes = [vp, vp] + shape + [vp] * 7
        lib.d4j_impl_patch_embed_forward.restype = ctypes.c_int
        lib.d4j_impl_patch_embed_backward.argtypes = [vp, vp] + shape + [vp] * 9
        lib.d4j_impl_patch_embed_backward.restype = ctypes.c_int
        att = [i64] * 4  # B, N, H, Dh
        lib.d4j_impl_attention_workspace.argtypes = att
        lib.d4j_impl_attention_workspace.restype = i64
        lib.d4j_impl_attention_forward.argtypes = [vp, vp] + att + [ctypes.c_float, vp, vp, vp]
        lib.d4j_impl_attention_forward.restype = ctypes.c_int
        lib.d4j_impl_attention_backward.argtypes = [vp] + [vp] * 4 + att + [ctypes.c_float, vp, vp]
        lib.d4j_impl_attention_backward.restype = ctypes.c_int
        for name, types in MORE_SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes = types
            fn.restype = i64 if name.endswith("_workspace") else ctypes.c_int

    def call(self, name, *args):
        """d4j_impl_<name>(*args) for the entries of MORE_SIGNATURES (raw addresses, int or None for NULL);
        raises ImplError with d4j_impl_last_error() when it fails."""
        fn = getattr(self.lib, "d4j_impl_" + name)
        rc = fn(*args)
        if name.endswith("_workspace"):
            if rc < 0:
                self._check(rc, "d4j_impl_" + name)
            return rc
        self._check(rc, "d4j_impl_" + name)
        return 0

    def out_pointer(self, name, *args):
        """d4j_impl_<name>(*args, &p) for the entries that return a pointer through a void ** (stream_create,
        graph_end); returns p."""
        p = ctypes.c_void_p()
        self.call(name, *args, ctypes.byref(p))
        return p.value

    def _check(self, rc, what):
        if rc != 0:
            msg = self.lib.d4j_impl_last_error().decode(errors="replace")
            raise ImplError(f"{self.name}: {what} returned {rc}: {msg}")

    def init(self, device=0):
        self._check(self.lib.d4j_impl_init(device), f"d4j_impl_init({device})")

    def synchronize(self, stream):
        self._check(self.lib.d4j_impl_synchronize(stream), "d4j_impl_synchronize")

    def kl_div(self, stream, student, teacher, B, C, T, reduction, log_target, loss_scale, grad_out, row_loss,
               loss, grad):
        """d4j_impl_kl_div with raw addresses (int or None for NULL), in the header's argument order."""
        rc = self.lib.d4j_impl_kl_div(stream, student, teacher, B, C, T, reduction, log_target, loss_scale,
                                      grad_out, row_loss, loss, grad)
        self._check(rc, "d4j_impl_kl_div")

    def patch_embed_workspace(self, B, Cin, H, W, P, D):
        """Workspace bytes for the shape (the header's size query; negative means an error)."""
        n = self.lib.d4j_impl_patch_embed_workspace(B, Cin, H, W, P, D)
        if n < 0:
            self._check(n, "d4j_impl_patch_embed_workspace")
        return n

    def patch_embed_forward(self, stream, images, B, Cin, H, W, P, D, weight, bias, pos, cls, dist, tokens,
                            workspace):
        """d4j_impl_patch_embed_forward with raw addresses (int or None for NULL), in the header's order."""
        rc = self.lib.d4j_impl_patch_embed_forward(stream, images, B, Cin, H, W, P, D, weight, bias, pos, cls, dist,
                                                   tokens, workspace)
        self._check(rc, "d4j_impl_patch_embed_forward")

    def patch_embed_backward(self, stream, images, B, Cin, H, W, P, D, weight, dtokens, dweight, dbias, dpos, dcls,
                             ddist, dimages, workspace):
        """d4j_impl_patch_embed_backward with raw addresses (int or None for NULL), in the header's order."""
        rc = self.lib.d4j_impl_patch_embed_backward(stream, images, B, Cin, H, W, P, D, weight, dtokens, dweight,
                                                    dbias, dpos, dcls, ddist, dimages, workspace)
        self._check(rc, "d4j_impl_patch_embed_backward")


    def attention_workspace(self, B, N, H, Dh):
        """Workspace bytes for the shape (the header's size query; negative means an error)."""
        n = self.lib.d4j_impl_attention_workspace(B, N, H, Dh)
        if n < 0:
            self._check(n, "d4j_impl_attention_workspace")
        return n

    def attention_forward(self, stream, qkv, B, N, H, Dh, scale, out, lse, workspace):
        """d4j_impl_attention_forward with raw addresses (int or None for NULL), in the header's order."""
        rc = self.lib.d4j_impl_attention_forward(stream, qkv, B, N, H, Dh, scale, out, lse, workspace)
        self._check(rc, "d4j_impl_attention_forward")

    def attention_backward(self, stream, qkv, out, lse, dout, B, N, H, Dh, scale, dqkv, workspace):
        """d4j_impl_attention_backward with raw addresses (int or None for NULL), in the header's order."""
        rc = self.lib.d4j_impl_attention_backward(stream, qkv, out, lse, dout, B, N, H, Dh, scale, dqkv, workspace)
        self._check(rc, "d4j_impl_attention_backward")


def load_impl(name, lib_dir, filename, preload_cudart=False):
    """Loads and initialises one implementation library; exits with its error message if that fails."""
    path = os.path.join(lib_dir, filename)
    try:
        impl = Impl(name, path)
    except OSError as e:
        if not preload_cudart:
            sys.exit(f"cannot load {path}: {e}")
        # libdistill4j_cuda needs libcudart.so.13 and its RUNPATH is only $ORIGIN. Importing torch normally
        # loads that soname already (glibc then reuses it); if not, load the runtime torch ships, else the
        # toolkit's, globally, and retry.
        print(f"note: loading {path} failed ({e}); preloading libcudart.so.13")
        for candidate in cudart_candidates():
            try:
                ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
                print(f"note: preloaded {candidate}")
                break
            except OSError:
                continue
        try:
            impl = Impl(name, path)
        except OSError as e2:
            sys.exit(f"cannot load {path}: {e2}")
    try:
        impl.init(0)
    except ImplError as e:
        sys.exit(f"d4j_impl_init failed: {e}")
    print(f"loaded {name:8s} {path}")
    return impl


def cudart_candidates():
    """Where a libcudart.so.13 may be: beside torch's nvidia wheels, then the CUDA toolkit."""
    found = []
    try:
        import torch  # noqa: F401  (only to locate site-packages)
        site = os.path.dirname(os.path.dirname(torch.__file__))
        for root, _dirs, files in os.walk(os.path.join(site, "nvidia")):
            if "libcudart.so.13" in files:
                found.append(os.path.join(root, "libcudart.so.13"))
    except ImportError:
        pass
    found += ["/usr/local/cuda/lib64/libcudart.so.13", "/usr/local/cuda/targets/x86_64-linux/lib/libcudart.so.13",
              "libcudart.so.13"]
    return found


def loaded_cudart_copies():
    """Paths of every libcudart mapped into this process (DESIGN.md: one CUDA runtime per process)."""
    try:
        with open("/proc/self/maps") as f:
            return sorted({line.split()[-1] for line in f if "libcudart" in line})
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------------------
# Memory: numpy on the host, or torch tensors on a device
# ---------------------------------------------------------------------------------------------------------

class NumpyMem:
    """Host float32 buffers as numpy arrays (cpu and cuda-emu take host pointers)."""

    name = "host"

    def nan(self, shape):
        # Outputs start as NaN so that an element the kernel failed to write fails the comparison.
        return self.full(shape, np.nan)

    @staticmethod
    def full(shape, value):
        return np.full(shape, value, dtype=np.float32)

    @staticmethod
    def generator(seed):
        return np.random.default_rng(seed)

    @staticmethod
    def randn(gen, shape, std=1.0):
        return (gen.standard_normal(shape) * std).astype(np.float32)

    @staticmethod
    def workspace(nbytes):
        """A workspace of nbytes (at least 1), every byte 0xFF: NaN to a kernel that reads it unwritten."""
        return np.full(max(int(nbytes), 1), 0xFF, dtype=np.uint8)

    @staticmethod
    def clone(a):
        return a.copy()

    @staticmethod
    def same_bits(a, b):
        return a.shape == b.shape and a.tobytes() == b.tobytes()

    @staticmethod
    def all_equal(a, value):
        return bool((a == value).all())

    @staticmethod
    def ptr(a):
        return None if a is None else a.ctypes.data

    @staticmethod
    def scalar(values):
        return np.asarray(values, dtype=np.float32).reshape(-1)

    @staticmethod
    def f64(a):
        return np.asarray(a, dtype=np.float64)

    @staticmethod
    def rel_err(a, ref):
        """||a - ref|| / ||ref|| in float64; NaN/inf anywhere counts as an infinite error."""
        a, ref = np.asarray(a, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
        if a.shape != ref.shape or not np.isfinite(a).all() or not np.isfinite(ref).all():
            return math.inf
        den = float(np.linalg.norm(ref))
        num = float(np.linalg.norm(a - ref))
        return num / den if den > 0 else num


class TorchMem:
    """float32 buffers as torch tensors on `device` ('cuda' or 'cpu')."""

    def __init__(self, torch, device):
        self.torch = torch
        self.device = device
        self.name = device

    def nan(self, shape):
        return self.full(shape, float("nan"))

    def full(self, shape, value):
        return self.torch.full(shape, value, dtype=self.torch.float32, device=self.device)

    def generator(self, seed):
        return self.torch.Generator(device=self.device).manual_seed(seed)

    def randn(self, gen, shape, std=1.0):
        return self.torch.randn(shape, generator=gen, device=self.device) * std

    def workspace(self, nbytes):
        """A workspace of nbytes (at least 1), every byte 0xFF: NaN to a kernel that reads it unwritten."""
        return self.torch.full((max(int(nbytes), 1),), 0xFF, dtype=self.torch.uint8, device=self.device)

    @staticmethod
    def clone(t):
        return t.clone()

    def same_bits(self, a, b):
        i32 = self.torch.int32
        return a.shape == b.shape and bool(self.torch.equal(a.contiguous().view(i32), b.contiguous().view(i32)))

    @staticmethod
    def all_equal(t, value):
        return bool((t == value).all())

    @staticmethod
    def ptr(t):
        return None if t is None else t.data_ptr()

    def scalar(self, values):
        return self.torch.tensor(np.asarray(values, dtype=np.float32).reshape(-1), device=self.device)

    def f64(self, t):
        return t.to(device=self.device, dtype=self.torch.float64)

    def rel_err(self, a, ref):
        """||a - ref|| / ||ref|| in float64 on self.device (no multi-GB copies to the host)."""
        a, ref = self.f64(a).reshape(-1), self.f64(ref).reshape(-1)
        if a.shape != ref.shape or not bool(self.torch.isfinite(a).all()) or not bool(self.torch.isfinite(ref).all()):
            return math.inf
        den = float(self.torch.linalg.vector_norm(ref))
        num = float(self.torch.linalg.vector_norm(a - ref))
        return num / den if den > 0 else num


# ---------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------

class Timer:
    """Times `inner` calls of fn: CUDA events on the GPU (device time, no host sync inside), else wall clock."""

    def __init__(self, torch, device):
        self.torch, self.cuda = torch, device == "cuda"

    def __call__(self, fn, inner):
        if self.cuda:
            start = self.torch.cuda.Event(enable_timing=True)
            end = self.torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / inner
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) * 1e3 / inner


def median_alternating(timer, fns, reps, inner, warmup=5):
    """Median ms of each fn; the fns alternate within every repetition, so clock and thermal drift hit all."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            samples[i].append(timer(fn, inner))
    return [statistics.median(s) for s in samples]


# ---------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------

JSON_KEYS = ["op", "backend", "shape", "ours_ms", "reference", "reference_ms", "speedup", "max_rel_err"]


def print_table(rows, note=""):
    """One table of every row; '-' where a column does not apply (no time for correctness rows). `note` is
    added to the heading."""

    def cell(key, v):
        if v is None:
            return "-"
        if key == "max_rel_err":
            return f"{v:.2e}"
        if key in ("ours_ms", "reference_ms"):
            return f"{v:.4f}"
        if key == "speedup":
            return f"{v:.2f}"
        return str(v)

    table = [JSON_KEYS] + [[cell(k, r[k]) for k in JSON_KEYS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(JSON_KEYS))]
    print(f"\n== table (speedup = reference_ms / ours_ms{note}) ==")
    for n, line in enumerate(table):
        print("  ".join(v.ljust(w) if i in (0, 1, 2, 4) else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def write_json(rows, path):
    """JSON rows with exactly JSON_KEYS; infinite errors become null-free strings JSON can hold."""
    def clean(v):
        return "inf" if isinstance(v, float) and math.isinf(v) else v

    with open(path, "w") as f:
        json.dump([{k: clean(r[k]) for k in JSON_KEYS} for r in rows], f, indent=1)
        f.write("\n")
    print(f"wrote {len(rows)} rows to {path}")


# ---------------------------------------------------------------------------------------------------------
# Command line, environment, the CUDA library
# ---------------------------------------------------------------------------------------------------------

def arg_parser(doc, json_name):
    """The options every check takes (check.sh passes the same arguments to each)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--lib-dir", required=True, help="folder with libdistill4j_{cpu,cuda,cudaemu}.so")
    ap.add_argument("--dry-run", action="store_true", help="no GPU, no torch: cuda-emu on numpy arrays")
    ap.add_argument("--torch-cpu", action="store_true", help="test the torch code path on the CPU (no GPU)")
    ap.add_argument("--seed", type=int, default=None, help="default: fresh from os.urandom")
    ap.add_argument("--tol", type=float, default=1e-5, help="kernel under test vs the float64 reference")
    ap.add_argument("--cross-tol", type=float, default=None,
                    help="kernel under test vs the other backend (default: --tol; checks without one ignore it)")
    ap.add_argument("--reps", type=int, default=25, help="timing samples per measurement (>= 20)")
    ap.add_argument("--json", default=None, help=f"default: $OUT/{json_name} when OUT is set")
    ap.add_argument("--skip-timing", action="store_true")
    return ap


def seed_and_json(args, json_name):
    """The seed (printed, so that a failure can be rerun) and where the JSON rows go (None: nowhere)."""
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little") % 2**31
    print(f"seed {seed} (rerun with --seed {seed})")
    json_path = args.json or (os.path.join(os.environ["OUT"], json_name) if os.environ.get("OUT") else None)
    return seed, json_path


def open_cuda(torch, lib_dir):
    """libdistill4j_cuda on torch's device 0 and current stream; returns (impl, stream or None). Exits when
    there is no GPU. Warns when the process maps more than one CUDA runtime."""
    if not torch.cuda.is_available():
        sys.exit("torch.cuda.is_available() is False: no GPU for the check (use --dry-run off-GPU)")
    torch.cuda.init()
    torch.empty(1, device="cuda")  # creates the primary context before our library touches it
    stream = torch.cuda.current_stream().cuda_stream
    impl = load_impl("cuda", lib_dir, "libdistill4j_cuda.so", preload_cudart=True)
    copies = loaded_cudart_copies()
    print(f"torch current stream: {stream:#x}; libcudart copies mapped in this process: {len(copies)}")
    for c in copies:
        print(f"  {c}")
    if len(copies) > 1:
        print("WARNING: more than one CUDA runtime is loaded (DESIGN.md wants one per process)")
    return impl, stream or None


SKIPPED_STATUS = 75  # a dry-run check that cannot run here (no torch)


def import_torch_or_skip(args, script):
    """torch for the checks that need it (check_linear, check_loss, check_norm, check_model). Under --dry-run
    without torch the check is skipped: one line, exit status SKIPPED_STATUS (check.sh reports it as SKIPPED);
    check.sh --dry-run runs them with torch when its PYTHON has it."""
    try:
        import torch
    except ImportError:
        if args.dry_run:
            print(f"{script}: SKIPPED in the dry run: this python ({sys.executable}) has no torch "
                  f"(run check.sh with PYTHON=<a python with torch> to test the torch path on the CPU)")
            sys.exit(SKIPPED_STATUS)
        raise
    return torch


def preload_openblas():
    """The emulated library's linear layer calls the host's OpenBLAS, which the process must already have loaded
    (the JVM has it from the bytedeco preset): load one globally. $D4J_OPENBLAS first, then the system's, then the
    JavaCPP cache's."""
    import glob
    candidates = [os.environ.get("D4J_OPENBLAS", ""), "libopenblas_nolapack.so.0", "libopenblas.so.0"]
    candidates += sorted(glob.glob(os.path.expanduser("~/.javacpp/cache/openblas-*/org/bytedeco/openblas/*/"
                                                      "libopenblas_nolapack.so.0")))
    for c in candidates:
        if not c:
            continue
        try:
            ctypes.CDLL(c, mode=ctypes.RTLD_GLOBAL)
            print(f"note: loaded {c} for the emulated library's GEMMs")
            return True
        except OSError:
            continue
    print("note: no OpenBLAS found (set D4J_OPENBLAS=/path/libopenblas.so.0); the emulated linear layer will fail")
    return False


def open_torch_impl(torch, args):
    """(impl, stream, device) for the torch checks: libdistill4j_cuda on torch's device and current stream, or
    with --dry-run / --torch-cpu libdistill4j_cudaemu (the CUDA sources on the CPU) on torch CPU tensors."""
    if args.dry_run or args.torch_cpu:
        preload_openblas()
        print(f"torch-cpu mode: python {platform.python_version()}, torch {torch.__version__} on the CPU; kernel "
              f"under test: the emulated CUDA library")
        return load_impl("cuda-emu", args.lib_dir, "libdistill4j_cudaemu.so"), None, "cpu"
    environment_torch(torch)
    if torch.cuda.is_available():
        # torch's cuBLAS (the nvidia-cublas wheel's libcublas.so.13) loaded first: our library's
        # dlopen("libcublas.so.13") then finds it in the process even where the toolkit's is not on the path.
        torch.ones(2, 2, device="cuda") @ torch.ones(2, 2, device="cuda")
    impl, stream = open_cuda(torch, args.lib_dir)
    return impl, stream, "cuda"


def environment_torch(torch):
    """Versions and the device, printed first so the log says what ran."""
    print(f"python {platform.python_version()}  numpy {np.__version__}  torch {torch.__version__}  "
          f"torch CUDA {torch.version.cuda}  cuDNN {torch.backends.cudnn.version()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"device 0: {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
              f"{p.multi_processor_count} SMs")


# ---------------------------------------------------------------------------------------------------------
# Shared by the per-op checks
# ---------------------------------------------------------------------------------------------------------

GUARD = 64  # floats of guard zone on each side of every output buffer (keeps 16-byte alignment)
SENTINEL = -1234.5


class Guarded:
    """An output buffer of `shape` inside a larger one whose GUARD floats on each side hold SENTINEL; `view` is
    what the kernel gets. Starts as `init` (copied) or NaN."""

    def __init__(self, mem, shape, init=None):
        self.mem = mem
        n = math.prod(shape)
        self.flat = mem.full((n + 2 * GUARD,), SENTINEL)
        self.view = self.flat[GUARD:GUARD + n].reshape(shape)
        self.view[...] = float("nan") if init is None else init

    def guards_ok(self):
        return self.mem.all_equal(self.flat[:GUARD], SENTINEL) and self.mem.all_equal(self.flat[-GUARD:], SENTINEL)


def set_tf32(torch, allow):
    """The two TF32 switches PyTorch's fp32 convolution and matmul read (cuDNN's is on by default)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch may call these flags legacy
        torch.backends.cudnn.allow_tf32 = allow
        torch.backends.cuda.matmul.allow_tf32 = allow


def timed_rows(run_timing):
    """(ok, rows) of a timing run: a timing failure is reported and fails the check, but must not hide the
    correctness results printed before it."""
    try:
        return True, run_timing()
    except Exception as e:
        print(f"TIMING FAILED: {type(e).__name__}: {e}")
        return False, []


def finish(script, rows, json_path, ok, t_start, seed):
    """Prints the table, writes the JSON rows, prints the verdict line; returns the exit status."""
    print_table(rows)
    if json_path:
        write_json(rows, json_path)
    print(f"\n{script}: {'all correctness cases passed' if ok else 'SOME CASES FAILED'} "
          f"({time.time() - t_start:.1f} s, seed {seed})")
    return 0 if ok else 1
