package org.distill4j.experiments;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import com.google.gson.GsonBuilder;
import java.io.IOException;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.distill4j.data.Augment;
import org.distill4j.data.FashionMnist;
import org.distill4j.data.ImageFolder;
import org.distill4j.data.Normalization;
import org.distill4j.onnx.OnnxGraph;

/**
 * A CNN teacher for the image-folder distillation experiment (bench/experiments/cnn-teacher): trained with libtorch
 * from Java ({@code org.bytedeco:pytorch}, written functionally with autograd, as PyTorch users write it), then
 * exported as an ONNX graph ({@link OnnxGraph}, batch norm folded into the convolutions) and checked: ONNX Runtime's
 * logits of every validation image against libtorch's own.
 *
 * <pre>
 *   conv 3×3, 32 → BN → ReLU → max-pool 2     28×28 → 14×14
 *   conv 3×3, 64 → BN → ReLU → max-pool 2     14×14 → 7×7
 *   flatten → linear 3136 → 128 → ReLU → dropout 0.3 → linear 128 → classes
 * </pre>
 *
 * Trained on the folder's train/ images (random crop, pad 2, and horizontal flip: {@link Augment}, the same
 * augmentation our ViT teacher had), AdamW (weight decay 1e-4), cosine learning rate to 0, batch 128, the images
 * normalised with Fashion-MNIST's mean and std (as our ViT teacher's were).
 *
 * <p>Usage: {@code CnnTeacher --data ROOT [--epochs 15] [--lr 2e-3] [--seed 0] --out DIR}; writes DIR/model.onnx
 * and DIR/results.json (per-epoch loss and validation accuracy, the ONNX Runtime check). Exits non-zero when ONNX
 * Runtime's logits differ from libtorch's by more than float32 round-off can explain.
 */
@SuppressWarnings("try") // the PointerScopes are used for their effect, never referenced
public final class CnnTeacher implements AutoCloseable {
    private static final int BATCH = 128, SIZE = 28, HIDDEN = 128;
    private static final double BN_EPS = 1e-5, BN_MOMENTUM = 0.1, DROPOUT = 0.3;
    private static final int[] CHANNELS = {1, 32, 64};

    private final int classes;
    private final Map<String, Tensor> params = new LinkedHashMap<>();   // trained leaves
    private final Map<String, Tensor> buffers = new LinkedHashMap<>();  // batch-norm running statistics
    private AdamW optimizer;

    private CnnTeacher(int classes, long seed) {
        this.classes = classes;
        SplittableRandom rng = new SplittableRandom(seed);
        try (PointerScope ignored = new PointerScope()) {
            for (int l = 1; l <= 2; l++) {
                int in = CHANNELS[l - 1], out = CHANNELS[l];
                // No convolution bias: the batch norm's shift makes it redundant (as torchvision's CNNs).
                leaf("conv" + l + ".weight", uniform(rng, out * in * 9, in * 9), out, in, 3, 3);
                leaf("bn" + l + ".weight", filled(out, 1f), out);
                leaf("bn" + l + ".bias", filled(out, 0f), out);
                buffer("bn" + l + ".running_mean", filled(out, 0f), out);
                buffer("bn" + l + ".running_var", filled(out, 1f), out);
            }
            int flat = CHANNELS[2] * (SIZE / 4) * (SIZE / 4);
            leaf("fc1.weight", uniform(rng, HIDDEN * flat, flat), HIDDEN, flat);
            leaf("fc1.bias", uniform(rng, HIDDEN, flat), HIDDEN);
            leaf("fc2.weight", uniform(rng, classes * HIDDEN, HIDDEN), classes, HIDDEN);
            leaf("fc2.bias", uniform(rng, classes, HIDDEN), classes);
        }
    }

    /** PyTorch's default initialisation of conv and linear layers: U(±1/√fan_in). */
    private static float[] uniform(SplittableRandom rng, int n, int fanIn) {
        double bound = 1 / Math.sqrt(fanIn);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float) rng.nextDouble(-bound, bound);
        return v;
    }

    private static float[] filled(int n, float value) {
        float[] v = new float[n];
        java.util.Arrays.fill(v, value);
        return v;
    }

    private void leaf(String name, float[] values, long... shape) {
        Tensor t = AbstractTensor.create(values, shape).contiguous();
        t.set_requires_grad(true);
        t.retainReference();
        params.put(name, t);
    }

    private void buffer(String name, float[] values, long... shape) {
        Tensor t = AbstractTensor.create(values, shape).contiguous();
        t.retainReference();
        buffers.put(name, t);
    }

    private Tensor forward(Tensor x, boolean train) {
        for (int l = 1; l <= 2; l++) {
            x = torch.conv2d(x, params.get("conv" + l + ".weight"), new TensorOptional(), new long[] {1, 1},
                    new long[] {1, 1}, new long[] {1, 1}, 1);
            // training = true normalises with the batch's statistics and updates the running ones in place.
            x = torch.batch_norm(x, new TensorOptional(params.get("bn" + l + ".weight")),
                    new TensorOptional(params.get("bn" + l + ".bias")),
                    new TensorOptional(buffers.get("bn" + l + ".running_mean")),
                    new TensorOptional(buffers.get("bn" + l + ".running_var")), train, BN_MOMENTUM, BN_EPS, false);
            x = torch.max_pool2d(torch.relu(x), new long[] {2, 2}, new long[] {2, 2}, new long[] {0, 0},
                    new long[] {1, 1}, false);
        }
        x = x.flatten(1, -1);
        x = torch.relu(torch.linear(x, params.get("fc1.weight"), new TensorOptional(params.get("fc1.bias"))));
        x = torch.dropout(x, DROPOUT, train);
        return torch.linear(x, params.get("fc2.weight"), new TensorOptional(params.get("fc2.bias")));
    }

    /** One AdamW step on a batch; returns the loss. */
    private double step(float[] images, long[] labels, int n, double lr) {
        if (optimizer == null) {
            TensorVector leaves = new TensorVector();
            for (Tensor t : params.values()) leaves.push_back(t);
            AdamWOptions options = new AdamWOptions(lr);
            options.weight_decay().put(1e-4);
            optimizer = new AdamW(leaves, options);
            optimizer.retainReference();
        }
        try (PointerScope ignored = new PointerScope()) {
            optimizer.param_groups().get(0).options().set_lr(lr);
            optimizer.zero_grad();
            Tensor logits = forward(AbstractTensor.create(images, n, 1, SIZE, SIZE), true);
            Tensor loss = torch.nll_loss(torch.log_softmax(logits, 1), AbstractTensor.create(labels, n));
            loss.backward();
            optimizer.step();
            return loss.item_double();
        }
    }

    /** Inference logits [n, classes] of {@code images} [n, 1, 28, 28]. */
    private float[] logits(float[] images, int n) {
        try (PointerScope ignored = new PointerScope(); NoGradGuard noGrad = new NoGradGuard()) {
            Tensor out = forward(AbstractTensor.create(images, n, 1, SIZE, SIZE), false).detach().contiguous();
            float[] v = new float[n * classes];
            out.data_ptr_float().get(v);
            return v;
        }
    }

    private float[] values(Tensor t) {
        Tensor c = t.detach().contiguous();
        float[] v = new float[(int) c.numel()];
        c.data_ptr_float().get(v);
        return v;
    }

    /**
     * The inference graph as ONNX: each batch norm folded into the convolution before it
     * (W′ = W·γ/√(σ² + ε), b′ = β − μ·γ/√(σ² + ε), exact in real arithmetic), dynamic batch axis.
     */
    private void export(Path file) throws IOException {
        OnnxGraph g = new OnnxGraph("fashion-mnist-cnn").input("input", 0, 1, SIZE, SIZE);
        String x = "input";
        for (int l = 1; l <= 2; l++) {
            int in = CHANNELS[l - 1], out = CHANNELS[l], k = in * 9;
            float[] w = values(params.get("conv" + l + ".weight"));
            float[] gamma = values(params.get("bn" + l + ".weight")), beta = values(params.get("bn" + l + ".bias"));
            float[] mean = values(buffers.get("bn" + l + ".running_mean"));
            float[] var = values(buffers.get("bn" + l + ".running_var"));
            float[] bias = new float[out];
            for (int o = 0; o < out; o++) {
                double s = gamma[o] / Math.sqrt(var[o] + BN_EPS);
                for (int i = 0; i < k; i++) w[o * k + i] = (float) (w[o * k + i] * s);
                bias[o] = (float) (beta[o] - mean[o] * s);
            }
            g.initializer("conv" + l + ".weight", new long[] {out, in, 3, 3}, w)
                    .initializer("conv" + l + ".bias", new long[] {out}, bias)
                    .node("Conv", new String[] {x, "conv" + l + ".weight", "conv" + l + ".bias"}, "conv" + l,
                            OnnxGraph.ints("kernel_shape", 3, 3), OnnxGraph.ints("pads", 1, 1, 1, 1))
                    .node("Relu", new String[] {"conv" + l}, "relu" + l)
                    .node("MaxPool", new String[] {"relu" + l}, "pool" + l, OnnxGraph.ints("kernel_shape", 2, 2),
                            OnnxGraph.ints("strides", 2, 2));
            x = "pool" + l;
        }
        int flat = CHANNELS[2] * (SIZE / 4) * (SIZE / 4);
        g.node("Flatten", new String[] {x}, "flat", OnnxGraph.integer("axis", 1))
                .initializer("fc1.weight", new long[] {HIDDEN, flat}, values(params.get("fc1.weight")))
                .initializer("fc1.bias", new long[] {HIDDEN}, values(params.get("fc1.bias")))
                .node("Gemm", new String[] {"flat", "fc1.weight", "fc1.bias"}, "fc1", OnnxGraph.integer("transB", 1))
                .node("Relu", new String[] {"fc1"}, "hidden")
                .initializer("fc2.weight", new long[] {classes, HIDDEN}, values(params.get("fc2.weight")))
                .initializer("fc2.bias", new long[] {classes}, values(params.get("fc2.bias")))
                .node("Gemm", new String[] {"hidden", "fc2.weight", "fc2.bias"}, "logits",
                        OnnxGraph.integer("transB", 1))
                .output("logits", 0, classes)
                .write(file, "distill4j-bench CnnTeacher (libtorch)", 13);
    }

    @Override
    public void close() {
        if (optimizer != null) optimizer.deallocate();
        for (Tensor t : params.values()) t.deallocate();
        for (Tensor t : buffers.values()) t.deallocate();
        params.clear();
        buffers.clear();
    }

    public static void main(String[] args) throws IOException, OrtException {
        Path root = null, out = null;
        int epochs = 15;
        double lr = 2e-3;
        long seed = 0;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--data" -> root = Path.of(args[++i]);
                case "--epochs" -> epochs = Integer.parseInt(args[++i]);
                case "--lr" -> lr = Double.parseDouble(args[++i]);
                case "--seed" -> seed = Long.parseLong(args[++i]);
                case "--out" -> out = Path.of(args[++i]);
                default -> throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        if (root == null || out == null) {
            throw new IllegalArgumentException("usage: CnnTeacher --data ROOT [--epochs N] [--lr LR] [--seed S] "
                    + "--out DIR");
        }
        Files.createDirectories(out);
        torch.set_num_threads(Math.max(1, Runtime.getRuntime().availableProcessors()));
        torch.manual_seed(seed);  // dropout's masks
        Normalization norm = Normalization.uniform(1, FashionMnist.MEAN, FashionMnist.STD);
        long t0 = System.nanoTime();
        Images train = Images.load(ImageFolder.open(root.resolve("train"), SIZE, 1, norm));
        Images val = Images.load(ImageFolder.open(root.resolve("val"), SIZE, 1, norm));
        System.out.printf("decoded %d training and %d validation images in %.1f s%n", train.n, val.n,
                (System.nanoTime() - t0) / 1e9);

        Map<String, Object> results = new LinkedHashMap<>();
        results.put("command", "CnnTeacher " + String.join(" ", args));
        results.put("train_images", train.n);
        results.put("val_images", val.n);
        List<Map<String, Object>> history = new ArrayList<>();
        results.put("epochs", history);
        Augment augment = new Augment(seed, 2, true);
        float[] fill = {-norm.mean()[0] / norm.std()[0]};  // the padding: a black pixel, normalised
        int size = SIZE * SIZE, steps = epochs * (train.n / BATCH);
        float[] batch = new float[BATCH * size];
        long[] labels = new long[BATCH];
        try (CnnTeacher model = new CnnTeacher(train.classes, seed)) {
            int step = 0;
            float[] valLogits = null;
            for (int e = 0; e < epochs; e++) {
                long te = System.nanoTime();
                int[] order = permutation(train.n, new SplittableRandom(seed * 1_000_003L + e));
                double lossSum = 0;
                for (int b = 0; b + BATCH <= train.n; b += BATCH, step++) {
                    for (int i = 0; i < BATCH; i++) {
                        int idx = order[b + i];
                        augment.apply(train.pixels, idx * size, 1, SIZE, SIZE, fill, idx, e, batch, i * size);
                        labels[i] = train.labels[idx];
                    }
                    double rate = 0.5 * lr * (1 + Math.cos(Math.PI * step / steps));
                    lossSum += model.step(batch, labels, BATCH, rate);
                }
                valLogits = model.logitsOf(val);
                double acc = accuracy(valLogits, val.labels, train.classes);
                double seconds = (System.nanoTime() - te) / 1e9;
                Map<String, Object> row = new LinkedHashMap<>();
                row.put("epoch", e + 1);
                row.put("train_loss", lossSum / (train.n / BATCH));
                row.put("val_accuracy", acc);
                row.put("seconds", seconds);
                history.add(row);
                System.out.printf("epoch %d/%d: loss %.4f, val accuracy %.2f %% (%.0f s)%n", e + 1, epochs,
                        lossSum / (train.n / BATCH), 100 * acc, seconds);
            }
            Path onnx = out.resolve("model.onnx");
            model.export(onnx);
            results.put("onnx_runtime_check", check(onnx, val, valLogits, train.classes));
        }
        results.put("seconds", (System.nanoTime() - t0) / 1e9);
        Files.writeString(out.resolve("results.json"),
                new GsonBuilder().setPrettyPrinting().create().toJson(results) + "\n");
        @SuppressWarnings("unchecked")
        Map<String, Object> check = (Map<String, Object>) results.get("onnx_runtime_check");
        if (!(Boolean) check.get("passed")) {
            System.err.println("ONNX Runtime's logits differ from libtorch's: " + check);
            System.exit(1);
        }
    }

    private float[] logitsOf(Images data) {
        int chunk = 500, size = SIZE * SIZE;
        float[] out = new float[data.n * classes];
        for (int b = 0; b < data.n; b += chunk) {
            int n = Math.min(chunk, data.n - b);
            float[] imgs = java.util.Arrays.copyOfRange(data.pixels, b * size, (b + n) * size);
            System.arraycopy(logits(imgs, n), 0, out, b * classes, n * classes);
        }
        return out;
    }

    /**
     * ONNX Runtime's logits of every validation image against libtorch's. Both compute the same float32 function
     * with different summation orders, so they may differ by round-off: bounded here by 1e-4 of the logits' largest
     * magnitude (dot products of ≤ 3136 terms, float32's unit round-off 6e-8: a ≤ 2e-4 relative worst case,
     * typically far less); a wrong export (a folded batch norm, a transposed weight) moves logits by O(1).
     */
    private static Map<String, Object> check(Path onnx, Images val, float[] torchLogits, int classes)
            throws OrtException {
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        double maxDiff = 0, maxAbs = 0;
        int argmaxAgree = 0, correct = 0, size = SIZE * SIZE, chunk = 500;
        try (OrtSession.SessionOptions options = new OrtSession.SessionOptions();
             OrtSession session = env.createSession(onnx.toString(), options)) {
            for (int b = 0; b < val.n; b += chunk) {
                int n = Math.min(chunk, val.n - b);
                FloatBuffer in = FloatBuffer.wrap(val.pixels, b * size, n * size).slice();
                try (OnnxTensor x = OnnxTensor.createTensor(env, in, new long[] {n, 1, SIZE, SIZE});
                     OrtSession.Result r = session.run(Map.of("input", x))) {
                    float[][] ort = (float[][]) r.get(0).getValue();
                    for (int i = 0; i < n; i++) {
                        int o = (b + i) * classes;
                        int ao = 0, at = 0;
                        for (int c = 0; c < classes; c++) {
                            float t = torchLogits[o + c], v = ort[i][c];
                            double d = Math.abs((double) v - t);
                            if (!(d <= maxDiff)) maxDiff = Double.isNaN(d) ? Double.NaN : d;  // NaN sticks
                            maxAbs = Math.max(maxAbs, Math.abs(t));
                            if (ort[i][c] > ort[i][ao]) ao = c;
                            if (torchLogits[o + c] > torchLogits[o + at]) at = c;
                        }
                        if (ao == at) argmaxAgree++;
                        if (ao == val.labels[b + i]) correct++;
                    }
                }
            }
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("images", val.n);
        m.put("max_abs_diff", maxDiff);
        m.put("max_abs_logit", maxAbs);
        m.put("bound", 1e-4 * maxAbs);
        m.put("argmax_agree", argmaxAgree);
        m.put("onnx_runtime_accuracy", (double) correct / val.n);
        m.put("passed", maxDiff <= 1e-4 * maxAbs);
        System.out.printf("ONNX Runtime vs libtorch on %d images: max |diff| %.3g (logits up to %.3g), argmax "
                + "agrees on %d, ONNX Runtime accuracy %.2f %%%n", val.n, maxDiff, maxAbs, argmaxAgree,
                100.0 * correct / val.n);
        return m;
    }

    private static double accuracy(float[] logits, int[] labels, int classes) {
        int correct = 0;
        for (int i = 0; i < labels.length; i++) {
            int best = 0;
            for (int c = 1; c < classes; c++) if (logits[i * classes + c] > logits[i * classes + best]) best = c;
            if (best == labels[i]) correct++;
        }
        return (double) correct / labels.length;
    }

    private static int[] permutation(int n, SplittableRandom rng) {
        int[] p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = rng.nextInt(i + 1);
            int t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        return p;
    }

    /** A folder's images decoded once, normalised, [n, 1, 28, 28]. */
    private record Images(float[] pixels, int[] labels, int n, int classes) {
        static Images load(ImageFolder folder) throws IOException {
            int n = folder.size(), size = SIZE * SIZE;
            if (folder.channels() != 1 || folder.height() != SIZE || folder.width() != SIZE) {
                throw new IllegalArgumentException(folder.root() + ": expected 28×28 grey images");
            }
            float[] pixels = new float[n * size];
            int[] labels = new int[n];
            for (int i = 0; i < n; i++) {
                folder.copyImage(i, pixels, i * size);
                labels[i] = folder.label(i);
            }
            return new Images(pixels, labels, n, folder.classes());
        }
    }
}
