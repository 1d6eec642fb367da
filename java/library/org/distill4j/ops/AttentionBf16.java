package org.distill4j.ops;

import java.util.Arrays;
import java.util.Objects;
import org.distill4j.Bf16Tensor;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * {@link Attention} in bf16 on tensor cores (issue #18): the same multi-head self-attention, FlashAttention-2 style,
 * with bf16 activations, behind the C entries {@code d4j_attention_bf16_*} (CUDA with {@code mma.sync}; the CPU
 * kernel computes the same roundings). S = Q Kᵀ, the softmax statistics and the output sums are fp32; P is rounded
 * to bf16 before P V and the output is rounded once. The backward recomputes P from lse; S, dP, D and the dQ, dK, dV
 * sums are fp32, P and dS rounded to bf16 before their products, each gradient rounded once. No atomics: the same
 * inputs give the same bits. The exact contract is in native/include/distill4j_impl.h.
 *
 * <p>Shapes (timm's layout, as {@link Attention}): qkv [B, N, 3·H·Dh] bf16 ({@code [B, N, 3, H, Dh]} accepted too);
 * out [B, N, H·Dh] bf16; lse [B, H, N] fp32, natural log, saved by the forward for the backward; dOut and dQkv bf16 in
 * the layouts of out and qkv. Head dim 32 or 64 (the kernels are specialised on it), B and H at most 65535 (the CUDA
 * grid), N up to 2<sup>24</sup> (the CPU backward keeps an N×N fp32 scratch per head).
 *
 * <p>No workspace: an instance holds only its configuration, allocates nothing and needs no closing. Like its
 * backend, it is used from one thread at a time.
 */
public final class AttentionBf16 {
    /** The largest N every backend accepts (the CPU backward's N×N fp32 scratch per head). */
    public static final long MAX_TOKENS = 1L << 24;
    /** The largest B and H (CUDA grid dimensions y and z). */
    public static final long MAX_BATCH_OR_HEADS = 65535;

    private final Backend backend;
    private final long batch, tokens, heads, headDim;
    private final float scale;

    private AttentionBf16(Builder b, Backend backend) {
        this.backend = backend;
        this.batch = b.batch;
        this.tokens = b.tokens;
        this.heads = b.heads;
        this.headDim = b.headDim;
        this.scale = Float.isNaN(b.scale) ? (float) (1.0 / Math.sqrt(headDim)) : b.scale;
    }

    /** A builder: set batch, tokens, heads and head dim; the scale defaults to 1/√Dh. */
    public static Builder builder() {
        return new Builder();
    }

    /** Batch size B. */
    public long batch() {
        return batch;
    }

    /** Sequence length N. */
    public long tokens() {
        return tokens;
    }

    /** Number of heads H. */
    public long heads() {
        return heads;
    }

    /** Head dimension Dh (32 or 64). */
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
     * Writes the attention output (bf16) and the row log-sum-exp (fp32).
     *
     * @param qkv [B, N, 3·H·Dh] or [B, N, 3, H, Dh], bf16
     * @param out output [B, N, H·Dh], bf16, overwritten
     * @param lse output [B, H, N], fp32, overwritten; keep it for {@link #backward}
     * @throws IllegalArgumentException when a tensor is missing, has another shape or lives on another backend
     * @throws IllegalStateException    when a tensor is closed
     */
    public void forward(Bf16Tensor qkv, Bf16Tensor out, Tensor lse) {
        checkQkv("qkv", qkv);
        check("out", out, outShape());
        checkLse(lse);
        backend.call("attention bf16 forward",
                () -> Distill4jNative.d4j_attention_bf16_forward(backend.kernels(), backend.stream(), qkv.data(),
                batch, tokens, heads, headDim, scale, out.data(), lse.data()));
    }

    /**
     * Back-propagates {@code dOut}: dQkv is overwritten (an activation gradient), in the layout of qkv.
     *
     * @param qkv  the forward's qkv [B, N, 3·H·Dh] or [B, N, 3, H, Dh], bf16
     * @param out  the forward's output [B, N, H·Dh], bf16
     * @param lse  the forward's log-sum-exp [B, H, N], fp32
     * @param dOut upstream gradient [B, N, H·Dh], bf16
     * @param dQkv = d/d qkv, [B, N, 3·H·Dh] or [B, N, 3, H, Dh], bf16
     * @throws IllegalArgumentException when a tensor is missing, has another shape or lives on another backend
     * @throws IllegalStateException    when a tensor is closed
     */
    public void backward(Bf16Tensor qkv, Bf16Tensor out, Tensor lse, Bf16Tensor dOut, Bf16Tensor dQkv) {
        checkQkv("qkv", qkv);
        check("out", out, outShape());
        checkLse(lse);
        check("dOut", dOut, outShape());
        checkQkv("dQkv", dQkv);
        backend.call("attention bf16 backward",
                () -> Distill4jNative.d4j_attention_bf16_backward(backend.kernels(), backend.stream(), qkv.data(),
                out.data(), lse.data(), dOut.data(), batch, tokens, heads, headDim, scale, dQkv.data()));
    }

    @Override
    public String toString() {
        return "AttentionBf16[" + describe() + "]";
    }

    private String describe() {
        return "B=" + batch + ", N=" + tokens + ", H=" + heads + ", Dh=" + headDim + ", scale=" + scale + " on "
                + backend.device();
    }

    private void checkQkv(String name, Bf16Tensor t) {
        if (t != null && !t.isClosed() && Arrays.equals(t.shape(), qkvSplitShape())) {
            check(name, t, qkvSplitShape());
            return;
        }
        if (t != null && !t.isClosed() && t.rank() == 3 && t.size(0) == batch && t.size(1) == tokens
                && t.size(2) != 3 * heads * headDim) {
            throw new IllegalArgumentException("attention bf16: " + name + " must have " + (3 * heads * headDim)
                    + " = 3 x " + heads + " heads x " + headDim + " columns ([q|k|v] x heads x head dim), got "
                    + Arrays.toString(t.shape()) + " (op " + describe() + ")");
        }
        check(name, t, qkvShape());
    }

    private void check(String name, Bf16Tensor t, long[] shape) {
        if (t == null) throw new IllegalArgumentException("attention bf16: " + name + " is required");
        if (t.isClosed()) throw new IllegalStateException("attention bf16: " + name + " tensor is closed");
        checkShapeAndBackend(name, t.shape(), t.backend(), shape);
    }

    private void checkLse(Tensor t) {
        if (t == null) throw new IllegalArgumentException("attention bf16: lse is required");
        if (t.isClosed()) throw new IllegalStateException("attention bf16: lse tensor is closed");
        checkShapeAndBackend("lse", t.shape(), t.backend(), lseShape());
    }

    private void checkShapeAndBackend(String name, long[] got, Backend on, long[] shape) {
        if (!Arrays.equals(got, shape)) {
            throw new IllegalArgumentException("attention bf16: " + name + " must have shape " + Arrays.toString(shape)
                    + ", got " + Arrays.toString(got) + " (op " + describe() + ")");
        }
        if (on != backend) {
            throw new IllegalArgumentException("attention bf16: " + name + " is on " + on.name() + ", the op on "
                    + backend.name() + ": copy it over first");
        }
    }

    /** Configures an {@link AttentionBf16}; every size is required, the scale defaults to 1/√Dh. */
    public static final class Builder {
        private long batch = -1, tokens = -1, heads = -1, headDim = -1;
        private float scale = Float.NaN;

        private Builder() {}

        /** Batch size B, 1 to 65535. */
        public Builder batch(long b) {
            this.batch = b;
            return this;
        }

        /** Sequence length N, 1 to 2<sup>24</sup>. */
        public Builder tokens(long n) {
            this.tokens = n;
            return this;
        }

        /** Number of heads H, 1 to 65535. */
        public Builder heads(long h) {
            this.heads = h;
            return this;
        }

        /** Head dimension Dh: 32 or 64. */
        public Builder headDim(long dh) {
            this.headDim = dh;
            return this;
        }

        /** The factor on Q Kᵀ before the softmax, finite and nonzero; 1/√Dh when not set. */
        public Builder scale(float s) {
            if (!Float.isFinite(s) || s == 0f) {
                throw new IllegalArgumentException("attention bf16: scale must be finite and nonzero, got " + s);
            }
            this.scale = s;
            return this;
        }

        /**
         * The op on {@code backend}.
         *
         * @throws IllegalArgumentException naming the shape when a size is missing, not positive or past the
         *     limits above, or the head dim is not 32 or 64
         */
        public AttentionBf16 build(Backend backend) {
            Objects.requireNonNull(backend, "backend");
            String shape = "B=" + batch + ", N=" + tokens + ", H=" + heads + ", Dh=" + headDim;
            if (batch < 1 || tokens < 1 || heads < 1 || headDim < 1) {
                throw new IllegalArgumentException("attention bf16: every size must be set and >= 1, got " + shape);
            }
            // The kernels are specialised on Dh (the CUDA one's shared-memory swizzle and mma tiling).
            if (headDim != 32 && headDim != 64) {
                throw new IllegalArgumentException("attention bf16: head dim " + headDim
                        + " is not supported: 32 or 64 (" + shape + ")");
            }
            if (batch > MAX_BATCH_OR_HEADS || heads > MAX_BATCH_OR_HEADS) {
                throw new IllegalArgumentException("attention bf16: B and H must be at most 65535 (the CUDA grid), got "
                        + shape);
            }
            if (tokens > MAX_TOKENS || batch * tokens > (1L << 58) / (3 * heads * headDim)) {
                throw new IllegalArgumentException("attention bf16: shape too large (N at most 2^24, qkv at most 2^58"
                        + " elements), got " + shape);
            }
            return new AttentionBf16(this, backend);
        }
    }
}
