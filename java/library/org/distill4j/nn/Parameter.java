package org.distill4j.nn;

import java.util.Arrays;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;

/**
 * One trainable tensor of a model: its timm name and shape, its value and its gradient (same shape, accumulated
 * by the backward pass, cleared by {@link VisionTransformer#zeroGrad()}), and whether AdamW decays it (timm decays
 * weight matrices and the patch-embedding kernel, not biases, norms, tokens or the position embedding).
 */
public final class Parameter implements AutoCloseable {
    private final String name;
    private final long[] shape;
    private final boolean weightDecay;
    private final Tensor value, grad;

    Parameter(Backend backend, String name, boolean weightDecay, long... shape) {
        this.name = name;
        this.shape = shape.clone();
        this.weightDecay = weightDecay;
        this.value = Tensor.empty(backend, shape);
        Tensor g = null;
        try {
            g = Tensor.empty(backend, shape).zero();
        } finally {
            if (g == null) value.close();
        }
        this.grad = g;
    }

    /** The name in a timm state dict, e.g. {@code blocks.0.attn.qkv.weight}. */
    public String name() {
        return name;
    }

    /** The shape in a timm state dict (e.g. [1, 1, D] for {@code cls_token}). */
    public long[] shape() {
        return shape.clone();
    }

    /** Number of scalars. */
    public long numel() {
        return value.numel();
    }

    /** Whether AdamW applies weight decay to it. */
    public boolean weightDecay() {
        return weightDecay;
    }

    /** The value, in the model's backend memory. */
    public Tensor value() {
        return value;
    }

    /** The accumulated gradient. */
    public Tensor grad() {
        return grad;
    }

    @Override
    public void close() {
        value.close();
        grad.close();
    }

    @Override
    public String toString() {
        return name + Arrays.toString(shape);
    }
}
