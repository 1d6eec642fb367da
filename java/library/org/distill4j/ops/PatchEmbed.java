package org.distill4j.ops;

import java.util.Arrays;
import java.util.Objects;
import org.bytedeco.javacpp.FloatPointer;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * Fused patch embedding of a ViT/DeiT: a convolution with kernel = stride = P, plus the bias, plus the position
 * embedding, written straight into the token sequence after the class (and distillation) token, as timm lays it
 * out. CPU and CUDA kernels behind the same C entries, {@code d4j_patch_embed_*}.
 *
 * <p>Shapes (timm's parameters): images [B, Cin, H, W], weight [D, Cin, P, P], bias [D], pos [1, prefix + N, D],
 * cls [1, 1, D], dist [1, 1, D], tokens [B, prefix + N, D], with N = (H/P)·(W/P) and prefix = 1 + distilled (or
 * 0 without a class token). Row 0 of each image is cls + pos[0], row 1 dist + pos[1] when distilled, then patch n
 * in row-major patch order: weight · patch + bias + pos[prefix + n].
 *
 * <p>PyTorch equivalence: {@code cat([cls.expand(B,-1,-1), dist.expand(B,-1,-1),
 * conv2d(images, weight, bias, stride=P).flatten(2).transpose(1, 2)], 1) + pos}.
 *
 * <p>An instance is made for one configuration and owns its workspace, allocated once: forward and backward
 * allocate nothing. Close it to free the workspace. Like its backend, it is used from one thread at a time.
 */
public final class PatchEmbed implements AutoCloseable {
    private final Backend backend;
    private final long batch, channels, height, width, patch, dim;
    private final int prefixTokens;
    private Tensor workspace;

    private PatchEmbed(Builder b, Backend backend) {
        this.backend = Objects.requireNonNull(backend, "backend");
        this.batch = b.batch;
        this.channels = b.channels;
        this.height = b.height;
        this.width = b.width;
        this.patch = b.patch;
        this.dim = b.dim;
        this.prefixTokens = b.prefixTokens;
        long bytes = Distill4jNative.d4j_patch_embed_workspace(backend.kernels(), batch, channels, height, width,
                patch, dim);
        if (bytes < 0) backend.check(1, "patch_embed workspace for " + describe());
        // At least one float: a zero-size allocation is not portable across backends.
        this.workspace = Tensor.empty(backend, Math.max(1, (bytes + Float.BYTES - 1) / Float.BYTES));
    }

    /** A builder: set batch, channels, image size, patch and dim; one class token and no distillation by default. */
    public static Builder builder() {
        return new Builder();
    }

    /** Batch size B. */
    public long batch() {
        return batch;
    }

    /** Input channels Cin. */
    public long channels() {
        return channels;
    }

    /** Image height H. */
    public long height() {
        return height;
    }

    /** Image width W. */
    public long width() {
        return width;
    }

    /** Patch size P (kernel and stride). */
    public long patch() {
        return patch;
    }

    /** Embedding dimension D. */
    public long dim() {
        return dim;
    }

    /** Number of prefix tokens: 0, 1 (class) or 2 (class and distillation). */
    public int prefixTokens() {
        return prefixTokens;
    }

    /** Whether there is a distillation token (DeiT). */
    public boolean distilled() {
        return prefixTokens == 2;
    }

    /** Number of patches N = (H/P)·(W/P). */
    public long patches() {
        return (height / patch) * (width / patch);
    }

    /** Sequence length prefix + N. */
    public long sequenceLength() {
        return prefixTokens + patches();
    }

    /** The backend this op runs on; every tensor passed to it must live there. */
    public Backend backend() {
        return backend;
    }

    /** Shape of the images, [B, Cin, H, W]. */
    public long[] imagesShape() {
        return new long[] {batch, channels, height, width};
    }

    /** Shape of the conv weight, [D, Cin, P, P]. */
    public long[] weightShape() {
        return new long[] {dim, channels, patch, patch};
    }

    /** Shape of the position embedding, [1, prefix + N, D]. */
    public long[] posShape() {
        return new long[] {1, sequenceLength(), dim};
    }

    /** Shape of the class and of the distillation token, [1, 1, D]. */
    public long[] prefixTokenShape() {
        return new long[] {1, 1, dim};
    }

    /** Shape of the token sequence, [B, prefix + N, D]. */
    public long[] tokensShape() {
        return new long[] {batch, sequenceLength(), dim};
    }

    /**
     * Writes the token sequence: tokens = [cls, dist, patches · weightᵀ + bias] + pos, per image.
     *
     * @param images [B, Cin, H, W]
     * @param weight [D, Cin, P, P]
     * @param bias   [D]
     * @param pos    [1, prefix + N, D]
     * @param cls    [1, 1, D]; null exactly when the op has no prefix token
     * @param dist   [1, 1, D]; null exactly when the op is not distilled
     * @param tokens output [B, prefix + N, D], overwritten
     */
    public void forward(Tensor images, Tensor weight, Tensor bias, Tensor pos, Tensor cls, Tensor dist, Tensor tokens) {
        checkOpen();
        check("images", images, imagesShape());
        check("weight", weight, weightShape());
        check("bias", bias, new long[] {dim});
        check("pos", pos, posShape());
        checkPrefix("cls", cls, prefixTokens >= 1, "the op has no class token (prefixTokens = 0)",
                "the op has a class token");
        checkPrefix("dist", dist, distilled(), "the op is not distilled (prefixTokens = " + prefixTokens + ")",
                "the op is distilled (prefixTokens = 2)");
        check("tokens", tokens, tokensShape());
        backend.call("patch_embed forward",
                () -> Distill4jNative.d4j_patch_embed_forward(backend.kernels(), backend.stream(), images.data(), batch,
                channels, height, width, patch, dim, weight.data(), bias.data(), pos.data(), data(cls), data(dist),
                tokens.data(), workspace.data()));
    }

    /**
     * Back-propagates {@code dTokens}. Parameter gradients ACCUMULATE (+=), as autograd's {@code .grad} does:
     * zero them before the first backward of a step. {@code dImages} is overwritten.
     *
     * @param images  the forward's images [B, Cin, H, W]
     * @param weight  the forward's weight [D, Cin, P, P]
     * @param dTokens upstream gradient [B, prefix + N, D]
     * @param dWeight += d/d weight [D, Cin, P, P]
     * @param dBias   += d/d bias [D]
     * @param dPos    += d/d pos [1, prefix + N, D]
     * @param dCls    += d/d cls [1, 1, D]; null exactly when the op has no prefix token
     * @param dDist   += d/d dist [1, 1, D]; null exactly when the op is not distilled
     * @param dImages = d/d images [B, Cin, H, W], or null to skip it (inputs usually need no gradient)
     */
    public void backward(Tensor images, Tensor weight, Tensor dTokens, Tensor dWeight, Tensor dBias, Tensor dPos,
                         Tensor dCls, Tensor dDist, Tensor dImages) {
        checkOpen();
        check("images", images, imagesShape());
        check("weight", weight, weightShape());
        check("dTokens", dTokens, tokensShape());
        check("dWeight", dWeight, weightShape());
        check("dBias", dBias, new long[] {dim});
        check("dPos", dPos, posShape());
        checkPrefix("dCls", dCls, prefixTokens >= 1, "the op has no class token (prefixTokens = 0)",
                "the op has a class token");
        checkPrefix("dDist", dDist, distilled(), "the op is not distilled (prefixTokens = " + prefixTokens + ")",
                "the op is distilled (prefixTokens = 2)");
        if (dImages != null) check("dImages", dImages, imagesShape());
        backend.call("patch_embed backward",
                () -> Distill4jNative.d4j_patch_embed_backward(backend.kernels(), backend.stream(), images.data(),
                        batch,
                channels, height, width, patch, dim, weight.data(), dTokens.data(), dWeight.data(), dBias.data(),
                dPos.data(), data(dCls), data(dDist), data(dImages), workspace.data()));
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
        return "PatchEmbed[" + describe() + (workspace == null ? ", closed" : "") + "]";
    }

    private String describe() {
        return "B=" + batch + ", Cin=" + channels + ", H=" + height + ", W=" + width + ", P=" + patch + ", D=" + dim
                + ", prefixTokens=" + prefixTokens + " on " + backend.device();
    }

    private void checkOpen() {
        if (workspace == null) throw new IllegalStateException("patch_embed: the op " + describe() + " is closed");
    }

    private void check(String name, Tensor t, long[] shape) {
        if (t == null) throw new IllegalArgumentException("patch_embed: " + name + " is required");
        if (t.isClosed()) throw new IllegalStateException("patch_embed: " + name + " tensor is closed");
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException("patch_embed: " + name + " must have shape " + Arrays.toString(shape)
                    + ", got " + Arrays.toString(t.shape()) + " (op " + describe() + ")");
        }
        if (t.backend() != backend) {
            throw new IllegalArgumentException("patch_embed: " + name + " is on " + t.backend().name() + ", the op on "
                    + backend.name() + ": copy it over first");
        }
    }

    private void checkPrefix(String name, Tensor t, boolean wanted, String whyAbsent, String whyPresent) {
        if (wanted && t == null) throw new IllegalArgumentException("patch_embed: " + name + " is required: " + whyPresent);
        if (!wanted && t != null) throw new IllegalArgumentException("patch_embed: " + name + " must be null: " + whyAbsent);
        if (t != null) check(name, t, prefixTokenShape());
    }

    private static FloatPointer data(Tensor t) {
        return t == null ? null : t.data();
    }

    /** Configures a {@link PatchEmbed}; every size is required except the prefix (one class token by default). */
    public static final class Builder {
        private long batch = -1, channels = -1, height = -1, width = -1, patch = -1, dim = -1;
        private int prefixTokens = 1;

        private Builder() {}

        /** Batch size B &ge; 1. */
        public Builder batch(long b) {
            this.batch = b;
            return this;
        }

        /** Input channels Cin &ge; 1. */
        public Builder channels(long c) {
            this.channels = c;
            return this;
        }

        /** Image height H and width W, multiples of the patch size. */
        public Builder image(long h, long w) {
            this.height = h;
            this.width = w;
            return this;
        }

        /** Patch size P &ge; 1 (kernel and stride of the convolution). */
        public Builder patch(long p) {
            this.patch = p;
            return this;
        }

        /** Embedding dimension D &ge; 1. */
        public Builder dim(long d) {
            this.dim = d;
            return this;
        }

        /** Whether a distillation token follows the class token (DeiT): 2 prefix tokens, else 1. */
        public Builder distilled(boolean d) {
            this.prefixTokens = d ? 2 : 1;
            return this;
        }

        /** Number of prefix tokens: 0 (none), 1 (class) or 2 (class, distillation). */
        public Builder prefixTokens(int n) {
            if (n < 0 || n > 2) {
                throw new IllegalArgumentException("patch_embed: prefixTokens must be 0, 1 (class) or 2 (class and "
                        + "distillation), got " + n);
            }
            this.prefixTokens = n;
            return this;
        }

        /**
         * The op on {@code backend}, with its workspace allocated.
         *
         * @throws IllegalArgumentException naming the shape when a size is missing or not positive, or H or W is
         *     not a multiple of P
         */
        public PatchEmbed build(Backend backend) {
            Objects.requireNonNull(backend, "backend");
            String shape = "B=" + batch + ", Cin=" + channels + ", H=" + height + ", W=" + width + ", P=" + patch
                    + ", D=" + dim;
            if (batch < 1 || channels < 1 || height < 1 || width < 1 || patch < 1 || dim < 1) {
                throw new IllegalArgumentException("patch_embed: every size must be set and >= 1, got " + shape);
            }
            if (height % patch != 0 || width % patch != 0) {
                throw new IllegalArgumentException("patch_embed: image " + height + "x" + width
                        + " is not a multiple of the patch size " + patch + " (" + shape + ")");
            }
            return new PatchEmbed(this, backend);
        }
    }
}
