package org.distill4j.train;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Objects;
import org.distill4j.Tensor;
import org.distill4j.nn.Parameter;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.ops.AdamW;
import org.distill4j.ops.GradNorm;

/**
 * The trainer's optimizer: global gradient-norm clipping and AdamW over a model's flat buffers ({@link
 * VisionTransformer#parameterBuffer()}, {@link VisionTransformer#gradientBuffer()}), with the moments m and v in
 * two more buffers of the same layout. A step is a few kernel calls whatever the parameter count: the norm is one
 * {@code sum_squares} over the whole gradient buffer and one {@code clip_scale}, the update two {@code adamw} calls.
 *
 * <p>Why two: one call over the whole buffer would give every parameter the same weight decay, and timm decays
 * the weight matrices only. The model stores the decayed parameters first, so each of torch.optim.AdamW's two
 * param groups ({@code weight_decay = wd} and {@code 0}) is one contiguous range, updated by one call with its own
 * decay. AdamW is element-wise and its scalars (learning rate, bias corrections, decay factor) are one per group,
 * so a call over a range does, element for element, what one call per tensor did: exactly AdamW with two param
 * groups, with no per-element decay mask to read and no kernel change. The gaps between parameters hold zero
 * gradients and zero moments, which stay zero, and a zero value whose update is 0·(1 − lr·wd) − step·0/(0 + eps):
 * they stay zero too (eps is the trainer's, 1e-8, never 0).
 *
 * <p>Allocates its buffers once; {@link #update} allocates nothing. Used from one thread at a time (the trainer's).
 */
final class FlatAdamW implements AutoCloseable {
    private final AdamW adamw;
    private final boolean clipping;
    private final GradNorm norm;
    private final Tensor m, v;
    private final List<Tensor> gradients;  // the whole gradient buffer, as GradNorm takes a list
    private final Tensor[][] groups;       // {param, grad, m, v} views of each group's range
    private final float[] groupDecay;
    private final List<Tensor> firstMoments = new ArrayList<>(), secondMoments = new ArrayList<>();

    /**
     * @param model       the model whose parameters it updates
     * @param adamw       lr (unused: each update passes the schedule's), betas, eps
     * @param weightDecay the decayed group's weight decay ({@link Parameter#weightDecay()}); the others get 0
     * @param clipNorm    the global-norm threshold, or &le; 0 for none (the norm is still formed)
     */
    FlatAdamW(VisionTransformer model, AdamW adamw, float weightDecay, float clipNorm) {
        Objects.requireNonNull(model, "model");
        this.adamw = Objects.requireNonNull(adamw, "adamw");
        this.clipping = clipNorm > 0;
        Tensor params = model.parameterBuffer(), grads = model.gradientBuffer();
        long length = params.numel(), decayed = model.decayedLength();
        Tensor mt = null, vt = null;
        boolean ok = false;
        try {
            mt = Tensor.empty(params.backend(), length).zero();
            vt = Tensor.empty(params.backend(), length).zero();
            // Without clipping the norm is still formed (maxNorm +inf): it is how a non-finite gradient is caught.
            norm = new GradNorm(params.backend(), clipping ? clipNorm : Float.POSITIVE_INFINITY);
            ok = true;
        } finally {
            if (!ok) {
                if (mt != null) mt.close();
                if (vt != null) vt.close();
            }
        }
        this.m = mt;
        this.v = vt;
        this.gradients = List.of(grads);
        long[][] ranges = {{0, decayed}, {decayed, length - decayed}};
        this.groups = new Tensor[ranges.length][];
        for (int k = 0; k < ranges.length; k++) {
            long at = ranges[k][0], n = ranges[k][1];
            groups[k] = new Tensor[] {params.view(at, n), grads.view(at, n), m.view(at, n), v.view(at, n)};
        }
        this.groupDecay = new float[] {weightDecay, 0f};
        for (Parameter p : model.parameters()) {
            firstMoments.add(m.view(p.offset(), p.shape()));
            secondMoments.add(v.view(p.offset(), p.shape()));
        }
    }

    /** Forms the global gradient norm and the clip coefficient on the device ({@link #norm()}); no host wait. */
    void computeNorm() {
        norm.compute(gradients);
    }

    /** The norm and clip coefficient of the last {@link #computeNorm()}. */
    GradNorm norm() {
        return norm;
    }

    /** One AdamW step of every parameter with the last computed clip coefficient (when clipping). */
    void update(long step, float lr) {
        for (int k = 0; k < groups.length; k++) {
            Tensor[] g = groups[k];
            if (g[0].numel() == 0) continue;
            adamw.step(g[0], g[1], g[2], g[3], step, lr, groupDecay[k], clipping ? norm.scale() : null);
        }
    }

    /** AdamW's first moments, one view per model parameter, in parameter order. */
    List<Tensor> firstMoments() {
        return Collections.unmodifiableList(firstMoments);
    }

    /** AdamW's second moments, one view per model parameter, in parameter order. */
    List<Tensor> secondMoments() {
        return Collections.unmodifiableList(secondMoments);
    }

    @Override
    public void close() {
        m.close();
        v.close();
        norm.close();
    }
}
