"""GPU check of the linear (cuBLAS via dlopen) and token-rows kernels: CUDA vs torch float64, and timings of
linear forward+backward against torch (F.linear + autograd) on the same GPU, fp32, TF32 off on both sides.

    python3 bench/gpu/check_linear.py --lib-dir build/gpu/lib
Prints one line per case and "LINEAR CHECK PASSED" or "LINEAR CHECK FAILED" last."""
import argparse
import ctypes
import glob
import os
import sys

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--lib-dir", required=True)
args = ap.parse_args()
torch.backends.cuda.matmul.allow_tf32 = False
dev = torch.device("cuda")
torch.ones(2, 2, device=dev) @ torch.ones(2, 2, device=dev)  # let torch load its cuBLAS first, as a JVM would not
lib = ctypes.CDLL(os.path.join(args.lib_dir, "libdistill4j_cuda.so"), mode=ctypes.RTLD_LOCAL)
vp, i64 = ctypes.c_void_p, ctypes.c_int64
lib.d4j_impl_init.argtypes = [ctypes.c_int]
lib.d4j_impl_last_error.restype = ctypes.c_char_p
lib.d4j_impl_linear_forward.argtypes = [vp] * 5 + [i64] * 3 + [vp]
lib.d4j_impl_linear_backward.argtypes = [vp] * 4 + [i64] * 3 + [vp] * 3
lib.d4j_impl_token_rows_forward.argtypes = [vp, vp] + [i64] * 4 + [vp]
lib.d4j_impl_token_rows_backward.argtypes = [vp, vp] + [i64] * 4 + [vp]
assert lib.d4j_impl_init(0) == 0, lib.d4j_impl_last_error()


def ok(rc, what):
    if rc != 0:
        raise RuntimeError(f"{what}: {lib.d4j_impl_last_error().decode()}")


def p(t):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
failed = 0
g = torch.Generator(device=dev).manual_seed(int.from_bytes(os.urandom(4), "little"))


def rel(a, ref):
    return ((a.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def linear_ours(x, w, b, r, dy, dx, dw, db):
    M, K = x.shape
    N = w.shape[0]
    ok(lib.d4j_impl_linear_forward(stream, p(x), p(w), p(b), p(r), M, K, N, p(y_buf[0])), "forward")
    ok(lib.d4j_impl_linear_backward(stream, p(x), p(w), p(dy), M, K, N, p(dx), p(dw), p(db)), "backward")


shapes = [(1584, 192, 576), (1584, 192, 192), (1584, 192, 768), (1584, 768, 192), (8, 192, 1000),
          (6528, 96, 288), (6528, 96, 96), (6528, 96, 384), (6528, 384, 96), (1, 1, 1), (7, 13, 5)]
for (M, K, N) in shapes:
    x = torch.randn(M, K, device=dev, generator=g)
    w = torch.randn(N, K, device=dev, generator=g) / K ** 0.5
    b = torch.randn(N, device=dev, generator=g)
    r = torch.randn(M, N, device=dev, generator=g)
    dy = torch.randn(M, N, device=dev, generator=g)
    y_buf = [torch.full((M, N), float("nan"), device=dev)]
    dx = torch.full((M, K), float("nan"), device=dev)
    dw0 = torch.randn(N, K, device=dev, generator=g)
    db0 = torch.randn(N, device=dev, generator=g)
    dw, db = dw0.clone(), db0.clone()
    linear_ours(x, w, b, r, dy, dx, dw, db)
    torch.cuda.synchronize()
    xd, wd, bd = (t.double().requires_grad_() for t in (x, w, b))
    yd = torch.nn.functional.linear(xd, wd, bd) + r.double()
    yd.backward(dy.double())
    errs = [rel(y_buf[0], yd.detach()), rel(dx, xd.grad), rel(dw, dw0.double() + wd.grad), rel(db, db0.double() + bd.grad)]
    # Determinism: the backward again from the same start, bit for bit.
    dw2, db2, dx2 = dw0.clone(), db0.clone(), torch.empty_like(dx)
    ok(lib.d4j_impl_linear_backward(stream, p(x), p(w), p(dy), M, K, N, p(dx2), p(dw2), p(db2)), "backward")
    torch.cuda.synchronize()
    same = torch.equal(dw2, dw) and torch.equal(db2, db) and torch.equal(dx2, dx)
    good = max(errs) <= 1e-5 and same
    failed += not good
    timing = ""
    if M > 8 or N == 1000:
        # fwd + bwd (dx, dW, db), 6MKN flop; torch: F.linear + autograd on fp32 leaves.
        xt, wt, bt = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()

        def ref_step():
            out = torch.nn.functional.linear(xt, wt, bt)
            out.backward(dy)

        def our_step():
            linear_ours(x, w, b, None, dy, dx, dw, db)

        res = {}
        for name, f in (("ours", our_step), ("torch", ref_step), ("ours", our_step), ("torch", ref_step)):
            for _ in range(5):
                f()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(50):
                f()
            e.record()
            torch.cuda.synchronize()
            res[name] = s.elapsed_time(e) / 50
        gf = 6 * M * K * N / 1e9
        timing = (f"  ours {res['ours']*1e3:.1f} us ({gf/res['ours']*1e3:.0f} GFLOP/s)  torch {res['torch']*1e3:.1f} us"
                  f" ({gf/res['torch']*1e3:.0f} GFLOP/s)  speedup {res['torch']/res['ours']:.2f}x")
    print(f"{'ok  ' if good else 'FAIL'} linear M={M} K={K} N={N} y {errs[0]:.1e} dx {errs[1]:.1e} dW {errs[2]:.1e} "
          f"db {errs[3]:.1e}{'' if same else ' NOT REPRODUCIBLE'}{timing}", flush=True)

for (B, T, D, P) in [(1, 1, 1, 1), (3, 7, 5, 2), (8, 198, 192, 2), (128, 51, 96, 1)]:
    t = torch.randn(B, T, D, device=dev, generator=g)
    dr = torch.randn(P, B, D, device=dev, generator=g)
    rows = torch.full((P, B, D), float("nan"), device=dev)
    dt = torch.randn(B, T, D, device=dev, generator=g)
    ok(lib.d4j_impl_token_rows_forward(stream, p(t), B, T, D, P, p(rows)), "token_rows forward")
    ok(lib.d4j_impl_token_rows_backward(stream, p(dr), B, T, D, P, p(dt)), "token_rows backward")
    torch.cuda.synchronize()
    want = torch.zeros(B, T, D, device=dev)
    want[:, :P] = dr.transpose(0, 1)
    good = torch.equal(rows, t[:, :P].transpose(0, 1)) and torch.equal(dt, want)
    failed += not good
    print(f"{'ok  ' if good else 'FAIL'} token_rows B={B} T={T} D={D} prefix={P}", flush=True)

print("LINEAR CHECK PASSED" if failed == 0 else f"LINEAR CHECK FAILED ({failed})")
sys.exit(1 if failed else 0)
