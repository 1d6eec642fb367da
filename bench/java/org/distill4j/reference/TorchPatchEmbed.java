package org.distill4j.reference;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;

/**
 * The reference for the fused patch-embedding op: timm's ViT/DeiT patch embedding written as PyTorch writes it,
 * run by libtorch (CPU) through {@code org.bytedeco:pytorch}, with every gradient taken by autograd.
 *
 * <pre>
 *   x      = conv2d(images, weight, bias, stride = P)          [B, D, H/P, W/P]
 *   x      = x.flatten(2).transpose(1, 2)                      [B, N, D]
 *   tokens = cat([cls.expand(B,1,D), dist.expand(B,1,D), x], 1) + pos     [B, prefix + N, D]
 *   tokens.backward(dTokens)  → d weight, d bias, d pos, d cls, d dist (and d images when asked)
 * </pre>
 *
 * <p>The leaves are built once by the constructor and reused by every run; a run's temporaries live in a
 * {@link PointerScope}, and the leaves' {@code .grad} are reset (undefined, like {@code x.grad = None}) before and
 * after each run, so gradients never accumulate across runs and memory does not grow. Not thread-safe.
 */
@SuppressWarnings("try") // the PointerScopes are used for their effect, never referenced
public final class TorchPatchEmbed implements AutoCloseable {

    /** Result of {@link #run}: tokens and every gradient, row-major as our tensors ({@code dImages} null unless asked). */
    public record Result(double[] tokens, double[] dWeight, double[] dBias, double[] dPos, double[] dCls,
                         double[] dDist, double[] dImages) {}

    private final int batch, channels, height, width, patch, dim, prefix;
    private final boolean float64;
    private final boolean imageGrad;
    private Tensor images, weight, bias, pos, cls, dist; // leaves; cls/dist undefined (null) when absent

    /**
     * Copies the inputs into libtorch leaf tensors, once.
     *
     * @param images    [B, Cin, H, W]
     * @param weight    [D, Cin, P, P]
     * @param bias      [D]
     * @param pos       [1, prefix + N, D]
     * @param cls       [D] (the [1, 1, D] parameter), or null for no prefix token
     * @param dist      [D], or null (then not distilled); requires {@code cls}
     * @param float64   run the chain in float64 (inputs widened exactly); float32 otherwise
     * @param imageGrad whether the images need a gradient ({@link Result#dImages()})
     */
    public TorchPatchEmbed(float[] images, float[] weight, float[] bias, float[] pos, float[] cls, float[] dist,
                           int batch, int channels, int height, int width, int patch, int dim, boolean float64,
                           boolean imageGrad) {
        if (dist != null && cls == null) throw new IllegalArgumentException("a distillation token needs a class token");
        if (batch < 1 || channels < 1 || patch < 1 || dim < 1 || height % patch != 0 || width % patch != 0) {
            throw new IllegalArgumentException("bad shape B=" + batch + " C=" + channels + " H=" + height + " W=" + width
                    + " P=" + patch + " D=" + dim);
        }
        this.batch = batch;
        this.channels = channels;
        this.height = height;
        this.width = width;
        this.patch = patch;
        this.dim = dim;
        this.prefix = (cls != null ? 1 : 0) + (dist != null ? 1 : 0);
        this.float64 = float64;
        this.imageGrad = imageGrad;
        int tokens = prefix + (height / patch) * (width / patch);
        TorchTensors.checkLength("images", images, (long) batch * channels * height * width);
        TorchTensors.checkLength("weight", weight, (long) dim * channels * patch * patch);
        TorchTensors.checkLength("bias", bias, dim);
        TorchTensors.checkLength("pos", pos, (long) tokens * dim);
        if (cls != null) TorchTensors.checkLength("cls", cls, dim);
        if (dist != null) TorchTensors.checkLength("dist", dist, dim);
        // Our own scope for the temporaries; the kept leaves get an extra reference so that neither this scope nor
        // a caller's frees them (close() does). PointerScope.detach() would release them at once.
        try (PointerScope ignored = new PointerScope()) {
            this.images = leaf(images, imageGrad, batch, channels, height, width);
            this.weight = leaf(weight, true, dim, channels, patch, patch);
            this.bias = leaf(bias, true, dim);
            this.pos = leaf(pos, true, 1, tokens, dim);
            this.cls = cls == null ? null : leaf(cls, true, 1, 1, dim);
            this.dist = dist == null ? null : leaf(dist, true, 1, 1, dim);
        }
    }

    /** Sets libtorch's intra-op thread count ({@code at::set_num_threads}) for the whole process. */
    public static void setThreads(int n) {
        if (n < 1) throw new IllegalArgumentException("threads must be >= 1");
        torch.set_num_threads(n);
    }

    /** Whether the chain runs in float64. */
    public boolean isFloat64() {
        return float64;
    }

    /**
     * Runs the forward chain and autograd's backward from {@code dTokens}, and copies everything out.
     *
     * @param dTokens upstream gradient [B, prefix + N, D]
     */
    public Result run(float[] dTokens) {
        checkOpen();
        int n = (height / patch) * (width / patch), t = prefix + n;
        TorchTensors.checkLength("dTokens", dTokens, (long) batch * t * dim);
        try (PointerScope ignored = new PointerScope()) {
            resetGrads();
            Tensor out = forward();
            out.backward(TorchTensors.toDtype(AbstractTensor.create(dTokens, batch, t, dim), float64),
                    new BoolOptional(), false, new TensorArrayRefOptional());
            Result r = new Result(copy(out), copy(weight.grad()), copy(bias.grad()), copy(pos.grad()),
                    cls == null ? null : copy(cls.grad()), dist == null ? null : copy(dist.grad()),
                    imageGrad ? copy(images.grad()) : null);
            resetGrads();
            return r;
        }
    }

    /**
     * Forward and backward with results left in libtorch: what a benchmark times. The upstream gradient is the
     * forward's own output (detached): the same cost as any dTokens, without copying one in per run. libtorch on
     * the CPU is eager, so the work has finished on return.
     */
    public void runNoCopy() {
        checkOpen();
        try (PointerScope ignored = new PointerScope()) {
            resetGrads();
            Tensor out = forward();
            out.backward(out.detach(), new BoolOptional(), false, new TensorArrayRefOptional());
            resetGrads();
        }
    }

    /** Frees the leaves and their gradients. Idempotent. */
    @Override
    public void close() {
        if (weight == null) return;
        resetGrads();
        for (Tensor t : new Tensor[] {images, weight, bias, pos, cls, dist}) {
            if (t != null) t.deallocate();
        }
        images = weight = bias = pos = cls = dist = null;
    }

    // ---------------------------------------------------------------------------------------------------------

    private Tensor forward() {
        Tensor x = torch.conv2d(images, weight, new TensorOptional(bias), new long[] {patch, patch}, new long[] {0, 0},
                new long[] {1, 1}, 1);
        x = x.flatten(2, -1).transpose(1, 2);
        TensorVector parts = new TensorVector();
        if (cls != null) parts.push_back(cls.expand(batch, 1, dim));
        if (dist != null) parts.push_back(dist.expand(batch, 1, dim));
        parts.push_back(x);
        return torch.cat(parts, 1).add(pos);
    }

    private Tensor leaf(float[] values, boolean grad, long... shape) {
        Tensor t = TorchTensors.toDtype(AbstractTensor.create(values, shape), float64).contiguous();
        if (grad) t.set_requires_grad(true);
        t.retainReference();
        return t;
    }

    private void resetGrads() {
        for (Tensor t : new Tensor[] {images, weight, bias, pos, cls, dist}) {
            if (t != null && t.grad().defined()) t.mutable_grad().reset();
        }
    }

    private double[] copy(Tensor t) {
        return TorchTensors.copyOut(t, float64);
    }

    private void checkOpen() {
        if (weight == null) throw new IllegalStateException("closed");
    }
}
