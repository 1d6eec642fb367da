package org.distill4j.nn;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.SplittableRandom;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.ShortPointer;
import org.distill4j.Bf16Tensor;
import org.distill4j.MemoryLimitException;
import org.distill4j.Precision;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;
import org.distill4j.ops.Attention;
import org.distill4j.ops.PatchEmbed;

/**
 * A ViT / DeiT (timm's {@code VisionTransformer}, {@code VisionTransformerDistilled}) whose forward and backward
 * passes run on one backend's memory: parameters, gradients and every activation are allocated once, by the
 * constructor, for one batch size; {@link #forward} and {@link #backward} allocate nothing.
 *
 * <p>Layout as timm: tokens [cls, dist, patches] + pos; each block x += attn.proj(Attn(norm1(x)));
 * x += mlp.fc2(GELU(mlp.fc1(norm2(x)))); then the final {@code norm}, {@code head} on the class token and
 * {@code head_dist} on the distillation token. Training returns both heads' logits; {@link #predict} returns their
 * average (DeiT's inference). Parameter names and shapes are timm's state-dict ones ({@link #parameters()}).
 *
 * <p>{@link Precision}: in {@link Precision#BF16} the parameters are rounded to a bf16 copy at the start of each
 * forward; every linear layer multiplies bf16 operands (its input, saved in bf16 for the backward, and the upstream
 * gradient, rounded before the backward GEMMs) and sums in fp32; the attention runs the bf16 tensor-core kernels
 * (qkv rounded once; its output, bf16, is the projection's input). LayerNorm and GELU compute in fp32 and write the
 * next GEMM's input once rounded to bf16 (GELU's backward likewise its upstream gradient); the residual stream, the
 * losses, every parameter gradient and the optimizer stay fp32. Still rounded by a separate pass: the qkv GEMM's
 * output and the other linear layers' upstream gradients. {@link Precision#TF32} changes only the linear layers'
 * GEMMs.
 *
 * <p>Since LayerNorm is per token, the final norm runs on the prefix rows only (what the heads read): the same
 * values as timm, without normalising the patch tokens nobody uses.
 *
 * <p>Not thread-safe: one training loop drives a model, as one stream orders its kernels. A call from a second
 * thread while another thread is inside {@link #forward()}, {@link #backward()}, {@link #zeroGrad()} or
 * {@link #predict} throws {@link org.distill4j.ConcurrentUseException} (its outputs would be the other call's); give
 * each thread its own model, or use one at a time.
 */
public final class VisionTransformer implements AutoCloseable {
    /**
     * Each parameter starts in the flat buffers at a multiple of this many floats (64 bytes): a cache line, and the
     * 16 bytes the float4 paths of the kernels check for (patch_embed's bias and position embedding; adamw's and
     * sum_squares' loads do not need it) with room to spare. The gaps are zero and stay zero (nothing writes them):
     * the global gradient norm, one sum over the whole gradient buffer, does not see them.
     */
    public static final int ALIGNMENT = 16;
    /** Java heap a block's objects take, with margin (measured: 6.6 KB with its 24 tensors and 12 parameters). */
    static final long HEAP_PER_BLOCK = 16 << 10;
    private static final int INIT_CHUNK = 1 << 16;
    private final VitConfig config;
    private final Precision precision;
    private final int batch;
    private final Backend backend;
    private final Kernels kernels;
    private final org.distill4j.ThreadConfinement confinement;
    private final List<Tensor> owned = new ArrayList<>();
    private final List<Bf16Tensor> ownedBf16 = new ArrayList<>();
    private final List<Parameter> parameters = new ArrayList<>();
    private final Map<String, Parameter> byName = new LinkedHashMap<>();
    // Every parameter's value (and gradient) in one buffer: weight-decayed parameters first, then the others, each
    // group in timm's order; so the optimizer updates each group with one call and zeroGrad is one memset.
    private final Tensor parameterBuffer, gradientBuffer;
    private final long decayedLength;

    private final PatchEmbed patchEmbed;
    private final Attention attention;  // null in BF16: the bf16 kernels need no workspace
    private final Parameter patchWeight, patchBias, clsToken, distToken, posEmbed, normWeight, normBias;
    private final Parameter headWeight, headBias, headDistWeight, headDistBias;
    private final Block[] blocks;

    // Activations of one batch: x[l] is the input of block l, x[depth] the last block's output.
    private final Tensor images;
    private final Tensor[] x;
    private final Tensor rows, rowsNormed, rowsMean, rowsRstd, logits, distLogits;
    // Gradients of activations, shared by every block (the backward pass visits one block at a time).
    private final Tensor gradStream, gradLn, gradAttn, gradQkv, gradHidden, gradRows, gradRowsNormed;
    private final Tensor gradLogits, gradDistLogits;
    private final Tensor lnWorkspace;
    // Views at the distillation rows of [prefix, B, D] buffers, made once (no per-step Java objects on the hot path).
    private final FloatPointer rowsNormedDist, gradRowsNormedDist;
    // BF16 only (else null): the parameters' bf16 copy, the final norm's output in bf16, and two gradient scratches
    // shared by every layer (the backward visits one layer at a time; one stream orders their reuse).
    private final Bf16Tensor parameterBf16, rowsNormedBf16, gradBf16, gradQkvBf16;
    private final ShortPointer headWeightBf16, headDistWeightBf16, rowsNormedDistBf16;
    private boolean closed;

    /** One transformer block's parameters and saved activations. */
    private static final class Block {
        Parameter norm1Weight, norm1Bias, qkvWeight, qkvBias, projWeight, projBias;
        Parameter norm2Weight, norm2Bias, fc1Weight, fc1Bias, fc2Weight, fc2Bias;
        Tensor ln1, mean1, rstd1, qkv, attn, lse, mid, ln2, mean2, rstd2, fc1, act;
        // BF16: the linear layers' inputs as saved for the backward (LayerNorm and GELU write them in bf16), qkv as
        // the attention reads it, and the weights' places in the bf16 copy; qkv is then one scratch shared by every
        // block, ln1, attn, ln2 and act null.
        Bf16Tensor ln1Bf16, qkvBf16, attnBf16, ln2Bf16, actBf16;
        ShortPointer qkvWeightBf16, projWeightBf16, fc1WeightBf16, fc2WeightBf16;
    }

    /**
     * Allocates the model for batches of {@code batch} images and initialises the parameters as timm does, from
     * {@code seed}: weights of linear layers, tokens and the position embedding timm's {@code trunc_normal_(std=.02)}
     * (its cut is at ±2 absolute, 100σ: in effect normal(0, 0.02)),
     * biases 0, LayerNorms 1/0, the patch-embedding convolution PyTorch's default (uniform ±1/√fan_in).
     *
     * @throws IllegalArgumentException when {@code batch < 1}
     * @throws MemoryLimitException before allocating anything, when the model does not fit the backend's free memory
     *     or the Java heap (see {@link #checkMemory})
     */
    public VisionTransformer(Backend backend, VitConfig config, int batch, long seed) {
        this(backend, config, batch, seed, Precision.FP32);
    }

    /**
     * As {@link #VisionTransformer(Backend, VitConfig, int, long)}, computing in {@code precision}.
     *
     * @throws IllegalArgumentException when the backend cannot compute {@code precision} ({@link
     *     Backend#unsupported}: a CUDA card older than compute capability 8.0 for TF32 and BF16), naming both
     */
    public VisionTransformer(Backend backend, VitConfig config, int batch, long seed, Precision precision) {
        this.backend = Objects.requireNonNull(backend, "backend");
        this.config = Objects.requireNonNull(config, "config");
        this.precision = Objects.requireNonNull(precision, "precision");
        if (batch < 1) throw new IllegalArgumentException("batch size must be >= 1, got " + batch);
        String unsupported = backend.unsupported(precision);
        if (unsupported != null) throw new IllegalArgumentException(unsupported);
        checkMemory(backend, config, batch, Long.MAX_VALUE, precision);
        this.batch = batch;
        this.kernels = new Kernels(backend);
        this.confinement = new org.distill4j.ThreadConfinement("VisionTransformer[" + config.name() + ", batch "
                + batch + "]");
        final long b = batch, t = config.tokens(), d = config.dim(), h = config.hidden(), c = config.classes();
        final long prefix = config.prefix(), p = config.patch(), ch = config.channels(), s = config.imageSize();
        boolean ok = false;
        PatchEmbed pe = null;
        Attention at = null;
        try {
            pe = PatchEmbed.builder().batch(b).channels(ch).image(s, s).patch(p).dim(d)
                    .distilled(config.distilled()).build(backend);
            final boolean bf16 = precision == Precision.BF16;
            at = bf16 ? null : Attention.builder().batch(b).tokens(t).dim(d, config.heads()).build(backend);
            patchEmbed = pe;
            attention = at;

            Map<String, long[]> shapes = parameterShapes(config);
            Map<String, Long> offsets = new LinkedHashMap<>();
            long end = 0, decayedEnd = 0;
            for (boolean decayed : new boolean[] {true, false}) {
                for (Map.Entry<String, long[]> e : shapes.entrySet()) {
                    if (decays(e.getKey()) != decayed) continue;
                    offsets.put(e.getKey(), end);
                    end += padded(numel(e.getValue()));
                }
                if (decayed) decayedEnd = end;
            }
            decayedLength = decayedEnd;
            // Zeroed, gaps included: the gradient norm sums the whole buffer, and AdamW keeps a zero gap zero.
            parameterBuffer = tensor(end).zero();
            gradientBuffer = tensor(end).zero();
            parameterBf16 = bf16 ? bf16(end) : null;
            for (Map.Entry<String, long[]> e : shapes.entrySet()) {
                String name = e.getKey();
                long start = offsets.get(name);
                Parameter q = new Parameter(name, decays(name), start, parameterBuffer.view(start, e.getValue()),
                        gradientBuffer.view(start, e.getValue()));
                parameters.add(q);
                byName.put(name, q);
            }
            patchWeight = byName.get("patch_embed.proj.weight");
            patchBias = byName.get("patch_embed.proj.bias");
            clsToken = byName.get("cls_token");
            distToken = byName.get("dist_token");
            posEmbed = byName.get("pos_embed");
            blocks = new Block[config.depth()];
            // BF16: the qkv GEMM's fp32 output only feeds a rounding pass: one scratch for every block.
            Tensor qkvScratch = bf16 ? tensor(b, t, 3 * d) : null;
            for (int l = 0; l < blocks.length; l++) {
                Block k = new Block();
                String n = "blocks." + l + ".";
                k.norm1Weight = byName.get(n + "norm1.weight");
                k.norm1Bias = byName.get(n + "norm1.bias");
                k.qkvWeight = byName.get(n + "attn.qkv.weight");
                k.qkvBias = byName.get(n + "attn.qkv.bias");
                k.projWeight = byName.get(n + "attn.proj.weight");
                k.projBias = byName.get(n + "attn.proj.bias");
                k.norm2Weight = byName.get(n + "norm2.weight");
                k.norm2Bias = byName.get(n + "norm2.bias");
                k.fc1Weight = byName.get(n + "mlp.fc1.weight");
                k.fc1Bias = byName.get(n + "mlp.fc1.bias");
                k.fc2Weight = byName.get(n + "mlp.fc2.weight");
                k.fc2Bias = byName.get(n + "mlp.fc2.bias");
                k.mean1 = tensor(b * t);
                k.rstd1 = tensor(b * t);
                k.lse = tensor(b, config.heads(), t);
                k.mid = tensor(b, t, d);
                k.mean2 = tensor(b * t);
                k.rstd2 = tensor(b * t);
                k.fc1 = tensor(b, t, h);
                if (bf16) {
                    k.qkv = qkvScratch;
                    k.ln1Bf16 = bf16(b, t, d);
                    k.qkvBf16 = bf16(b, t, 3 * d);
                    k.attnBf16 = bf16(b, t, d);
                    k.ln2Bf16 = bf16(b, t, d);
                    k.actBf16 = bf16(b, t, h);
                    k.qkvWeightBf16 = bf16View(k.qkvWeight);
                    k.projWeightBf16 = bf16View(k.projWeight);
                    k.fc1WeightBf16 = bf16View(k.fc1Weight);
                    k.fc2WeightBf16 = bf16View(k.fc2Weight);
                } else {
                    k.ln1 = tensor(b, t, d);
                    k.qkv = tensor(b, t, 3 * d);
                    k.attn = tensor(b, t, d);
                    k.ln2 = tensor(b, t, d);
                    k.act = tensor(b, t, h);
                }
                blocks[l] = k;
            }
            normWeight = byName.get("norm.weight");
            normBias = byName.get("norm.bias");
            headWeight = byName.get("head.weight");
            headBias = byName.get("head.bias");
            headDistWeight = byName.get("head_dist.weight");
            headDistBias = byName.get("head_dist.bias");

            images = tensor(b, ch, s, s);
            x = new Tensor[config.depth() + 1];
            for (int l = 0; l < x.length; l++) x[l] = tensor(b, t, d);
            rows = tensor(prefix, b, d);
            rowsNormed = bf16 ? null : tensor(prefix, b, d);  // BF16: LayerNorm writes rowsNormedBf16
            rowsMean = tensor(prefix * b);
            rowsRstd = tensor(prefix * b);
            logits = tensor(b, c);
            distLogits = config.distilled() ? tensor(b, c) : null;
            gradStream = tensor(b, t, d);
            gradLn = tensor(b, t, d);
            gradAttn = tensor(b, t, d);
            gradQkv = bf16 ? null : tensor(b, t, 3 * d);  // BF16: the attention writes gradQkvBf16
            gradHidden = tensor(b, t, h);
            gradRows = tensor(prefix, b, d);
            gradRowsNormed = tensor(prefix, b, d);
            gradLogits = tensor(b, c);
            gradDistLogits = config.distilled() ? tensor(b, c) : null;
            long ws = Math.max(kernels.layerNormWorkspace(b * t, d), kernels.layerNormWorkspace(prefix * b, d));
            lnWorkspace = tensor(Math.max(1, (ws + Float.BYTES - 1) / Float.BYTES));
            rowsNormedDist = bf16 ? null : Kernels.at(rowsNormed.data(), b * d);
            gradRowsNormedDist = Kernels.at(gradRowsNormed.data(), b * d);
            rowsNormedBf16 = bf16 ? bf16(prefix, b, d) : null;
            gradBf16 = bf16 ? bf16(Math.max(Math.max(b * t * d, b * t * h), b * c)) : null;
            gradQkvBf16 = bf16 ? bf16(b, t, 3 * d) : null;
            headWeightBf16 = bf16 ? bf16View(headWeight) : null;
            headDistWeightBf16 = bf16 && headDistWeight != null ? bf16View(headDistWeight) : null;
            rowsNormedDistBf16 = bf16 ? Kernels.at(rowsNormedBf16.data(), b * d) : null;
            initialise(seed);
            ok = true;
        } finally {
            if (!ok) {
                for (Tensor o : owned) o.close();
                for (Bf16Tensor o : ownedBf16) o.close();
                if (pe != null) pe.close();
                if (at != null) at.close();
            }
        }
    }

    /**
     * The parameters a model of {@code config} has, in timm's state-dict order, names and shapes, without allocating
     * them: what a file must hold to load into such a model.
     */
    public static Map<String, long[]> parameterShapes(VitConfig config) {
        final long t = config.tokens(), d = config.dim(), h = config.hidden(), c = config.classes();
        final long p = config.patch(), ch = config.channels();
        Map<String, long[]> m = new LinkedHashMap<>();
        m.put("patch_embed.proj.weight", new long[] {d, ch, p, p});
        m.put("patch_embed.proj.bias", new long[] {d});
        m.put("cls_token", new long[] {1, 1, d});
        if (config.distilled()) m.put("dist_token", new long[] {1, 1, d});
        m.put("pos_embed", new long[] {1, t, d});
        for (int l = 0; l < config.depth(); l++) {
            String n = "blocks." + l + ".";
            m.put(n + "norm1.weight", new long[] {d});
            m.put(n + "norm1.bias", new long[] {d});
            m.put(n + "attn.qkv.weight", new long[] {3 * d, d});
            m.put(n + "attn.qkv.bias", new long[] {3 * d});
            m.put(n + "attn.proj.weight", new long[] {d, d});
            m.put(n + "attn.proj.bias", new long[] {d});
            m.put(n + "norm2.weight", new long[] {d});
            m.put(n + "norm2.bias", new long[] {d});
            m.put(n + "mlp.fc1.weight", new long[] {h, d});
            m.put(n + "mlp.fc1.bias", new long[] {h});
            m.put(n + "mlp.fc2.weight", new long[] {d, h});
            m.put(n + "mlp.fc2.bias", new long[] {d});
        }
        m.put("norm.weight", new long[] {d});
        m.put("norm.bias", new long[] {d});
        m.put("head.weight", new long[] {c, d});
        m.put("head.bias", new long[] {c});
        if (config.distilled()) {
            m.put("head_dist.weight", new long[] {c, d});
            m.put("head_dist.bias", new long[] {c});
        }
        return m;
    }

    /** Floats a parameter of {@code n} floats takes in the flat buffers: n rounded up to {@link #ALIGNMENT}. */
    private static long padded(long n) {
        return add(n, ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    }

    private static long numel(long[] shape) {
        return mul(shape);
    }

    /**
     * Length of the flat parameter (and gradient) buffer of a model of {@code config}: every parameter padded to
     * {@link #ALIGNMENT}, summed without listing them (a config of any depth), saturating at {@link Long#MAX_VALUE}.
     */
    static long flatLength(VitConfig config) {
        final long t = config.tokens(), d = config.dim(), h = config.hidden(), c = config.classes();
        final long p = config.patch(), ch = config.channels(), dist = config.distilled() ? 1 : 0;
        // As parameterShapes: patch_embed.proj, cls_token, dist_token, pos_embed; per block 4 norm vectors, qkv,
        // proj, fc1, fc2; the final norm; head and head_dist.
        long stem = add(add(padded(mul(d, ch, p, p)), mul(2 + dist, padded(d))), padded(mul(t, d)));
        long block = add(add(mul(6, padded(d)), add(padded(mul(3, d, d)), padded(mul(3, d)))),
                add(add(padded(mul(d, d)), padded(mul(h, d))), add(padded(h), padded(mul(d, h)))));
        long heads = mul(1 + dist, add(padded(mul(c, d)), padded(c)));
        return add(add(stem, mul(config.depth(), block)), add(mul(2, padded(d)), heads));
    }

    /** How many tensors {@link #parameterShapes} lists, without listing them. */
    public static long parameterTensors(VitConfig config) {
        return 2 + 1 + 1 + 12L * config.depth() + 2 + 2 + (config.distilled() ? 3 : 0);
    }

    /** timm decays weight matrices and the patch-embedding kernel, not biases, norms, tokens or pos_embed. */
    private static boolean decays(String name) {
        return name.endsWith(".weight") && !name.contains("norm");
    }

    /**
     * The bytes of backend memory a model of {@code config} allocates for batches of {@code batch}: parameters,
     * gradients, every activation and the ops' workspaces, counted in 64 bits without allocating anything (the
     * workspaces come from the kernel library of {@code backend}). Exact below 2^50 bytes; beyond, where no
     * machine has the memory, the count without workspaces, or {@link Long#MAX_VALUE} when it does not fit 64 bits.
     */
    public static long bytesNeeded(Backend backend, VitConfig config, int batch) {
        return bytesNeeded(backend, config, batch, Precision.FP32);
    }

    /** {@link #bytesNeeded(Backend, VitConfig, int)} of a model computing in {@code precision}. */
    public static long bytesNeeded(Backend backend, VitConfig config, int batch, Precision precision) {
        Objects.requireNonNull(backend, "backend");
        Objects.requireNonNull(precision, "precision");
        if (batch < 1) throw new IllegalArgumentException("batch size must be >= 1, got " + batch);
        final long b = batch, t = config.tokens(), d = config.dim(), h = config.hidden(), c = config.classes();
        final long prefix = config.prefix(), heads = config.heads(), dist = config.distilled() ? 1 : 0;
        final long s = config.imageSize(), ch = config.channels();
        final boolean bf16 = precision == Precision.BF16;
        long block, floats, halves;  // per-block floats; floats and bf16 halves outside the blocks
        if (bf16) {
            // Per block: mid [b, t, d], the norms' mean/rstd, lse, fc1 [b, t, h] in fp32; in bf16 ln1, qkv (3), attn,
            // ln2 [b, t, d] and act [b, t, h]. Shared: the qkv scratch (3) [b, t, d] in fp32; in bf16 the
            // parameters' copy, the prefix rows, the gradients [b, t, max(d, h)] (or the logits' [b, c]) and dqkv (3).
            block = add(add(mul(b, t, d), mul(4, b, t)), add(mul(b, heads, t), mul(b, t, h)));
            floats = mul(3, b, t, d);
            halves = add(mul(config.depth(), add(mul(6, b, t, d), mul(b, t, h))),
                    add(add(flatLength(config), mul(prefix, b, d)),
                            add(Math.max(Math.max(mul(b, t, d), mul(b, t, h)), mul(b, c)), mul(3, b, t, d))));
        } else {
            // Per block: ln1, qkv (3), attn, mid, ln2 [b, t, d]; mean/rstd of both norms [b·t]; lse [b, heads, t];
            // fc1, act [b, t, h].
            block = add(add(mul(7, b, t, d), mul(4, b, t)), add(mul(b, heads, t), mul(2, b, t, h)));
            floats = 0;
            halves = 0;
        }
        floats = add(floats, mul(2, flatLength(config)));                   // values and gradients, padded
        floats = add(floats, mul(config.depth(), block));
        floats = add(floats, mul(b, ch, s, s));                               // input
        floats = add(floats, mul(config.depth() + 1L, b, t, d));              // residual stream
        // rows, normed (not in BF16), their grads; mean, rstd
        floats = add(floats, add(mul(bf16 ? 3 : 4, prefix, b, d), mul(2, prefix, b)));
        floats = add(floats, mul(2 + 2 * dist, b, c));                        // logits and their gradients
        // grads of stream, ln, attn, qkv (3; not in BF16), hidden
        floats = add(floats, add(mul(bf16 ? 3 : 6, b, t, d), mul(b, t, h)));
        long bytes = add(mul(floats, Float.BYTES), mul(halves, Short.BYTES));
        if (bytes >= 1L << 50) return bytes; // native size arithmetic is not meant for such shapes
        Kernels k = new Kernels(backend);
        long ln = Math.max(k.layerNormWorkspace(b * t, d), k.layerNormWorkspace(prefix * b, d));
        long pe = Distill4jNative.d4j_patch_embed_workspace(backend.kernels(), b, ch, s, s, config.patch(), d);
        long at = bf16 ? 0 : Distill4jNative.d4j_attention_workspace(backend.kernels(), b, t, heads, config.headDim());
        if (pe < 0) backend.check(1, "patch_embed workspace");
        if (at < 0) backend.check(1, "attention workspace");
        for (long ws : bf16 ? new long[] {ln, pe} : new long[] {ln, pe, at}) {
            bytes = add(bytes, Math.max(1, (ws + Float.BYTES - 1) / Float.BYTES) * Float.BYTES); // as the ops round
        }
        return bytes;
    }

    /**
     * Throws unless a model of {@code config} for batches of {@code batch} fits: its {@linkplain #bytesNeeded bytes}
     * within {@code maxBytes} and within the backend's {@linkplain Backend#availableBytes() free memory}, and its
     * Java objects (about {@value #HEAP_PER_BLOCK} bytes a block) within the free Java heap. The constructor runs
     * it with no limit of its own; a caller building a model from a file's config runs it first with the user's.
     *
     * @param maxBytes the caller's limit ({@link Long#MAX_VALUE}: none, only the free memory)
     * @throws MemoryLimitException naming the bytes needed and the limit
     */
    public static void checkMemory(Backend backend, VitConfig config, int batch, long maxBytes) {
        checkMemory(backend, config, batch, maxBytes, Precision.FP32);
    }

    /** {@link #checkMemory(Backend, VitConfig, int, long)} for a model computing in {@code precision}. */
    public static void checkMemory(Backend backend, VitConfig config, int batch, long maxBytes, Precision precision) {
        if (maxBytes < 1) throw new IllegalArgumentException("a memory limit must be >= 1 byte, got " + maxBytes);
        long bytes = bytesNeeded(backend, config, batch, precision);
        String memory = backend.isHostMemory() ? "host" : backend.device().toString();
        String what = "a model " + config + " for batches of " + batch + " needs "
                + MemoryLimitException.formatBytes(bytes) + " of " + memory
                + " memory (parameters, gradients, activations)";
        if (bytes > maxBytes) {
            throw new MemoryLimitException(what + ", more than the limit of "
                    + MemoryLimitException.formatBytes(maxBytes), bytes, maxBytes);
        }
        long available = backend.availableBytes();
        if (bytes > available) {
            throw new MemoryLimitException(what + ", more than the " + MemoryLimitException.formatBytes(available)
                    + " available", bytes, available);
        }
        long heap = add(mul(config.depth(), HEAP_PER_BLOCK), 1L << 20);
        long freeHeap = MemoryLimitException.freeHeap(heap);
        if (heap > freeHeap) {
            throw new MemoryLimitException("a model " + config + " needs about "
                    + MemoryLimitException.formatBytes(heap) + " of Java heap for the objects of its " + config.depth()
                    + " blocks, more than the " + MemoryLimitException.formatBytes(freeHeap) + " free (raise -Xmx)",
                    heap, freeHeap);
        }
    }

    /** Saturating products and sums: a size past 2^63 stays {@link Long#MAX_VALUE}, never wraps. */
    private static long mul(long... factors) {
        long r = 1;
        for (long f : factors) r = f != 0 && r > Long.MAX_VALUE / f ? Long.MAX_VALUE : r * f;
        return r;
    }

    private static long add(long a, long b) {
        return a > Long.MAX_VALUE - b ? Long.MAX_VALUE : a + b;
    }

    private Tensor tensor(long... shape) {
        Tensor t = Tensor.empty(backend, shape);
        owned.add(t);
        return t;
    }

    private Bf16Tensor bf16(long... shape) {
        Bf16Tensor t = Bf16Tensor.empty(backend, shape);
        ownedBf16.add(t);
        return t;
    }

    /** Where {@code p}'s value sits in the parameters' bf16 copy (the same offset as in the flat buffer). */
    private ShortPointer bf16View(Parameter p) {
        return Kernels.at(parameterBf16.data(), p.offset());
    }

    /**
     * timm's init (see the constructor), drawn in parameter order from one seeded stream, a chunk at a time: the
     * Java heap it takes does not grow with the model.
     */
    private void initialise(long seed) {
        SplittableRandom rng = new SplittableRandom(seed);
        float[] v = new float[INIT_CHUNK];
        double bound = 1.0 / Math.sqrt((double) config.channels() * config.patch() * config.patch());
        for (Parameter p : parameters) {
            String n = p.name();
            for (long done = 0; done < p.numel(); done += INIT_CHUNK) {
                int count = (int) Math.min(INIT_CHUNK, p.numel() - done);
                if (p == patchWeight || p == patchBias) {
                    for (int i = 0; i < count; i++) v[i] = (float) ((rng.nextDouble() * 2 - 1) * bound);
                } else if (n.endsWith("norm1.weight") || n.endsWith("norm2.weight") || n.equals("norm.weight")) {
                    java.util.Arrays.fill(v, 0, count, 1f);
                } else if (p.weightDecay() || p == clsToken || p == distToken || p == posEmbed) {
                    for (int i = 0; i < count; i++) v[i] = (float) truncatedNormal(rng, 0.02, 2.0);
                } else {
                    java.util.Arrays.fill(v, 0, count, 0f); // biases
                }
                p.value().copyFrom(done, v, 0, count);
            }
        }
    }

    /** Normal(0, std) cut at ±bound (absolute, as timm's trunc_normal_), by rejection. */
    private static double truncatedNormal(SplittableRandom rng, double std, double bound) {
        while (true) {
            double u1 = rng.nextDouble(), u2 = rng.nextDouble(); // Box-Muller
            double z = std * Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2);
            if (Math.abs(z) <= bound) return z;
        }
    }

    /** The configuration. */
    public VitConfig config() {
        return config;
    }

    /** The arithmetic of the forward and backward passes. */
    public Precision precision() {
        return precision;
    }

    /** The batch size every buffer is sized for. */
    public int batch() {
        return batch;
    }

    /** The backend holding every tensor of the model. */
    public Backend backend() {
        return backend;
    }

    /**
     * Every parameter's value in one buffer of the backend's memory: each {@link Parameter#value()} is a view of
     * it at {@link Parameter#offset()}, weight-decayed parameters first ({@link #decayedLength()} floats), then
     * the others, each starting at a multiple of {@link #ALIGNMENT} floats; the gaps hold zeros. For an optimizer
     * that updates all parameters in one or two calls; read parameters through {@link #parameters()}.
     */
    public Tensor parameterBuffer() {
        checkOpen();
        return parameterBuffer;
    }

    /** Every parameter's gradient in one buffer, laid out as {@link #parameterBuffer()}; the gaps hold zeros. */
    public Tensor gradientBuffer() {
        checkOpen();
        return gradientBuffer;
    }

    /**
     * How many floats at the start of the {@linkplain #parameterBuffer() flat buffers} hold the weight-decayed
     * parameters (with their gaps): the rest holds those AdamW does not decay.
     */
    public long decayedLength() {
        return decayedLength;
    }

    /** The parameters in timm's state-dict order and names. */
    public List<Parameter> parameters() {
        return Collections.unmodifiableList(parameters);
    }

    /** The parameter called {@code name} (timm's name), or null. */
    public Parameter parameter(String name) {
        return byName.get(name);
    }

    /** The model's input buffer [B, C, H, W]: copy a batch here, then call {@link #forward()}. */
    public Tensor input() {
        return images;
    }

    /** The class head's logits [B, classes] of the last forward. */
    public Tensor logits() {
        return logits;
    }

    /** The distillation head's logits [B, classes] of the last forward; null when not distilled. */
    public Tensor distLogits() {
        return distLogits;
    }

    /** Where the loss writes d loss / d {@link #logits()} before {@link #backward()}. */
    public Tensor logitsGrad() {
        return gradLogits;
    }

    /** Where the loss writes d loss / d {@link #distLogits()}; null when not distilled. */
    public Tensor distLogitsGrad() {
        return gradDistLogits;
    }

    /** Copies {@code batchImages} ([B, C, H, W], row-major) into {@link #input()} and runs {@link #forward()}. */
    public void forward(float[] batchImages) {
        confinement.enter();
        try {
            checkOpen();
            images.copyFrom(batchImages);
            forward();
        } finally {
            confinement.exit();
        }
    }

    /**
     * The forward pass on {@link #input()}: fills {@link #logits()} and {@link #distLogits()} and keeps what the
     * backward needs. Queued on the backend's stream.
     */
    public void forward() {
        confinement.enter();
        try {
            checkOpen();
            final long b = batch, t = config.tokens(), d = config.dim(), h = config.hidden(), c = config.classes();
            final long m = b * t, prefix = config.prefix();
            if (precision == Precision.BF16) {
                forwardBf16();
                return;
            }
            final int gemm = gemmPrecision();
            patchEmbed.forward(images, patchWeight.value(), patchBias.value(), posEmbed.value(), clsToken.value(),
                    distToken == null ? null : distToken.value(), x[0]);
            for (int l = 0; l < blocks.length; l++) {
                Block k = blocks[l];
                kernels.layerNorm(x[l].data(), k.norm1Weight.value().data(), k.norm1Bias.value().data(), m, d,
                        k.ln1.data(), k.mean1.data(), k.rstd1.data());
                kernels.linear(k.ln1.data(), k.qkvWeight.value().data(), k.qkvBias.value().data(), null, m, d, 3 * d,
                        k.qkv.data(), gemm);
                attention.forward(k.qkv, k.attn, k.lse);
                kernels.linear(k.attn.data(), k.projWeight.value().data(), k.projBias.value().data(), x[l].data(), m, d,
                        d, k.mid.data(), gemm);
                kernels.layerNorm(k.mid.data(), k.norm2Weight.value().data(), k.norm2Bias.value().data(), m, d,
                        k.ln2.data(), k.mean2.data(), k.rstd2.data());
                kernels.linear(k.ln2.data(), k.fc1Weight.value().data(), k.fc1Bias.value().data(), null, m, d, h,
                        k.fc1.data(), gemm);
                kernels.gelu(k.fc1.data(), m * h, k.act.data());
                kernels.linear(k.act.data(), k.fc2Weight.value().data(), k.fc2Bias.value().data(), k.mid.data(), m, h,
                        d, x[l + 1].data(), gemm);
            }
            kernels.tokenRows(x[blocks.length].data(), b, t, d, prefix, rows.data());
            kernels.layerNorm(rows.data(), normWeight.value().data(), normBias.value().data(), prefix * b, d,
                    rowsNormed.data(), rowsMean.data(), rowsRstd.data());
            kernels.linear(rowsNormed.data(), headWeight.value().data(), headBias.value().data(), null, b, d, c,
                    logits.data(), gemm);
            if (distLogits != null) {
                kernels.linear(rowsNormedDist, headDistWeight.value().data(), headDistBias.value().data(), null, b, d, c,
                        distLogits.data(), gemm);
            }
        } finally {
            confinement.exit();
        }
    }

    /**
     * The backward pass from {@link #logitsGrad()} (and {@link #distLogitsGrad()} when distilled), after
     * {@link #forward()}: every parameter gradient ACCUMULATES, as autograd's {@code .grad}; call
     * {@link #zeroGrad()} once per step.
     */
    public void backward() {
        confinement.enter();
        try {
            checkOpen();
            final long b = batch, t = config.tokens(), d = config.dim(), h = config.hidden(), c = config.classes();
            final long m = b * t, prefix = config.prefix();
            if (precision == Precision.BF16) {
                backwardBf16();
                return;
            }
            final int gemm = gemmPrecision();
            kernels.linearBackward(rowsNormed.data(), headWeight.value().data(), gradLogits.data(), b, d, c,
                    gradRowsNormed.data(), headWeight.grad().data(), headBias.grad().data(), gemm);
            if (distLogits != null) {
                kernels.linearBackward(rowsNormedDist, headDistWeight.value().data(), gradDistLogits.data(), b, d, c,
                        gradRowsNormedDist, headDistWeight.grad().data(), headDistBias.grad().data(), gemm);
            }
            gradRows.zero(); // LayerNorm's backward accumulates into dx
            kernels.layerNormBackward(rows.data(), normWeight.value().data(), rowsMean.data(), rowsRstd.data(),
                    gradRowsNormed.data(), prefix * b, d, gradRows.data(), normWeight.grad().data(),
                    normBias.grad().data(), lnWorkspace.data());
            // Starts the residual stream's gradient: the prefix rows get the heads' gradient, the patch rows 0.
            kernels.tokenRowsBackward(gradRows.data(), b, t, d, prefix, gradStream.data());
            for (int l = blocks.length - 1; l >= 0; l--) {
                Block k = blocks[l];
                // gradStream = d x[l+1]; x[l+1] = mid + fc2(act): it is also mid's gradient through the skip.
                kernels.linearBackward(k.act.data(), k.fc2Weight.value().data(), gradStream.data(), m, h, d,
                        gradHidden.data(), k.fc2Weight.grad().data(), k.fc2Bias.grad().data(), gemm);
                kernels.geluBackward(k.fc1.data(), gradHidden.data(), m * h, gradHidden.data());
                kernels.linearBackward(k.ln2.data(), k.fc1Weight.value().data(), gradHidden.data(), m, d, h,
                        gradLn.data(), k.fc1Weight.grad().data(), k.fc1Bias.grad().data(), gemm);
                kernels.layerNormBackward(k.mid.data(), k.norm2Weight.value().data(), k.mean2.data(), k.rstd2.data(),
                        gradLn.data(), m, d, gradStream.data(), k.norm2Weight.grad().data(), k.norm2Bias.grad().data(),
                        lnWorkspace.data());
                // gradStream = d mid; mid = x[l] + proj(attn).
                kernels.linearBackward(k.attn.data(), k.projWeight.value().data(), gradStream.data(), m, d, d,
                        gradAttn.data(), k.projWeight.grad().data(), k.projBias.grad().data(), gemm);
                attention.backward(k.qkv, k.attn, k.lse, gradAttn, gradQkv);
                kernels.linearBackward(k.ln1.data(), k.qkvWeight.value().data(), gradQkv.data(), m, d, 3 * d,
                        gradLn.data(), k.qkvWeight.grad().data(), k.qkvBias.grad().data(), gemm);
                kernels.layerNormBackward(x[l].data(), k.norm1Weight.value().data(), k.mean1.data(), k.rstd1.data(),
                        gradLn.data(), m, d, gradStream.data(), k.norm1Weight.grad().data(), k.norm1Bias.grad().data(),
                        lnWorkspace.data());
            }
            patchEmbed.backward(images, patchWeight.value(), gradStream, patchWeight.grad(), patchBias.grad(),
                    posEmbed.grad(), clsToken.grad(), distToken == null ? null : distToken.grad(), null);
        } finally {
            confinement.exit();
        }
    }

    /** The fp32 linear layers' GEMM arithmetic: 1 for TF32, 0 for FP32 (d4j_linear_*'s precision argument). */
    private int gemmPrecision() {
        return precision == Precision.TF32 ? 1 : 0;
    }

    /** {@link #forward()} in {@link Precision#BF16} (see the class comment). */
    private void forwardBf16() {
        final long b = batch, t = config.tokens(), d = config.dim(), h = config.hidden(), c = config.classes();
        final long m = b * t, prefix = config.prefix(), heads = config.heads(), dh = config.headDim();
        final float scale = (float) (1 / Math.sqrt(dh));
        kernels.toBf16(parameterBuffer.data(), parameterBuffer.numel(), parameterBf16.data());
        patchEmbed.forward(images, patchWeight.value(), patchBias.value(), posEmbed.value(), clsToken.value(),
                distToken == null ? null : distToken.value(), x[0]);
        for (int l = 0; l < blocks.length; l++) {
            Block k = blocks[l];
            kernels.layerNormBf16(x[l].data(), k.norm1Weight.value().data(), k.norm1Bias.value().data(), m, d,
                    k.ln1Bf16.data(), k.mean1.data(), k.rstd1.data());
            kernels.linearBf16(k.ln1Bf16.data(), k.qkvWeightBf16, k.qkvBias.value().data(), null, m, d, 3 * d,
                    k.qkv.data());
            kernels.toBf16(k.qkv.data(), m * 3 * d, k.qkvBf16.data());
            kernels.attentionBf16(k.qkvBf16.data(), b, t, heads, dh, scale, k.attnBf16.data(), k.lse.data());
            kernels.linearBf16(k.attnBf16.data(), k.projWeightBf16, k.projBias.value().data(), x[l].data(), m, d, d,
                    k.mid.data());
            kernels.layerNormBf16(k.mid.data(), k.norm2Weight.value().data(), k.norm2Bias.value().data(), m, d,
                    k.ln2Bf16.data(), k.mean2.data(), k.rstd2.data());
            kernels.linearBf16(k.ln2Bf16.data(), k.fc1WeightBf16, k.fc1Bias.value().data(), null, m, d, h,
                    k.fc1.data());
            kernels.geluBf16(k.fc1.data(), m * h, k.actBf16.data());
            kernels.linearBf16(k.actBf16.data(), k.fc2WeightBf16, k.fc2Bias.value().data(), k.mid.data(), m, h, d,
                    x[l + 1].data());
        }
        kernels.tokenRows(x[blocks.length].data(), b, t, d, prefix, rows.data());
        kernels.layerNormBf16(rows.data(), normWeight.value().data(), normBias.value().data(), prefix * b, d,
                rowsNormedBf16.data(), rowsMean.data(), rowsRstd.data());
        kernels.linearBf16(rowsNormedBf16.data(), headWeightBf16, headBias.value().data(), null, b, d, c,
                logits.data());
        if (distLogits != null) {
            kernels.linearBf16(rowsNormedDistBf16, headDistWeightBf16, headDistBias.value().data(), null, b, d, c,
                    distLogits.data());
        }
    }

    /** {@link #backward()} in {@link Precision#BF16}: each linear layer's upstream gradient rounded to bf16 first. */
    private void backwardBf16() {
        final long b = batch, t = config.tokens(), d = config.dim(), h = config.hidden(), c = config.classes();
        final long m = b * t, prefix = config.prefix(), heads = config.heads(), dh = config.headDim();
        final float scale = (float) (1 / Math.sqrt(dh));
        final ShortPointer dy = gradBf16.data();
        kernels.toBf16(gradLogits.data(), b * c, dy);
        kernels.linearBf16Backward(rowsNormedBf16.data(), headWeightBf16, dy, b, d, c, gradRowsNormed.data(),
                headWeight.grad().data(), headBias.grad().data());
        if (distLogits != null) {
            kernels.toBf16(gradDistLogits.data(), b * c, dy);
            kernels.linearBf16Backward(rowsNormedDistBf16, headDistWeightBf16, dy, b, d, c, gradRowsNormedDist,
                    headDistWeight.grad().data(), headDistBias.grad().data());
        }
        gradRows.zero(); // LayerNorm's backward accumulates into dx
        kernels.layerNormBackward(rows.data(), normWeight.value().data(), rowsMean.data(), rowsRstd.data(),
                gradRowsNormed.data(), prefix * b, d, gradRows.data(), normWeight.grad().data(),
                normBias.grad().data(), lnWorkspace.data());
        kernels.tokenRowsBackward(gradRows.data(), b, t, d, prefix, gradStream.data());
        for (int l = blocks.length - 1; l >= 0; l--) {
            Block k = blocks[l];
            kernels.toBf16(gradStream.data(), m * d, dy);
            kernels.linearBf16Backward(k.actBf16.data(), k.fc2WeightBf16, dy, m, h, d, gradHidden.data(),
                    k.fc2Weight.grad().data(), k.fc2Bias.grad().data());
            kernels.geluBackwardBf16(k.fc1.data(), gradHidden.data(), m * h, dy);
            kernels.linearBf16Backward(k.ln2Bf16.data(), k.fc1WeightBf16, dy, m, d, h, gradLn.data(),
                    k.fc1Weight.grad().data(), k.fc1Bias.grad().data());
            kernels.layerNormBackward(k.mid.data(), k.norm2Weight.value().data(), k.mean2.data(), k.rstd2.data(),
                    gradLn.data(), m, d, gradStream.data(), k.norm2Weight.grad().data(), k.norm2Bias.grad().data(),
                    lnWorkspace.data());
            kernels.toBf16(gradStream.data(), m * d, dy);
            kernels.linearBf16Backward(k.attnBf16.data(), k.projWeightBf16, dy, m, d, d, gradAttn.data(),
                    k.projWeight.grad().data(), k.projBias.grad().data());
            // dy is free again (the projection's backward precedes on the stream): it takes the attention's dout.
            kernels.toBf16(gradAttn.data(), m * d, dy);
            kernels.attentionBf16Backward(k.qkvBf16.data(), k.attnBf16.data(), k.lse.data(), dy, b, t, heads, dh,
                    scale, gradQkvBf16.data());
            kernels.linearBf16Backward(k.ln1Bf16.data(), k.qkvWeightBf16, gradQkvBf16.data(), m, d, 3 * d,
                    gradLn.data(), k.qkvWeight.grad().data(), k.qkvBias.grad().data());
            kernels.layerNormBackward(x[l].data(), k.norm1Weight.value().data(), k.mean1.data(), k.rstd1.data(),
                    gradLn.data(), m, d, gradStream.data(), k.norm1Weight.grad().data(), k.norm1Bias.grad().data(),
                    lnWorkspace.data());
        }
        patchEmbed.backward(images, patchWeight.value(), gradStream, patchWeight.grad(), patchBias.grad(),
                posEmbed.grad(), clsToken.grad(), distToken == null ? null : distToken.grad(), null);
    }

    /** Sets every parameter gradient to 0. */
    public void zeroGrad() {
        confinement.enter();
        try {
            checkOpen();
            gradientBuffer.zero();  // one memset: the gaps too, so they stay zero whatever wrote there
        } finally {
            confinement.exit();
        }
    }

    /**
     * Inference as DeiT: the forward pass on {@code batchImages} [B, C, H, W], then the average of the two heads'
     * logits (the class head alone when not distilled), copied to the host.
     *
     * @return [B, classes] logits, row-major
     */
    public float[] predict(float[] batchImages) {
        confinement.enter();
        try {
            forward(batchImages);
            float[] out = logits.toArray();
            if (distLogits != null) {
                float[] dist = distLogits.toArray();
                for (int i = 0; i < out.length; i++) out[i] = 0.5f * (out[i] + dist[i]);
            }
            return out;
        } finally {
            confinement.exit();
        }
    }

    /** Frees every tensor and op workspace. Closing twice is harmless. */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        for (Tensor t : owned) t.close();
        for (Bf16Tensor t : ownedBf16) t.close();
        patchEmbed.close();
        if (attention != null) attention.close();
    }

    private void checkOpen() {
        if (closed) throw new IllegalStateException("the model " + config.name() + " is closed");
    }

    @Override
    public String toString() {
        return "VisionTransformer[" + config + ", batch " + batch + (precision == Precision.FP32 ? ""
                : ", " + precision.cliName()) + " on " + backend.device() + "]";
    }
}
