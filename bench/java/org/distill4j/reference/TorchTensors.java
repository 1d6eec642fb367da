package org.distill4j.reference;

import java.util.Objects;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** What the libtorch references share: dtype choice, copies out of a tensor, input length checks. */
final class TorchTensors {
    private TorchTensors() {}

    /** {@code t} in float64 when {@code float64}, else unchanged (float32). */
    static Tensor toDtype(Tensor t, boolean float64) {
        return float64 ? t.to(ScalarType.Double) : t;
    }

    /** The elements of {@code t} (float32 or float64, as {@code float64} says) as doubles, in row-major order. */
    static double[] copyOut(Tensor t, boolean float64) {
        Tensor c = t.contiguous();
        int n = Math.toIntExact(c.numel());
        double[] out = new double[n];
        if (float64) {
            c.data_ptr_double().get(out);
        } else {
            float[] f = new float[n];
            c.data_ptr_float().get(f);
            for (int i = 0; i < n; i++) out[i] = f[i];
        }
        return out;
    }

    /** Throws unless {@code values} has {@code n} elements. */
    static void checkLength(String name, float[] values, long n) {
        Objects.requireNonNull(values, name);
        if (values.length != n) {
            throw new IllegalArgumentException(name + " must have " + n + " elements, got " + values.length);
        }
    }
}
