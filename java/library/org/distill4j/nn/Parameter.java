package org.distill4j.nn;

import java.util.Arrays;
import org.distill4j.Tensor;

/**
 * One trainable tensor of a model: its timm name and shape, its value and its gradient (same shape, accumulated
 * by the backward pass, cleared by {@link VisionTransformer#zeroGrad()}), and whether AdamW decays it (timm decays
 * weight matrices and the patch-embedding kernel, not biases, norms, tokens or the position embedding).
 *
 * <p>The value and the gradient are {@linkplain Tensor#view views} at {@link #offset()} of the model's
 * {@linkplain VisionTransformer#parameterBuffer() parameter} and {@linkplain VisionTransformer#gradientBuffer()
 * gradient} buffers: they are valid while the model is open.
 */
public final class Parameter implements AutoCloseable {
    private final String name;
    private final long[] shape;
    private final boolean weightDecay;
    private final long offset;
    private final Tensor value, grad;

    Parameter(String name, boolean weightDecay, long offset, Tensor value, Tensor grad) {
        this.name = name;
        this.shape = value.shape();
        this.weightDecay = weightDecay;
        this.offset = offset;
        this.value = value;
        this.grad = grad;
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

    /**
     * Where the value starts in the model's {@linkplain VisionTransformer#parameterBuffer() parameter buffer}, in
     * floats (the gradient at the same offset of the gradient buffer); a multiple of {@value
     * VisionTransformer#ALIGNMENT}.
     */
    public long offset() {
        return offset;
    }

    /** The value, in the model's backend memory. */
    public Tensor value() {
        return value;
    }

    /** The accumulated gradient. */
    public Tensor grad() {
        return grad;
    }

    /** Closes the two views (the model's buffers stay open: {@link VisionTransformer#close()} frees them). */
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
