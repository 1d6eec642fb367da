#!/usr/bin/env python3
"""One-shot check of the fused patch embedding (d4j_impl_patch_embed_*) on a lent GPU.

Run by bench/gpu/check.sh after check_kl.py. Same plumbing (gpucheck_common.py): the libraries through ctypes,
each behind its own RTLD_LOCAL handle. The CPU library is NOT used here: its patch_embed needs OpenBLAS's
cblas_sgemm already loaded under the soname it looks for, which numpy/torch on the GPU machine need not provide;
the kernel under test is compared against a float64 reference instead.

Modes
  (default)     GPU: libdistill4j_cuda on torch CUDA tensors and torch's current stream, checked against PyTorch
                float64 autograd of conv2d(stride=P).flatten(2).transpose(1,2), cat([cls, dist, patches]) + pos
                on the GPU; then timed at B=32, 3x224x224, P=16, D=192, distilled, against PyTorch's fp32 chain
                (cuDNN, TF32 off; and, reported only, TF32 on).
  --dry-run     No GPU, no torch: libdistill4j_cudaemu (the CUDA sources on the CPU, host pointers, stream NULL)
                on numpy arrays against a numpy float64 reference (itself checked against direct loops and the
                adjoint identities), at tiny shapes, no timing.
  --torch-cpu   No GPU, but torch: the GPU mode's torch code with torch on the CPU and libdistill4j_cudaemu as the
                kernel under test, at the dry-run shapes. Only for testing this script off the GPU machine.

Every case: fresh random inputs; forward twice into NaN-filled tokens (checked, and the two results bit for bit
equal); backward twice with the same dtokens into parameter gradients that start random (the contract is +=:
after call k they must be init + k * ref) and into a NaN-filled dimages, or dimages = NULL (the contract is =:
after each call exactly ref, and the same bits both times). Every output buffer sits between guard zones that
must come back untouched. Metric: ||ours - ref|| / ||ref|| in float64 per tensor (for accumulated gradients
||(ours - init) - k ref|| / ||k ref||). A case passes when every tensor is within --tol (1e-5: fp32 FMAs, no TF32),
the guards hold and the repeated calls agree bit for bit. Exit status 1 if any case fails.
"""

import math
import platform
import sys
import time

import numpy as np

from gpucheck_common import (Guarded, NumpyMem, Timer, TorchMem, arg_parser, environment_torch, finish, load_impl,
                             median_alternating, open_cuda, seed_and_json, set_tf32, timed_rows)

JSON_NAME = "gpu_patch_embed.json"
PREFIXES = {0: "none", 1: "cls", 2: "cls+dist"}  # prefix tokens: cls = NULL, dist = NULL / cls only / both
# (B, Cin, H, W, P, D)
GPU_SHAPES = [(B, Cin, H, W, P, D) for Cin in (1, 3) for (H, W, P) in ((28, 28, 4), (28, 28, 7), (32, 48, 8),
                                                                       (224, 224, 16))
              for D in (32, 192) for B in (1, 5)]
GPU_SHAPES += [(2, 3, 28, 28, 7, 30)]  # D % 4 != 0: the forward's scalar epilogue
# The emulator runs the CUDA threads of a block as OS threads (256 per block, 64x64 tiles): keep B*N to ~200 rows.
# (3,1,32,32,4,30): B*N = 192 > 128 splits the weight-gradient reduction in two chunks, and D % 4 != 0.
DRY_SHAPES = [(1, 1, 8, 8, 4, 32), (2, 3, 14, 14, 7, 40), (1, 3, 16, 24, 8, 32), (3, 1, 32, 32, 4, 30)]
TIMING_SHAPE = (32, 3, 224, 224, 16, 192)
TIMING_PREFIX = 2  # DeiT: class and distillation tokens
GRADS = ("dweight", "dbias", "dpos", "dcls", "ddist")


def shape_str(shape):
    B, Cin, H, W, P, D = shape
    return f"B={B},C={Cin},H={H},W={W},P={P},D={D}"


def derived(shape, prefix):
    """(N, K, T): patches per image, patch length, token rows per image."""
    B, Cin, H, W, P, D = shape
    N = (H // P) * (W // P)
    return N, Cin * P * P, prefix + N


# ---------------------------------------------------------------------------------------------------------
# Buffers and calls
# ---------------------------------------------------------------------------------------------------------

def make_inputs(mem, gen, shape, prefix):
    """Random fp32 inputs (dict: images, weight, bias, pos, cls, dist; absent tokens None) and dtokens. The weight
    is scaled by 1/sqrt(K) so that the convolution and the added terms are all of order 1: no term hides another's
    error in the norm."""
    B, Cin, H, W, P, D = shape
    N, K, T = derived(shape, prefix)
    x = dict(images=mem.randn(gen, (B, Cin, H, W)), weight=mem.randn(gen, (D, Cin, P, P), 1.0 / math.sqrt(K)),
             bias=mem.randn(gen, (D,)), pos=mem.randn(gen, (T, D)),
             cls=mem.randn(gen, (D,)) if prefix >= 1 else None, dist=mem.randn(gen, (D,)) if prefix >= 2 else None)
    return x, mem.randn(gen, (B, T, D))


class Kernel:
    """The implementation under test with its memory and stream; calls take the module's dicts of buffers."""

    def __init__(self, impl, mem, stream=None):
        self.impl, self.mem, self.stream = impl, mem, stream
        self.name = impl.name

    def workspace(self, shape):
        return self.mem.workspace(self.impl.patch_embed_workspace(*shape))

    def forward_args(self, shape, x, tokens, ws):
        p = self.mem.ptr
        return (self.stream, p(x["images"]), *shape, p(x["weight"]), p(x["bias"]), p(x["pos"]), p(x["cls"]),
                p(x["dist"]), p(tokens), p(ws))

    def backward_args(self, shape, x, dtokens, grads, dimages, ws):
        """grads: dict name -> buffer (None where the input is absent)."""
        p = self.mem.ptr
        return (self.stream, p(x["images"]), *shape, p(x["weight"]), p(dtokens), *(p(grads[g]) for g in GRADS),
                p(dimages), p(ws))

    def forward(self, *args):
        self.impl.patch_embed_forward(*args)
        self.impl.synchronize(self.stream)

    def backward(self, *args):
        self.impl.patch_embed_backward(*args)
        self.impl.synchronize(self.stream)


# ---------------------------------------------------------------------------------------------------------
# References (float64)
# ---------------------------------------------------------------------------------------------------------

def ref_numpy(x, P, dtokens, with_dimages):
    """Forward and every gradient in float64 with numpy: the convolution as im2col and matmuls."""
    img = np.asarray(x["images"], np.float64)
    B, C, H, W = img.shape
    Hp, Wp = H // P, W // P
    N, K = Hp * Wp, C * P * P
    w = np.asarray(x["weight"], np.float64).reshape(-1, K)
    D = w.shape[0]
    a = img.reshape(B, C, Hp, P, Wp, P).transpose(0, 2, 4, 1, 3, 5).reshape(B, N, K)  # row n = py*Wp+px
    prefix_rows = [np.asarray(x[k], np.float64) for k in ("cls", "dist") if x[k] is not None]
    prefix = len(prefix_rows)
    patches = a @ w.T + np.asarray(x["bias"], np.float64)
    tokens = np.concatenate([np.broadcast_to(r, (B, 1, D)) for r in prefix_rows] + [patches], axis=1)
    tokens = tokens + np.asarray(x["pos"], np.float64)
    dt = np.asarray(dtokens, np.float64)
    g = dt[:, prefix:, :]
    ref = dict(tokens=tokens, dweight=np.einsum("bnd,bnk->dk", g, a).reshape(x["weight"].shape),
               dbias=g.sum(axis=(0, 1)), dpos=dt.sum(axis=0),
               dcls=dt[:, 0].sum(axis=0) if prefix >= 1 else None, ddist=dt[:, 1].sum(axis=0) if prefix >= 2 else None,
               dimages=None)
    if with_dimages:
        ref["dimages"] = (g @ w).reshape(B, Hp, Wp, C, P, P).transpose(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)
    return ref


def selfcheck_ref_numpy(rng):
    """ref_numpy against direct loops (forward) and the adjoint identities of a map that is bilinear in
    (images, weight) and linear in the rest (backward):
        <dtokens, tokens> = <dweight, weight> + <dbias, bias> + <dpos, pos> + <dcls, cls> + <ddist, dist>
        <dtokens, tokens - (bias, pos, cls, dist terms)> = <dimages, images>
    so that the dry run's reference is not just the kernel's index arithmetic written twice. Returns the worst
    relative error (should be ~1e-15)."""
    worst = 0.0
    for prefix in PREFIXES:
        B, C, H, W, P, D = 2, 2, 8, 12, 4, 3
        shape = (B, C, H, W, P, D)
        x, dt = make_inputs(NumpyMem(), rng, shape, prefix)
        x = {k: None if v is None else v.astype(np.float64) for k, v in x.items()}
        dt = dt.astype(np.float64)
        ref = ref_numpy(x, P, dt, True)
        direct = np.zeros_like(ref["tokens"])
        Wp = W // P
        for b in range(B):
            for r in range(prefix):
                direct[b, r] = x["cls" if r == 0 else "dist"] + x["pos"][r]
            for n in range((H // P) * Wp):
                py, px = divmod(n, Wp)
                for d in range(D):
                    acc = x["bias"][d] + x["pos"][prefix + n, d]
                    for c in range(C):
                        for ky in range(P):
                            for kx in range(P):
                                acc += x["weight"][d, c, ky, kx] * x["images"][b, c, py * P + ky, px * P + kx]
                    direct[b, prefix + n, d] = acc
        worst = max(worst, NumpyMem.rel_err(ref["tokens"], direct))
        lhs = float((dt * ref["tokens"]).sum())
        rhs = sum(float((ref[g] * x[g[1:]]).sum()) for g in GRADS if ref[g] is not None)
        worst = max(worst, abs(lhs - rhs) / abs(lhs))
        x0 = dict(x, bias=np.zeros(D), pos=np.zeros_like(x["pos"]), cls=None if prefix < 1 else np.zeros(D),
                  dist=None if prefix < 2 else np.zeros(D))
        conv = ref_numpy(x0, P, dt, False)["tokens"]
        lhs = float((dt * conv).sum())
        rhs = float((ref["dimages"] * x["images"]).sum())
        worst = max(worst, abs(lhs - rhs) / abs(lhs))
    return worst


def torch_patch_embed(torch, images, weight, bias, pos, cls, dist, P):
    """The PyTorch chain our op replaces (timm's PatchEmbed + token concat + pos add), in any dtype."""
    F = torch.nn.functional
    B, D = images.shape[0], weight.shape[0]
    x = F.conv2d(images, weight, bias, stride=P).flatten(2).transpose(1, 2)
    prefix = [t.reshape(1, 1, D).expand(B, 1, D) for t in (cls, dist) if t is not None]
    if prefix:
        x = torch.cat(prefix + [x], dim=1)
    return x + pos


def ref_torch(torch, x, P, dtokens, with_dimages):
    """Forward and gradients by PyTorch float64 autograd on the inputs' device."""
    leaves = {k: None if v is None else v.double().requires_grad_(k != "images" or with_dimages)
              for k, v in x.items()}
    tokens = torch_patch_embed(torch, **leaves, P=P)
    tokens.backward(dtokens.double())
    ref = {"tokens": tokens.detach()}
    for k, v in leaves.items():
        ref["d" + k] = None if v is None else v.grad
    return ref


# ---------------------------------------------------------------------------------------------------------
# Correctness
# ---------------------------------------------------------------------------------------------------------

def run_case(kern, torch, gen, shape, prefix, with_dimages, tol):
    """One case; returns (ok, errs: name -> worst rel err or None, guards_ok, deterministic)."""
    m = kern.mem
    P = shape[4]
    x, dtokens = make_inputs(m, gen, shape, prefix)
    ref = ref_numpy(x, P, dtokens, with_dimages) if torch is None else ref_torch(torch, x, P, dtokens, with_dimages)
    ws = kern.workspace(shape)
    B, T, D = shape[0], derived(shape, prefix)[2], shape[5]
    errs = {}

    tokens = Guarded(m, (B, T, D))
    kern.forward(*kern.forward_args(shape, x, tokens.view, ws))
    first = m.clone(tokens.view)
    kern.forward(*kern.forward_args(shape, x, tokens.view, ws))
    deterministic = m.same_bits(first, tokens.view)
    errs["tokens"] = m.rel_err(tokens.view, ref["tokens"])

    inits, grads = {}, {}
    for g in GRADS:
        if ref[g] is not None:
            inits[g] = m.randn(gen, tuple(ref[g].shape))
            grads[g] = Guarded(m, tuple(ref[g].shape), inits[g])
    dimages = Guarded(m, tuple(x["images"].shape)) if with_dimages else None
    views = {g: grads[g].view if g in grads else None for g in GRADS}
    args = kern.backward_args(shape, x, dtokens, views, None if dimages is None else dimages.view, ws)
    dimg_first = None
    for k in (1, 2):
        kern.backward(*args)
        for g, buf in grads.items():
            e = m.rel_err(m.f64(buf.view) - m.f64(inits[g]), k * ref[g])
            errs[g] = max(errs.get(g, 0.0), e)
        if dimages is not None:
            errs["dimages"] = max(errs.get("dimages", 0.0), m.rel_err(dimages.view, ref["dimages"]))
            if k == 1:
                dimg_first = m.clone(dimages.view)
            else:
                deterministic &= m.same_bits(dimg_first, dimages.view)
    guards_ok = all(b.guards_ok() for b in [tokens, *grads.values()] + ([dimages] if dimages is not None else []))
    ok = guards_ok and deterministic and all(e <= tol for e in errs.values())
    return ok, errs, guards_ok, deterministic


def run_correctness(kern, shapes, tol, seed, torch=None):
    """Every shape with every prefix (dimages NULL on alternate cases); returns (all_passed, one row per shape)."""
    ref_name = "numpy-fp64" if torch is None else f"torch-fp64-autograd({kern.mem.device})"
    cols = ("tokens", "dweight", "dbias", "dpos", "dcls", "ddist", "dimages")
    print(f"\n== correctness: {kern.name} vs {ref_name} (pass if every rel err <= {tol:g}, guard zones intact, "
          f"repeated calls bit-identical; gradients: init + k*ref after backward call k, dimages = ref) ==")
    head = " ".join(f"{c:>9}" for c in cols)
    print(f"{'shape':>32} {'prefix':>8} {'dimg':>4} | {head} | {'guards':>6} {'determ':>6} |")
    rows, all_ok = [], True
    for si, shape in enumerate(shapes):
        worst = 0.0
        for prefix in PREFIXES:
            with_dimages = (si + prefix) % 2 == 0  # each shape gets both, over its three prefixes
            gen = kern.mem.generator(seed + 1000 * si + prefix)
            try:
                ok, errs, guards_ok, det = run_case(kern, torch, gen, shape, prefix, with_dimages, tol)
            except Exception as e:  # ImplError, or the reference failing: report it, go on with the next case
                print(f"{shape_str(shape):>32} {PREFIXES[prefix]:>8} {'yes' if with_dimages else 'no':>4} | "
                      f"ERROR {type(e).__name__}: {e} | FAIL")
                all_ok, worst = False, math.inf
                continue
            all_ok &= ok
            worst = max([worst] + list(errs.values()))
            cells = " ".join(f"{errs[c]:9.2e}" if c in errs else f"{'-':>9}" for c in cols)
            print(f"{shape_str(shape):>32} {PREFIXES[prefix]:>8} {'yes' if with_dimages else 'no':>4} | {cells} | "
                  f"{'ok' if guards_ok else 'HIT':>6} {'yes' if det else 'NO':>6} | {'ok' if ok else 'FAIL'}")
        rows.append(dict(op="patch_embed_check", backend=kern.name, shape=shape_str(shape), ours_ms=None,
                         reference=ref_name, reference_ms=None, speedup=None, max_rel_err=worst))
        if torch is not None and kern.mem.device == "cuda":
            torch.cuda.empty_cache()
    return all_ok, rows


# ---------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------

def run_timing(torch, kern, shape, prefix, reps, seed):
    """Ours forward, and forward + backward (dimages NULL), vs PyTorch's fp32 chain with TF32 off (the fair
    comparison) and on (reported only). Returns table rows."""
    m = kern.mem
    device = m.device
    B, Cin, H, W, P, D = shape
    N, K, T = derived(shape, prefix)
    timer = Timer(torch, device)
    gen = m.generator(seed + 7)
    x, dtokens = make_inputs(m, gen, shape, prefix)
    ws = kern.workspace(shape)
    tokens = m.nan((B, T, D))
    grads = {g: None for g in GRADS}
    grads.update(dweight=m.full((D, Cin, P, P), 0.0), dbias=m.full((D,), 0.0), dpos=m.full((T, D), 0.0))
    if prefix >= 1:
        grads["dcls"] = m.full((D,), 0.0)
    if prefix >= 2:
        grads["ddist"] = m.full((D,), 0.0)
    fwd_args = kern.forward_args(shape, x, tokens, ws)
    bwd_args = kern.backward_args(shape, x, dtokens, grads, None, ws)
    impl = kern.impl

    def ours_fwd():
        impl.patch_embed_forward(*fwd_args)

    def ours_fwd_bwd():
        impl.patch_embed_forward(*fwd_args)
        impl.patch_embed_backward(*bwd_args)  # parameter gradients accumulate, as autograd's do below

    leaves = {k: None if v is None else v.clone().requires_grad_(k != "images") for k, v in x.items()}

    def torch_fwd(tf32):
        def step():
            set_tf32(torch, tf32)
            with torch.no_grad():
                torch_patch_embed(torch, **leaves, P=P)
        return step

    def torch_fwd_bwd(tf32):
        def step():
            set_tf32(torch, tf32)
            torch_patch_embed(torch, **leaves, P=P).backward(dtokens)  # .grad accumulates (+=) after the first
        return step

    fns = [ours_fwd, torch_fwd(False), torch_fwd(True), ours_fwd_bwd, torch_fwd_bwd(False), torch_fwd_bwd(True)]
    inner = 10 if device == "cuda" else 1
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # let cuDNN pick its fastest algorithm: the strongest reference
    try:
        print(f"\n== timing ({device}, {shape_str(shape)}, prefix {PREFIXES[prefix]}; median of {reps} samples of "
              f"{inner} calls, alternating; cuDNN benchmark mode) ==")
        ms = median_alternating(timer, fns, reps, inner)
        impl.synchronize(kern.stream)

        # Accuracy of the timed configuration against float64 autograd, ours and PyTorch's (fp32 and TF32).
        ref = ref_torch(torch, x, P, dtokens, False)
        for g in GRADS:
            if grads[g] is not None:
                grads[g].zero_()
        kern.forward(*fwd_args)
        kern.backward(*bwd_args)
        err_fwd = m.rel_err(tokens, ref["tokens"])
        err_bwd = max(m.rel_err(grads[g], ref[g]) for g in GRADS if grads[g] is not None)
        err_torch = {}
        for tf32 in (False, True):
            set_tf32(torch, tf32)
            with torch.no_grad():
                out = torch_patch_embed(torch, **{k: None if v is None else v.detach() for k, v in leaves.items()},
                                        P=P)
            err_torch[tf32] = m.rel_err(out, ref["tokens"])
    finally:
        set_tf32(torch, False)
        torch.backends.cudnn.benchmark = benchmark

    o_f, t_f32, t_tf32, o_fb, tb_f32, tb_tf32 = ms
    chain = "conv2d+flatten+transpose+cat+add"
    rows = []
    print(f"{'':>14} {'ours ms':>9} | {'torch fp32 ms':>13} {'speedup':>7} | {'torch TF32 ms':>13} {'speedup':>7} | "
          f"ours rel err vs fp64")
    for op, ours_ms, r32, rtf, err, label in (("patch_embed_fwd", o_f, t_f32, t_tf32, err_fwd, "forward"),
                                              ("patch_embed_fwd_bwd", o_fb, tb_f32, tb_tf32, max(err_fwd, err_bwd),
                                               "forward+backward")):
        print(f"{label:>16} {ours_ms:9.4f} | {r32:13.4f} {r32 / ours_ms:6.2f}x | {rtf:13.4f} {rtf / ours_ms:6.2f}x | "
              f"{err:.2e}")
        what = chain if op == "patch_embed_fwd" else chain + "+autograd (no dimages)"
        rows.append(dict(op=op, backend=kern.name, shape=shape_str(shape), ours_ms=ours_ms,
                         reference=f"torch-fp32 {what} ({device}, TF32 off)", reference_ms=r32,
                         speedup=r32 / ours_ms, max_rel_err=err))
        rows.append(dict(op=op, backend=kern.name, shape=shape_str(shape), ours_ms=ours_ms,
                         reference=f"torch-TF32 {what} ({device}, TF32 on, report only)", reference_ms=rtf,
                         speedup=rtf / ours_ms, max_rel_err=err))
    print("(torch: eager PyTorch, its host-side dispatch and autograd overhead included where the GPU outruns it)")
    print(f"rel err vs fp64 of the forward: ours {err_fwd:.2e}, torch fp32 (TF32 off) {err_torch[False]:.2e}, "
          f"torch TF32 on {err_torch[True]:.2e} (~1e-3 means TF32 was really used)")
    for label, ours_ms, r32 in (("forward", o_f, t_f32), ("forward+backward", o_fb, tb_f32)):
        sp = r32 / ours_ms
        print(f"target >= 1.0x vs the fp32 cuDNN path, {label}: {sp:.2f}x ({'met' if sp >= 1.0 else 'NOT met'}; "
              f"reported, not judged)")
    return rows


# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------

def main():
    args = arg_parser(__doc__, JSON_NAME).parse_args()
    seed, json_path = seed_and_json(args, JSON_NAME)
    t_start = time.time()

    if args.dry_run:
        print(f"dry run: python {platform.python_version()}, numpy {np.__version__}; no GPU, no torch")
        worst_ref = selfcheck_ref_numpy(np.random.default_rng(seed))
        print(f"numpy reference vs direct loops and adjoint identities: rel err {worst_ref:.2e}")
        ok = worst_ref <= 1e-12
        kern = Kernel(load_impl("cuda-emu", args.lib_dir, "libdistill4j_cudaemu.so"), NumpyMem())
        passed, rows = run_correctness(kern, DRY_SHAPES, args.tol, seed)
        ok &= passed
    else:
        import torch  # only here: the dry run must work without it

        environment_torch(torch)
        if args.torch_cpu:
            kern = Kernel(load_impl("cuda-emu", args.lib_dir, "libdistill4j_cudaemu.so"), TorchMem(torch, "cpu"))
            shapes, timing_shape = DRY_SHAPES, DRY_SHAPES[2]
        else:
            impl, stream = open_cuda(torch, args.lib_dir)
            kern = Kernel(impl, TorchMem(torch, "cuda"), stream)
            shapes, timing_shape = GPU_SHAPES, TIMING_SHAPE
        set_tf32(torch, False)  # the float64 references do not care; the timing sets the flags per call
        torch.manual_seed(seed)
        ok, rows = run_correctness(kern, shapes, args.tol, seed, torch)
        if not args.skip_timing:
            timing_ok, timing = timed_rows(lambda: run_timing(torch, kern, timing_shape, TIMING_PREFIX, max(args.reps, 20), seed))
            ok &= timing_ok
            rows += timing

    return finish("check_patch_embed.py", rows, json_path, ok, t_start, seed)


if __name__ == "__main__":
    sys.exit(main())
