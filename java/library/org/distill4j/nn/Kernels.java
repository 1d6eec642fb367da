package org.distill4j.nn;

import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.Pointer;
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

    /** y = x Wᵀ + b (+ residual); x [m, kIn], w [n, kIn]. */
    void linear(FloatPointer x, FloatPointer w, FloatPointer b, FloatPointer residual, long m, long kIn, long n,
                FloatPointer y) {
        be.call("linear forward", () -> Distill4jNative.d4j_linear_forward(k, stream, x, w, b, residual, m, kIn, n, y, 0));
    }

    /** dx = dy W (written, unless null); dW += dyᵀ x; db += colsum(dy). */
    void linearBackward(FloatPointer x, FloatPointer w, FloatPointer dy, long m, long kIn, long n, FloatPointer dx,
                        FloatPointer dw, FloatPointer db) {
        be.call("linear backward",
                () -> Distill4jNative.d4j_linear_backward(k, stream, x, w, dy, m, kIn, n, dx, dw, db, 0));
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
}
