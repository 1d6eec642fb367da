package org.distill4j.data;

import java.util.Arrays;
import java.util.Objects;
import java.util.SplittableRandom;
import org.apache.commons.rng.UniformRandomProvider;
import org.apache.commons.rng.sampling.distribution.ChengBetaSampler;

/**
 * Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) over a batch, as timm's {@code Mixup} does in its default
 * {@code batch} mode and DeiT trains with it: one draw per batch, each image mixed with its mirror in the batch
 * (image i with image B−1−i, timm's {@code x.flip(0)}).
 *
 * <ul>
 *   <li>With probability {@code prob} the batch is mixed, else left alone (λ = 1). When both alphas are positive,
 *       CutMix is chosen with probability {@code switchProb}, else Mixup.
 *   <li>Mixup: λ ~ Beta(mixupAlpha, mixupAlpha); image i becomes λ·x_i + (1 − λ)·x_{B−1−i}.
 *   <li>CutMix: λ₀ ~ Beta(cutmixAlpha, cutmixAlpha); a box of (⌊H·√(1 − λ₀)⌋, ⌊W·√(1 − λ₀)⌋) centred on a uniform
 *       pixel, clipped to the image (timm's {@code rand_bbox}), takes the mirror image's pixels; λ is then corrected
 *       to the share of the image left unboxed, 1 − area/(H·W) (timm's {@code correct_lam}, DeiT's setting).
 *   <li>Targets: λ on each image's own label and 1 − λ on its mirror's ({@link #targets}). Label smoothing is the
 *       loss's ({@code CrossEntropy.computeSoft}): (1 − ε)·t + ε/C of these targets is timm's
 *       {@code mixup_target(..., smoothing=ε)}, since both are linear in the one-hot rows.
 * </ul>
 *
 * <p>The draw is a pure function of (seed, epoch, batch index), like {@link Augment}'s: a resumed run mixes the
 * same batches the same way, and {@link Params} records everything a view needs to be replayed.
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class Mixup {
    /** Keeps Mixup's draws independent of {@link Augment}'s for the same seed. */
    private static final long STREAM = 0x6d69787570L;  // "mixup"

    private final long seed;
    private final double mixupAlpha;
    private final double cutmixAlpha;
    private final double prob;
    private final double switchProb;

    /**
     * One batch's draw.
     *
     * @param cutmix whether the batch is cut-mixed (else mixed-up, or left alone when {@code lambda == 1})
     * @param lambda the weight of each image's own content and label: the Beta draw for Mixup, the corrected
     *     unboxed share for CutMix, 1 when the batch is not mixed
     * @param sampledLambda the Beta draw itself (CutMix sizes its box from it); equal to lambda for Mixup
     * @param centerY CutMix: the box centre's row (uniform in [0, H)); 0 otherwise
     * @param centerX CutMix: the box centre's column (uniform in [0, W)); 0 otherwise
     * @param top CutMix: the box's first row, inclusive
     * @param bottom CutMix: the box's last row, exclusive
     * @param left CutMix: the box's first column, inclusive
     * @param right CutMix: the box's last column, exclusive
     */
    public record Params(boolean cutmix, double lambda, double sampledLambda, int centerY, int centerX, int top,
            int bottom, int left, int right) {
        /** No mixing: λ = 1. */
        public static final Params NONE = new Params(false, 1, 1, 0, 0, 0, 0, 0, 0);

        /** Whether this draw leaves the batch and its labels as they are. */
        public boolean isIdentity() {
            return lambda == 1.0;
        }
    }

    /**
     * @param seed the run's seed
     * @param mixupAlpha Beta parameter of Mixup's λ (timm {@code --mixup}, DeiT 0.8); 0 disables Mixup
     * @param cutmixAlpha Beta parameter of CutMix's λ (timm {@code --cutmix}, DeiT 1.0); 0 disables CutMix
     * @param prob probability that a batch is mixed at all (timm {@code --mixup-prob}, 1.0)
     * @param switchProb probability of CutMix rather than Mixup when both are enabled (timm
     *     {@code --mixup-switch-prob}, 0.5)
     */
    public Mixup(long seed, double mixupAlpha, double cutmixAlpha, double prob, double switchProb) {
        if (!(mixupAlpha >= 0 && Double.isFinite(mixupAlpha)) || !(cutmixAlpha >= 0 && Double.isFinite(cutmixAlpha))) {
            throw new IllegalArgumentException("mixup: alphas must be finite and >= 0, got mixup " + mixupAlpha
                    + ", cutmix " + cutmixAlpha);
        }
        if (!(prob >= 0 && prob <= 1) || !(switchProb >= 0 && switchProb <= 1)) {
            throw new IllegalArgumentException("mixup: probabilities must be in [0, 1], got prob " + prob
                    + ", switch prob " + switchProb);
        }
        this.seed = seed;
        this.mixupAlpha = mixupAlpha;
        this.cutmixAlpha = cutmixAlpha;
        this.prob = prob;
        this.switchProb = switchProb;
    }

    /** DeiT's settings: Mixup α 0.8, CutMix α 1.0, every batch mixed, switching with probability ½. */
    public static Mixup deit(long seed) {
        return new Mixup(seed, 0.8, 1.0, 1.0, 0.5);
    }

    /** Whether any batch can be mixed. */
    public boolean isEnabled() {
        return prob > 0 && (mixupAlpha > 0 || cutmixAlpha > 0);
    }

    /** The draw of batch {@code batch} of {@code epoch}, for images of {@code height} × {@code width}. */
    public Params params(int epoch, int batch, int height, int width) {
        if (height <= 0 || width <= 0) {
            throw new IllegalArgumentException("mixup: image size must be positive, got " + height + "x" + width);
        }
        SplittableRandom rng = new SplittableRandom(Seeds.of(seed, STREAM, epoch, batch));
        // timm's order of draws: mixed at all, then which of the two, then λ, then CutMix's centre.
        if (!isEnabled() || !(rng.nextDouble() < prob)) return Params.NONE;
        boolean cutmix = mixupAlpha > 0 && cutmixAlpha > 0 ? rng.nextDouble() < switchProb : mixupAlpha == 0;
        double alpha = cutmix ? cutmixAlpha : mixupAlpha;
        UniformRandomProvider source = rng::nextLong;
        double lambda = ChengBetaSampler.of(source, alpha, alpha).sample();
        if (!cutmix) return new Params(false, lambda, lambda, 0, 0, 0, 0, 0, 0);
        double ratio = Math.sqrt(1 - lambda);
        int cutH = (int) (height * ratio), cutW = (int) (width * ratio);
        int cy = rng.nextInt(height), cx = rng.nextInt(width);
        int top = clip(cy - cutH / 2, height), bottom = clip(cy + cutH / 2, height);
        int left = clip(cx - cutW / 2, width), right = clip(cx + cutW / 2, width);
        double corrected = 1 - (double) (bottom - top) * (right - left) / ((double) height * width);
        return new Params(true, corrected, lambda, cy, cx, top, bottom, left, right);
    }

    private static int clip(int v, int max) {
        return Math.max(0, Math.min(max, v));
    }

    /**
     * Mixes {@code batch} images of [channels, height, width] floats, stored one after another from
     * {@code images[offset]}, in place as {@code p} says. Each pair (i, B−1−i) is read before either is written,
     * so the result is timm's {@code x·λ + x.flip(0)·(1 − λ)} (or its box swap); an odd batch's middle image is
     * its own mirror and keeps its pixels.
     */
    public static void apply(float[] images, int offset, int batch, int channels, int height, int width, Params p) {
        Objects.requireNonNull(images, "images");
        Objects.requireNonNull(p, "params");
        if (batch <= 0 || channels <= 0 || height <= 0 || width <= 0) {
            throw new IllegalArgumentException("mixup: empty batch shape " + batch + "x" + channels + "x" + height
                    + "x" + width);
        }
        long size = (long) channels * height * width;
        if (offset < 0 || offset + size * batch > images.length) {
            throw new IllegalArgumentException("mixup: " + batch + " images of " + size + " floats from offset "
                    + offset + " do not fit in " + images.length);
        }
        if (p.cutmix() && (p.bottom() > height || p.right() > width)) {
            throw new IllegalArgumentException("mixup: CutMix box [" + p.top() + ", " + p.bottom() + ") x ["
                    + p.left() + ", " + p.right() + ") is outside " + height + "x" + width + " images");
        }
        if (p.isIdentity()) return;
        float lam = (float) p.lambda(), rest = (float) (1 - p.lambda());
        for (int i = 0, j = batch - 1; i < j; i++, j--) {
            int a = offset + (int) (i * size), b = offset + (int) (j * size);
            if (p.cutmix()) {
                for (int c = 0; c < channels; c++) {
                    for (int y = p.top(); y < p.bottom(); y++) {
                        int row = (c * height + y) * width;
                        for (int x = p.left(); x < p.right(); x++) {
                            float t = images[a + row + x];
                            images[a + row + x] = images[b + row + x];
                            images[b + row + x] = t;
                        }
                    }
                }
            } else {
                for (int k = 0; k < size; k++) {
                    float u = images[a + k], v = images[b + k];
                    images[a + k] = u * lam + v * rest;
                    images[b + k] = v * lam + u * rest;
                }
            }
        }
    }

    /**
     * Writes the batch's target distributions into {@code out} ([batch, classes], overwritten): λ at each image's
     * label, 1 − λ at its mirror's (the two add up when they are the same class).
     *
     * @param labels the batch's class indices, each in [0, classes)
     */
    public static void targets(int[] labels, int classes, Params p, float[] out) {
        Objects.requireNonNull(labels, "labels");
        Objects.requireNonNull(p, "params");
        Objects.requireNonNull(out, "out");
        int b = labels.length;
        if (classes <= 0 || out.length != (long) b * classes) {
            throw new IllegalArgumentException("mixup: targets must be " + b + " x " + classes + " floats, got "
                    + out.length);
        }
        for (int i = 0; i < b; i++) {
            if (labels[i] < 0 || labels[i] >= classes) {
                throw new IllegalArgumentException("mixup: label " + labels[i] + " at row " + i
                        + " is not a class index in [0, " + classes + ")");
            }
        }
        Arrays.fill(out, 0f);
        for (int i = 0; i < b; i++) {
            out[i * classes + labels[i]] += (float) p.lambda();
            out[i * classes + labels[b - 1 - i]] += (float) (1 - p.lambda());
        }
    }

    @Override
    public String toString() {
        return "Mixup[mixupAlpha=" + mixupAlpha + ", cutmixAlpha=" + cutmixAlpha + ", prob=" + prob + ", switchProb="
                + switchProb + "]";
    }
}
