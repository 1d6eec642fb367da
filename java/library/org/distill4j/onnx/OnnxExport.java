package org.distill4j.onnx;

import java.io.IOException;
import java.nio.file.Path;
import org.distill4j.nn.Parameter;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.ops.LayerNorm;

/**
 * Writes a {@link VisionTransformer} as an ONNX model (operator set 17, float32) that computes what
 * {@link VisionTransformer#predict} does: input {@code images} [N, C, H, W] with N free, output {@code logits}
 * [N, classes], the class and distillation heads averaged for a distilled model. For ONNX Runtime, TensorRT or any
 * other runtime a Java service does not want to carry this library into.
 *
 * <p>The graph is timm's forward in standard operators: the patch embedding as a Conv of stride {@code patch},
 * LayerNormalization (eps 1e-6), attention as MatMul, Softmax, MatMul per head, GELU in its exact erf form (as our
 * kernel computes it, not the tanh approximation). Weights are the model's fp32 master copy, whatever its precision.
 */
public final class OnnxExport {
    /** The operator set the graph is written for: the first with LayerNormalization. */
    public static final int OPSET = 17;

    /** Weight bytes a file may hold: protobuf's 2 GB less room for the graph. */
    static final long MAX_BYTES = (1L << 31) - (64L << 20);

    private OnnxExport() {}

    /**
     * Writes {@code model}'s current parameters as an ONNX model to {@code file} (atomically: a failed write leaves no
     * file behind, and an existing file stays as it was).
     *
     * @throws IllegalArgumentException for a model of more than 2 GB of weights less 64 MB (ONNX's external data is not
     *     written)
     */
    public static void write(VisionTransformer model, Path file) throws IOException {
        if (model == null || file == null) throw new IllegalArgumentException("model and file must be given");
        VitConfig cfg = model.config();
        // One protobuf message holds the whole graph: 2 GB at most. Past that ONNX stores weights as external data,
        // which this writer does not (DeiT-B is 0.35 GB).
        long bytes = 0;
        for (Parameter q : model.parameters()) bytes += 4 * q.numel();
        if (bytes > MAX_BYTES) {
            throw new IllegalArgumentException(cfg + " has " + bytes + " bytes of weights; an ONNX file holds at most "
                    + MAX_BYTES + " without external data, which is not written");
        }
        long d = cfg.dim(), heads = cfg.heads(), dh = cfg.headDim(), p = cfg.patch();
        OnnxGraph g = new OnnxGraph(cfg.name()).input("images", 0, cfg.channels(), cfg.imageSize(), cfg.imageSize());
        for (Parameter q : model.parameters()) {
            long[] shape = q.shape();
            float[] v = q.value().toArray();
            if (shape.length == 2) {  // a linear layer's [out, in]: stored transposed, for MatMul(x [.., in], w)
                g.initializer(q.name() + ".T", new long[] {shape[1], shape[0]}, transpose(v, shape[0], shape[1]));
            } else {
                g.initializer(q.name(), shape, v);
            }
        }
        g.initializer("shape.tokens", new long[] {3}, new long[] {0, d, -1})
                .initializer("shape.heads", new long[] {5}, new long[] {0, 0, 3, heads, dh})
                .initializer("shape.merge", new long[] {3}, new long[] {0, 0, d})
                .initializer("shape.token", new long[] {2}, new long[] {1, d})
                .initializer("index.0", new long[0], new long[] {0})
                .initializer("index.1", new long[0], new long[] {1})
                .initializer("index.2", new long[0], new long[] {2})
                .initializer("slice.0", new long[] {1}, new long[] {0})
                .initializer("slice.1", new long[] {1}, new long[] {1})
                .initializer("scale", new long[0], new float[] {(float) (1 / Math.sqrt(dh))})
                .initializer("sqrt2", new long[0], new float[] {(float) Math.sqrt(2)})
                .initializer("one", new long[0], new float[] {1f})
                .initializer("half", new long[0], new float[] {0.5f});

        // Patch embedding, then [cls, dist,] patches, then the position embedding (timm's DeiT order).
        g.node("Conv", new String[] {"images", "patch_embed.proj.weight", "patch_embed.proj.bias"}, "conv",
                        OnnxGraph.ints("kernel_shape", p, p), OnnxGraph.ints("strides", p, p))
                .node("Reshape", new String[] {"conv", "shape.tokens"}, "conv.flat")
                .node("Transpose", new String[] {"conv.flat"}, "patches", OnnxGraph.ints("perm", 0, 2, 1))
                // [N, 1, D] for the prefix tokens: N from the input's shape (the batch is free).
                .node("Shape", new String[] {"images"}, "images.shape")
                .node("Slice", new String[] {"images.shape", "slice.0", "slice.1"}, "batch")
                .node("Concat", new String[] {"batch", "shape.token"}, "prefix.shape", OnnxGraph.integer("axis", 0))
                .node("Expand", new String[] {"cls_token", "prefix.shape"}, "cls");
        String[] tokens = {"cls", "patches"};
        if (cfg.distilled()) {
            g.node("Expand", new String[] {"dist_token", "prefix.shape"}, "dist");
            tokens = new String[] {"cls", "dist", "patches"};
        }
        g.node("Concat", tokens, "tokens", OnnxGraph.integer("axis", 1))
                .node("Add", new String[] {"tokens", "pos_embed"}, "x0");

        String x = "x0";
        for (int l = 0; l < cfg.depth(); l++) {
            String b = "blocks." + l + ".";
            layerNorm(g, x, b + "norm1", b + "ln1");
            linear(g, b + "ln1", b + "attn.qkv", b + "qkv");
            // [N, T, 3·D] → [3, N, heads, T, dh]: q, k, v per head.
            g.node("Reshape", new String[] {b + "qkv", "shape.heads"}, b + "qkv.split")
                    .node("Transpose", new String[] {b + "qkv.split"}, b + "qkv.heads", OnnxGraph.ints("perm", 2, 0, 3, 1, 4))
                    .node("Gather", new String[] {b + "qkv.heads", "index.0"}, b + "q", OnnxGraph.integer("axis", 0))
                    .node("Gather", new String[] {b + "qkv.heads", "index.1"}, b + "k", OnnxGraph.integer("axis", 0))
                    .node("Gather", new String[] {b + "qkv.heads", "index.2"}, b + "v", OnnxGraph.integer("axis", 0))
                    .node("Transpose", new String[] {b + "k"}, b + "kT", OnnxGraph.ints("perm", 0, 1, 3, 2))
                    .node("MatMul", new String[] {b + "q", b + "kT"}, b + "qk")
                    .node("Mul", new String[] {b + "qk", "scale"}, b + "scores")
                    .node("Softmax", new String[] {b + "scores"}, b + "probs", OnnxGraph.integer("axis", -1))
                    .node("MatMul", new String[] {b + "probs", b + "v"}, b + "heads")
                    .node("Transpose", new String[] {b + "heads"}, b + "heads.T", OnnxGraph.ints("perm", 0, 2, 1, 3))
                    .node("Reshape", new String[] {b + "heads.T", "shape.merge"}, b + "attn");
            linear(g, b + "attn", b + "attn.proj", b + "proj");
            g.node("Add", new String[] {x, b + "proj"}, b + "mid");
            layerNorm(g, b + "mid", b + "norm2", b + "ln2");
            linear(g, b + "ln2", b + "mlp.fc1", b + "fc1");
            // Exact GELU: x · ½ (1 + erf(x / √2)).
            g.node("Div", new String[] {b + "fc1", "sqrt2"}, b + "gelu.scaled")
                    .node("Erf", new String[] {b + "gelu.scaled"}, b + "gelu.erf")
                    .node("Add", new String[] {b + "gelu.erf", "one"}, b + "gelu.sum")
                    .node("Mul", new String[] {b + "fc1", b + "gelu.sum"}, b + "gelu.prod")
                    .node("Mul", new String[] {b + "gelu.prod", "half"}, b + "act");
            linear(g, b + "act", b + "mlp.fc2", b + "fc2");
            x = "x" + (l + 1);
            g.node("Add", new String[] {b + "mid", b + "fc2"}, x);
        }
        layerNorm(g, x, "norm", "normed");
        g.node("Gather", new String[] {"normed", "index.0"}, "cls.out", OnnxGraph.integer("axis", 1));
        if (cfg.distilled()) {
            linear(g, "cls.out", "head", "logits.cls");
            g.node("Gather", new String[] {"normed", "index.1"}, "dist.out", OnnxGraph.integer("axis", 1));
            linear(g, "dist.out", "head_dist", "logits.dist");
            g.node("Add", new String[] {"logits.cls", "logits.dist"}, "logits.sum")
                    .node("Mul", new String[] {"logits.sum", "half"}, "logits");
        } else {
            linear(g, "cls.out", "head", "logits");
        }
        g.output("logits", 0, cfg.classes()).write(file, "distill4j", OPSET);
    }

    private static void layerNorm(OnnxGraph g, String in, String name, String out) {
        g.node("LayerNormalization", new String[] {in, name + ".weight", name + ".bias"}, out,
                OnnxGraph.integer("axis", -1), OnnxGraph.real("epsilon", LayerNorm.DEFAULT_EPS));
    }

    private static void linear(OnnxGraph g, String in, String name, String out) {
        g.node("MatMul", new String[] {in, name + ".weight.T"}, out + ".mm")
                .node("Add", new String[] {out + ".mm", name + ".bias"}, out);
    }

    private static float[] transpose(float[] v, long rows, long cols) {
        float[] t = new float[v.length];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) t[(int) (c * rows + r)] = v[(int) (r * cols + c)];
        }
        return t;
    }
}
