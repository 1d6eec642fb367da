#!/usr/bin/env python3
"""One-shot check of the whole DeiT (distilled ViT) built from our C entries, on a lent GPU.

Run by bench/gpu/check.sh. The model is driven through libdistill4j_cuda in exactly the order of
java/library/org/distill4j/nn/VisionTransformer.java (forward: patch_embed_forward; per block layernorm, qkv linear,
attention, proj linear with the residual fused, layernorm, fc1, gelu, fc2 with the residual fused; token_rows,
final layernorm on the prefix rows, head on the cls row, head_dist on the dist row; backward in reverse, as there),
its buffers torch CUDA tensors. Three parts:

1. Correctness: logits and every parameter gradient (random upstream gradients on both heads) against timm's own
   model (timm.create_model('deit_tiny_distilled_patch16_224', pretrained=False), its weights copied in) in float64,
   or, without timm, a functional torch re-implementation of the same model. Passes when each tensor's
   ||ours - ref|| / ||ref|| <= max(--model-tol, 10 x the same error of torch fp32 on the same model); ours in tf32
   and bf16 (--precisions) also within 2 x torch's own error in that mode (allow_tf32, bf16 autocast). A second
   forward + backward must give the same bits (reported; cuBLAS may legitimately differ, so it does not fail).
2. Timing: one training step (zero grads, forward, CE on the cls head + soft KL on the dist head through our
   cross_entropy and kl_div entries, backward, AdamW over every parameter) against timm's model + F.cross_entropy
   + F.kl_div + torch.optim.AdamW, at B=64 and 256, against the baselines people train with (--baselines): eager
   fp32 (AdamW foreach, fused), eager with TF32, bf16 autocast eager, bf16 autocast + torch.compile (default mode;
   max-autotune-no-cudagraphs with --baselines all). Ours in each of --precisions: rows train_step (fp32),
   train_step_tf32, train_step_bf16, each against every baseline; and the same with the step's device work replayed
   from a CUDA graph of our entries (d4j_impl_graph_*, as Trainer.java's withCudaGraph), rows train_step*_graph,
   after three steps of each from the same weights whose losses must agree (the same bits in the dry run).
3. Loss curve (with bf16 among --precisions): --curve-steps (300) steps of ours in fp32 and bf16 from the same weights
   on the same synthetic batches (B = 64); the bf16 curve's 10-step moving average within 2 % of fp32's.
4. With --save-model DIR: timm's deit_tiny_distilled state dict (random init, torch.manual_seed(--init-seed)) as
   DIR/deit_tiny_distilled.safetensors, a fixed input (torch.manual_seed(--input-seed); torch.randn(2,3,224,224))
   as DIR/deit_tiny_distilled_input.safetensors ("input"), and DIR/deit_tiny_distilled_logits.json: the fp64 CPU
   logits of model.eval() (the averaged heads) and of both heads, with the seeds and the files' sha256. Without
   --save-model only the JSON (with the sha256s) is written, to --logits-json (default $OUT/...): the files
   themselves are CPU-only and reproducible from the seeds.

--dry-run / --torch-cpu: parts 1 and 2 with libdistill4j_cudaemu on torch CPU tensors at a tiny config (image 28,
patch 7, dim 64, depth 1, heads 2, 10 classes, batch 2; the emulator runs one OS thread per CUDA thread); part 3
as on the GPU. Exit status 1 if any check fails.
"""

import hashlib
import json
import math
import os
import struct
import sys
import time

import numpy as np

from gpucheck_common import (Timer, arg_parser, finish, import_torch_or_skip, open_torch_impl, seed_and_json,
                             set_tf32, timed_rows)

JSON_NAME = "gpu_model.json"
EPS = 1e-6
DEIT_TINY = dict(name="deit_tiny_distilled_patch16_224", img=224, patch=16, chans=3, dim=192, depth=12, heads=3,
                 mlp=4, classes=1000)
DRY = dict(name="vit_dry_distilled", img=28, patch=7, chans=3, dim=64, depth=1, heads=2, mlp=4, classes=10)
torch = F = None


# ---------------------------------------------------------------------------------------------------------
# Reference models: timm's, or a functional one with timm's names
# ---------------------------------------------------------------------------------------------------------

def try_timm():
    try:
        import timm  # noqa: F401
        from timm.models.deit import VisionTransformerDistilled  # noqa: F401
        return timm
    except Exception as e:  # ImportError, or a broken dependency
        print(f"timm not usable ({type(e).__name__}: {e}); the reference is a functional torch model")
        return None


def make_state(cfg, timm, seed):
    """(state dict fp32 on the CPU in timm's order, timm model or None), initialised from torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    if timm is not None:
        if cfg is DEIT_TINY:
            model = timm.create_model(cfg["name"], pretrained=False)
        else:
            from timm.models.deit import VisionTransformerDistilled
            model = VisionTransformerDistilled(img_size=cfg["img"], patch_size=cfg["patch"], in_chans=cfg["chans"],
                                               num_classes=cfg["classes"], embed_dim=cfg["dim"], depth=cfg["depth"],
                                               num_heads=cfg["heads"], mlp_ratio=cfg["mlp"])
        # timm zero-initialises the heads and some biases; random values make every gradient path visible.
        return {k: v.detach().clone() for k, v in model.state_dict().items()}, model
    D, T, Hd, C = cfg["dim"], tokens(cfg), cfg["dim"] * cfg["mlp"], cfg["classes"]
    P, ch = cfg["patch"], cfg["chans"]
    s = {"cls_token": (1, 1, D), "pos_embed": (1, T, D), "dist_token": (1, 1, D),
         "patch_embed.proj.weight": (D, ch, P, P), "patch_embed.proj.bias": (D,)}
    for l in range(cfg["depth"]):
        n = f"blocks.{l}."
        s.update({n + "norm1.weight": (D,), n + "norm1.bias": (D,), n + "attn.qkv.weight": (3 * D, D),
                  n + "attn.qkv.bias": (3 * D,), n + "attn.proj.weight": (D, D), n + "attn.proj.bias": (D,),
                  n + "norm2.weight": (D,), n + "norm2.bias": (D,), n + "mlp.fc1.weight": (Hd, D),
                  n + "mlp.fc1.bias": (Hd,), n + "mlp.fc2.weight": (D, Hd), n + "mlp.fc2.bias": (D,)})
    s.update({"norm.weight": (D,), "norm.bias": (D,), "head.weight": (C, D), "head.bias": (C,),
              "head_dist.weight": (C, D), "head_dist.bias": (C,)})
    out = {}
    for k, shape in s.items():
        if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight":
            out[k] = torch.ones(shape)
        else:
            out[k] = torch.randn(shape) * 0.02
    return out, None


def tokens(cfg):
    return (cfg["img"] // cfg["patch"]) ** 2 + 2


def functional_heads(st, x, cfg):
    """timm's VisionTransformerDistilled forward, written out: (cls logits, dist logits)."""
    B, D, Hh = x.shape[0], cfg["dim"], cfg["heads"]
    t = F.conv2d(x, st["patch_embed.proj.weight"], st["patch_embed.proj.bias"], stride=cfg["patch"])
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([st["cls_token"].expand(B, -1, -1), st["dist_token"].expand(B, -1, -1), t], 1) + st["pos_embed"]
    N = t.shape[1]
    for l in range(cfg["depth"]):
        n = f"blocks.{l}."
        h = F.layer_norm(t, (D,), st[n + "norm1.weight"], st[n + "norm1.bias"], EPS)
        qkv = F.linear(h, st[n + "attn.qkv.weight"], st[n + "attn.qkv.bias"])
        q, k, v = qkv.reshape(B, N, 3, Hh, D // Hh).permute(2, 0, 3, 1, 4).unbind(0)
        a = torch.softmax(q @ k.transpose(-2, -1) * (D // Hh) ** -0.5, -1) @ v
        t = t + F.linear(a.transpose(1, 2).reshape(B, N, D), st[n + "attn.proj.weight"], st[n + "attn.proj.bias"])
        h = F.layer_norm(t, (D,), st[n + "norm2.weight"], st[n + "norm2.bias"], EPS)
        h = F.gelu(F.linear(h, st[n + "mlp.fc1.weight"], st[n + "mlp.fc1.bias"]))
        t = t + F.linear(h, st[n + "mlp.fc2.weight"], st[n + "mlp.fc2.bias"])
    t = F.layer_norm(t, (D,), st["norm.weight"], st["norm.bias"], EPS)
    return (F.linear(t[:, 0], st["head.weight"], st["head.bias"]),
            F.linear(t[:, 1], st["head_dist.weight"], st["head_dist.bias"]))


class Reference:
    """timm's model (or the functional one) on `device` in `dtype`, from a state dict."""

    def __init__(self, cfg, state, timm_model, device, dtype):
        import copy
        self.cfg = cfg
        if timm_model is not None:
            self.model = copy.deepcopy(timm_model).to(device=device, dtype=dtype)
            self.model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
            self.model.train()  # no dropout / drop-path in the config: train = eval numerically
            self.params = dict(self.model.named_parameters())
        else:
            self.model = None
            self.params = {k: v.to(device=device, dtype=dtype).clone().requires_grad_() for k, v in state.items()}

    def heads(self, x):
        if self.model is not None:
            feats = self.model.forward_features(x)  # timm's own code: patch embed, pos, blocks, norm
            return self.model.head(feats[:, 0]), self.model.head_dist(feats[:, 1])
        return functional_heads(self.params, x, self.cfg)

    def parameters(self):
        return list(self.params.values())

    def grads(self):
        return {k: p.grad for k, p in self.params.items()}


# ---------------------------------------------------------------------------------------------------------
# Ours: VisionTransformer.java's forward and backward through the C entries
# ---------------------------------------------------------------------------------------------------------

class Ours:
    """precision: "fp32", "tf32" (the linear GEMMs' operands rounded to tf32) or "bf16" (VisionTransformer.java's
    forwardBf16/backwardBf16: bf16 GEMM operands and attention, fp32 elsewhere)."""

    def __init__(self, impl, stream, dev, cfg, B, state, precision="fp32"):
        self.impl, self.s, self.cfg, self.B = impl, stream, cfg, B
        self.precision, self.gemm = precision, 1 if precision == "tf32" else 0
        D, T, Hd, C = cfg["dim"], tokens(cfg), cfg["dim"] * cfg["mlp"], cfg["classes"]
        self.D, self.T, self.Hd, self.C, self.P = D, T, Hd, C, 2
        self.Dh = D // cfg["heads"]
        self.scale = float(np.float32(1.0) / np.sqrt(np.float32(self.Dh)))  # what Attention.java passes
        z = lambda *shape: torch.zeros(shape, device=dev)  # noqa: E731
        # VisionTransformer.java's flat buffers: decayed parameters first, each at a multiple of 16 floats, the gaps
        # zero; zeroing is one memset, AdamW one call per group (FlatAdamW.java).
        self.decay = {k: (k.endswith(".weight") and v.dim() > 1) for k, v in state.items()}
        order = [k for k in state if self.decay[k]] + [k for k in state if not self.decay[k]]
        offsets, n = {}, 0
        for k in order:
            offsets[k] = n
            n += -(-state[k].numel() // 16) * 16
        n_decayed = sum(self.decay.values())
        self.decayed = offsets[order[n_decayed]] if n_decayed < len(order) else n  # where the no-decay group starts
        flat = lambda: torch.zeros(n, device=dev)  # noqa: E731
        self.flat_w, self.flat_g, self.flat_m, self.flat_v = flat(), flat(), flat(), flat()
        view = lambda buf, k: buf[offsets[k]:offsets[k] + state[k].numel()].view(state[k].shape)  # noqa: E731
        self.w = {k: view(self.flat_w, k) for k in state}
        for k, v in state.items():
            self.w[k].copy_(v)
        self.g = {k: view(self.flat_g, k) for k in state}
        self.step_count = 0
        M = B * T
        self.images = z(B, cfg["chans"], cfg["img"], cfg["img"])
        self.x = [z(B, T, D) for _ in range(cfg["depth"] + 1)]
        self.blk = [dict(ln1=z(B, T, D), mean1=z(M), rstd1=z(M), qkv=z(B, T, 3 * D), attn=z(B, T, D),
                         lse=z(B, cfg["heads"], T), mid=z(B, T, D), ln2=z(B, T, D), mean2=z(M), rstd2=z(M),
                         fc1=z(B, T, Hd), act=z(B, T, Hd)) for _ in range(cfg["depth"])]
        self.rows, self.rows_n = z(2, B, D), z(2, B, D)
        self.rows_mean, self.rows_rstd = z(2 * B), z(2 * B)
        self.logits, self.dist_logits = z(B, C), z(B, C)
        self.g_stream, self.g_ln, self.g_attn = z(B, T, D), z(B, T, D), z(B, T, D)
        self.g_qkv, self.g_hidden = z(B, T, 3 * D), z(B, T, Hd)
        self.g_rows, self.g_rows_n = z(2, B, D), z(2, B, D)
        self.g_logits, self.g_dist = z(B, C), z(B, C)
        u8 = lambda n: torch.zeros(max(1, int(n)), dtype=torch.uint8, device=dev)  # noqa: E731
        self.ws_ln = u8(max(impl.call("layernorm_workspace", M, D), impl.call("layernorm_workspace", 2 * B, D)))
        self.pe_shape = (B, cfg["chans"], cfg["img"], cfg["img"], cfg["patch"], D)
        self.ws_pe = u8(impl.patch_embed_workspace(*self.pe_shape))
        self.att_shape = (B, T, cfg["heads"], self.Dh)
        self.ws_att = u8(impl.attention_workspace(*self.att_shape))
        if precision == "bf16":
            h = lambda *shape: torch.zeros(shape, dtype=torch.bfloat16, device=dev)  # noqa: E731
            self.flat_wh = h(n)  # the parameters' bf16 copy, refreshed by every forward
            self.wh = {k: self.flat_wh[offsets[k]:offsets[k] + state[k].numel()] for k in state}
            for k in self.blk:
                k.update(ln1h=h(B, T, D), qkvh=h(B, T, 3 * D), attnh=h(B, T, D), ln2h=h(B, T, D), acth=h(B, T, Hd))
            self.rows_nh = h(2, B, D)
            self.g_h = h(max(M * max(D, Hd), B * C))
            self.g_qkvh = h(B, T, 3 * D)
        # the trainer's loss buffers
        self.labels, self.teacher = torch.zeros(B, dtype=torch.int32, device=dev), z(B, C)
        self.ce_rows, self.ce_loss, self.kl_rows, self.kl_loss = z(B), z(1), z(B), z(1)
        self.alpha = z(1)

    # short names for the entries, as Kernels.java
    def ln(self, x, w, b, M, y, mean, rstd):
        self.impl.call("layernorm_forward", self.s, x.data_ptr(), w.data_ptr(), b.data_ptr(), M, self.D, EPS,
                       y.data_ptr(), mean.data_ptr(), rstd.data_ptr())

    def ln_b(self, x, w, mean, rstd, dy, M, dx, dw, db):
        self.impl.call("layernorm_backward", self.s, x.data_ptr(), w.data_ptr(), mean.data_ptr(), rstd.data_ptr(),
                       dy.data_ptr(), M, self.D, dx.data_ptr(), dw.data_ptr(), db.data_ptr(), self.ws_ln.data_ptr())

    def lin(self, x, w, b, r, M, K, N, y):
        self.impl.call("linear_forward", self.s, x.data_ptr(), w.data_ptr(), b.data_ptr(),
                       None if r is None else r.data_ptr(), M, K, N, y.data_ptr(), self.gemm)

    def lin_b(self, x, w, dy, M, K, N, dx, dw, db):
        self.impl.call("linear_backward", self.s, x.data_ptr(), w.data_ptr(), dy.data_ptr(), M, K, N, dx.data_ptr(),
                       dw.data_ptr(), db.data_ptr(), self.gemm)

    def lin_h(self, x, w, b, r, M, K, N, y):
        self.impl.call("linear_bf16_forward", self.s, x.data_ptr(), w.data_ptr(), b.data_ptr(),
                       None if r is None else r.data_ptr(), M, K, N, y.data_ptr())

    def lin_hb(self, x, w, dy, M, K, N, dx, dw, db):
        self.impl.call("linear_bf16_backward", self.s, x.data_ptr(), w.data_ptr(), dy.data_ptr(), M, K, N,
                       dx.data_ptr(), dw.data_ptr(), db.data_ptr())

    def cast(self, x, n, y):
        self.impl.call("cast_bf16", self.s, x.data_ptr(), n, y.data_ptr())

    def ln_h(self, x, w, b, M, y, mean, rstd):
        self.impl.call("layernorm_forward_bf16", self.s, x.data_ptr(), w.data_ptr(), b.data_ptr(), M, self.D, EPS,
                       y.data_ptr(), mean.data_ptr(), rstd.data_ptr())

    def forward(self):
        if self.precision == "bf16":
            return self.forward_bf16()
        w, B, T, D, Hd, C = self.w, self.B, self.T, self.D, self.Hd, self.C
        M = B * T
        self.impl.patch_embed_forward(self.s, self.images.data_ptr(), *self.pe_shape,
                                      w["patch_embed.proj.weight"].data_ptr(), w["patch_embed.proj.bias"].data_ptr(),
                                      w["pos_embed"].data_ptr(), w["cls_token"].data_ptr(),
                                      w["dist_token"].data_ptr(), self.x[0].data_ptr(), self.ws_pe.data_ptr())
        for l, k in enumerate(self.blk):
            n = f"blocks.{l}."
            self.ln(self.x[l], w[n + "norm1.weight"], w[n + "norm1.bias"], M, k["ln1"], k["mean1"], k["rstd1"])
            self.lin(k["ln1"], w[n + "attn.qkv.weight"], w[n + "attn.qkv.bias"], None, M, D, 3 * D, k["qkv"])
            self.impl.attention_forward(self.s, k["qkv"].data_ptr(), *self.att_shape, self.scale,
                                        k["attn"].data_ptr(), k["lse"].data_ptr(), self.ws_att.data_ptr())
            self.lin(k["attn"], w[n + "attn.proj.weight"], w[n + "attn.proj.bias"], self.x[l], M, D, D, k["mid"])
            self.ln(k["mid"], w[n + "norm2.weight"], w[n + "norm2.bias"], M, k["ln2"], k["mean2"], k["rstd2"])
            self.lin(k["ln2"], w[n + "mlp.fc1.weight"], w[n + "mlp.fc1.bias"], None, M, D, Hd, k["fc1"])
            self.impl.call("gelu_forward", self.s, k["fc1"].data_ptr(), M * Hd, k["act"].data_ptr())
            self.lin(k["act"], w[n + "mlp.fc2.weight"], w[n + "mlp.fc2.bias"], k["mid"], M, Hd, D, self.x[l + 1])
        self.impl.call("token_rows_forward", self.s, self.x[-1].data_ptr(), B, T, D, self.P, self.rows.data_ptr())
        self.ln(self.rows, w["norm.weight"], w["norm.bias"], self.P * B, self.rows_n, self.rows_mean, self.rows_rstd)
        self.lin(self.rows_n[0], w["head.weight"], w["head.bias"], None, B, D, C, self.logits)
        self.lin(self.rows_n[1], w["head_dist.weight"], w["head_dist.bias"], None, B, D, C, self.dist_logits)

    def forward_bf16(self):
        w, wh, B, T, D, Hd, C = self.w, self.wh, self.B, self.T, self.D, self.Hd, self.C
        M = B * T
        self.cast(self.flat_w, self.flat_w.numel(), self.flat_wh)
        self.impl.patch_embed_forward(self.s, self.images.data_ptr(), *self.pe_shape,
                                      w["patch_embed.proj.weight"].data_ptr(), w["patch_embed.proj.bias"].data_ptr(),
                                      w["pos_embed"].data_ptr(), w["cls_token"].data_ptr(),
                                      w["dist_token"].data_ptr(), self.x[0].data_ptr(), self.ws_pe.data_ptr())
        for l, k in enumerate(self.blk):
            n = f"blocks.{l}."
            self.ln_h(self.x[l], w[n + "norm1.weight"], w[n + "norm1.bias"], M, k["ln1h"], k["mean1"], k["rstd1"])
            self.lin_h(k["ln1h"], wh[n + "attn.qkv.weight"], w[n + "attn.qkv.bias"], None, M, D, 3 * D, k["qkv"])
            self.cast(k["qkv"], M * 3 * D, k["qkvh"])
            self.impl.call("attention_bf16_forward", self.s, k["qkvh"].data_ptr(), *self.att_shape, self.scale,
                           k["attnh"].data_ptr(), k["lse"].data_ptr())
            self.lin_h(k["attnh"], wh[n + "attn.proj.weight"], w[n + "attn.proj.bias"], self.x[l], M, D, D, k["mid"])
            self.ln_h(k["mid"], w[n + "norm2.weight"], w[n + "norm2.bias"], M, k["ln2h"], k["mean2"], k["rstd2"])
            self.lin_h(k["ln2h"], wh[n + "mlp.fc1.weight"], w[n + "mlp.fc1.bias"], None, M, D, Hd, k["fc1"])
            self.impl.call("gelu_forward_bf16", self.s, k["fc1"].data_ptr(), M * Hd, k["acth"].data_ptr())
            self.lin_h(k["acth"], wh[n + "mlp.fc2.weight"], w[n + "mlp.fc2.bias"], k["mid"], M, Hd, D,
                       self.x[l + 1])
        self.impl.call("token_rows_forward", self.s, self.x[-1].data_ptr(), B, T, D, self.P, self.rows.data_ptr())
        self.ln_h(self.rows, w["norm.weight"], w["norm.bias"], self.P * B, self.rows_nh, self.rows_mean,
                  self.rows_rstd)
        self.lin_h(self.rows_nh[0], wh["head.weight"], w["head.bias"], None, B, D, C, self.logits)
        self.lin_h(self.rows_nh[1], wh["head_dist.weight"], w["head_dist.bias"], None, B, D, C, self.dist_logits)

    def backward_bf16(self):
        w, wh, g, B, T, D, Hd, C = self.w, self.wh, self.g, self.B, self.T, self.D, self.Hd, self.C
        M, dy = B * T, self.g_h
        self.cast(self.g_logits, B * C, dy)
        self.lin_hb(self.rows_nh[0], wh["head.weight"], dy, B, D, C, self.g_rows_n[0], g["head.weight"],
                    g["head.bias"])
        self.cast(self.g_dist, B * C, dy)
        self.lin_hb(self.rows_nh[1], wh["head_dist.weight"], dy, B, D, C, self.g_rows_n[1], g["head_dist.weight"],
                    g["head_dist.bias"])
        self.zero(self.g_rows)
        self.ln_b(self.rows, w["norm.weight"], self.rows_mean, self.rows_rstd, self.g_rows_n, self.P * B, self.g_rows,
                  g["norm.weight"], g["norm.bias"])
        self.impl.call("token_rows_backward", self.s, self.g_rows.data_ptr(), B, T, D, self.P,
                       self.g_stream.data_ptr())
        for l in range(len(self.blk) - 1, -1, -1):
            k, n = self.blk[l], f"blocks.{l}."
            self.cast(self.g_stream, M * D, dy)
            self.lin_hb(k["acth"], wh[n + "mlp.fc2.weight"], dy, M, Hd, D, self.g_hidden, g[n + "mlp.fc2.weight"],
                        g[n + "mlp.fc2.bias"])
            self.impl.call("gelu_backward_bf16", self.s, k["fc1"].data_ptr(), self.g_hidden.data_ptr(), M * Hd,
                           dy.data_ptr())
            self.lin_hb(k["ln2h"], wh[n + "mlp.fc1.weight"], dy, M, D, Hd, self.g_ln, g[n + "mlp.fc1.weight"],
                        g[n + "mlp.fc1.bias"])
            self.ln_b(k["mid"], w[n + "norm2.weight"], k["mean2"], k["rstd2"], self.g_ln, M, self.g_stream,
                      g[n + "norm2.weight"], g[n + "norm2.bias"])
            self.cast(self.g_stream, M * D, dy)
            self.lin_hb(k["attnh"], wh[n + "attn.proj.weight"], dy, M, D, D, self.g_attn, g[n + "attn.proj.weight"],
                        g[n + "attn.proj.bias"])
            self.cast(self.g_attn, M * D, dy)
            self.impl.call("attention_bf16_backward", self.s, k["qkvh"].data_ptr(), k["attnh"].data_ptr(),
                           k["lse"].data_ptr(), dy.data_ptr(), *self.att_shape, self.scale, self.g_qkvh.data_ptr())
            self.lin_hb(k["ln1h"], wh[n + "attn.qkv.weight"], self.g_qkvh, M, D, 3 * D, self.g_ln,
                        g[n + "attn.qkv.weight"], g[n + "attn.qkv.bias"])
            self.ln_b(self.x[l], w[n + "norm1.weight"], k["mean1"], k["rstd1"], self.g_ln, M, self.g_stream,
                      g[n + "norm1.weight"], g[n + "norm1.bias"])
        self.impl.patch_embed_backward(self.s, self.images.data_ptr(), *self.pe_shape,
                                       w["patch_embed.proj.weight"].data_ptr(), self.g_stream.data_ptr(),
                                       g["patch_embed.proj.weight"].data_ptr(), g["patch_embed.proj.bias"].data_ptr(),
                                       g["pos_embed"].data_ptr(), g["cls_token"].data_ptr(),
                                       g["dist_token"].data_ptr(), None, self.ws_pe.data_ptr())

    def backward(self):
        if self.precision == "bf16":
            return self.backward_bf16()
        w, g, B, T, D, Hd, C = self.w, self.g, self.B, self.T, self.D, self.Hd, self.C
        M = B * T
        self.lin_b(self.rows_n[0], w["head.weight"], self.g_logits, B, D, C, self.g_rows_n[0], g["head.weight"],
                   g["head.bias"])
        self.lin_b(self.rows_n[1], w["head_dist.weight"], self.g_dist, B, D, C, self.g_rows_n[1],
                   g["head_dist.weight"], g["head_dist.bias"])
        self.zero(self.g_rows)  # LayerNorm's backward accumulates into dx
        self.ln_b(self.rows, w["norm.weight"], self.rows_mean, self.rows_rstd, self.g_rows_n, self.P * B, self.g_rows,
                  g["norm.weight"], g["norm.bias"])
        self.impl.call("token_rows_backward", self.s, self.g_rows.data_ptr(), B, T, D, self.P,
                       self.g_stream.data_ptr())
        for l in range(len(self.blk) - 1, -1, -1):
            k, n = self.blk[l], f"blocks.{l}."
            self.lin_b(k["act"], w[n + "mlp.fc2.weight"], self.g_stream, M, Hd, D, self.g_hidden,
                       g[n + "mlp.fc2.weight"], g[n + "mlp.fc2.bias"])
            self.impl.call("gelu_backward", self.s, k["fc1"].data_ptr(), self.g_hidden.data_ptr(), M * Hd,
                           self.g_hidden.data_ptr())
            self.lin_b(k["ln2"], w[n + "mlp.fc1.weight"], self.g_hidden, M, D, Hd, self.g_ln, g[n + "mlp.fc1.weight"],
                       g[n + "mlp.fc1.bias"])
            self.ln_b(k["mid"], w[n + "norm2.weight"], k["mean2"], k["rstd2"], self.g_ln, M, self.g_stream,
                      g[n + "norm2.weight"], g[n + "norm2.bias"])
            self.lin_b(k["attn"], w[n + "attn.proj.weight"], self.g_stream, M, D, D, self.g_attn,
                       g[n + "attn.proj.weight"], g[n + "attn.proj.bias"])
            self.impl.attention_backward(self.s, k["qkv"].data_ptr(), k["attn"].data_ptr(), k["lse"].data_ptr(),
                                         self.g_attn.data_ptr(), *self.att_shape, self.scale, self.g_qkv.data_ptr(),
                                         self.ws_att.data_ptr())
            self.lin_b(k["ln1"], w[n + "attn.qkv.weight"], self.g_qkv, M, D, 3 * D, self.g_ln,
                       g[n + "attn.qkv.weight"], g[n + "attn.qkv.bias"])
            self.ln_b(self.x[l], w[n + "norm1.weight"], k["mean1"], k["rstd1"], self.g_ln, M, self.g_stream,
                      g[n + "norm1.weight"], g[n + "norm1.bias"])
        self.impl.patch_embed_backward(self.s, self.images.data_ptr(), *self.pe_shape,
                                       w["patch_embed.proj.weight"].data_ptr(), self.g_stream.data_ptr(),
                                       g["patch_embed.proj.weight"].data_ptr(), g["patch_embed.proj.bias"].data_ptr(),
                                       g["pos_embed"].data_ptr(), g["cls_token"].data_ptr(),
                                       g["dist_token"].data_ptr(), None, self.ws_pe.data_ptr())

    def zero(self, t):
        # On our stream through our entry (cudaMemsetAsync), not torch's zero_: torch would queue it on its own
        # current stream, outside a capture of ours (and, in the dry run, run it at once on the CPU).
        self.impl.call("zero_async", self.s, t.data_ptr(), t.numel() * t.element_size())

    def zero_grad(self):
        self.zero(self.flat_g)

    def train_step(self, alpha, T, lr, wd):
        """Trainer.step's device work (soft distillation, teacher logits given, no clipping): zero grads, forward,
        (1 - alpha) CE on the cls head, KL (T^2, batchmean, upstream alpha) on the dist head, backward, AdamW."""
        self.device_step(alpha, T)
        self.adamw(lr, wd)

    def device_step(self, alpha, T):
        """What the trainer captures into a CUDA graph (Trainer.deviceWork): everything but AdamW, whose step count
        and learning rate change every step."""
        B, C = self.B, self.C
        self.zero_grad()
        self.forward()
        self.impl.call("cross_entropy", self.s, self.logits.data_ptr(), self.labels.data_ptr(), B, C, 0.0,
                       1.0 - alpha, self.ce_rows.data_ptr(), self.ce_loss.data_ptr(), self.g_logits.data_ptr())
        self.impl.kl_div(self.s, self.dist_logits.data_ptr(), self.teacher.data_ptr(), B, C, T, 1, 0, T * T,
                         self.alpha.data_ptr(), self.kl_rows.data_ptr(), self.kl_loss.data_ptr(),
                         self.g_dist.data_ptr())
        self.backward()

    def adamw(self, lr, wd):
        self.step_count += 1
        n = self.flat_w.numel()
        for start, end, decay in ((0, self.decayed, wd), (self.decayed, n, 0.0)):
            ptr = lambda buf: buf.data_ptr() + 4 * start  # noqa: E731
            self.impl.call("adamw", self.s, ptr(self.flat_w), ptr(self.flat_g), ptr(self.flat_m), ptr(self.flat_v),
                           end - start, lr, 0.9, 0.999, 1e-8, decay, self.step_count, None)


class OursGraph:
    """Ours with the step's device work replayed from a CUDA graph of our own entries (d4j_impl_graph_*), as
    Trainer.java with withCudaGraph(true): the first step runs as usual, the second is captured, then replayed;
    AdamW is launched after it each step. On a stream of its own (CUDA cannot capture the legacy stream)."""

    def __init__(self, ours, stream):
        self.o, self.s, self.graph = ours, stream, None
        ours.s = stream
        self.warm = False

    def train_step(self, alpha, T, lr, wd):
        o = self.o
        if self.graph is not None:
            o.impl.call("graph_launch", self.s, self.graph)
        elif not self.warm:
            o.device_step(alpha, T)
            self.warm = True
        else:
            o.impl.call("graph_begin", self.s)
            try:
                o.device_step(alpha, T)
            finally:
                self.graph = o.impl.out_pointer("graph_end", self.s)
            o.impl.call("graph_launch", self.s, self.graph)
        o.adamw(lr, wd)

    def close(self):
        if self.graph is not None:
            self.o.impl.call("graph_destroy", self.graph)
            self.graph = None


def graph_stream(impl):
    """A stream for OursGraph from our own entry (cudaStreamCreate): a blocking stream, so the timer's events and
    torch's work on the legacy default stream stay ordered with it without explicit waits."""
    return impl.out_pointer("stream_create")


# ---------------------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------------------

def rel(a, ref):
    a, ref = a.detach().double().reshape(-1), ref.detach().double().reshape(-1).to(a.device)
    if not bool(torch.isfinite(a).all()):
        return math.inf
    d, r = (a - ref).norm().item(), ref.norm().item()
    return d / r if r > 0 else d


def correctness(impl, stream, dev, cfg, timm, B, seed, model_tol, precisions):
    """Our forward + backward in each precision against float64. fp32: within max(model_tol, 10 x torch fp32's own
    error). tf32 and bf16: within max(that, 2 x torch's own error in the same mode (allow_tf32; bf16 autocast)), PyTorch's
    mixed precision being the scale of what the roundings cost on this model (a per-rounding bound summed over DeiT-Ti's
    12 blocks says little). tf32 is checked on CUDA only: PyTorch's CPU matmuls have no TF32 mode to compare with."""
    state, timm_model = make_state(cfg, timm, seed)
    # Random biases, LayerNorm affines and heads (timm zero-initialises several): every gradient path is exercised.
    g = torch.Generator().manual_seed(seed + 1)
    for k, v in state.items():
        if v.dim() == 1:
            state[k] = v + torch.randn(v.shape, generator=g) * 0.1
        elif k.startswith("head"):
            state[k] = torch.randn(v.shape, generator=g) * 0.05
    kind = "timm " + type(timm_model).__name__ if timm_model is not None else "functional torch model"
    images = torch.randn(B, cfg["chans"], cfg["img"], cfg["img"], generator=g)
    g_cls = torch.randn(B, cfg["classes"], generator=g) / B
    g_dist = torch.randn(B, cfg["classes"], generator=g) / B
    refs = {}
    for name, dtype, mode in (("fp64", torch.float64, None), ("fp32", torch.float32, None),
                              ("tf32", torch.float32, "tf32"), ("bf16", torch.float32, "bf16")):
        if name == "tf32" and (dev != "cuda" or "tf32" not in precisions):
            continue
        ref = Reference(cfg, state, timm_model, dev, dtype)
        set_tf32(torch, mode == "tf32")
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=mode == "bf16"):
            cls, dist = ref.heads(images.to(dev, dtype))
        cls, dist = cls.float().to(dtype), dist.float().to(dtype)
        ((cls * g_cls.to(dev, dtype)).sum() + (dist * g_dist.to(dev, dtype)).sum()).backward()
        set_tf32(torch, False)
        refs[name] = (cls.detach(), dist.detach(), {k: v.detach() for k, v in ref.grads().items()})
        del ref
    ok, rows = True, []
    for precision in precisions:
        if precision == "tf32" and "tf32" not in refs:
            print(f"\n== whole model, tf32: not checked on {dev} (no PyTorch TF32 there to compare with) ==")
            continue
        print(f"\n== whole model, ours {precision}, vs {kind} ({cfg['name']}, B={B}; float64 reference on {dev}; "
              f"torch fp32{'' if precision == 'fp32' else ' and ' + precision} for scale) ==")
        ours = Ours(impl, stream, dev, cfg, B, state, precision)
        ours.images.copy_(images)
        results = []
        for _ in range(2):
            ours.zero_grad()
            ours.forward()
            ours.g_logits.copy_(g_cls)
            ours.g_dist.copy_(g_dist)
            ours.backward()
            impl.synchronize(stream)
            results.append((ours.logits.clone(), ours.dist_logits.clone(), {k: v.clone() for k, v in ours.g.items()}))
        del ours
        lo, do, go = results[0]
        r64, r32 = refs["fp64"], refs["fp32"]
        rmode = refs.get(precision) if precision != "fp32" else None
        checks = [("logits (cls head)", lo, r64[0], r32[0], rmode and rmode[0]),
                  ("logits (dist head)", do, r64[1], r32[1], rmode and rmode[1])]
        checks += [(f"grad {k}", go[k], r64[2][k], r32[2][k], rmode and rmode[2][k]) for k in state]
        good_all, worst = True, 0.0
        for what, a, e64, e32ref, emode in checks:
            e, e32 = rel(a, e64), rel(e32ref, e64)
            em = rel(emode, e64) if emode is not None else None
            limit = max(model_tol, 10 * e32, 2 * em if em is not None else 0)
            good = e <= limit
            good_all &= good
            worst = max(worst, e)
            if not good or what.startswith("logits") or "blocks" not in what or what.startswith("grad blocks.0."):
                torch_mode = f"  torch {precision} {em:.2e}" if em is not None else ""
                print(f"  {'ok  ' if good else 'FAIL'} {what:34s} ours {e:.2e}  torch fp32 {e32:.2e}{torch_mode}  "
                      f"(limit {limit:.1e})")
        print(f"  ({len(checks)} tensors compared; the lines of blocks 1.. are printed only when they fail)")
        bits = all(torch.equal(a, b) for a, b in zip(results[0][:2], results[1][:2])) and \
            all(torch.equal(results[0][2][k], results[1][2][k]) for k in state)
        print(f"  second forward + backward: {'same bits' if bits else 'DIFFERENT BITS (reported, not failed)'}")
        print(f"  => {'ok' if good_all else 'FAIL'}: worst rel err vs float64 {worst:.2e}")
        ok &= good_all
        rows.append(dict(op="deit_fwd_bwd" + ("" if precision == "fp32" else "_" + precision), backend=impl.name,
                         shape=f"{cfg['name']},B={B}", ours_ms=None,
                         reference=f"{kind} float64 (logits + every parameter gradient)", reference_ms=None,
                         speedup=None, max_rel_err=worst))
    return ok, rows, state, timm_model


# The fair baselines (issue #18): how people train DeiT in PyTorch, not only eager fp32. Each is timm's model (or the
# functional one) + F.cross_entropy + F.kl_div + torch.optim.AdamW with timm's two parameter groups.
#   name                  precision of the matmuls             model                                   AdamW
BASELINES = {
    "eager_fp32":        ("fp32, TF32 off",                    "eager",                                 "foreach"),
    "eager_fp32_fused":  ("fp32, TF32 off",                    "eager",                                 "fused"),
    "eager_tf32":        ("fp32 with allow_tf32 (matmul+cuDNN)", "eager",                               "fused"),
    "amp_bf16":          ("bf16 autocast",                     "eager",                                 "fused"),
    "amp_bf16_compile":  ("bf16 autocast",                     "torch.compile (default mode)",          "fused"),
    "amp_bf16_compile_max": ("bf16 autocast",                  "torch.compile (max-autotune-no-cudagraphs)", "fused"),
}


def baseline_step(cfg, state, timm_model, dev, name, images, labels, teacher, alpha, T, lr, wd):
    """One training step of baseline `name` as a closure (its own copy of the weights and optimizer state)."""
    precision, how, variant = BASELINES[name]
    ref = Reference(cfg, state, timm_model, dev, torch.float32)
    decay = [p for k, p in ref.params.items() if k.endswith(".weight") and p.dim() > 1]
    other = [p for k, p in ref.params.items() if not (k.endswith(".weight") and p.dim() > 1)]
    # The fused AdamW is CUDA-only in some torch versions: the dry run (CPU) uses foreach in its place.
    kind = variant if dev == "cuda" else "foreach"
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=wd), dict(params=other, weight_decay=0.0)],
                            lr=lr, **({"fused": True} if kind == "fused" else {"foreach": True}))
    heads = ref.heads
    if how.startswith("torch.compile"):
        mode = "max-autotune-no-cudagraphs" if "max-autotune" in how else None
        heads = torch.compile(ref.heads, mode=mode, dynamic=False)
    autocast = precision.startswith("bf16")
    tf32 = precision.startswith("fp32 with")

    def step():
        set_tf32(torch, tf32)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=autocast):
            cls, dist = heads(images)
        # Losses in fp32, as under AMP (autocast runs log_softmax in fp32 anyway).
        cls, dist = cls.float(), dist.float()
        loss = (1 - alpha) * F.cross_entropy(cls, labels) + alpha * T * T * F.kl_div(
            F.log_softmax(dist / T, 1), F.log_softmax(teacher / T, 1), reduction="batchmean", log_target=True)
        loss.backward()
        opt.step()
        set_tf32(torch, False)
        return loss
    label = (f"{'timm' if timm_model is not None else 'functional torch'} model ({how}, {precision}) + "
             f"F.cross_entropy + F.kl_div + AdamW({kind}) ({dev})")
    return step, label


def timing(impl, stream, dev, cfg, timm, state, timm_model, batches, reps, seed, baselines, precisions):
    set_tf32(torch, False)
    timer = Timer(torch, dev)
    alpha, T, lr, wd = 0.5, 3.0, 5e-4, 0.05
    rows = []
    replay_ok = True  # every step replayed from a CUDA graph computed what the op-by-op step did
    g = torch.Generator().manual_seed(seed + 2)
    for B in batches:
        images = torch.randn(B, cfg["chans"], cfg["img"], cfg["img"], generator=g).to(dev)
        labels = torch.randint(0, cfg["classes"], (B,), generator=g).to(dev)
        teacher = (torch.randn(B, cfg["classes"], generator=g) * 2).to(dev)
        ours_by = {}
        for precision in precisions:
            o = Ours(impl, stream, dev, cfg, B, state, precision)
            o.images.copy_(images)
            o.labels.copy_(labels.int())
            o.teacher.copy_(teacher)
            o.alpha.fill_(alpha)
            ours_by[precision] = o
        refs = [(name,) + baseline_step(cfg, state, timm_model, dev, name, images, labels, teacher, alpha, T, lr, wd)
                for name in baselines]

        # Ours again with the step's device work replayed from a CUDA graph (--cuda-graph), on a stream of its own.
        gstream = graph_stream(impl)
        graphs_by = {}
        for precision in precisions:
            og = OursGraph(Ours(impl, gstream, dev, cfg, B, state, precision), gstream)
            og.o.images.copy_(images)
            og.o.labels.copy_(labels.int())
            og.o.teacher.copy_(teacher)
            og.o.alpha.fill_(alpha)
            graphs_by[precision] = og
        if dev == "cuda":
            torch.cuda.synchronize()
        ours_steps = [(lambda o=o: o.train_step(alpha, T, lr, wd)) for o in ours_by.values()]
        ours_steps += [(lambda og=og: og.train_step(alpha, T, lr, wd)) for og in graphs_by.values()]
        # The loss of the first step, from identical weights: each of ours vs each baseline's own first step. Then
        # two more steps of each, the graphed one captured at its second and replayed at its third: the same bits.
        our_loss = {}
        loss_of = lambda o: (o.ce_loss + alpha * o.kl_loss).item()  # noqa: E731
        for precision, o in ours_by.items():
            og = graphs_by[precision]
            for k in range(3):
                o.train_step(alpha, T, lr, wd)
                og.train_step(alpha, T, lr, wd)
                impl.synchronize(stream)
                impl.synchronize(gstream)
                if k == 0:
                    our_loss[precision] = loss_of(o)
                a, b = loss_of(o), loss_of(og.o)
                # The same kernels on the same data: the same bits (the emulator's dry run requires it), unless
                # cuBLAS picks another algorithm inside a capture (its workspace differs there), which moves a loss
                # by rounding only: reported, and a failure beyond 1e-4 relative (a replay that skipped or repeated
                # work, or read stale inputs, is off by far more).
                rel_d = abs(a - b) / abs(a) if a == a and b == b else math.inf
                good = a == b or (dev == "cuda" and rel_d <= 1e-4)
                print(f"  ours {precision} step {k + 1}: loss {a:.9g}, with the CUDA graph {b:.9g} "
                      f"({'the same bits' if a == b else f'rel {rel_d:.2e}'}{'' if good else ': FAIL'})")
                replay_ok &= good
        first = {}
        for name, step, _ in refs:
            t0 = time.perf_counter()
            first[name] = step().item()  # compiles the torch.compile baselines: their cost is reported, not timed
            if dev == "cuda":
                torch.cuda.synchronize()
            first[name] = (first[name], time.perf_counter() - t0)
        fns = ours_steps + [step for _, step, _ in refs]
        warm = 3 if dev == "cuda" else 1
        for f in fns:
            for _ in range(warm):
                f()
        n_reps, inner = (reps, 3) if dev == "cuda" else (2, 1)
        samples = [[] for _ in fns]
        for _ in range(n_reps):
            for i, f in enumerate(fns):
                samples[i].append(timer(f, inner))
        med = [sorted(s)[len(s) // 2] for s in samples]
        ours_med, ref_med = med[:len(ours_steps)], med[len(ours_steps):]
        names = list(ours_by) + [p + "+graph" for p in graphs_by]
        print(f"\n== training step ({cfg['name']}, B={B}, {dev}; median of {n_reps} x {inner}) ==")
        for name, t in zip(names, ours_med):
            print(f"  ours {name:11s} {t:8.3f} ms ({B / t * 1e3:.0f} img/s), first-step loss "
                  f"{our_loss[name.split('+')[0]]:.6f}")
        for (name, _, label), t in zip(refs, ref_med):
            loss, first_s = first[name]
            ratios = "  ".join(f"ours {p} is {t / m:.2f}x" for p, m in zip(names, ours_med))
            print(f"  {name:22s} {t:8.3f} ms ({B / t * 1e3:.0f} img/s)  {ratios}  "
                  f"(first step {first_s:.1f} s, loss {loss:.6f})")
            for variant, m in zip(names, ours_med):
                precision = variant.split("+")[0]
                loss_err = abs(our_loss[precision] - loss) / abs(loss)
                rows.append(dict(op="train_step" + ("" if precision == "fp32" else "_" + precision)
                                 + ("_graph" if variant.endswith("+graph") else ""),
                                 backend=impl.name, shape=f"{cfg['name']},B={B}", ours_ms=m,
                                 reference=f"{name}: {label}", reference_ms=t, speedup=t / m, max_rel_err=loss_err))
        for og in graphs_by.values():
            og.close()
        impl.synchronize(gstream)
        impl.call("stream_destroy", gstream)
        del ours_by, graphs_by, ours_steps, refs
        if dev == "cuda":
            torch.cuda.empty_cache()
    return rows, replay_ok


def loss_curve(impl, stream, dev, cfg, state, B, steps, seed):
    """Issue #18's bf16 target: `steps` training steps of ours in fp32 and in bf16 from the same weights on the same
    synthetic batches; the bf16 loss curve must stay within 2 % of fp32's. Synthetic data with something to learn: 8
    fixed batches of Gaussian images whose labels and teacher logits come from a fixed random linear map of the
    image (the teacher's argmax is the label). Compared on a 10-step moving average (single steps of two runs drift
    apart by batch noise once their weights differ); the largest single-step difference is printed too."""
    alpha, T, lr, wd = 0.5, 3.0, 5e-4, 0.05
    g = torch.Generator().manual_seed(seed + 3)
    n_in = cfg["chans"] * cfg["img"] * cfg["img"]
    proj = torch.randn(n_in, cfg["classes"], generator=g) / math.sqrt(n_in) * 4
    batches = []
    for _ in range(8):
        x = torch.randn(B, cfg["chans"], cfg["img"], cfg["img"], generator=g)
        t = x.reshape(B, -1) @ proj
        batches.append((x.to(dev), t.argmax(1).int().to(dev), t.to(dev)))
    curves = {}
    for precision in ("fp32", "bf16"):
        o = Ours(impl, stream, dev, cfg, B, state, precision)
        o.alpha.fill_(alpha)
        losses = []
        for i in range(steps):
            x, y, t = batches[i % len(batches)]
            o.images.copy_(x)
            o.labels.copy_(y)
            o.teacher.copy_(t)
            o.train_step(alpha, T, lr, wd)
            losses.append(o.ce_loss + alpha * o.kl_loss)
        impl.synchronize(stream)
        curves[precision] = torch.cat([v.reshape(1) for v in losses]).double().cpu()
        del o
    f, b = curves["fp32"], curves["bf16"]
    k = 10
    avg = lambda c: torch.stack([c[i:i + k].mean() for i in range(len(c) - k + 1)])  # noqa: E731
    fa, ba = avg(f), avg(b)
    worst_avg = ((ba - fa).abs() / fa.abs()).max().item()
    worst_step = ((b - f).abs() / f.abs()).max().item()
    finite = bool(torch.isfinite(b).all()) and bool(torch.isfinite(f).all())
    ok = finite and worst_avg <= 0.02
    print(f"\n== loss curve, {steps} steps ({cfg['name']}, B={B}, {dev}): bf16 vs fp32 ==")
    for i in sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps - 1}):
        print(f"  step {i + 1:4d}: fp32 {f[i].item():.5f}  bf16 {b[i].item():.5f}")
    print(f"  10-step moving average: largest relative difference {worst_avg:.2%} (limit 2 %); single steps "
          f"{worst_step:.2%}; fp32 {f[:k].mean().item():.4f} -> {f[-k:].mean().item():.4f}")
    print(f"  => {'ok' if ok else 'FAIL'}")
    return ok, [dict(op="loss_curve_bf16", backend=impl.name, shape=f"{cfg['name']},B={B},steps={steps}",
                     ours_ms=None, reference="ours fp32, same weights and batches (10-step moving average)",
                     reference_ms=None, speedup=None, max_rel_err=worst_avg)]


def write_safetensors(path, tensors, metadata):
    """safetensors by hand (u64 LE header length, JSON header, 8-byte padded, raw little-endian data), or with the
    package when it is importable."""
    try:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)
        return "safetensors package"
    except ImportError:
        pass
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for k, v in tensors.items():
        b = v.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return "written by hand"


def save_reference(timm, save_dir, json_path, init_seed, input_seed):
    cfg = DEIT_TINY
    state, model = make_state(cfg, timm, init_seed)
    torch.manual_seed(input_seed)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        if model is not None:
            m64 = Reference(cfg, state, model, "cpu", torch.float64).model.eval()
            avg = m64(x.double())
            feats = m64.forward_features(x.double())
            cls, dist = m64.head(feats[:, 0]), m64.head_dist(feats[:, 1])
        else:
            st64 = {k: v.double() for k, v in state.items()}
            cls, dist = functional_heads(st64, x.double(), cfg)
            avg = (cls + dist) / 2
    meta = {"format": "pt"}
    out = dict(model=cfg["name"], source=("timm " + timm.__version__) if model is not None else "functional init",
               init="torch.manual_seed(init_seed) then timm.create_model(model, pretrained=False)",
               init_seed=init_seed, input="torch.manual_seed(input_seed); torch.randn(2, 3, 224, 224) (float32, CPU)",
               input_seed=input_seed, torch=torch.__version__, dtype="logits in float64 on the CPU, model.eval()",
               config=dict(cfg), layer_norm_eps=EPS, logits=avg.tolist(), logits_cls=cls.tolist(),
               logits_dist=dist.tolist())
    out["sha256_input_f32"] = hashlib.sha256(x.numpy().astype("<f4").tobytes()).hexdigest()
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(v.numpy().astype("<f4").tobytes())
    out["sha256_state_names_and_f32"] = h.hexdigest()
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        mp = os.path.join(save_dir, cfg["name"].split("_patch")[0] + ".safetensors")
        how = write_safetensors(mp, state, meta)
        ip = os.path.join(save_dir, cfg["name"].split("_patch")[0] + "_input.safetensors")
        write_safetensors(ip, {"input": x}, meta)
        out["files"] = {os.path.basename(mp): hashlib.sha256(open(mp, "rb").read()).hexdigest(),
                        os.path.basename(ip): hashlib.sha256(open(ip, "rb").read()).hexdigest()}
        print(f"wrote {mp} ({os.path.getsize(mp)} bytes, {how}) and {ip}")
        json_path = json_path or os.path.join(save_dir, "deit_tiny_distilled_logits.json")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
        print(f"wrote {json_path}: logits of input 0, first 5 classes: avg {[round(v, 6) for v in out['logits'][0][:5]]}")


def main():
    global torch, F
    ap = arg_parser(__doc__, JSON_NAME)
    ap.add_argument("--model-tol", type=float, default=1e-4, help="whole-model tolerance (or 10 x torch fp32's)")
    ap.add_argument("--batches", default="64,256", help="training-step batch sizes timed on the GPU")
    # check.sh passes its arguments to every script: the environment carries this one past the others.
    ap.add_argument("--baselines",
                    default=os.environ.get("D4J_BASELINES",
                                           "eager_fp32,eager_fp32_fused,eager_tf32,amp_bf16,amp_bf16_compile"),
                    help="PyTorch training steps timed against ours, comma-separated, or 'all' ("
                         + ", ".join(BASELINES) + "; default $D4J_BASELINES or all but max-autotune, which "
                         "compiles for minutes)")
    ap.add_argument("--precisions", default=os.environ.get("D4J_PRECISIONS", "fp32,tf32,bf16"),
                    help="our model's precisions checked and timed (default $D4J_PRECISIONS or fp32,tf32,bf16)")
    ap.add_argument("--curve-steps", type=int, default=300, help="steps of the bf16-vs-fp32 loss curve on the GPU")
    ap.add_argument("--skip-curve", action="store_true", help="no loss curve")
    ap.add_argument("--save-model", default=None, help="folder for the safetensors files and the logits JSON")
    ap.add_argument("--logits-json", default=None, help="default: $OUT/deit_tiny_distilled_logits.json")
    ap.add_argument("--init-seed", type=int, default=0)
    ap.add_argument("--input-seed", type=int, default=1234)
    ap.add_argument("--skip-reference-file", action="store_true")
    args = ap.parse_args()
    torch = import_torch_or_skip(args, "check_model.py")
    import torch.nn.functional as F
    seed, json_path = seed_and_json(args, JSON_NAME)
    t_start = time.time()
    set_tf32(torch, False)
    impl, stream, dev = open_torch_impl(torch, args)
    timm = try_timm()
    if timm is not None:
        print(f"timm {timm.__version__}")
    cfg, B, batches = (DRY, 2, [2]) if dev == "cpu" else (DEIT_TINY, 2, [int(b) for b in args.batches.split(",")])
    precisions = args.precisions.split(",")
    if any(p not in ("fp32", "tf32", "bf16") for p in precisions):
        print(f"unknown --precisions {args.precisions}: fp32, tf32, bf16")
        return 2
    ok, rows, state, timm_model = correctness(impl, stream, dev, cfg, timm, B, seed, args.model_tol, precisions)
    if not args.skip_timing:
        names = list(BASELINES) if args.baselines == "all" else args.baselines.split(",")
        unknown = [n for n in names if n not in BASELINES]
        if unknown:
            print(f"unknown --baselines {unknown}; known: {', '.join(BASELINES)}")
            return 2
        timing_ok, t_out = timed_rows(lambda: timing(impl, stream, dev, cfg, timm, state, timm_model, batches,
                                                     max(10, min(args.reps, 15)), seed, names, precisions))
        t_rows, replay_ok = t_out if timing_ok else ([], False)
        ok &= timing_ok and replay_ok
        rows += t_rows
    if "bf16" in precisions and not args.skip_curve:
        steps, curve_b = (30, 2) if dev == "cpu" else (args.curve_steps, 64)
        curve_ok, c_rows = loss_curve(impl, stream, dev, cfg, state, curve_b, steps, seed)
        ok &= curve_ok
        rows += c_rows
    if not args.skip_reference_file:
        lj = args.logits_json or (os.path.join(os.environ["OUT"], "deit_tiny_distilled_logits.json")
                                  if os.environ.get("OUT") else None)
        try:
            save_reference(timm, args.save_model, lj, args.init_seed, args.input_seed)
        except Exception as e:
            print(f"REFERENCE FILE FAILED: {type(e).__name__}: {e}")
            ok = False
    return finish("check_model.py", rows, json_path, ok, t_start, seed)


if __name__ == "__main__":
    sys.exit(main())
