package org.distill4j.reference;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.DoubleOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;

/**
 * The reference for the attention op: timm's ViT attention written as PyTorch writes it, run by libtorch (CPU)
 * through {@code org.bytedeco:pytorch}, with d qkv taken by autograd through the split.
 *
 * <pre>
 *   q, k, v = qkv.reshape(B, N, 3, H, Dh).permute(2, 0, 3, 1, 4)       each [B, H, N, Dh]
 *   out     = scaled_dot_product_attention(q, k, v, scale = scale)    [B, H, N, Dh]
 *   out     = out.transpose(1, 2).reshape(B, N, H * Dh)
 *   out.backward(dOut)  → d qkv [B, N, 3·H·Dh]
 * </pre>
 *
 * <p>The qkv leaf is built once by the constructor and reused by every run; a run's temporaries live in a
 * {@link PointerScope}, and the leaf's {@code .grad} is reset before and after each run. Not thread-safe.
 */
@SuppressWarnings("try") // the PointerScopes are used for their effect, never referenced
public final class TorchAttention implements AutoCloseable {

    /** Result of {@link #run}: the output [B, N, H·Dh] and d qkv [B, N, 3·H·Dh], row-major as our tensors. */
    public record Result(double[] out, double[] dQkv) {}

    private final int batch, tokens, heads, headDim;
    private final double scale;
    private final boolean float64;
    private Tensor qkv; // the leaf

    /**
     * Copies qkv into a libtorch leaf tensor, once.
     *
     * @param qkv     [B, N, 3·H·Dh]
     * @param scale   the factor on Q Kᵀ (1/√Dh for timm)
     * @param float64 run in float64 (inputs widened exactly); float32 otherwise
     */
    public TorchAttention(float[] qkv, int batch, int tokens, int heads, int headDim, double scale, boolean float64) {
        if (batch < 1 || tokens < 1 || heads < 1 || headDim < 1) {
            throw new IllegalArgumentException("bad shape B=" + batch + " N=" + tokens + " H=" + heads + " Dh=" + headDim);
        }
        this.batch = batch;
        this.tokens = tokens;
        this.heads = heads;
        this.headDim = headDim;
        this.scale = scale;
        this.float64 = float64;
        TorchTensors.checkLength("qkv", qkv, 3L * batch * tokens * heads * headDim);
        // Our own scope for the temporaries; the leaf gets an extra reference so that neither this scope nor a
        // caller's frees it (close() does).
        try (PointerScope ignored = new PointerScope()) {
            Tensor t = TorchTensors.toDtype(AbstractTensor.create(qkv, batch, tokens, 3L * heads * headDim), float64).contiguous();
            t.set_requires_grad(true);
            t.retainReference();
            this.qkv = t;
        }
    }

    /** Sets libtorch's intra-op thread count ({@code at::set_num_threads}) for the whole process. */
    public static void setThreads(int n) {
        TorchPatchEmbed.setThreads(n);
    }

    /**
     * Runs the forward and autograd's backward from {@code dOut}, and copies both out.
     *
     * @param dOut upstream gradient [B, N, H·Dh]
     */
    public Result run(float[] dOut) {
        checkOpen();
        TorchTensors.checkLength("dOut", dOut, (long) batch * tokens * heads * headDim);
        try (PointerScope ignored = new PointerScope()) {
            resetGrad();
            Tensor out = forward();
            out.backward(TorchTensors.toDtype(AbstractTensor.create(dOut, batch, tokens, (long) heads * headDim), float64),
                    new BoolOptional(), false, new TensorArrayRefOptional());
            Result r = new Result(TorchTensors.copyOut(out, float64), TorchTensors.copyOut(qkv.grad(), float64));
            resetGrad();
            return r;
        }
    }

    /**
     * Forward and backward with results left in libtorch: what a benchmark times. The upstream gradient is the
     * forward's own output (detached): the same cost as any dOut, without copying one in per run.
     */
    public void runNoCopy() {
        checkOpen();
        try (PointerScope ignored = new PointerScope()) {
            resetGrad();
            Tensor out = forward();
            out.backward(out.detach(), new BoolOptional(), false, new TensorArrayRefOptional());
            resetGrad();
        }
    }

    /** Frees the leaf and its gradient. Idempotent. */
    @Override
    public void close() {
        if (qkv == null) return;
        resetGrad();
        qkv.deallocate();
        qkv = null;
    }

    private Tensor forward() {
        Tensor split = qkv.reshape(batch, tokens, 3, heads, headDim).permute(2, 0, 3, 1, 4);
        Tensor q = split.select(0, 0), k = split.select(0, 1), v = split.select(0, 2);
        // (q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        Tensor o = torch.scaled_dot_product_attention(q, k, v, new TensorOptional(), 0.0, false,
                new DoubleOptional(scale), false);
        return o.transpose(1, 2).reshape(batch, tokens, (long) heads * headDim);
    }

    private void resetGrad() {
        if (qkv != null && qkv.grad().defined()) qkv.mutable_grad().reset();
    }

    private void checkOpen() {
        if (qkv == null) throw new IllegalStateException("closed");
    }
}
