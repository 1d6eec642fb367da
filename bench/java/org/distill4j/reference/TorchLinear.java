package org.distill4j.reference;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;

/**
 * The reference for the linear op: {@code y = F.linear(x, weight, bias) + residual} run by libtorch (CPU) through
 * {@code org.bytedeco:pytorch}, gradients of x, weight and bias by autograd.
 *
 * <p>Leaves are built once and reused; each run's temporaries live in a {@link PointerScope} and the leaves'
 * {@code .grad} are reset around each run. Not thread-safe.
 */
@SuppressWarnings("try") // the PointerScopes are used for their effect, never referenced
public final class TorchLinear implements AutoCloseable {

    /** Result of {@link #run}: y [M, N], dx [M, K], dWeight [N, K], dBias [N] (null without bias). */
    public record Result(double[] y, double[] dx, double[] dWeight, double[] dBias) {}

    private final int m, k, n;
    private final boolean float64;
    private Tensor x, weight, bias, residual; // bias/residual null when absent

    /**
     * @param x        [M, K]
     * @param weight   [N, K]
     * @param bias     [N] or null
     * @param residual [M, N] or null
     * @param float64  run in float64 (inputs widened exactly); float32 otherwise
     */
    public TorchLinear(float[] x, float[] weight, float[] bias, float[] residual, int m, int k, int n,
                       boolean float64) {
        if (m < 1 || k < 1 || n < 1) throw new IllegalArgumentException("bad shape M=" + m + " K=" + k + " N=" + n);
        TorchTensors.checkLength("x", x, (long) m * k);
        TorchTensors.checkLength("weight", weight, (long) n * k);
        if (bias != null) TorchTensors.checkLength("bias", bias, n);
        if (residual != null) TorchTensors.checkLength("residual", residual, (long) m * n);
        this.m = m;
        this.k = k;
        this.n = n;
        this.float64 = float64;
        try (PointerScope ignored = new PointerScope()) {
            this.x = leaf(x, true, m, k);
            this.weight = leaf(weight, true, n, k);
            this.bias = bias == null ? null : leaf(bias, true, n);
            this.residual = residual == null ? null : leaf(residual, false, m, n);
        }
    }

    /** Sets libtorch's intra-op thread count for the whole process. */
    public static void setThreads(int threads) {
        torch.set_num_threads(threads);
    }

    /** Forward and autograd backward from {@code dy} [M, N], everything copied out. */
    public Result run(float[] dy) {
        checkOpen();
        TorchTensors.checkLength("dy", dy, (long) m * n);
        try (PointerScope ignored = new PointerScope()) {
            resetGrads();
            Tensor y = forward();
            y.backward(TorchTensors.toDtype(AbstractTensor.create(dy, m, n), float64), new BoolOptional(), false,
                    new TensorArrayRefOptional());
            Result r = new Result(copy(y), copy(x.grad()), copy(weight.grad()), bias == null ? null : copy(bias.grad()));
            resetGrads();
            return r;
        }
    }

    /** Forward + backward with results left in libtorch (what a benchmark times); dy = the detached output. */
    public void runNoCopy() {
        checkOpen();
        try (PointerScope ignored = new PointerScope()) {
            resetGrads();
            Tensor y = forward();
            y.backward(y.detach(), new BoolOptional(), false, new TensorArrayRefOptional());
            resetGrads();
        }
    }

    /** Frees the leaves. Idempotent. */
    @Override
    public void close() {
        if (weight == null) return;
        resetGrads();
        for (Tensor t : new Tensor[] {x, weight, bias, residual}) {
            if (t != null) t.deallocate();
        }
        x = weight = bias = residual = null;
    }

    private Tensor forward() {
        Tensor y = bias == null ? torch.linear(x, weight) : torch.linear(x, weight, new TensorOptional(bias));
        return residual == null ? y : y.add(residual);
    }

    private Tensor leaf(float[] values, boolean grad, long... shape) {
        Tensor t = TorchTensors.toDtype(AbstractTensor.create(values, shape), float64).contiguous();
        if (grad) t.set_requires_grad(true);
        t.retainReference();
        return t;
    }

    private void resetGrads() {
        for (Tensor t : new Tensor[] {x, weight, bias}) {
            if (t != null && t.grad().defined()) t.mutable_grad().reset();
        }
    }

    private double[] copy(Tensor t) {
        return TorchTensors.copyOut(t, float64);
    }

    private void checkOpen() {
        if (weight == null) throw new IllegalStateException("closed");
    }
}
