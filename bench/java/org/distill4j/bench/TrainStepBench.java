package org.distill4j.bench;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.nn.Parameter;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.reference.TorchVit;
import org.distill4j.train.Distillation;
import org.distill4j.train.TrainOptions;
import org.distill4j.train.Trainer;

/**
 * {@code bench train-step}: one distillation training step of a whole DeiT (batch to the model, forward,
 * (1 − α)·CE + α·T²·KL on the distillation head against given teacher logits, backward, AdamW, losses back to the
 * host) against the same step of timm's model written functionally in libtorch with torch's AdamW, on the CPU in
 * the same run. Both start from the same parameters; the error column compares the first step's loss. No gradient
 * clipping on either side (the same work).
 */
public final class TrainStepBench {
    private TrainStepBench() {}

    /** Configs and batch sizes: the DeiT-Ti target at B=8 and the Fashion-MNIST student at B=128. */
    private static final Object[][] SHAPES = {{"deit-tiny-distilled", 8}, {"mnist-student", 128}};

    /** Times every shape and returns one row per shape. Runs are capped at 5: a DeiT-Ti step takes seconds. */
    public static List<BenchRow> run(Backend backend, int warmup, int runs, PrintStream log) {
        if (backend.device().kind() != Device.Kind.CPU) {
            throw new IllegalArgumentException("bench train-step times the cpu backend against libtorch; the GPU "
                    + "comparison belongs to bench/gpu/check.sh");
        }
        org.distill4j.reference.TorchPatchEmbed.setThreads(Timing.referenceThreads(backend));
        List<BenchRow> rows = new ArrayList<>();
        for (Object[] s : SHAPES) {
            rows.add(runShape(backend, VitConfig.preset((String) s[0]), (Integer) s[1], Math.min(warmup, 2),
                    Math.min(runs, 5), log));
        }
        return rows;
    }

    private static BenchRow runShape(Backend backend, VitConfig config, int b, int warmup, int runs, PrintStream log) {
        Random rng = new Random(config.hashCode() * 31L + b);
        int s = config.imageSize(), c = config.classes();
        float[] images = normal(rng, b * config.channels() * s * s);
        float[] teacher = normal(rng, b * c);
        int[] labels = new int[b];
        long[] labelsLong = new long[b];
        for (int i = 0; i < b; i++) labelsLong[i] = labels[i] = rng.nextInt(c);
        TrainOptions options = new TrainOptions().withBatch(b).withClipNorm(0).withWarmupEpochs(0)
                .withLr(5e-4, 5e-4).withDistillation(Distillation.SOFT, 0.5, 3.0);
        try (VisionTransformer model = new VisionTransformer(backend, config, b, 1)) {
            Map<String, float[]> values = new LinkedHashMap<>();
            Map<String, long[]> shapes = new LinkedHashMap<>();
            for (Parameter p : model.parameters()) {
                values.put(p.name(), p.value().toArray());
                shapes.put(p.name(), p.shape());
            }
            try (Trainer trainer = new Trainer(model, null, options, 1_000_000);
                 TorchVit torch = new TorchVit(config, b, values, shapes, false)) {
                double oursLoss = trainer.step(images, labels, teacher).loss();
                double refLoss = torch.trainStep(images, labelsLong, teacher, 0.5, 3.0);
                double err = Math.abs(oursLoss - refLoss) / Math.abs(refLoss);
                Timing.Pair pair = Timing.alternate(() -> trainer.step(images, labels, teacher),
                        () -> torch.trainStep(images, labelsLong, teacher, 0.5, 3.0), warmup, runs);
                String shape = config.name() + ",B=" + b;
                BenchRow row = new BenchRow("train-step", backend.device().kind().label(), shape, pair.oursMs(),
                        "libtorch_functional_vit_adamw", pair.referenceMs(), err);
                log.println(row.toLine());
                return row;
            }
        }
    }

    private static float[] normal(Random rng, int n) {
        float[] out = new float[n];
        for (int i = 0; i < n; i++) out[i] = (float) rng.nextGaussian();
        return out;
    }
}
