package org.distill4j.reference;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch;

/** GELU as libtorch computes it ({@code at::gelu}, approximate "none": the erf form), in float64, dx by autograd. */
@SuppressWarnings("try") // the PointerScope is used for its effect
public final class TorchGelu {
    private TorchGelu() {}

    /** y = gelu(x) and dx = dy * gelu'(x). */
    public record Result(double[] y, double[] dx) {}

    /** Forward and backward over n = x.length elements (float inputs widened exactly to float64). */
    public static Result compute(float[] x, float[] dy) {
        TorchTensors.checkLength("dy", dy, x.length);
        try (PointerScope ignored = new PointerScope()) {
            Tensor xt = TorchTensors.toDtype(AbstractTensor.create(x, x.length), true).contiguous();
            xt.set_requires_grad(true);
            Tensor y = torch.gelu(xt, "none");
            y.backward(TorchTensors.toDtype(AbstractTensor.create(dy, dy.length), true), new BoolOptional(), false,
                    new TensorArrayRefOptional());
            return new Result(TorchTensors.copyOut(y.detach(), true), TorchTensors.copyOut(xt.grad(), true));
        }
    }
}
