#!/usr/bin/env python3
"""One-shot check of the linear layer (d4j_impl_linear_*, cuBLAS opened with dlopen) and the token-rows gather
(d4j_impl_token_rows_*) on a lent GPU.

Run by bench/gpu/check.sh. libdistill4j_cuda on torch CUDA tensors and torch's current stream against torch
float64 (F.linear + the residual, autograd): ||ours - ref|| / ||ref|| <= --tol for y, dx, dW (accumulated onto a
random start) and db; the backward run twice from the same start must give the same bits. token_rows must be
exact. tf32 (precision 1) and linear_bf16 per element against float64 with bounds from their roundings. Then
linear forward + backward (dx, dW, db) is timed against torch fp32 F.linear + autograd (TF32 off on
both sides: our cuBLAS calls use plain fp32).

--dry-run / --torch-cpu: the same code on torch CPU tensors with libdistill4j_cudaemu (its GEMMs are OpenBLAS),
small shapes, a short timing run only to exercise the code. Exit status 1 if any check fails.
"""

import sys
import time

from gpucheck_common import (Timer, arg_parser, finish, import_torch_or_skip, median_alternating, open_torch_impl,
                             seed_and_json, set_tf32, timed_rows)

JSON_NAME = "gpu_linear.json"
GPU_SHAPES = [(1584, 192, 576), (1584, 192, 192), (1584, 192, 768), (1584, 768, 192), (8, 192, 1000),
              (6528, 96, 288), (6528, 96, 96), (6528, 96, 384), (6528, 384, 96), (1, 1, 1), (7, 13, 5)]
# DeiT-Ti at B=8 (M = 8 * 198): qkv, proj, fc1, fc2 and the head; a 28x28 ViT at B=128 (M = 128 * 51).
TIMED = [(1584, 192, 576), (1584, 192, 192), (1584, 192, 768), (1584, 768, 192), (8, 192, 1000),
         (12672, 192, 768), (12672, 768, 192), (6528, 96, 384)]
DRY_SHAPES = [(36, 64, 192), (36, 256, 64), (2, 64, 10), (1, 1, 1), (7, 13, 5)]
DRY_TIMED = [(36, 64, 192)]
GPU_ROWS = [(1, 1, 1, 1), (3, 7, 5, 2), (8, 198, 192, 2), (128, 51, 96, 1)]
DRY_ROWS = [(1, 1, 1, 1), (3, 7, 5, 2), (2, 18, 64, 2)]


def main():
    args = arg_parser(__doc__, JSON_NAME).parse_args()
    torch = import_torch_or_skip(args, "check_linear.py")
    seed, json_path = seed_and_json(args, JSON_NAME)
    t_start = time.time()
    set_tf32(torch, False)
    if not (args.dry_run or args.torch_cpu):
        # torch loads its own cuBLAS first; ours is opened by our library on first use, as in a JVM.
        torch.ones(2, 2, device="cuda") @ torch.ones(2, 2, device="cuda")
    impl, stream, dev = open_torch_impl(torch, args)
    cpu = dev == "cpu"
    shapes, timed, row_cases = (DRY_SHAPES, DRY_TIMED, DRY_ROWS) if cpu else (GPU_SHAPES, TIMED, GPU_ROWS)
    g = torch.Generator(device=dev).manual_seed(seed)
    ok_all = True
    rows = []

    def p(t):
        return None if t is None else t.data_ptr()

    def sync():
        impl.synchronize(stream)

    def rel(a, ref):
        return ((a.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()

    def fwd(x, w, b, r, y):
        M, K = x.shape
        impl.call("linear_forward", stream, p(x), p(w), p(b), p(r), M, K, w.shape[0], p(y), 0)

    def bwd(x, w, dy, dx, dw, db):
        M, K = x.shape
        impl.call("linear_backward", stream, p(x), p(w), p(dy), M, K, w.shape[0], p(dx), p(dw), p(db), 0)

    print("\n== linear vs torch float64 (F.linear + residual, autograd) ==")
    for (M, K, N) in shapes:
        for with_bias in (True, False) if (M, K, N) in ((7, 13, 5), (1, 1, 1)) else (True,):
            x = torch.randn(M, K, device=dev, generator=g)
            w = torch.randn(N, K, device=dev, generator=g) / K ** 0.5
            b = torch.randn(N, device=dev, generator=g) if with_bias else None
            r = torch.randn(M, N, device=dev, generator=g)
            dy = torch.randn(M, N, device=dev, generator=g)
            y = torch.full((M, N), float("nan"), device=dev)
            dx = torch.full((M, K), float("nan"), device=dev)
            dw0 = torch.randn(N, K, device=dev, generator=g)
            db0 = torch.randn(N, device=dev, generator=g)
            dw, db = dw0.clone(), db0.clone()
            fwd(x, w, b, r, y)
            bwd(x, w, dy, dx, dw, db if with_bias else None)
            dw2, db2, dx2 = dw0.clone(), db0.clone(), torch.full_like(dx, float("nan"))
            bwd(x, w, dy, dx2, dw2, db2 if with_bias else None)
            sync()
            xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
            bd = b.double().requires_grad_() if with_bias else None
            yd = torch.nn.functional.linear(xd, wd, bd) + r.double()
            yd.backward(dy.double())
            errs = [rel(y, yd.detach()), rel(dx, xd.grad), rel(dw, dw0.double() + wd.grad)]
            errs.append(rel(db, db0.double() + bd.grad) if with_bias else (0.0 if torch.equal(db, db0) else 1.0))
            same = torch.equal(dw2, dw) and torch.equal(db2, db) and torch.equal(dx2, dx)
            good = max(errs) <= args.tol and same
            ok_all &= good
            print(f"{'ok  ' if good else 'FAIL'} linear M={M} K={K} N={N} bias={with_bias} err y {errs[0]:.1e} "
                  f"dx {errs[1]:.1e} dW {errs[2]:.1e} db {errs[3]:.1e}{'' if same else ' NOT REPRODUCIBLE'}",
                  flush=True)
            rows.append(dict(op="linear_fwd_bwd", backend=impl.name, shape=f"M={M},K={K},N={N},bias={with_bias}",
                             ours_ms=None, reference="torch float64 autograd", reference_ms=None, speedup=None,
                             max_rel_err=max(errs)))

    # tf32 (precision 1) and linear_bf16, per element against float64: products of tf32 or bf16 operands are exact
    # in fp32, so the fp32 sums' error is within gamma_n * sum |terms| (n terms, any order). bf16: the reference
    # takes torch's bf16 values, which are the bits we pass. tf32: cuBLAS's FAST_TF32 operand rounding is not
    # documented (nearest or truncation), so the reference takes the fp32 operands and each product may be off by
    # 2^-10 relative per operand (truncation's worst), 2^-9 + 2^-20 in all; the bias gradient sums dy unrounded.
    def gamma(n):
        return n * 2.0 ** -24 / (1 - n * 2.0 ** -24)

    def worst_ratio(got, ref, bound):
        err = (got.double() - ref).abs()
        ratio = torch.where(bound > 0, err / bound.clamp_min(1e-300), torch.where(err == 0, 0.0, float("inf")))
        return float("nan") if torch.isnan(ratio).any() else ratio.max().item()

    print("\n== linear tf32 (precision 1) and linear_bf16 vs float64, per element: worst err / bound ==")
    for (M, K, N) in shapes:
        for mode in ("tf32", "bf16"):
            x = torch.randn(M, K, device=dev, generator=g)
            w = torch.randn(N, K, device=dev, generator=g) / K ** 0.5
            b = torch.randn(N, device=dev, generator=g)
            r = torch.randn(M, N, device=dev, generator=g)
            dy = torch.randn(M, N, device=dev, generator=g)
            y = torch.full((M, N), float("nan"), device=dev)
            dx = torch.full((M, K), float("nan"), device=dev)
            dw0 = torch.randn(N, K, device=dev, generator=g)
            db0 = torch.randn(N, device=dev, generator=g)
            dw, db = dw0.clone(), db0.clone()
            if mode == "bf16":
                xh, wh, dyh = (t.to(torch.bfloat16).contiguous() for t in (x, w, dy))
                impl.call("linear_bf16_forward", stream, p(xh), p(wh), p(b), p(r), M, K, N, p(y))
                impl.call("linear_bf16_backward", stream, p(xh), p(wh), p(dyh), M, K, N, p(dx), p(dw), p(db))
                xd, wd, dyd = (t.double() for t in (xh, wh, dyh))
                rel_op = 0.0
            else:
                impl.call("linear_forward", stream, p(x), p(w), p(b), p(r), M, K, N, p(y), 1)
                impl.call("linear_backward", stream, p(x), p(w), p(dy), M, K, N, p(dx), p(dw), p(db), 1)
                xd, wd, dyd = x.double(), w.double(), dy.double()
                rel_op = 2.0 ** -9 + 2.0 ** -20
            sync()
            bd, rd = b.double(), r.double()
            ry = xd @ wd.T + bd + rd
            by = (rel_op + gamma(K + 2)) * (xd.abs() @ wd.abs().T + bd.abs() + rd.abs())
            rdx, bdx = dyd @ wd, (rel_op + gamma(N)) * (dyd.abs() @ wd.abs())
            rdw = dw0.double() + dyd.T @ xd
            bdw = (rel_op + gamma(M + 1)) * (dw0.double().abs() + dyd.abs().T @ xd.abs())
            rdb = db0.double() + dyd.sum(0)
            bdb = gamma(M + 1) * (db0.double().abs() + dyd.abs().sum(0))
            errs = [worst_ratio(y, ry, by), worst_ratio(dx, rdx, bdx), worst_ratio(dw, rdw, bdw),
                    worst_ratio(db, rdb, bdb)]
            good = all(e <= 1.0 for e in errs)
            ok_all &= good
            name = "linear_bf16" if mode == "bf16" else "linear tf32"
            print(f"{'ok  ' if good else 'FAIL'} {name} M={M} K={K} N={N} err/bound y {errs[0]:.2f} dx {errs[1]:.2f} "
                  f"dW {errs[2]:.2f} db {errs[3]:.2f}", flush=True)
            rows.append(dict(op=f"linear_{mode}_fwd_bwd", backend=impl.name, shape=f"M={M},K={K},N={N}",
                             ours_ms=None, reference="float64, per-element bound (err/bound)", reference_ms=None,
                             speedup=None, max_rel_err=max(errs)))

    print("\n== token_rows (exact) ==")
    for (B, T, D, P) in row_cases:
        t = torch.randn(B, T, D, device=dev, generator=g)
        dr = torch.randn(P, B, D, device=dev, generator=g)
        out = torch.full((P, B, D), float("nan"), device=dev)
        dt = torch.randn(B, T, D, device=dev, generator=g)
        impl.call("token_rows_forward", stream, p(t), B, T, D, P, p(out))
        impl.call("token_rows_backward", stream, p(dr), B, T, D, P, p(dt))
        sync()
        want = torch.zeros(B, T, D, device=dev)
        want[:, :P] = dr.transpose(0, 1)
        good = torch.equal(out, t[:, :P].transpose(0, 1)) and torch.equal(dt, want)
        ok_all &= good
        print(f"{'ok  ' if good else 'FAIL'} token_rows B={B} T={T} D={D} prefix={P}", flush=True)
        rows.append(dict(op="token_rows", backend=impl.name, shape=f"B={B},T={T},D={D},prefix={P}", ours_ms=None,
                         reference="exact gather/scatter", reference_ms=None, speedup=None,
                         max_rel_err=0.0 if good else float("inf")))

    def run_timing():
        out_rows = []
        timer = Timer(torch, dev)
        reps, inner = (max(args.reps, 20), 10) if not cpu else (3, 1)
        print(f"\n== timing ({dev}, forward + backward dx/dW/db, median of {reps} x {inner} calls, alternating; "
              f"TF32 off) ==")
        for (M, K, N) in timed:
            x = torch.randn(M, K, device=dev, generator=g)
            w = torch.randn(N, K, device=dev, generator=g) / K ** 0.5
            b = torch.randn(N, device=dev, generator=g)
            dy = torch.randn(M, N, device=dev, generator=g)
            y, dx = torch.empty(M, N, device=dev), torch.empty(M, K, device=dev)
            dw, db = torch.zeros(N, K, device=dev), torch.zeros(N, device=dev)
            xt, wt, bt = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()

            def ours():
                fwd(x, w, b, None, y)
                bwd(x, w, dy, dx, dw, db)

            def ref():
                torch.nn.functional.linear(xt, wt, bt).backward(dy)

            t_o, t_r = median_alternating(timer, [ours, ref], reps, inner, warmup=2 if cpu else 5)
            gf = 6 * M * K * N / 1e9
            print(f"M={M:<6} K={K:<4} N={N:<5} ours {t_o * 1e3:9.1f} us ({gf / t_o * 1e3:7.0f} GFLOP/s)  torch "
                  f"{t_r * 1e3:9.1f} us ({gf / t_r * 1e3:7.0f} GFLOP/s)  speedup {t_r / t_o:.2f}x", flush=True)
            out_rows.append(dict(op="linear_fwd_bwd", backend=impl.name, shape=f"M={M},K={K},N={N}", ours_ms=t_o,
                                 reference=f"torch F.linear + autograd fp32 ({dev}, TF32 off)", reference_ms=t_r,
                                 speedup=t_r / t_o, max_rel_err=None))
        return out_rows

    if not args.skip_timing:
        timing_ok, timing = timed_rows(run_timing)
        ok_all &= timing_ok
        rows += timing
    return finish("check_linear.py", rows, json_path, ok_all, t_start, seed)


if __name__ == "__main__":
    sys.exit(main())
