package org.distill4j.testing;

import org.distill4j.nn.Parameter;
import org.distill4j.nn.VisionTransformer;

/** A model's parameters as one host array, in {@code parameters()} order: bit-for-bit comparisons of runs. */
public final class ModelParameters {
    private ModelParameters() {}

    public static float[] of(VisionTransformer m) {
        int n = 0;
        for (Parameter p : m.parameters()) n += (int) p.numel();
        float[] out = new float[n];
        int off = 0;
        for (Parameter p : m.parameters()) {
            float[] v = p.value().toArray();
            System.arraycopy(v, 0, out, off, v.length);
            off += v.length;
        }
        return out;
    }
}
