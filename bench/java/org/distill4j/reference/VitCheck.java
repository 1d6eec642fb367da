package org.distill4j.reference;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.distill4j.nn.Parameter;
import org.distill4j.nn.VisionTransformer;

/**
 * One whole-model comparison: fresh random parameters (not the init: biases and norms must carry gradient too),
 * images and upstream gradients; our forward and backward against {@link TorchVit} in float64 on the same values.
 * Used by the model tests and by {@code selftest --op vit}.
 */
public final class VitCheck {
    private VitCheck() {}

    /** Relative errors by output: "logits", "dist_logits", then each parameter's gradient by timm name. */
    public record Result(Map<String, Double> errors) {
        /** The largest error. */
        public double worst() {
            return errors.values().stream().mapToDouble(Double::doubleValue).max().orElse(0);
        }

        /** The name of the largest error. */
        public String worstName() {
            return errors.entrySet().stream().max(Map.Entry.comparingByValue()).map(Map.Entry::getKey).orElse("");
        }
    }

    /**
     * Overwrites {@code model}'s parameters with random values: std 1/√fan_in for the weight-decayed tensors, 0.3 for
     * the rest, the LayerNorm weights around 1. Returns them by timm name.
     */
    public static Map<String, float[]> randomize(VisionTransformer model, Random rng) {
        Map<String, float[]> values = new LinkedHashMap<>();
        for (Parameter p : model.parameters()) {
            int n = Math.toIntExact(p.numel());
            long[] shape = p.shape();
            boolean matrix = p.weightDecay();
            double std = matrix ? 1.0 / Math.sqrt(shape[shape.length - 1] * (shape.length == 4 ? shape[1] * shape[2] : 1))
                    : 0.3;
            float[] v = new float[n];
            for (int i = 0; i < n; i++) v[i] = (float) (rng.nextGaussian() * std);
            if (p.name().endsWith("norm1.weight") || p.name().endsWith("norm2.weight")
                    || p.name().equals("norm.weight")) {
                for (int i = 0; i < n; i++) v[i] += 1f;
            }
            p.value().copyFrom(v);
            values.put(p.name(), v);
        }
        return values;
    }

    /** Overwrites {@code model}'s parameters with random values, runs both, and returns the errors. */
    public static Result run(VisionTransformer model, Random rng) {
        var config = model.config();
        int batch = model.batch();
        Map<String, float[]> values = randomize(model, rng);
        Map<String, long[]> shapes = new LinkedHashMap<>();
        for (Parameter p : model.parameters()) shapes.put(p.name(), p.shape());
        int s = config.imageSize(), c = config.classes();
        float[] images = gaussian(rng, batch * config.channels() * s * s);
        float[] dLogits = gaussian(rng, batch * c);
        float[] dDist = config.distilled() ? gaussian(rng, batch * c) : null;

        model.zeroGrad();
        model.forward(images);
        model.logitsGrad().copyFrom(dLogits);
        if (dDist != null) model.distLogitsGrad().copyFrom(dDist);
        model.backward();

        TorchVit.Result ref;
        try (TorchVit torch = new TorchVit(config, batch, values, shapes, true)) {
            ref = torch.run(images, dLogits, dDist);
        }
        Map<String, Double> errors = new LinkedHashMap<>();
        errors.put("logits", Errors.relative(model.logits().toArray(), ref.logits()));
        if (dDist != null) errors.put("dist_logits", Errors.relative(model.distLogits().toArray(), ref.distLogits()));
        for (Parameter p : model.parameters()) {
            errors.put(p.name(), Errors.relative(p.grad().toArray(), ref.grads().get(p.name())));
        }
        return new Result(errors);
    }

    private static float[] gaussian(Random rng, int n) {
        float[] out = new float[n];
        for (int i = 0; i < n; i++) out[i] = (float) rng.nextGaussian();
        return out;
    }
}
