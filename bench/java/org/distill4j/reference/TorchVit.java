package org.distill4j.reference;

import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.distill4j.nn.VitConfig;

/**
 * The whole-model reference: timm's ViT / DeiT forward written functionally in libtorch (CPU) through
 * {@code org.bytedeco:pytorch}, with the same parameters (timm names and shapes), gradients by autograd.
 *
 * <pre>
 *   x = conv2d(images, patch_embed.proj, stride P).flatten(2).transpose(1, 2)
 *   x = cat([cls_token, dist_token, x], 1) + pos_embed
 *   per block: x = x + proj(sdpa(split(qkv(layer_norm(x))))); x = x + fc2(gelu(fc1(layer_norm(x))))
 *   x = layer_norm(x);  logits = head(x[:, 0]);  dist_logits = head_dist(x[:, 1])
 * </pre>
 *
 * Parameters are leaves built once; a run's temporaries live in a {@link PointerScope}. Not thread-safe.
 */
@SuppressWarnings("try") // the PointerScopes are used for their effect, never referenced
public final class TorchVit implements AutoCloseable {

    /** Result of {@link #run}: both heads' logits [B, classes] and every parameter's gradient by timm name. */
    public record Result(double[] logits, double[] distLogits, Map<String, double[]> grads) {}

    private final VitConfig config;
    private final int batch;
    private final boolean float64;
    private final Map<String, Tensor> params = new LinkedHashMap<>();
    private AdamW optimizer;

    /**
     * Copies the parameters into libtorch leaves.
     *
     * @param parameters every parameter of {@code config}, by timm name, row-major in timm's shape
     * @param shapes     their timm shapes
     */
    public TorchVit(VitConfig config, int batch, Map<String, float[]> parameters, Map<String, long[]> shapes,
                    boolean float64) {
        this.config = config;
        this.batch = batch;
        this.float64 = float64;
        try (PointerScope ignored = new PointerScope()) {
            for (Map.Entry<String, long[]> e : shapes.entrySet()) {
                float[] v = parameters.get(e.getKey());
                if (v == null) throw new IllegalArgumentException("missing parameter " + e.getKey());
                Tensor t = TorchTensors.toDtype(AbstractTensor.create(v, e.getValue()), float64).contiguous();
                t.set_requires_grad(true);
                t.retainReference();
                params.put(e.getKey(), t);
            }
        }
    }

    /**
     * Forward, then autograd's backward of sum(logits·dLogits) + sum(dist_logits·dDistLogits).
     *
     * @param images      [B, C, H, W]
     * @param dLogits     [B, classes]
     * @param dDistLogits [B, classes], or null when not distilled
     */
    public Result run(float[] images, float[] dLogits, float[] dDistLogits) {
        long b = batch, c = config.classes();
        try (PointerScope ignored = new PointerScope()) {
            resetGrads();
            Tensor[] out = forward(input(images));
            Tensor s = out[0].mul(typed(AbstractTensor.create(dLogits, b, c))).sum();
            if (out[1] != null) s = s.add(out[1].mul(typed(AbstractTensor.create(dDistLogits, b, c))).sum());
            s.backward();
            Map<String, double[]> grads = new LinkedHashMap<>();
            for (Map.Entry<String, Tensor> e : params.entrySet()) {
                grads.put(e.getKey(), TorchTensors.copyOut(e.getValue().grad(), float64));
            }
            Result r = new Result(TorchTensors.copyOut(out[0], float64),
                    out[1] == null ? null : TorchTensors.copyOut(out[1], float64), grads);
            resetGrads();
            return r;
        }
    }

    /**
     * One distillation training step as a PyTorch user writes it: forward, loss = (1 − α)·CE(head, labels)
     * + α·T²·KL(softmax(teacher/T) ‖ softmax(head_dist/T)) (batchmean), backward, torch's AdamW step
     * (lr 5e-4, weight decay 0.05 on every parameter: the cost is the same), gradients zeroed.
     *
     * @param labels        [B] class indices
     * @param teacherLogits [B, classes]
     * @return the loss
     */
    public double trainStep(float[] images, long[] labels, float[] teacherLogits, double alpha, double temperature) {
        if (optimizer == null) {
            TensorVector leaves = new TensorVector();
            for (Tensor t : params.values()) leaves.push_back(t);
            AdamWOptions options = new AdamWOptions(5e-4);
            options.weight_decay().put(0.05);
            optimizer = new AdamW(leaves, options);
            optimizer.retainReference();
        }
        long b = batch, c = config.classes();
        try (PointerScope ignored = new PointerScope()) {
            optimizer.zero_grad();
            Tensor[] out = forward(input(images));
            Tensor y = AbstractTensor.create(labels, b);
            Tensor ce = torch.nll_loss(torch.log_softmax(out[0], 1), y);
            Tensor loss = ce.mul(AbstractTensor.create(1 - alpha));
            if (out[1] != null) {
                Tensor t = typed(AbstractTensor.create(teacherLogits, b, c)).div(AbstractTensor.create(temperature));
                Tensor ls = torch.log_softmax(out[1].div(AbstractTensor.create(temperature)), 1);
                // kl_div(input, target, reduction = sum, log_target = true) / B: batchmean
                Tensor kl = torch.kl_div(ls, torch.log_softmax(t, 1), 2, true).div(AbstractTensor.create((double) b));
                loss = loss.add(kl.mul(AbstractTensor.create(alpha * temperature * temperature)));
            }
            loss.backward();
            optimizer.step();
            return loss.item_double();
        }
    }

    /** Frees the leaves and the optimizer. Idempotent. */
    @Override
    public void close() {
        if (params.isEmpty()) return;
        resetGrads();
        if (optimizer != null) optimizer.deallocate();
        for (Tensor t : params.values()) t.deallocate();
        params.clear();
    }

    private Tensor input(float[] images) {
        int s = config.imageSize();
        return typed(AbstractTensor.create(images, batch, config.channels(), s, s));
    }

    private Tensor typed(Tensor t) {
        return TorchTensors.toDtype(t, float64);
    }

    private Tensor p(String name) {
        Tensor t = params.get(name);
        if (t == null) throw new IllegalStateException("no parameter " + name);
        return t;
    }

    private Tensor[] forward(Tensor images) {
        long b = batch, d = config.dim(), t = config.tokens(), h = config.heads(), dh = config.headDim();
        int patch = config.patch();
        Tensor x = torch.conv2d(images, p("patch_embed.proj.weight"), new TensorOptional(p("patch_embed.proj.bias")),
                new long[] {patch, patch}, new long[] {0, 0}, new long[] {1, 1}, 1);
        x = x.flatten(2, -1).transpose(1, 2);
        TensorVector parts = new TensorVector();
        parts.push_back(p("cls_token").expand(b, 1, d));
        if (config.distilled()) parts.push_back(p("dist_token").expand(b, 1, d));
        parts.push_back(x);
        x = torch.cat(parts, 1).add(p("pos_embed"));
        for (int l = 0; l < config.depth(); l++) {
            String n = "blocks." + l + ".";
            Tensor y = layerNorm(x, n + "norm1");
            Tensor qkv = torch.linear(y, p(n + "attn.qkv.weight"), new TensorOptional(p(n + "attn.qkv.bias")));
            Tensor split = qkv.reshape(b, t, 3, h, dh).permute(2, 0, 3, 1, 4);
            Tensor o = torch.scaled_dot_product_attention(split.select(0, 0), split.select(0, 1), split.select(0, 2));
            o = o.transpose(1, 2).reshape(b, t, d);
            x = x.add(torch.linear(o, p(n + "attn.proj.weight"), new TensorOptional(p(n + "attn.proj.bias"))));
            y = layerNorm(x, n + "norm2");
            y = torch.gelu(torch.linear(y, p(n + "mlp.fc1.weight"), new TensorOptional(p(n + "mlp.fc1.bias"))));
            x = x.add(torch.linear(y, p(n + "mlp.fc2.weight"), new TensorOptional(p(n + "mlp.fc2.bias"))));
        }
        x = layerNorm(x, "norm");
        Tensor logits = torch.linear(x.select(1, 0), p("head.weight"), new TensorOptional(p("head.bias")));
        Tensor dist = config.distilled()
                ? torch.linear(x.select(1, 1), p("head_dist.weight"), new TensorOptional(p("head_dist.bias")))
                : null;
        return new Tensor[] {logits, dist};
    }

    private Tensor layerNorm(Tensor x, String name) {
        return torch.layer_norm(x, new long[] {config.dim()}, new TensorOptional(p(name + ".weight")),
                new TensorOptional(p(name + ".bias")), 1e-6, false);
    }

    private void resetGrads() {
        for (Tensor t : params.values()) {
            if (t.grad().defined()) t.mutable_grad().reset();
        }
    }
}
