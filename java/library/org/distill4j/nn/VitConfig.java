package org.distill4j.nn;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * The shape of a ViT/DeiT (timm's {@code VisionTransformer} and {@code VisionTransformerDistilled}): square images of
 * {@code imageSize} pixels and {@code channels} channels, cut into {@code patch}×{@code patch} patches, a class token
 * (and a distillation token when {@code distilled}), {@code depth} pre-norm blocks of width {@code dim} with
 * {@code heads} attention heads and an MLP of {@code mlpRatio}·dim hidden units, a final LayerNorm and the heads.
 *
 * <p>Every check is made here, once: a config that constructs is one every backend can run (head dim 32 or 64, the
 * sizes the attention kernels support).
 */
public final class VitConfig {
    /** The most elements of one parameter tensor: the largest Java array. */
    static final long MAX_TENSOR = Integer.MAX_VALUE - 8;
    private static final Map<String, VitConfig> PRESETS = new LinkedHashMap<>();

    static {
        // Fashion-MNIST sized (28x28 grey, 10 classes): 4x4 patches give 49 tokens + prefix.
        PRESETS.put("mnist-tiny", new VitConfig("mnist-tiny", 28, 7, 1, 10, 64, 2, 2, 2, true));
        PRESETS.put("mnist-student", new VitConfig("mnist-student", 28, 4, 1, 10, 64, 4, 2, 2, true));
        PRESETS.put("mnist-teacher", new VitConfig("mnist-teacher", 28, 4, 1, 10, 128, 6, 4, 2, false));
        // CIFAR sized (32x32 RGB, 10 classes; CIFAR-100 takes withClasses(100)): 4x4 patches give 64 tokens + prefix.
        PRESETS.put("cifar-student", new VitConfig("cifar-student", 32, 4, 3, 10, 96, 6, 3, 2, true));
        PRESETS.put("cifar-teacher", new VitConfig("cifar-teacher", 32, 4, 3, 10, 192, 6, 3, 2, false));
        // timm's DeiT shapes, 224x224 RGB, 1000 classes.
        PRESETS.put("deit-tiny", new VitConfig("deit-tiny", 224, 16, 3, 1000, 192, 12, 3, 4, false));
        PRESETS.put("deit-tiny-distilled", new VitConfig("deit-tiny-distilled", 224, 16, 3, 1000, 192, 12, 3, 4, true));
        PRESETS.put("deit-small", new VitConfig("deit-small", 224, 16, 3, 1000, 384, 12, 6, 4, false));
        PRESETS.put("deit-small-distilled", new VitConfig("deit-small-distilled", 224, 16, 3, 1000, 384, 12, 6, 4,
                true));
    }

    private final String name;
    private final int imageSize, patch, channels, classes, dim, depth, heads, mlpRatio;
    private final boolean distilled;

    private VitConfig(String name, int imageSize, int patch, int channels, int classes, int dim, int depth, int heads,
                      int mlpRatio, boolean distilled) {
        this.name = Objects.requireNonNull(name, "name");
        if (imageSize < 1 || patch < 1 || channels < 1 || classes < 1 || dim < 1 || depth < 1 || heads < 1
                || mlpRatio < 1) {
            throw new IllegalArgumentException("ViT config " + name + ": every size must be >= 1, got image "
                    + imageSize + ", patch " + patch + ", channels " + channels + ", classes " + classes + ", dim "
                    + dim + ", depth " + depth + ", heads " + heads + ", mlp ratio " + mlpRatio);
        }
        if (imageSize % patch != 0) {
            throw new IllegalArgumentException("ViT config " + name + ": image size " + imageSize
                    + " is not divisible by the patch size " + patch);
        }
        if (dim % heads != 0) {
            throw new IllegalArgumentException("ViT config " + name + ": " + heads + " heads do not divide dim " + dim);
        }
        int headDim = dim / heads;
        if (headDim != 32 && headDim != 64) {
            throw new IllegalArgumentException("ViT config " + name + ": head dim " + dim + "/" + heads + " = "
                    + headDim + "; the attention kernels support 32 and 64");
        }
        if ((long) imageSize * imageSize * channels > Integer.MAX_VALUE / 4 || (long) dim * mlpRatio > 1 << 16) {
            throw new IllegalArgumentException("ViT config " + name + ": too large (image size² × channels must be "
                    + "below 2^29 and dim × mlp ratio at most 65536)");
        }
        long side = imageSize / patch, tokens = side * side + (distilled ? 2 : 1), d = dim;
        long largest = Math.max(Math.max(d * channels * patch * patch, tokens * d),
                Math.max(Math.max(3 * d * d, d * dim * mlpRatio), (long) classes * d));
        if (largest > MAX_TENSOR) {
            // Parameters pass through Java arrays when a model is saved: each must fit one.
            throw new IllegalArgumentException("ViT config " + name + ": a parameter tensor would hold " + largest
                    + " elements, more than the " + MAX_TENSOR + " a Java array holds");
        }
        this.imageSize = imageSize;
        this.patch = patch;
        this.channels = channels;
        this.classes = classes;
        this.dim = dim;
        this.depth = depth;
        this.heads = heads;
        this.mlpRatio = mlpRatio;
        this.distilled = distilled;
    }

    /**
     * A custom configuration.
     *
     * @throws IllegalArgumentException naming the problem: a size below 1, an image size the patch does not divide,
     *     heads that do not divide dim, a head dim other than 32 or 64, an image of 2^29 values or more, an MLP
     *     wider than 65536, a parameter tensor of more elements than a Java array holds (2^31 − 9)
     */
    public static VitConfig of(int imageSize, int patch, int channels, int classes, int dim, int depth, int heads,
                               int mlpRatio, boolean distilled) {
        return new VitConfig("custom", imageSize, patch, channels, classes, dim, depth, heads, mlpRatio, distilled);
    }

    /**
     * A named preset: {@code mnist-tiny}, {@code mnist-student}, {@code mnist-teacher} (28×28 grey, 10 classes),
     * {@code cifar-student} (distilled), {@code cifar-teacher} (32×32 RGB, 10 classes),
     * {@code deit-tiny[-distilled]}, {@code deit-small[-distilled]} (timm's DeiT-Ti/S, 224×224, 1000 classes).
     *
     * @throws IllegalArgumentException for an unknown name, listing the known ones
     */
    public static VitConfig preset(String name) {
        VitConfig c = PRESETS.get(Objects.requireNonNull(name, "name"));
        if (c == null) {
            throw new IllegalArgumentException("unknown ViT preset '" + name + "': expected one of "
                    + String.join(", ", PRESETS.keySet()));
        }
        return c;
    }

    /** The preset names, in a stable order. */
    public static Iterable<String> presetNames() {
        return PRESETS.keySet();
    }

    /** The same shape with another class count (a head for another dataset). */
    public VitConfig withClasses(int n) {
        return new VitConfig(name, imageSize, patch, channels, n, dim, depth, heads, mlpRatio, distilled);
    }

    /** The same shape with or without the distillation token and head. */
    public VitConfig withDistilled(boolean d) {
        return new VitConfig(name, imageSize, patch, channels, classes, dim, depth, heads, mlpRatio, d);
    }

    /** The preset name, or {@code custom}. */
    public String name() {
        return name;
    }

    /** Image height and width in pixels. */
    public int imageSize() {
        return imageSize;
    }

    /** Patch height and width (the patch-embedding convolution's kernel and stride). */
    public int patch() {
        return patch;
    }

    /** Image channels (1 grey, 3 RGB). */
    public int channels() {
        return channels;
    }

    /** Number of classes of each head. */
    public int classes() {
        return classes;
    }

    /** Embedding width D. */
    public int dim() {
        return dim;
    }

    /** Number of transformer blocks. */
    public int depth() {
        return depth;
    }

    /** Attention heads per block. */
    public int heads() {
        return heads;
    }

    /** dim / heads. */
    public int headDim() {
        return dim / heads;
    }

    /** MLP hidden width / dim. */
    public int mlpRatio() {
        return mlpRatio;
    }

    /** MLP hidden width. */
    public int hidden() {
        return dim * mlpRatio;
    }

    /** Whether there is a distillation token and a {@code head_dist} (DeiT). */
    public boolean distilled() {
        return distilled;
    }

    /** Prefix tokens before the patches: 1 (class) or 2 (class, distillation). */
    public int prefix() {
        return distilled ? 2 : 1;
    }

    /** Patches per image. */
    public int patches() {
        int side = imageSize / patch;
        return side * side;
    }

    /** Tokens per image: prefix + patches. */
    public int tokens() {
        return prefix() + patches();
    }

    /**
     * Number of trainable scalars. Every tensor is below 2^31 elements, so only {@code depth} copies of a block can
     * reach 2^63: the count saturates at {@link Long#MAX_VALUE} there.
     */
    public long parameterCount() {
        long d = dim, h = hidden(), k = (long) channels * patch * patch;
        long block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (h * d + h) + (d * h + d);
        long heads = (d * classes + classes) * (distilled ? 2 : 1);
        long rest = d * k + d + prefix() * d + (long) tokens() * d + 2 * d + heads;
        return block > (Long.MAX_VALUE - rest) / depth ? Long.MAX_VALUE : depth * block + rest;
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof VitConfig)) return false;
        VitConfig c = (VitConfig) o;
        return imageSize == c.imageSize && patch == c.patch && channels == c.channels && classes == c.classes
                && dim == c.dim && depth == c.depth && heads == c.heads && mlpRatio == c.mlpRatio
                && distilled == c.distilled;
    }

    @Override
    public int hashCode() {
        return Objects.hash(imageSize, patch, channels, classes, dim, depth, heads, mlpRatio, distilled);
    }

    @Override
    public String toString() {
        return name + "(image " + imageSize + ", patch " + patch + ", channels " + channels + ", classes " + classes
                + ", dim " + dim + ", depth " + depth + ", heads " + heads + ", mlp " + mlpRatio + "x"
                + (distilled ? ", distilled" : "") + ")";
    }
}
