#!/usr/bin/env python3
"""One-shot check of the loss and optimizer kernels (d4j_impl_cross_entropy and its _soft form, argmax, sum_squares,
clip_scale, adamw) on a lent GPU.

Run after the CMake build (bench/gpu/check.sh runs it too). libdistill4j_cuda on torch CUDA tensors and torch's
current stream, against PyTorch float64 on the GPU (F.cross_entropy with label smoothing + autograd, class indices and
probability targets, torch.argmax, torch.linalg.vector_norm, torch.optim.AdamW in float64, foreach=False), with
||ours - ref|| / ||ref||
<= --tol; the deterministic outputs (loss, sum of squares) must give the same bits on a second run. Then timed
against PyTorch fp32 (F.cross_entropy forward + backward; vector_norm over the list; AdamW single-tensor and fused).
--dry-run / --torch-cpu: the same code on torch CPU tensors with libdistill4j_cudaemu, small sizes, a short
timing run only to exercise the code. Exit status 1 if any check fails.
"""

import ctypes
import math
import sys

from gpucheck_common import (Timer, arg_parser, import_torch_or_skip, median_alternating, open_torch_impl,
                             print_table, seed_and_json, set_tf32, write_json)

torch = F = None  # imported in main (the dry run may have no torch)

vp, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
SIGNATURES = {
    "d4j_impl_cross_entropy": [vp, vp, vp, i64, i64, f32, f32, vp, vp, vp],
    "d4j_impl_cross_entropy_soft": [vp, vp, vp, i64, i64, f32, f32, vp, vp, vp],
    "d4j_impl_argmax": [vp, vp, i64, i64, vp],
    "d4j_impl_sum_squares": [vp, vp, i64, ctypes.c_int, vp],
    "d4j_impl_clip_scale": [vp, vp, f32, vp, vp],
    "d4j_impl_adamw": [vp, vp, vp, vp, vp, i64, f32, f32, f32, f32, f32, i64, vp],
}
CE_SHAPES = [(1, 1), (7, 10), (256, 1000), (64, 32001), (33, 32000), (4096, 10), (8192, 32000)]
# Sizes per device: (CE cases, large-logit cases, argmax cases, sum_squares sizes, adamw sizes, timed CE, adamw n)
SIZES = {
    "cuda": (CE_SHAPES, [(256, 1000), (64, 32001)], [(1, 1), (9, 7), (4096, 10), (333, 1000), (64, 32000)],
             [1, 192 * 768, 37, 5_000_000, 4099, 192], (1, 1001, 1 << 22), [(256, 1000), (4096, 1000), (8192, 32000)],
             5_700_000),  # DeiT-Ti's parameter count
    "cpu": ([(1, 1), (7, 10), (33, 1000), (3, 2049)], [(16, 1000)], [(1, 1), (9, 7), (33, 1000)],
            [1, 64 * 96, 37, 20_000, 4099, 192], (1, 1001, 20_000), [(16, 1000)], 50_000),
}
failures = 0


def rel(a, ref):
    d = (a.double() - ref.double()).norm().item()
    r = ref.double().norm().item()
    return d / r if r > 0 else d


def report(ok, text):
    global failures
    failures += 0 if ok else 1
    print(f"  {'ok  ' if ok else 'FAIL'} {text}")


def main():
    ap = arg_parser(__doc__, "gpu_loss.json")
    args = ap.parse_args()
    global torch, F
    torch = import_torch_or_skip(args, "check_loss.py")
    import torch.nn.functional as F
    seed, json_path = seed_and_json(args, "gpu_loss.json")
    set_tf32(torch, False)
    impl, stream, dev = open_torch_impl(torch, args)
    ce_shapes, big_shapes, argmax_shapes, sizes, adam_sizes, timed_ce, adam_n = SIZES[dev]
    lib = impl.lib
    for name, types in SIGNATURES.items():
        getattr(lib, name).argtypes = types
        getattr(lib, name).restype = ctypes.c_int
    s = stream

    def call(name, *a):
        impl._check(getattr(lib, name)(s, *a), name)

    gen = torch.Generator(device=dev).manual_seed(seed)
    tol = args.tol

    def ce(x, y, eps, scale, rows, loss, grad):
        B, C = x.shape
        call("d4j_impl_cross_entropy", x.data_ptr(), y.data_ptr(), B, C, eps, scale, rows.data_ptr(),
             loss.data_ptr() if loss is not None else None, grad.data_ptr() if grad is not None else None)

    print("\n== cross_entropy vs F.cross_entropy (float64 autograd) ==")
    for (B, C) in ce_shapes:
        for eps in (0.0, 0.1):
            x = torch.randn(B, C, generator=gen, device=dev) * 3.0
            y = torch.randint(0, C, (B,), generator=gen, device=dev)
            yi = y.int()  # the kernel's labels are int32
            rows = torch.full((B,), float("nan"), device=dev)
            loss = torch.full((1,), float("nan"), device=dev)
            grad = torch.full((B, C), float("nan"), device=dev)
            ce(x, yi, eps, 0.5, rows, loss, grad)
            loss2 = torch.full((1,), float("nan"), device=dev)
            ce(x, yi, eps, 0.5, rows, loss2, grad)
            x64 = x.double().requires_grad_()
            r64 = F.cross_entropy(x64, y, reduction="none", label_smoothing=eps) * 0.5
            l64 = r64.mean()
            l64.backward()
            er, el, eg = rel(rows, r64.detach()), rel(loss, l64.detach().reshape(1)), rel(grad, x64.grad)
            same = torch.equal(loss.view(torch.int32), loss2.view(torch.int32))
            report(er <= tol and el <= tol and eg <= tol and same,
                   f"B={B:<5} C={C:<6} eps={eps} err rows {er:.1e} loss {el:.1e} grad {eg:.1e} same_bits={same}")
            del x64, r64, l64, grad
    for (B, C) in big_shapes:
        x = (torch.rand(B, C, generator=gen, device=dev) * 2 - 1) * 1e4
        y = torch.randint(0, C, (B,), generator=gen, device=dev)
        rows, loss, grad = torch.empty(B, device=dev), torch.empty(1, device=dev), torch.empty(B, C, device=dev)
        ce(x, y.int(), 0.1, 2.0, rows, loss, grad)
        x64 = x.double().requires_grad_()
        l64 = F.cross_entropy(x64, y, label_smoothing=0.1) * 2.0
        l64.backward()
        el, eg = rel(loss, l64.detach().reshape(1)), rel(grad, x64.grad)
        report(el <= tol and eg <= tol, f"logits +-1e4 B={B} C={C} err loss {el:.1e} grad {eg:.1e}")

    print("\n== cross_entropy_soft vs F.cross_entropy with probability targets (float64 autograd) ==")
    for (B, C) in ce_shapes:
        for eps in (0.0, 0.1):
            x = torch.randn(B, C, generator=gen, device=dev) * 3.0
            # Mixup-like rows and rows summing to 1.5 (PyTorch accepts them; the gradient carries the sum).
            t = torch.softmax(torch.randn(B, C, generator=gen, device=dev), 1)
            t[1::2] *= 1.5
            rows = torch.full((B,), float("nan"), device=dev)
            loss = torch.full((1,), float("nan"), device=dev)
            grad = torch.full((B, C), float("nan"), device=dev)
            call("d4j_impl_cross_entropy_soft", x.data_ptr(), t.data_ptr(), B, C, eps, 0.5, rows.data_ptr(),
                 loss.data_ptr(), grad.data_ptr())
            x64 = x.double().requires_grad_()
            r64 = F.cross_entropy(x64, t.double(), reduction="none", label_smoothing=eps) * 0.5
            l64 = r64.mean()
            l64.backward()
            er, el, eg = rel(rows, r64.detach()), rel(loss, l64.detach().reshape(1)), rel(grad, x64.grad)
            report(er <= tol and el <= tol and eg <= tol,
                   f"soft B={B:<5} C={C:<6} eps={eps} err rows {er:.1e} loss {el:.1e} grad {eg:.1e}")
            del x64, r64, l64, grad

    print("\n== argmax vs torch.argmax (ties, NaN) ==")
    for (B, C) in argmax_shapes:
        x = torch.randint(0, 4, (B, C), generator=gen, device=dev).float()
        x[::3, C // 2] = float("nan")
        idx = torch.full((B,), -1, dtype=torch.int32, device=dev)
        call("d4j_impl_argmax", x.data_ptr(), B, C, idx.data_ptr())
        ok = torch.equal(idx.long(), torch.argmax(x, 1))
        report(ok, f"argmax B={B} C={C}")

    print("\n== sum_squares + clip_scale vs torch.linalg.vector_norm (float64) ==")
    grads = [torch.randn(n, generator=gen, device=dev) * (0.01 + i) for i, n in enumerate(sizes)]
    grads[2] = torch.randn(38, generator=gen, device=dev)[1:]  # misaligned start: the scalar path

    def sumsq(out):
        for i, g in enumerate(grads):
            call("d4j_impl_sum_squares", g.data_ptr(), g.numel(), 0 if i == 0 else 1, out.data_ptr())

    out, out2 = torch.full((1,), float("nan"), device=dev), torch.full((1,), 7.0, device=dev)
    sumsq(out)
    sumsq(out2)
    ref_norm = torch.linalg.vector_norm(torch.cat([g.double() for g in grads])).item()
    e = abs(out.item() - ref_norm ** 2) / ref_norm ** 2
    report(e <= tol and torch.equal(out.view(torch.int32), out2.view(torch.int32)),
           f"sum of squares over {len(grads)} tensors ({sum(sizes)} elements): rel err {e:.1e}, same bits")
    for max_norm in (ref_norm / 3, ref_norm * 2):
        norm, scale = torch.empty(1, device=dev), torch.empty(1, device=dev)
        call("d4j_impl_clip_scale", out.data_ptr(), max_norm, norm.data_ptr(), scale.data_ptr())
        sref = min(1.0, max_norm / (ref_norm + 1e-6))
        en, es = abs(norm.item() - ref_norm) / ref_norm, abs(scale.item() - sref) / sref
        report(en <= tol and es <= tol, f"clip_scale max_norm={max_norm:.4g}: norm err {en:.1e} scale err {es:.1e}")

    print("\n== adamw vs torch.optim.AdamW (float64, foreach=False), 5 steps, grad scale on device ==")
    for n in adam_sizes:
        # The ABI takes fp32 hyperparameters, and the entry reads each back as the shortest decimal that round-trips
        # (0.999f -> 0.999) before forming 1 - beta in double: the reference is torch's AdamW with the decimal values.
        lr, wd, b1, b2, eps = 1e-2, 0.1, 0.9, 0.999, 1e-8
        p = torch.randn(n, generator=gen, device=dev)
        m, v = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
        p64 = p.double().clone().requires_grad_()
        opt = torch.optim.AdamW([p64], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, foreach=False)
        for step in range(1, 6):
            g = torch.randn(n, generator=gen, device=dev)
            sc = torch.tensor([0.3 + 0.1 * step], device=dev)
            call("d4j_impl_adamw", p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), n, lr, b1, b2, eps, wd,
                 step, sc.data_ptr())
            p64.grad = g.double() * sc.double()
            opt.step()
        st = opt.state[p64]
        ep, em, ev = rel(p, p64.detach()), rel(m, st["exp_avg"]), rel(v, st["exp_avg_sq"])
        report(ep <= tol and em <= tol and ev <= tol, f"adamw n={n}: err param {ep:.1e} m {em:.1e} v {ev:.1e}")

    rows_out = []
    if not args.skip_timing:
        print(f"\n== timing ({dev}: median ms{', CUDA events' if dev == 'cuda' else ', wall clock, emulated'}) ==")
        timer = Timer(torch, dev)
        reps, inner = (args.reps, 10) if dev == "cuda" else (3, 1)
        for (B, C) in timed_ce:
            x = torch.randn(B, C, generator=gen, device=dev)
            y = torch.randint(0, C, (B,), generator=gen, device=dev)
            yi = y.int()  # the kernel's labels are int32
            rows, loss, grad = torch.empty(B, device=dev), torch.empty(1, device=dev), torch.empty(B, C, device=dev)
            xr = x.clone().requires_grad_()

            def ours():
                ce(x, yi, 0.1, 1.0, rows, loss, grad)

            def ref():
                xr.grad = None
                F.cross_entropy(xr, y, label_smoothing=0.1).backward()

            t_o, t_r = median_alternating(timer, [ours, ref], reps, inner)
            err = rel(grad, torch.func.grad(lambda z: F.cross_entropy(z, y, label_smoothing=0.1))(x.double()))
            rows_out.append(dict(op="cross_entropy", backend=impl.name, shape=f"B={B} C={C}", ours_ms=t_o,
                                 reference="torch F.cross_entropy fwd+bwd fp32", reference_ms=t_r,
                                 speedup=t_r / t_o, max_rel_err=err))
        n = adam_n
        p, g = torch.randn(n, device=dev), torch.randn(n, device=dev)
        m, v = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
        pr = p.clone().requires_grad_()
        pr.grad = g.clone()
        pf = p.clone().requires_grad_()
        pf.grad = g.clone()
        single = torch.optim.AdamW([pr], lr=1e-3, foreach=False)
        fused = torch.optim.AdamW([pf], lr=1e-3, fused=True) if dev == "cuda" else \
            torch.optim.AdamW([pf], lr=1e-3, foreach=True)
        sc = torch.ones(1, device=dev)

        def ours_adam():
            call("d4j_impl_adamw", p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), n, 1e-3, 0.9, 0.999,
                 1e-8, 0.01, 10, sc.data_ptr())

        t_o, t_s, t_f = median_alternating(timer, [ours_adam, single.step, fused.step], reps, inner)
        for name, t in (("torch AdamW foreach=False", t_s), ("torch AdamW fused=True" if dev == "cuda" else "torch AdamW foreach=True", t_f)):
            rows_out.append(dict(op="adamw", backend=impl.name, shape=f"n={n}", ours_ms=t_o, reference=name,
                                 reference_ms=t, speedup=t / t_o, max_rel_err=None))
        out = torch.empty(1, device=dev)

        def ours_norm():
            sumsq(out)

        def ref_norm_fn():
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))

        t_o, t_r = median_alternating(timer, [ours_norm, ref_norm_fn], reps, inner)
        rows_out.append(dict(op="sum_squares", backend=impl.name, shape=f"{len(grads)} tensors, {sum(sizes)} el",
                             ours_ms=t_o, reference="torch vector_norm per tensor + norm of norms", reference_ms=t_r,
                             speedup=t_r / t_o, max_rel_err=None))
        print_table(rows_out)
        if json_path:
            write_json(rows_out, json_path)
    print(f"\n{failures} failure(s); seed {seed}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
