package org.distill4j.reference;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.T_TensorTensorTensor_T;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;

/**
 * LayerNorm as libtorch computes it ({@code at::native_layer_norm} over the last dimension, the kernel behind
 * {@code F.layer_norm}), in float64, with x, weight and bias gradients by autograd.
 */
@SuppressWarnings("try") // the PointerScope is used for its effect
public final class TorchLayerNorm {
    private TorchLayerNorm() {}

    /** y [M*C], mean [M], rstd [M], and the gradients dx [M*C], dWeight [C], dBias [C] of sum(y * dy). */
    public record Result(double[] y, double[] mean, double[] rstd, double[] dx, double[] dWeight, double[] dBias) {}

    /** Forward and backward of rows M of C features (float inputs widened exactly to float64). */
    public static Result compute(float[] x, float[] weight, float[] bias, float[] dy, int rows, int dim, double eps) {
        TorchTensors.checkLength("x", x, (long) rows * dim);
        TorchTensors.checkLength("dy", dy, (long) rows * dim);
        TorchTensors.checkLength("weight", weight, dim);
        TorchTensors.checkLength("bias", bias, dim);
        try (PointerScope ignored = new PointerScope()) {
            Tensor xt = leaf(x, rows, dim), wt = leaf(weight, dim), bt = leaf(bias, dim);
            T_TensorTensorTensor_T out = torch.native_layer_norm(xt, new long[] {dim}, new TensorOptional(wt),
                    new TensorOptional(bt), eps);
            Tensor y = out.get0();
            y.backward(TorchTensors.toDtype(AbstractTensor.create(dy, rows, dim), true), new BoolOptional(), false,
                    new TensorArrayRefOptional());
            return new Result(copy(y), copy(out.get1()), copy(out.get2()), copy(xt.grad()), copy(wt.grad()),
                    copy(bt.grad()));
        }
    }

    private static Tensor leaf(float[] values, long... shape) {
        Tensor t = TorchTensors.toDtype(AbstractTensor.create(values, shape), true).contiguous();
        t.set_requires_grad(true);
        return t;
    }

    private static double[] copy(Tensor t) {
        return TorchTensors.copyOut(t.detach(), true);
    }
}
