package org.distill4j.ops;

import java.util.Arrays;
import java.util.Objects;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * Multi-head self-attention of a ViT/DeiT block, FlashAttention-2 style: per (batch, head),
 * O = softmax(Q Kᵀ · scale) V, non-causal, no dropout; the N×N score matrix is never stored. CPU and CUDA kernels
 * behind the same C entries, {@code d4j_attention_*}.
 *
 * <p>Shapes (timm's layout): qkv [B, N, 3·H·Dh] as the fused qkv linear writes it, [q | k | v] × heads × head dim
 * ({@code [B, N, 3, H, Dh]} is accepted too); out [B, N, H·Dh], head h at columns h·Dh.., ready for the projection;
 * lse [B, H, N], the natural log-sum-exp of each row of scaled scores, saved by the forward for the backward.
 *
 * <p>PyTorch equivalence: {@code q, k, v = qkv.reshape(B, N, 3, H, Dh).permute(2, 0, 3, 1, 4);
 * out = scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).reshape(B, N, H * Dh)}.
 *
 * <p>An instance is made for one configuration and owns its workspace, allocated once: forward and backward
 * allocate nothing. Close it to free the workspace. Like its backend, it is used from one thread at a time.
 */
public final class Attention implements AutoCloseable {
    private final Backend backend;
    private final long batch, tokens, heads, headDim;
    private final float scale;
    private Tensor workspace;

    private Attention(Builder b, Backend backend) {
        this.backend = Objects.requireNonNull(backend, "backend");
        this.batch = b.batch;
        this.tokens = b.tokens;
        this.heads = b.heads;
        this.headDim = b.headDim;
        this.scale = Float.isNaN(b.scale) ? (float) (1.0 / Math.sqrt(headDim)) : b.scale;
        long bytes = Distill4jNative.d4j_attention_workspace(backend.kernels(), batch, tokens, heads, headDim);
        if (bytes < 0) backend.check(1, "attention workspace for " + describe());
        // At least one float: a zero-size allocation is not portable across backends.
        this.workspace = Tensor.empty(backend, Math.max(1, (bytes + Float.BYTES - 1) / Float.BYTES));
    }

    /** A builder: set batch, tokens, heads and head dim; the scale defaults to 1/√Dh. */
    public static Builder builder() {
        return new Builder();
    }

    /** Batch size B. */
    public long batch() {
        return batch;
    }

    /** Sequence length N (tokens per image). */
    public long tokens() {
        return tokens;
    }

    /** Number of heads H. */
    public long heads() {
        return heads;
    }

    /** Head dimension Dh. */
    public long headDim() {
        return headDim;
    }

    /** The factor applied to Q Kᵀ before the softmax (1/√Dh unless set). */
    public float scale() {
        return scale;
    }

    /** The backend this op runs on; every tensor passed to it must live there. */
    public Backend backend() {
        return backend;
    }

    /** Shape of the fused qkv activations, [B, N, 3·H·Dh]. */
    public long[] qkvShape() {
        return new long[] {batch, tokens, 3 * heads * headDim};
    }

    /** The same memory seen as [B, N, 3, H, Dh] (also accepted for qkv and dQkv). */
    public long[] qkvSplitShape() {
        return new long[] {batch, tokens, 3, heads, headDim};
    }

    /** Shape of the output, [B, N, H·Dh]. */
    public long[] outShape() {
        return new long[] {batch, tokens, heads * headDim};
    }

    /** Shape of the saved row log-sum-exp, [B, H, N]. */
    public long[] lseShape() {
        return new long[] {batch, heads, tokens};
    }

    /**
     * Writes the attention output and the row log-sum-exp.
     *
     * @param qkv [B, N, 3·H·Dh] or [B, N, 3, H, Dh]
     * @param out output [B, N, H·Dh], overwritten
     * @param lse output [B, H, N], overwritten; keep it for {@link #backward}
     */
    public void forward(Tensor qkv, Tensor out, Tensor lse) {
        checkOpen();
        checkQkv("qkv", qkv);
        check("out", out, outShape());
        check("lse", lse, lseShape());
        backend.call("attention forward",
                () -> Distill4jNative.d4j_attention_forward(backend.kernels(), backend.stream(), qkv.data(), batch,
                tokens, heads, headDim, scale, out.data(), lse.data(), workspace.data()));
    }

    /**
     * Back-propagates {@code dOut}: dQkv is overwritten (an activation gradient), in the layout of qkv.
     *
     * @param qkv  the forward's qkv [B, N, 3·H·Dh] or [B, N, 3, H, Dh]
     * @param out  the forward's output [B, N, H·Dh]
     * @param lse  the forward's log-sum-exp [B, H, N]
     * @param dOut upstream gradient [B, N, H·Dh]
     * @param dQkv = d/d qkv, [B, N, 3·H·Dh] or [B, N, 3, H, Dh]
     */
    public void backward(Tensor qkv, Tensor out, Tensor lse, Tensor dOut, Tensor dQkv) {
        checkOpen();
        checkQkv("qkv", qkv);
        check("out", out, outShape());
        check("lse", lse, lseShape());
        check("dOut", dOut, outShape());
        checkQkv("dQkv", dQkv);
        backend.call("attention backward",
                () -> Distill4jNative.d4j_attention_backward(backend.kernels(), backend.stream(), qkv.data(),
                out.data(), lse.data(), dOut.data(), batch, tokens, heads, headDim, scale, dQkv.data(),
                workspace.data()));
    }

    /** Frees the workspace. Closing twice is harmless; using a closed op throws {@link IllegalStateException}. */
    @Override
    public void close() {
        if (workspace != null) {
            workspace.close();
            workspace = null;
        }
    }

    @Override
    public String toString() {
        return "Attention[" + describe() + (workspace == null ? ", closed" : "") + "]";
    }

    private String describe() {
        return "B=" + batch + ", N=" + tokens + ", H=" + heads + ", Dh=" + headDim + ", scale=" + scale + " on "
                + backend.device();
    }

    private void checkOpen() {
        if (workspace == null) throw new IllegalStateException("attention: the op " + describe() + " is closed");
    }

    private void checkQkv(String name, Tensor t) {
        if (t != null && !t.isClosed() && Arrays.equals(t.shape(), qkvSplitShape())) {
            check(name, t, qkvSplitShape());
            return;
        }
        if (t != null && !t.isClosed() && t.rank() == 3 && t.size(0) == batch && t.size(1) == tokens
                && t.size(2) != 3 * heads * headDim) {
            throw new IllegalArgumentException("attention: " + name + " must have " + (3 * heads * headDim)
                    + " = 3 x " + heads + " heads x " + headDim + " columns ([q|k|v] x heads x head dim), got "
                    + Arrays.toString(t.shape()) + " (op " + describe() + ")");
        }
        check(name, t, qkvShape());
    }

    private void check(String name, Tensor t, long[] shape) {
        if (t == null) throw new IllegalArgumentException("attention: " + name + " is required");
        if (t.isClosed()) throw new IllegalStateException("attention: " + name + " tensor is closed");
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException("attention: " + name + " must have shape " + Arrays.toString(shape)
                    + ", got " + Arrays.toString(t.shape()) + " (op " + describe() + ")");
        }
        if (t.backend() != backend) {
            throw new IllegalArgumentException("attention: " + name + " is on " + t.backend().name() + ", the op on "
                    + backend.name() + ": copy it over first");
        }
    }

    /** Configures an {@link Attention}; every size is required, the scale defaults to 1/√Dh. */
    public static final class Builder {
        private long batch = -1, tokens = -1, heads = -1, headDim = -1;
        private float scale = Float.NaN;

        private Builder() {}

        /** Batch size B &ge; 1. */
        public Builder batch(long b) {
            this.batch = b;
            return this;
        }

        /** Sequence length N &ge; 1 (any: 50, 197, 198, 257, ...). */
        public Builder tokens(long n) {
            this.tokens = n;
            return this;
        }

        /** Number of heads H &ge; 1. */
        public Builder heads(long h) {
            this.heads = h;
            return this;
        }

        /** Head dimension Dh: 32 or 64. */
        public Builder headDim(long dh) {
            this.headDim = dh;
            return this;
        }

        /** Sets the heads and Dh from the embedding width: Dh = dim / heads (timm). */
        public Builder dim(long dim, long heads) {
            if (heads < 1 || dim % heads != 0) {
                throw new IllegalArgumentException("attention: embedding dim " + dim + " does not split into "
                        + heads + " heads");
            }
            this.heads = heads;
            this.headDim = dim / heads;
            return this;
        }

        /** The factor on Q Kᵀ before the softmax, finite and nonzero; 1/√Dh when not set. */
        public Builder scale(float s) {
            if (!Float.isFinite(s) || s == 0f) {
                throw new IllegalArgumentException("attention: scale must be finite and nonzero, got " + s);
            }
            this.scale = s;
            return this;
        }

        /**
         * The op on {@code backend}, with its workspace allocated.
         *
         * @throws IllegalArgumentException naming the shape when a size is missing or not positive (B·H·N = 0), or
         *     the head dim is not 32 or 64
         */
        public Attention build(Backend backend) {
            Objects.requireNonNull(backend, "backend");
            String shape = "B=" + batch + ", N=" + tokens + ", H=" + heads + ", Dh=" + headDim;
            if (batch < 1 || tokens < 1 || heads < 1 || headDim < 1) {
                throw new IllegalArgumentException("attention: every size must be set and >= 1, got " + shape);
            }
            // The sizes every backend's kernels support (the CUDA kernel is specialised on Dh).
            if (headDim != 32 && headDim != 64) {
                throw new IllegalArgumentException("attention: head dim " + headDim + " is not supported: 32 or 64"
                        + " (" + shape + ")");
            }
            if (tokens > Integer.MAX_VALUE || heads > Integer.MAX_VALUE / (3 * headDim)
                    || batch > (1L << 58) / tokens / (3 * heads * headDim)) {
                throw new IllegalArgumentException("attention: shape too large, " + shape);
            }
            return new Attention(this, backend);
        }
    }
}
