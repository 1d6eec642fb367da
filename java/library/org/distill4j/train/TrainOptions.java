package org.distill4j.train;

import java.util.Arrays;
import java.util.HexFormat;
import java.util.Objects;
import org.distill4j.data.Augment;
import org.distill4j.data.ImageSource;
import org.distill4j.data.ImageSources;
import org.distill4j.data.LabeledSubset;
import org.distill4j.data.Mixup;
import org.distill4j.data.RandAugment;
import org.distill4j.data.RandomErasing;
import org.distill4j.data.RandomResizedCrop;
import org.distill4j.ops.Reduction;

/**
 * Hyper-parameters of one training run, with DeiT-like defaults scaled for small data: AdamW (lr 1e-3, weight
 * decay 0.05, betas 0.9/0.999), linear warm-up then cosine, gradient norm clipped at 1.0, batch 128.
 * Immutable; {@code with*} methods return a copy.
 */
public final class TrainOptions {
    private int epochs = 10, batch = 128;
    private double lr = 1e-3, minLr = 1e-5, weightDecay = 0.05, warmupEpochs = 1, clipNorm = 1.0;
    private double labelSmoothing = 0.0, alpha = 0.5, temperature = 4.0;
    private Distillation distillation = Distillation.NONE;
    private Reduction softReduction = Reduction.BATCHMEAN;
    private boolean augment = true;
    private long seed = 0;
    private int trainLimit = 0, testLimit = 0;
    private int labeled = 0;         // 0: every training image keeps its label
    private int[] labeledList;       // ascending; null unless given explicitly
    private double mixupAlpha = 0, cutmixAlpha = 0, mixupProb = 1, mixupSwitchProb = 0.5;  // off: both alphas 0
    private double erasingProb = 0;
    private double[] cropRange;      // {min scale, max scale, min ratio, max ratio}; null: the padded crop
    private int views = 0;           // > 0: FKD's fixed views per image (epoch e shows view e mod views)
    private String randAugment;      // timm's config string; null: none
    private int skipNonFinite = 0;   // non-finite steps skipped in a row before the run fails; 0: none
    private boolean cudaGraph = false;  // each step's device work replayed from a CUDA graph

    /** The defaults. */
    public TrainOptions() {}

    private TrainOptions copy() {
        TrainOptions o = new TrainOptions();
        o.epochs = epochs;
        o.batch = batch;
        o.lr = lr;
        o.minLr = minLr;
        o.weightDecay = weightDecay;
        o.warmupEpochs = warmupEpochs;
        o.clipNorm = clipNorm;
        o.labelSmoothing = labelSmoothing;
        o.alpha = alpha;
        o.temperature = temperature;
        o.distillation = distillation;
        o.softReduction = softReduction;
        o.augment = augment;
        o.seed = seed;
        o.trainLimit = trainLimit;
        o.testLimit = testLimit;
        o.labeled = labeled;
        o.labeledList = labeledList;
        o.mixupAlpha = mixupAlpha;
        o.cutmixAlpha = cutmixAlpha;
        o.mixupProb = mixupProb;
        o.mixupSwitchProb = mixupSwitchProb;
        o.erasingProb = erasingProb;
        o.cropRange = cropRange;
        o.views = views;
        o.randAugment = randAugment;
        o.skipNonFinite = skipNonFinite;
        o.cudaGraph = cudaGraph;
        return o;
    }

    private static void positive(String what, double v) {
        if (!(v > 0) || !Double.isFinite(v)) throw new IllegalArgumentException(what + " must be > 0, got " + v);
    }

    /** Passes over the training set, &ge; 1. */
    public TrainOptions withEpochs(int n) {
        if (n < 1) throw new IllegalArgumentException("epochs must be >= 1, got " + n);
        TrainOptions o = copy();
        o.epochs = n;
        return o;
    }

    /** Images per step, &ge; 1. */
    public TrainOptions withBatch(int n) {
        if (n < 1) throw new IllegalArgumentException("batch size must be >= 1, got " + n);
        TrainOptions o = copy();
        o.batch = n;
        return o;
    }

    /** Peak learning rate (after warm-up) and the floor the cosine decays to. */
    public TrainOptions withLr(double peak, double floor) {
        positive("learning rate", peak);
        if (!(floor >= 0) || floor > peak) {
            throw new IllegalArgumentException("minimum learning rate must be in [0, " + peak + "], got " + floor);
        }
        TrainOptions o = copy();
        o.lr = peak;
        o.minLr = floor;
        return o;
    }

    /** AdamW's decoupled weight decay on weight matrices (not on biases, norms, tokens, position embedding). */
    public TrainOptions withWeightDecay(double wd) {
        if (!(wd >= 0) || !Double.isFinite(wd)) throw new IllegalArgumentException("weight decay must be >= 0, got " + wd);
        TrainOptions o = copy();
        o.weightDecay = wd;
        return o;
    }

    /** Warm-up length in epochs (fractions allowed), &ge; 0. */
    public TrainOptions withWarmupEpochs(double e) {
        if (!(e >= 0) || !Double.isFinite(e)) throw new IllegalArgumentException("warm-up epochs must be >= 0, got " + e);
        TrainOptions o = copy();
        o.warmupEpochs = e;
        return o;
    }

    /** Global gradient norm clip (torch's clip_grad_norm_); 0 disables it. */
    public TrainOptions withClipNorm(double c) {
        if (!(c >= 0) || !Double.isFinite(c)) throw new IllegalArgumentException("clip norm must be >= 0, got " + c);
        TrainOptions o = copy();
        o.clipNorm = c;
        return o;
    }

    /**
     * How many steps in a row may have a loss or gradient norm that is NaN or infinite and be skipped (nothing
     * applied: parameters, moments and the step count stay; each is counted, {@link Trainer#skippedSteps}) before the
     * next such step fails with {@link NonFiniteException}. 0, the default, fails at the first: in fp32 a non-finite
     * step means diverged training or bad data. Mixed precision (bf16) can overflow in a single step and recover,
     * as PyTorch's GradScaler skips such steps; a run of them still means divergence, hence the bound.
     */
    public TrainOptions withSkipNonFinite(int maxInARow) {
        if (maxInARow < 0) {
            throw new IllegalArgumentException("non-finite steps to skip must be >= 0, got " + maxInARow);
        }
        TrainOptions o = copy();
        o.skipNonFinite = maxInARow;
        return o;
    }

    /**
     * Whether each step's device work (the teacher's and the student's forward, the losses, the backward, the
     * gradient norm) is replayed from a CUDA graph ({@link org.distill4j.backend.CudaGraph}) instead of a few
     * hundred separate launches: the first step of each kind runs as usual, the second is captured, every later one
     * is one launch. The same arithmetic, bit for bit. Needs a backend that captures graphs (cuda, cuda-emu); off by
     * default until its speed is measured on a GPU.
     */
    public TrainOptions withCudaGraph(boolean on) {
        TrainOptions o = copy();
        o.cudaGraph = on;
        return o;
    }

    /** Label smoothing of the cross-entropy on true labels, in [0, 1). */
    public TrainOptions withLabelSmoothing(double eps) {
        if (!(eps >= 0 && eps < 1)) throw new IllegalArgumentException("label smoothing must be in [0, 1), got " + eps);
        TrainOptions o = copy();
        o.labelSmoothing = eps;
        return o;
    }

    /** Distillation mode, its weight α in [0, 1] and the soft mode's temperature T &gt; 0. */
    public TrainOptions withDistillation(Distillation mode, double alpha, double temperature) {
        Objects.requireNonNull(mode, "mode");
        if (!(alpha >= 0 && alpha <= 1)) throw new IllegalArgumentException("alpha must be in [0, 1], got " + alpha);
        positive("temperature", temperature);
        TrainOptions o = copy();
        o.distillation = mode;
        o.alpha = alpha;
        o.temperature = temperature;
        return o;
    }

    /**
     * How the soft distillation loss is reduced over the batch: {@link Reduction#BATCHMEAN} (the default: the KL
     * divergence per image, PyTorch's recommended form) or {@link Reduction#MEAN} (divided by batch·classes as DeiT's
     * code does, which weighs the soft term 1/classes as much against the cross-entropy).
     */
    public TrainOptions withSoftReduction(Reduction r) {
        Objects.requireNonNull(r, "reduction");
        if (r != Reduction.BATCHMEAN && r != Reduction.MEAN) {
            throw new IllegalArgumentException("the soft distillation loss is reduced by batchmean or mean, not "
                    + r.torchName());
        }
        TrainOptions o = copy();
        o.softReduction = r;
        return o;
    }

    /**
     * Random crop and horizontal flip of training images (the default); the crop is a shift with padding 2 unless
     * {@link #withResizedCrop} makes it DeiT's.
     */
    public TrainOptions withAugment(boolean a) {
        TrainOptions o = copy();
        o.augment = a;
        return o;
    }

    /**
     * DeiT's {@link RandomResizedCrop} instead of the padded crop (timm's {@code --scale}, {@code --ratio}; DeiT
     * 0.08–1 and 3/4–4/3): a box of random area fraction and aspect ratio, resized to the model's input; on image
     * folders it is cut from the image as decoded. Applies while {@link #withAugment} is on.
     */
    public TrainOptions withResizedCrop(double minScale, double maxScale, double minRatio, double maxRatio) {
        new RandomResizedCrop(0, minScale, maxScale, minRatio, maxRatio);  // its checks
        TrainOptions o = copy();
        o.cropRange = new double[] {minScale, maxScale, minRatio, maxRatio};
        return o;
    }

    /**
     * FKD's fixed views (Shen and Xing 2022): the crop and flip of epoch e are view e mod {@code views} of each image,
     * so a teacher's logits of every view can be computed once and replayed ({@link SoftLabels#computeViews}); 0 (the
     * default) draws a new view every epoch. Applies while {@link #withAugment} is on.
     */
    public TrainOptions withAugmentViews(int views) {
        if (views < 0) throw new IllegalArgumentException("augment views must be >= 0, got " + views);
        TrainOptions o = copy();
        o.views = views;
        return o;
    }

    /**
     * DeiT's {@link RandAugment} after the crop and flip, from timm's config string (timm's {@code --aa}; DeiT
     * {@code rand-m9-mstd0.5-inc1}); null or empty (the default) turns it off. Applies while {@link #withAugment} is
     * on; its draws are part of FKD's views ({@link #withAugmentViews}).
     *
     * @throws IllegalArgumentException when {@code config} is not a RandAugment config string
     */
    public TrainOptions withRandAugment(String config) {
        if (config != null && !config.isEmpty()) new RandAugment(0, config);  // its checks
        TrainOptions o = copy();
        o.randAugment = config == null || config.isEmpty() ? null : config;
        return o;
    }

    /** The RandAugment config string, or null when off ({@link #withRandAugment}). */
    public String randAugment() {
        return randAugment;
    }

    /** FKD's views per image, 0 when off ({@link #withAugmentViews}). */
    public int augmentViews() {
        return views;
    }

    /** The run's crop, flip and RandAugment, seeded from {@link #seed()}: none without {@link #withAugment}. */
    public Augment augmentation() {
        if (!augment) return Augment.none();
        Augment a = cropRange == null ? new Augment(seed, 2, true) : Augment.resizedCrop(seed,
                new RandomResizedCrop(seed, cropRange[0], cropRange[1], cropRange[2], cropRange[3]), true);
        return a.withViews(views).withRandAugment(randAugment == null ? null : new RandAugment(seed, randAugment));
    }

    /**
     * Mixup and CutMix of training batches ({@link Mixup}, timm's {@code --mixup}, {@code --cutmix},
     * {@code --mixup-prob}, {@code --mixup-switch-prob}; DeiT trains with 0.8, 1.0, 1.0, 0.5): the class head learns
     * the mixed targets and the teacher sees the mixed images. Both alphas 0 (the default) turn it off. Not with a
     * transfer set or stored teacher logits (refused when the run starts).
     */
    public TrainOptions withMixup(double mixupAlpha, double cutmixAlpha, double prob, double switchProb) {
        new Mixup(0, mixupAlpha, cutmixAlpha, prob, switchProb);  // its checks
        TrainOptions o = copy();
        o.mixupAlpha = mixupAlpha;
        o.cutmixAlpha = cutmixAlpha;
        o.mixupProb = prob;
        o.mixupSwitchProb = switchProb;
        return o;
    }

    /**
     * Random erasing of training images ({@link RandomErasing}, timm's {@code --reprob}, pixel mode, one box; DeiT
     * 0.25), after the crop and flip and before Mixup/CutMix; 0 (the default) turns it off. Not with stored teacher
     * logits (refused when the run starts).
     */
    public TrainOptions withRandomErasing(double prob) {
        new RandomErasing(0, prob);  // its checks
        TrainOptions o = copy();
        o.erasingProb = prob;
        return o;
    }

    /** The run's random erasing, seeded from {@link #seed()}, or null when off. */
    public RandomErasing randomErasing() {
        return erasingProb > 0 ? new RandomErasing(seed, erasingProb) : null;
    }

    /** The run's Mixup/CutMix, seeded from {@link #seed()}, or null when off. */
    public Mixup mixup() {
        Mixup m = new Mixup(seed, mixupAlpha, cutmixAlpha, mixupProb, mixupSwitchProb);
        return m.isEnabled() ? m : null;
    }

    /** Seed of the initialisation, the shuffling, the augmentation and the labeled subset ({@link #withLabeled}). */
    public TrainOptions withSeed(long s) {
        TrainOptions o = copy();
        o.seed = s;
        return o;
    }

    /** Use only the first n training and test images (0: all): quick runs. */
    public TrainOptions withLimits(int train, int test) {
        if (train < 0 || test < 0) throw new IllegalArgumentException("limits must be >= 0");
        TrainOptions o = copy();
        o.trainLimit = train;
        o.testLimit = test;
        return o;
    }

    /**
     * A transfer set (Hinton et al. 2015, section 2): only {@code count} training images keep their true labels,
     * chosen stratified by class from the run's {@link #seed()} ({@link LabeledSubset#stratified}); the teacher labels
     * every image. With a distillation mode each batch mixes labeled and unlabeled images and an unlabeled image's
     * cross-entropy term is zero ({@link Trainer}); without one the run trains on the labeled images alone (an epoch
     * is {@code count} images). A count above the training set's size is refused when the run starts.
     */
    public TrainOptions withLabeled(int count) {
        if (count < 1) throw new IllegalArgumentException("the labeled images must number >= 1, got " + count);
        TrainOptions o = copy();
        o.labeled = count;
        o.labeledList = null;
        return o;
    }

    /**
     * As {@link #withLabeled(int)}, with the labeled images given: indices into the training set (after any limit),
     * each at most once. Indices past the training set are refused when the run starts.
     */
    public TrainOptions withLabeledIndices(int[] indices) {
        Objects.requireNonNull(indices, "indices");
        if (indices.length == 0) throw new IllegalArgumentException("the list of labeled images is empty");
        int[] sorted = indices.clone();
        Arrays.sort(sorted);
        if (sorted[0] < 0) throw new IllegalArgumentException("labeled image index " + sorted[0] + " is negative");
        for (int i = 1; i < sorted.length; i++) {
            if (sorted[i] == sorted[i - 1]) {
                throw new IllegalArgumentException("labeled image index " + sorted[i] + " is listed twice");
            }
        }
        TrainOptions o = copy();
        o.labeled = sorted.length;
        o.labeledList = sorted;
        return o;
    }

    /** Training images that keep their true labels (0: all of them, no transfer set). */
    public int labeled() {
        return labeled;
    }

    /** The labeled images given by {@link #withLabeledIndices}, ascending (a copy), or null. */
    public int[] labeledIndices() {
        return labeledList == null ? null : labeledList.clone();
    }

    /**
     * The indices, ascending, of the images of {@code train} (the training set after any limit) that keep their
     * labels, or null when all do.
     *
     * @throws IllegalArgumentException when the count or an index exceeds the training set
     */
    public int[] labeledSubset(ImageSource train) {
        checkLabeled(train.size());
        if (labeled == 0) return null;
        if (labeledList != null) return labeledList.clone();
        return LabeledSubset.stratified(ImageSources.labels(train), train.classes(), labeled, seed);
    }

    /**
     * Throws {@link IllegalArgumentException} when the labeled images do not fit a training set of {@code images}
     * (after any limit): what a command checks before it writes anything.
     */
    public void checkLabeled(int images) {
        if (labeledList != null && labeledList[labeledList.length - 1] >= images) {
            throw new IllegalArgumentException("labeled image index " + labeledList[labeledList.length - 1]
                    + " is outside the training set of " + images + " images");
        }
        if (labeled > images) {
            throw new IllegalArgumentException("cannot keep the labels of " + labeled + " images: the training set has "
                    + images);
        }
    }

    /**
     * Which images keep their labels, as runs and checkpoints record it: "all", "100 stratified by class, seed 7",
     * or "list of 100, sha256 0123456789abcdef" (the first 16 hex digits of the SHA-256 of the ascending indices).
     */
    public String labeledDescription() {
        if (labeled == 0) return "all";
        if (labeledList == null) return labeled + " stratified by class, seed " + seed;
        try {
            java.security.MessageDigest md = java.security.MessageDigest.getInstance("SHA-256");
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(4 * labeledList.length);
            for (int i : labeledList) b.putInt(i);
            return "list of " + labeled + ", sha256 " + HexFormat.of().formatHex(md.digest(b.array())).substring(0, 16);
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException("the JDK has no SHA-256", e);
        }
    }

    /** Passes over the training set. */
    public int epochs() {
        return epochs;
    }

    /** Images per step. */
    public int batch() {
        return batch;
    }

    /** Peak learning rate. */
    public double lr() {
        return lr;
    }

    /** Learning rate at the end of the cosine. */
    public double minLr() {
        return minLr;
    }

    /** AdamW weight decay of weight matrices. */
    public double weightDecay() {
        return weightDecay;
    }

    /** Warm-up length in epochs. */
    public double warmupEpochs() {
        return warmupEpochs;
    }

    /** Gradient norm clip (0: off). */
    public double clipNorm() {
        return clipNorm;
    }

    /** Non-finite steps that may be skipped in a row ({@link #withSkipNonFinite}); 0: the first fails. */
    public int skipNonFinite() {
        return skipNonFinite;
    }

    /** Whether steps are replayed from a CUDA graph ({@link #withCudaGraph}). */
    public boolean cudaGraph() {
        return cudaGraph;
    }

    /** Label smoothing of the true-label cross-entropy. */
    public double labelSmoothing() {
        return labelSmoothing;
    }

    /** The distillation mode. */
    public Distillation distillation() {
        return distillation;
    }

    /** Weight α of the distillation term. */
    public double alpha() {
        return alpha;
    }

    /** Soft distillation temperature T. */
    public double temperature() {
        return temperature;
    }

    /** How the soft distillation loss is reduced over the batch. */
    public Reduction softReduction() {
        return softReduction;
    }

    /** Whether training images are cropped and flipped. */
    public boolean augment() {
        return augment;
    }

    /** Seed of init, shuffling and augmentation. */
    public long seed() {
        return seed;
    }

    /** Training images used (0: all). */
    public int trainLimit() {
        return trainLimit;
    }

    /** Test images used (0: all). */
    public int testLimit() {
        return testLimit;
    }

    @Override
    public String toString() {
        return "epochs " + epochs + ", batch " + batch + ", lr " + lr + " -> " + minLr + ", wd " + weightDecay
                + ", warm-up " + warmupEpochs + " epochs, clip " + clipNorm + ", label smoothing " + labelSmoothing
                + ", distillation " + distillation + (distillation == Distillation.NONE ? ""
                : " (alpha " + alpha + (distillation == Distillation.SOFT
                        ? ", T " + temperature + ", KL " + softReduction.torchName() : "") + ")")
                + ", augment " + (augment && cropRange != null ? augmentation().resizedCrop() : augment)
                + (augment && randAugment != null ? ", RandAugment " + randAugment : "")
                + ", seed " + seed
                + (labeled == 0 ? "" : ", labeled " + labeledDescription())
                + (mixup() == null ? "" : ", mixup " + mixupAlpha + ", cutmix " + cutmixAlpha + " (prob " + mixupProb
                        + ", switch " + mixupSwitchProb + ")")
                + (erasingProb == 0 ? "" : ", random erasing " + erasingProb)
                + (views == 0 ? "" : ", " + views + " augment views")
                + (skipNonFinite == 0 ? "" : ", up to " + skipNonFinite + " non-finite steps skipped in a row")
                + (cudaGraph ? ", CUDA graph" : "");
    }
}
