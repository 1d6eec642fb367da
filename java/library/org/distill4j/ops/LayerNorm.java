package org.distill4j.ops;

import java.util.Arrays;
import java.util.Objects;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * LayerNorm over the last dimension with an affine weight and bias, as timm's ViT uses it
 * ({@code nn.LayerNorm(dim, eps=1e-6)}): {@code y = (x − mean) · rstd · weight + bias}, rstd = 1/√(var + eps), the
 * biased variance over the row. CPU and CUDA kernels behind the same C entries, {@code d4j_layernorm_*}.
 *
 * <p>Shapes: x, y, dy, dx have {@code rows · dim} elements with {@code dim} as the last dimension (e.g. [B, N, D]
 * or [B·N, D]); weight, bias, dWeight, dBias [dim]; mean and rstd have {@code rows} elements (e.g. [B, N] or
 * [rows]), written by the forward and kept for the backward.
 *
 * <p>Gradient conventions (llm.c's): {@code dx} ACCUMULATES ({@code +=}, it is the residual stream's gradient),
 * and so do dWeight and dBias; zero them first for a plain gradient. dWeight and dBias are reduced over the rows in
 * a fixed order: the same bits on every run.
 *
 * <p>An instance is made for one (rows, dim) and owns the backward's workspace: forward and backward allocate
 * nothing. Close it to free the workspace. Like its backend, it is used from one thread at a time.
 */
public final class LayerNorm implements AutoCloseable {
    /** timm's eps for ViT/DeiT. */
    public static final float DEFAULT_EPS = 1e-6f;

    private final Backend backend;
    private final long rows, dim;
    private final float eps;
    private Tensor workspace;

    private LayerNorm(Backend backend, long rows, long dim, float eps) {
        this.backend = backend;
        this.rows = rows;
        this.dim = dim;
        this.eps = eps;
        long bytes = Distill4jNative.d4j_layernorm_workspace(backend.kernels(), rows, dim);
        if (bytes < 0) backend.check(1, "layernorm workspace for " + describe());
        // At least one float: a zero-size allocation is not portable across backends.
        this.workspace = Tensor.empty(backend, Math.max(1, (bytes + Float.BYTES - 1) / Float.BYTES));
    }

    /** LayerNorm of {@code rows} rows of {@code dim} features on {@code backend}, eps 1e-6. */
    public static LayerNorm create(Backend backend, long rows, long dim) {
        return create(backend, rows, dim, DEFAULT_EPS);
    }

    /**
     * LayerNorm of {@code rows} rows of {@code dim} features on {@code backend}.
     *
     * @param eps added to the variance, finite and &ge; 0 (PyTorch's default is 1e-5, timm's ViT 1e-6)
     * @throws IllegalArgumentException when a size is &lt; 1 or eps is negative or not finite
     */
    public static LayerNorm create(Backend backend, long rows, long dim, float eps) {
        Objects.requireNonNull(backend, "backend");
        if (rows < 1 || dim < 1) {
            throw new IllegalArgumentException("layernorm: rows and dim must be >= 1, got rows=" + rows + ", dim=" + dim);
        }
        if (dim > Integer.MAX_VALUE || rows > (1L << 58) / dim) {
            throw new IllegalArgumentException("layernorm: shape too large, rows=" + rows + ", dim=" + dim);
        }
        if (!(eps >= 0) || Float.isInfinite(eps)) {
            throw new IllegalArgumentException("layernorm: eps must be finite and >= 0, got " + eps);
        }
        return new LayerNorm(backend, rows, dim, eps);
    }

    /** Number of rows normalised (B·N for tokens). */
    public long rows() {
        return rows;
    }

    /** The normalised (last) dimension. */
    public long dim() {
        return dim;
    }

    /** The eps added to the variance. */
    public float eps() {
        return eps;
    }

    /** The backend this op runs on; every tensor passed to it must live there. */
    public Backend backend() {
        return backend;
    }

    /**
     * Writes y, and the row statistics for {@link #backward}.
     *
     * @param x      input, rows·dim elements, last dimension dim
     * @param weight [dim]
     * @param bias   [dim]
     * @param y      output, x's element count and last dimension; overwritten; must not alias x
     * @param mean   rows elements, overwritten
     * @param rstd   rows elements, overwritten: 1/√(var + eps)
     */
    public void forward(Tensor x, Tensor weight, Tensor bias, Tensor y, Tensor mean, Tensor rstd) {
        checkOpen();
        checkRows("x", x);
        checkVector("weight", weight);
        checkVector("bias", bias);
        checkRows("y", y);
        checkStats("mean", mean);
        checkStats("rstd", rstd);
        if (y == x) throw new IllegalArgumentException("layernorm: y must not be the same tensor as x");
        backend.call("layernorm forward",
                () -> Distill4jNative.d4j_layernorm_forward(backend.kernels(), backend.stream(), x.data(),
                weight.data(), bias.data(), rows, dim, eps, y.data(), mean.data(), rstd.data()));
    }

    /**
     * Back-propagates dy: {@code dx += dL/dx}, {@code dWeight += dL/dweight}, {@code dBias += dL/dbias}.
     *
     * @param x       the forward's input
     * @param weight  [dim]
     * @param mean    the forward's mean
     * @param rstd    the forward's rstd
     * @param dy      upstream gradient, x's element count and last dimension
     * @param dx      accumulated into; must not alias dy or x
     * @param dWeight [dim], accumulated into
     * @param dBias   [dim], accumulated into
     */
    public void backward(Tensor x, Tensor weight, Tensor mean, Tensor rstd, Tensor dy, Tensor dx, Tensor dWeight,
                         Tensor dBias) {
        checkOpen();
        checkRows("x", x);
        checkVector("weight", weight);
        checkStats("mean", mean);
        checkStats("rstd", rstd);
        checkRows("dy", dy);
        checkRows("dx", dx);
        checkVector("dWeight", dWeight);
        checkVector("dBias", dBias);
        if (dx == dy || dx == x) throw new IllegalArgumentException("layernorm: dx must not be the same tensor as dy or x");
        backend.call("layernorm backward",
                () -> Distill4jNative.d4j_layernorm_backward(backend.kernels(), backend.stream(), x.data(),
                weight.data(), mean.data(), rstd.data(), dy.data(), rows, dim, dx.data(), dWeight.data(),
                dBias.data(), workspace.data()));
    }

    /** Frees the workspace. Closing twice is harmless; using a closed op throws {@link IllegalStateException}. */
    @Override
    public void close() {
        if (workspace != null) {
            workspace.close();
            workspace = null;
        }
    }

    @Override
    public String toString() {
        return "LayerNorm[" + describe() + (workspace == null ? ", closed" : "") + "]";
    }

    private String describe() {
        return "rows=" + rows + ", dim=" + dim + ", eps=" + eps + " on " + backend.device();
    }

    private void checkOpen() {
        if (workspace == null) throw new IllegalStateException("layernorm: the op " + describe() + " is closed");
    }

    private void checkRows(String name, Tensor t) {
        checkTensor(name, t);
        if (t.rank() < 1 || t.size(t.rank() - 1) != dim || t.numel() != rows * dim) {
            throw new IllegalArgumentException("layernorm: " + name + " must have " + rows + " rows of " + dim
                    + " (last dimension " + dim + "), got " + Arrays.toString(t.shape()) + " (op " + describe() + ")");
        }
    }

    private void checkVector(String name, Tensor t) {
        checkTensor(name, t);
        if (t.rank() != 1 || t.size(0) != dim) {
            throw new IllegalArgumentException("layernorm: " + name + " must have shape [" + dim + "], got "
                    + Arrays.toString(t.shape()) + " (op " + describe() + ")");
        }
    }

    private void checkStats(String name, Tensor t) {
        checkTensor(name, t);
        if (t.numel() != rows) {
            throw new IllegalArgumentException("layernorm: " + name + " must have " + rows + " elements (one per row), got "
                    + Arrays.toString(t.shape()) + " (op " + describe() + ")");
        }
    }

    private void checkTensor(String name, Tensor t) {
        if (t == null) throw new IllegalArgumentException("layernorm: " + name + " is required");
        if (t.isClosed()) throw new IllegalStateException("layernorm: " + name + " tensor is closed");
        if (t.backend() != backend) {
            throw new IllegalArgumentException("layernorm: " + name + " is on " + t.backend().name() + ", the op on "
                    + backend.name() + ": copy it over first");
        }
    }
}
