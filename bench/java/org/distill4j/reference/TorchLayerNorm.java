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
        return compute(x, weight, bias, dy, rows, dim, eps, true);
    }

    /**
     * As {@link #compute(float[], float[], float[], float[], int, int, double)}, in float64 or, with {@code float64}
     * false, in libtorch's own float32: how far an fp32 implementation lands on inputs that fp32 conditions badly.
     */
    public static Result compute(float[] x, float[] weight, float[] bias, float[] dy, int rows, int dim, double eps,
                                 boolean float64) {
        TorchTensors.checkLength("x", x, (long) rows * dim);
        TorchTensors.checkLength("dy", dy, (long) rows * dim);
        TorchTensors.checkLength("weight", weight, dim);
        TorchTensors.checkLength("bias", bias, dim);
        try (PointerScope ignored = new PointerScope()) {
            Tensor xt = leaf(x, float64, rows, dim), wt = leaf(weight, float64, dim), bt = leaf(bias, float64, dim);
            T_TensorTensorTensor_T out = torch.native_layer_norm(xt, new long[] {dim}, new TensorOptional(wt),
                    new TensorOptional(bt), eps);
            Tensor y = out.get0();
            y.backward(TorchTensors.toDtype(AbstractTensor.create(dy, rows, dim), float64), new BoolOptional(), false,
                    new TensorArrayRefOptional());
            return new Result(copy(y, float64), copy(out.get1(), float64), copy(out.get2(), float64),
                    copy(xt.grad(), float64), copy(wt.grad(), float64), copy(bt.grad(), float64));
        }
    }

    private static Tensor leaf(float[] values, boolean float64, long... shape) {
        Tensor t = TorchTensors.toDtype(AbstractTensor.create(values, shape), float64).contiguous();
        t.set_requires_grad(true);
        return t;
    }

    private static double[] copy(Tensor t, boolean float64) {
        return TorchTensors.copyOut(t.detach(), float64);
    }
}
