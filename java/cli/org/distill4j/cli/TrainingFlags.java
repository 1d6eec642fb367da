package org.distill4j.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.distill4j.Precision;
import org.distill4j.data.ImageSource;
import org.distill4j.nn.VitConfig;
import org.distill4j.train.TrainOptions;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** The options every training command shares (picocli mixin). */
final class TrainingFlags {
    @Option(names = "--device", defaultValue = "best",
            description = "cpu, cuda[:N], cuda-emu (the CUDA kernels emulated on the CPU: tests only, slow) or best "
                    + "(default ${DEFAULT-VALUE})")
    String device;

    @Option(names = "--precision", defaultValue = "fp32", description = "fp32, tf32 or bf16: what the GEMMs (tf32, "
            + "bf16) and the attention (bf16) multiply; weights, optimizer and losses stay fp32. tf32 and bf16 need a "
            + "CUDA card of compute capability 8.0 or newer; the CPU computes their roundings, slowly "
            + "(default ${DEFAULT-VALUE})")
    String precision;

    @Option(names = "--skip-non-finite", paramLabel = "N", description = "skip up to N steps in a row whose loss or "
            + "gradient norm is NaN or infinite (nothing of them applied; each counted and reported), then stop "
            + "(default: 10 with --precision bf16, else 0: the first stops the run)")
    Integer skipNonFinite;

    @Option(names = "--cuda-graph", description = "replay each training step's device work from a CUDA graph (one "
            + "launch instead of hundreds; the same results): cuda (and cuda-emu) only; off by default until measured "
            + "on a GPU")
    boolean cudaGraph;

    @Mixin
    DataFlags data;

    @Option(names = "--epochs", defaultValue = "10", description = "epochs (default ${DEFAULT-VALUE})")
    int epochs;

    @Option(names = "--batch", defaultValue = "128", description = "batch size (default ${DEFAULT-VALUE})")
    int batch;

    @Option(names = "--lr", defaultValue = "1e-3", description = "peak learning rate (default ${DEFAULT-VALUE})")
    double lr;

    @Option(names = "--min-lr", defaultValue = "1e-5", description = "final learning rate (default ${DEFAULT-VALUE})")
    double minLr;

    @Option(names = "--weight-decay", defaultValue = "0.05", description = "AdamW weight decay (default ${DEFAULT-VALUE})")
    double weightDecay;

    @Option(names = "--warmup-epochs", defaultValue = "1", description = "linear warm-up (default ${DEFAULT-VALUE})")
    double warmup;

    @Option(names = "--clip", defaultValue = "1.0", description = "gradient norm clip, 0 = off (default ${DEFAULT-VALUE})")
    double clip;

    @Option(names = "--label-smoothing", defaultValue = "0", description = "on the true labels (default ${DEFAULT-VALUE})")
    double labelSmoothing;

    @Option(names = "--augment", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "random crop (pad 2, or --scale/--ratio's) and horizontal flip (default on; --no-augment)")
    boolean augment;

    @Option(names = "--scale", paramLabel = "MIN MAX", arity = "1..2", split = ",", description = "random resized "
            + "crop instead of the padded one: area fraction of the box, uniform in [MIN, MAX] (timm's flag; DeiT "
            + "0.08 1)")
    double[] scale;

    @Option(names = "--ratio", paramLabel = "MIN MAX", arity = "1..2", split = ",", description = "random resized "
            + "crop: aspect ratio (width/height) of the box, log-uniform in [MIN, MAX] (default with --scale: 0.75 "
            + "1.3333)")
    double[] ratio;

    @Option(names = "--augment-views", paramLabel = "K", defaultValue = "0", description = "FKD: K fixed crop/flip "
            + "views per image (epoch e shows view e mod K); distill computes the teacher's logits of every view once, "
            + "caches them and trains without running the teacher (default 0: a new view every epoch)")
    int augmentViews;

    @Option(names = "--mixup", paramLabel = "ALPHA", defaultValue = "0", description = "Mixup of training batches: "
            + "lambda ~ Beta(ALPHA, ALPHA), 0 = off (default ${DEFAULT-VALUE}; DeiT 0.8)")
    double mixupAlpha;

    @Option(names = "--cutmix", paramLabel = "ALPHA", defaultValue = "0", description = "CutMix of training batches, "
            + "Beta(ALPHA, ALPHA), 0 = off (default ${DEFAULT-VALUE}; DeiT 1.0)")
    double cutmixAlpha;

    @Option(names = "--mixup-prob", paramLabel = "P", defaultValue = "1.0", description = "probability that a batch "
            + "is mixed when --mixup or --cutmix is on (default ${DEFAULT-VALUE})")
    double mixupProb;

    @Option(names = "--mixup-switch-prob", paramLabel = "P", defaultValue = "0.5", description = "probability of "
            + "CutMix rather than Mixup when both are on (default ${DEFAULT-VALUE})")
    double mixupSwitchProb;

    @Option(names = "--aa", paramLabel = "CONFIG", description = "RandAugment of training images after the crop and "
            + "flip, as timm's config string: rand, then -mM (magnitude 0..10), -nN (ops per image, default 2), "
            + "-mstdS (magnitude std), -inc1 (the increasing ops), -pP (probability of each op, default 0.5) "
            + "(DeiT rand-m9-mstd0.5-inc1; default off)")
    String autoAugment;

    @Option(names = "--reprob", paramLabel = "P", defaultValue = "0", description = "random erasing: probability "
            + "that a training image gets one box of N(0, 1) noise (default ${DEFAULT-VALUE}; DeiT 0.25)")
    double reprob;

    @Option(names = "--seed", defaultValue = "0", description = "seed (default ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--train-limit", defaultValue = "0", description = "use the first N training images (0: all)")
    int trainLimit;

    @Option(names = "--test-limit", defaultValue = "0", description = "use the first N test images (0: all)")
    int testLimit;

    @Option(names = "--labeled", paramLabel = "N", description = "a transfer set: only N training images, stratified "
            + "by class (from --seed), keep their labels; distill trains on every image (the teacher labels all), "
            + "train on those N alone")
    Integer labeled;

    @Option(names = "--labeled-list", paramLabel = "FILE", description = "as --labeled, the images given: training-"
            + "image indices from 0 (after --train-limit), separated by spaces, commas or lines")
    Path labeledList;

    @Option(names = "--out", required = true, description = "output directory: new or empty (created), or the run "
            + "to continue with --resume or to replace with --force")
    Path out;

    @Option(names = "--force", description = "replace the run in --out: its model, checkpoint, results.json and "
            + "accuracy.png are deleted when training starts (other files stay)")
    boolean force;

    /** {@code --precision} parsed. */
    Precision precision() {
        return Precision.parse(precision);
    }

    /** The options as {@link TrainOptions} (distillation set by the caller); reads {@code --labeled-list}. */
    TrainOptions options() throws IOException {
        TrainOptions o = new TrainOptions().withEpochs(epochs).withBatch(batch).withLr(lr, Math.min(minLr, lr))
                .withWeightDecay(weightDecay).withWarmupEpochs(warmup).withClipNorm(clip)
                .withLabelSmoothing(labelSmoothing).withAugment(augment).withSeed(seed)
                .withLimits(trainLimit, testLimit).withMixup(mixupAlpha, cutmixAlpha, mixupProb, mixupSwitchProb)
                .withRandomErasing(reprob)
                .withSkipNonFinite(skipNonFinite != null ? skipNonFinite : precision() == Precision.BF16 ? 10 : 0)
                .withCudaGraph(cudaGraph);
        if (autoAugment != null && !autoAugment.isEmpty()) {
            if (!augment) throw new IllegalArgumentException("--aa augments training images: not with --no-augment");
            o = o.withRandAugment(autoAugment);
        }
        if (augmentViews != 0) {
            if (!augment) throw new IllegalArgumentException("--augment-views fixes views of the augmentation: not "
                    + "with --no-augment");
            o = o.withAugmentViews(augmentViews);
        }
        if (scale != null || ratio != null) {
            if (!augment) {
                throw new IllegalArgumentException("--scale/--ratio crop training images: not with --no-augment");
            }
            double[] sc = pair(scale, "--scale", 0.08, 1.0), ra = pair(ratio, "--ratio", 3.0 / 4, 4.0 / 3);
            o = o.withResizedCrop(sc[0], sc[1], ra[0], ra[1]);
        }
        if (labeled != null && labeledList != null) {
            throw new IllegalArgumentException("--labeled and --labeled-list both choose the labeled images: give one");
        }
        if (labeled != null) o = o.withLabeled(labeled);
        if (labeledList != null) o = o.withLabeledIndices(readIndices(labeledList));
        return o;
    }

    private static double[] pair(double[] given, String flag, double min, double max) {
        if (given == null) return new double[] {min, max};
        if (given.length != 2) throw new IllegalArgumentException(flag + " takes two numbers, MIN and MAX");
        return given;
    }

    private static int[] readIndices(Path file) throws IOException {
        // Latin-1 decodes any bytes: a binary file is refused below by its first token, not by a decoder's error.
        String text = new String(Files.readAllBytes(Inputs.file(file, "--labeled-list")),
                java.nio.charset.StandardCharsets.ISO_8859_1);
        String[] tokens = java.util.Arrays.stream(text.split("[\\s,]+")).filter(t -> !t.isEmpty())
                .toArray(String[]::new);
        int[] out = new int[tokens.length];
        for (int i = 0; i < tokens.length; i++) {
            try {
                out[i] = Integer.parseInt(tokens[i]);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("--labeled-list " + file + ": '"
                        + (tokens[i].length() > 20 ? tokens[i].substring(0, 20) + "…" : tokens[i])
                        + "' is not an image index");
            }
        }
        if (out.length == 0) throw new IllegalArgumentException("--labeled-list " + file + " lists no image");
        return out;
    }

    /**
     * Refuses labeled images that {@code train}, after {@code --train-limit}, cannot hold: called before anything
     * is written.
     */
    static void checkLabeled(TrainOptions options, ImageSource train) {
        int limit = options.trainLimit();
        options.checkLabeled(limit > 0 && limit < train.size() ? limit : train.size());
    }

    /** The training and test data for {@code model}, its image shape checked. */
    DataSets.Loaded load(VitConfig model) throws IOException {
        DataSets.Loaded d = DataSets.load(data.request(), model, true, System.out);
        DataSets.checkShape(model, d);
        return d;
    }

    /**
     * The output directory, checked and not yet created.
     *
     * @param resuming whether the command continues a run ({@code --resume} given)
     */
    OutputDirectory output(boolean resuming) throws IOException {
        return OutputDirectory.check(out, resuming, force, java.util.List.of());
    }
}
