package org.distill4j.nn;

import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.ShortPointer;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * The model's calls into the kernel library, without the per-call checks of {@code org.distill4j.ops}: the model
 * checks its configuration once and owns every buffer it passes, so the shapes are right by construction. Each
 * method is one C entry of native/include/distill4j_impl.h.
 */
final class Kernels {
    private final Backend be;
    private final Distill4jNative.d4j_backend k;
    private final Pointer stream;

    Kernels(Backend backend) {
        this.be = backend;
        this.k = backend.kernels();
        this.stream = backend.stream();
    }

    /** y = x Wᵀ + b (+ residual); x [m, kIn], w [n, kIn]; precision 0 fp32, 1 tf32. */
    void linear(FloatPointer x, FloatPointer w, FloatPointer b, FloatPointer residual, long m, long kIn, long n,
                FloatPointer y, int precision) {
        be.call("linear forward",
                () -> Distill4jNative.d4j_linear_forward(k, stream, x, w, b, residual, m, kIn, n, y, precision));
    }

    /** dx = dy W (written, unless null); dW += dyᵀ x; db += colsum(dy); precision 0 fp32, 1 tf32. */
    void linearBackward(FloatPointer x, FloatPointer w, FloatPointer dy, long m, long kIn, long n, FloatPointer dx,
                        FloatPointer dw, FloatPointer db, int precision) {
        be.call("linear backward",
                () -> Distill4jNative.d4j_linear_backward(k, stream, x, w, dy, m, kIn, n, dx, dw, db, precision));
    }

    /** As {@link #linear} with bf16 x and W (fp32 sums, fp32 y). */
    void linearBf16(ShortPointer x, ShortPointer w, FloatPointer b, FloatPointer residual, long m, long kIn, long n,
                    FloatPointer y) {
        be.call("linear bf16 forward",
                () -> Distill4jNative.d4j_linear_bf16_forward(k, stream, x, w, b, residual, m, kIn, n, y));
    }

    /** As {@link #linearBackward} with bf16 x, W and dy; dx, dW, db fp32. */
    void linearBf16Backward(ShortPointer x, ShortPointer w, ShortPointer dy, long m, long kIn, long n, FloatPointer dx,
                            FloatPointer dw, FloatPointer db) {
        be.call("linear bf16 backward",
                () -> Distill4jNative.d4j_linear_bf16_backward(k, stream, x, w, dy, m, kIn, n, dx, dw, db));
    }

    /** LayerNorm as {@link #layerNorm}, y written once rounded to bf16. */
    void layerNormBf16(FloatPointer x, FloatPointer w, FloatPointer b, long m, long c, ShortPointer y,
                       FloatPointer mean, FloatPointer rstd) {
        be.call("layernorm forward bf16",
                () -> Distill4jNative.d4j_layernorm_forward_bf16(k, stream, x, w, b, m, c, 1e-6f, y, mean, rstd));
    }

    /** GELU as {@link #gelu}, y written once rounded to bf16. */
    void geluBf16(FloatPointer x, long n, ShortPointer y) {
        be.call("gelu forward bf16", () -> Distill4jNative.d4j_gelu_forward_bf16(k, stream, x, n, y));
    }

    /** dx = dy·gelu'(x) rounded to bf16 (the next linear layer's upstream gradient); dx overlaps neither. */
    void geluBackwardBf16(FloatPointer x, FloatPointer dy, long n, ShortPointer dx) {
        be.call("gelu backward bf16", () -> Distill4jNative.d4j_gelu_backward_bf16(k, stream, x, dy, n, dx));
    }

    /** y = x rounded to bf16 (nearest even), n elements. */
    void toBf16(FloatPointer x, long n, ShortPointer y) {
        be.call("cast to bf16", () -> Distill4jNative.d4j_cast_bf16(k, stream, x, n, y));
    }

    /** The bf16 attention forward: out [b, t, h·dh] bf16 and lse [b, h, t] from qkv [b, t, 3, h, dh] bf16. */
    void attentionBf16(ShortPointer qkv, long b, long t, long h, long dh, float scale, ShortPointer out,
                       FloatPointer lse) {
        be.call("attention bf16 forward",
                () -> Distill4jNative.d4j_attention_bf16_forward(k, stream, qkv, b, t, h, dh, scale, out, lse));
    }

    /** The bf16 attention backward: dqkv (written, bf16) from dout (bf16) and the forward's qkv, out, lse. */
    void attentionBf16Backward(ShortPointer qkv, ShortPointer out, FloatPointer lse, ShortPointer dout, long b, long t,
                               long h, long dh, float scale, ShortPointer dqkv) {
        be.call("attention bf16 backward", () -> Distill4jNative.d4j_attention_bf16_backward(k, stream, qkv, out, lse,
                dout, b, t, h, dh, scale, dqkv));
    }

    long layerNormWorkspace(long m, long c) {
        long bytes = Distill4jNative.d4j_layernorm_workspace(k, m, c);
        if (bytes < 0) be.check(1, "layernorm workspace");
        return bytes;
    }

    void layerNorm(FloatPointer x, FloatPointer w, FloatPointer b, long m, long c, FloatPointer y, FloatPointer mean,
                   FloatPointer rstd) {
        be.call("layernorm forward",
                () -> Distill4jNative.d4j_layernorm_forward(k, stream, x, w, b, m, c, 1e-6f, y, mean, rstd));
    }

    /** dx += ..., dw += ..., db += ... */
    void layerNormBackward(FloatPointer x, FloatPointer w, FloatPointer mean, FloatPointer rstd, FloatPointer dy, long m,
                           long c, FloatPointer dx, FloatPointer dw, FloatPointer db, Pointer workspace) {
        be.call("layernorm backward",
                () -> Distill4jNative.d4j_layernorm_backward(k, stream, x, w, mean, rstd, dy, m, c, dx, dw, db,
                        workspace));
    }

    void gelu(FloatPointer x, long n, FloatPointer y) {
        be.call("gelu forward", () -> Distill4jNative.d4j_gelu_forward(k, stream, x, n, y));
    }

    /** dx = dy·gelu'(x), written; dx may be dy. */
    void geluBackward(FloatPointer x, FloatPointer dy, long n, FloatPointer dx) {
        be.call("gelu backward", () -> Distill4jNative.d4j_gelu_backward(k, stream, x, dy, n, dx));
    }

    void tokenRows(FloatPointer tokens, long b, long t, long d, long prefix, FloatPointer rows) {
        be.call("token rows", () -> Distill4jNative.d4j_token_rows_forward(k, stream, tokens, b, t, d, prefix, rows));
    }

    void tokenRowsBackward(FloatPointer drows, long b, long t, long d, long prefix, FloatPointer dtokens) {
        be.call("token rows backward",
                () -> Distill4jNative.d4j_token_rows_backward(k, stream, drows, b, t, d, prefix, dtokens));
    }

    /** A view of {@code p} starting {@code offset} floats in: what the native call receives is address + offset. */
    static FloatPointer at(FloatPointer p, long offset) {
        return new FloatPointer(p).position(p.position() + offset);
    }

    /** A view of {@code p} starting {@code offset} bf16 elements in. */
    static ShortPointer at(ShortPointer p, long offset) {
        return new ShortPointer(p).position(p.position() + offset);
    }
}
