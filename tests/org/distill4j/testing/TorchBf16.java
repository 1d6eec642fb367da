package org.distill4j.testing;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * libtorch's own bf16 conversions (CPU, through {@code org.bytedeco:pytorch}), the reference of the cast tests and
 * of the inputs of the bf16 attention tests: {@code tensor.to(torch.bfloat16)} and back to {@code float32}, with the
 * bf16 values handed over as their 16 bits (a {@code torch.int16} view of the same memory).
 */
@SuppressWarnings("try") // the PointerScopes are used for their effect, never referenced
public final class TorchBf16 {
    private TorchBf16() {}

    /** libtorch's {@code x.to(torch.bfloat16)}, as bit patterns. */
    public static short[] round(float[] x) {
        try (PointerScope ignored = new PointerScope()) {
            Tensor t = AbstractTensor.create(x, x.length).to(ScalarType.BFloat16).contiguous().view(ScalarType.Short);
            short[] out = new short[x.length];
            t.data_ptr_short().get(out);
            return out;
        }
    }

    /** libtorch's {@code bits.view(torch.bfloat16).to(torch.float32)}. */
    public static float[] widen(short[] bits) {
        try (PointerScope ignored = new PointerScope()) {
            Tensor t = AbstractTensor.create(bits, bits.length).view(ScalarType.BFloat16).to(ScalarType.Float).contiguous();
            float[] out = new float[bits.length];
            t.data_ptr_float().get(out);
            return out;
        }
    }

    /** x rounded to bf16 by libtorch and widened back: the values a bf16 tensor of x holds. */
    public static float[] roundToFloats(float[] x) {
        return widen(round(x));
    }
}
