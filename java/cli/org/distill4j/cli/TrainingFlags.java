package org.distill4j.cli;

import java.io.IOException;
import java.nio.file.Path;
import org.distill4j.data.FashionMnist;
import org.distill4j.train.TrainOptions;
import picocli.CommandLine.Option;

/** The options every training command shares (picocli mixin). */
final class TrainingFlags {
    @Option(names = "--device", defaultValue = "best",
            description = "cpu, cuda[:N], cuda-emu (the CUDA kernels emulated on the CPU: tests only, slow) or best "
                    + "(default ${DEFAULT-VALUE})")
    String device;

    @Option(names = "--data", description = "IDX directory (default " + FashionMnist.DEFAULT_DIR + ")")
    Path data;

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
            description = "random crop (pad 2) and horizontal flip (default on; --no-augment)")
    boolean augment;

    @Option(names = "--seed", defaultValue = "0", description = "seed (default ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--train-limit", defaultValue = "0", description = "use the first N training images (0: all)")
    int trainLimit;

    @Option(names = "--test-limit", defaultValue = "0", description = "use the first N test images (0: all)")
    int testLimit;

    @Option(names = "--out", required = true, description = "output directory: new or empty (created), or the run "
            + "to continue with --resume or to replace with --force")
    Path out;

    @Option(names = "--force", description = "replace the run in --out: its model, checkpoint, results.json and "
            + "accuracy.png are deleted when training starts (other files stay)")
    boolean force;

    /** The options as {@link TrainOptions} (distillation set by the caller). */
    TrainOptions options() {
        return new TrainOptions().withEpochs(epochs).withBatch(batch).withLr(lr, Math.min(minLr, lr))
                .withWeightDecay(weightDecay).withWarmupEpochs(warmup).withClipNorm(clip)
                .withLabelSmoothing(labelSmoothing).withAugment(augment).withSeed(seed)
                .withLimits(trainLimit, testLimit);
    }

    /** The data directory. */
    Path dataDir() {
        return data != null ? data : FashionMnist.defaultDir();
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
