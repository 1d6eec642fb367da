package org.distill4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.OptimizerParamGroup;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.distill4j.Device;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.backend.CpuBackend;
import org.distill4j.nn.Parameter;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.ops.AdamW;
import org.distill4j.reference.AdamWFloat64;
import org.distill4j.testing.Check;
import org.distill4j.testing.CountingBackend;
import org.junit.jupiter.api.Test;

/**
 * The trainer's optimizer over the model's flat buffers against libtorch: torch::optim::AdamW with two param
 * groups (weight decay wd for the weight matrices, 0 for the rest) after torch::nn::utils::clip_grad_norm_, in
 * float64, on fresh random parameters and gradients, on the CPU and the emulated CUDA kernels; the flat layout
 * (aligned, disjoint, decayed first); zeroGrad clearing the whole gradient buffer; and the kernel calls a step makes.
 */
@SuppressWarnings("try")
class FlatAdamWTest {
    private static final int STEPS = 3;
    private static final float[] LR = {1e-2f, 5e-3f, 2e-3f};  // a schedule's values: each step its own
    private static final float WD = 0.05f;
    // Gaps after the two head biases (5 classes); every other size is a multiple of the head dim, 32.
    private static final VitConfig CONFIG = VitConfig.of(12, 4, 3, 5, 32, 2, 1, 2, true);

    @Test
    void aStepIsLibtorchAdamWWithTwoParamGroupsAfterClipGradNorm() {
        long seed = Check.freshSeed();
        for (Device d : new Device[] {Device.cpu(), Device.cudaEmu()}) {
            // clip 1.0 (the norm is ≈ 50: clipping applies) and none (formed, not applied)
            for (float clip : new float[] {1.0f, 0f}) {
                Random rng = new Random(seed);
                String what = "seed=" + seed + " " + d + " clip=" + clip;
                try (Backend be = Backends.open(d); VisionTransformer model = new VisionTransformer(be, CONFIG, 1, 0);
                     FlatAdamW ours = new FlatAdamW(model, AdamW.builder().build(), WD, clip);
                     PointerScope ignored = new PointerScope()) {
                    List<Parameter> params = model.parameters();
                    Map<String, float[]> p0 = new TreeMap<>();
                    for (Parameter p : params) {
                        p0.put(p.name(), Check.normal(rng, (int) p.numel(), 1));
                        p.value().copyFrom(p0.get(p.name()));
                    }
                    Torch ref = new Torch(params, p0, clip);
                    float[] stale = new float[(int) model.gradientBuffer().numel()];
                    Arrays.fill(stale, Float.NaN);
                    for (int k = 0; k < STEPS; k++) {
                        // What a backward pass leaves: stale memory everywhere (gaps too), cleared, then each
                        // parameter's gradient written through its view.
                        model.gradientBuffer().copyFrom(stale);
                        model.zeroGrad();
                        Map<String, float[]> g = new TreeMap<>();
                        for (Parameter p : params) {
                            g.put(p.name(), Check.normal(rng, (int) p.numel(), 0.5));
                            p.grad().copyFrom(g.get(p.name()));
                        }
                        ours.computeNorm();
                        ours.update(k + 1, LR[k]);
                        double refNorm = ref.step(g, LR[k]);
                        float norm = ours.norm().normValue();
                        assertTrue(Math.abs(norm - refNorm) <= 1e-5 * refNorm, what + " step " + (k + 1) + ": norm "
                                + norm + " vs clip_grad_norm_'s " + refNorm);
                    }
                    for (Parameter p : params) {
                        assertSameUpdate(p.value().toArray(), ref.value(p.name()), p0.get(p.name()),
                                what + " " + p.name() + (p.weightDecay() ? " (decayed)" : " (not decayed)"));
                    }
                    assertGapsAreZero(model, model.parameterBuffer().toArray(), what + ": parameter buffer");
                }
            }
        }
    }

    /**
     * The parameter against libtorch's float64 one, and its update (p − p0, which p0 dominates in p's norm):
     * ‖Δours − Δref‖ ≤ 1e-4·‖Δref‖ + STEPS·‖ulp(p)‖, the second term fp32's own rounding of p, half an ulp a step (as
     * AdamWTest). A decay of the undecayed group (lr·wd·|p| ≈ 5e-4 a step against updates of ≈ lr) fails it.
     */
    private static void assertSameUpdate(float[] ours, double[] ref, float[] p0, String what) {
        double diff = 0, norm = 0, ulps = 0;
        for (int i = 0; i < ours.length; i++) {
            double dRef = ref[i] - p0[i], e = (ours[i] - p0[i]) - dRef;
            diff += e * e;
            norm += dRef * dRef;
            double u = STEPS * Math.ulp(Math.max(Math.abs(p0[i]), Math.abs(ours[i])));
            ulps += u * u;
        }
        double allowed = 1e-4 * Math.sqrt(norm) + Math.sqrt(ulps);
        assertTrue(Math.sqrt(diff) <= allowed, what + ": update error " + Math.sqrt(diff) + " > " + allowed);
        assertTrue(Check.relErr(ours, ref) <= 1e-5, what + ": rel err " + Check.relErr(ours, ref));
    }

    /** Elements of a flat buffer that belong to no parameter are exactly 0 (NaN fails). */
    private static void assertGapsAreZero(VisionTransformer model, float[] flat, String what) {
        boolean[] used = new boolean[flat.length];
        for (Parameter p : model.parameters()) Arrays.fill(used, (int) p.offset(), (int) (p.offset() + p.numel()), true);
        for (int i = 0; i < flat.length; i++) {
            if (!used[i]) assertTrue(flat[i] == 0f, what + ": gap element " + i + " is " + flat[i]);
        }
    }

    /** torch::optim::AdamW over float64 copies of the parameters, two param groups, clip_grad_norm_ first. */
    private static final class Torch {
        final Map<String, org.bytedeco.pytorch.Tensor> byName = new TreeMap<>();
        final TensorVector all = new TensorVector();
        final org.bytedeco.pytorch.AdamW optimizer;
        final double maxNorm;

        Torch(List<Parameter> params, Map<String, float[]> p0, float clip) {
            TensorVector decayed = new TensorVector(), others = new TensorVector();
            for (Parameter p : params) {
                float[] v = p0.get(p.name());
                org.bytedeco.pytorch.Tensor t = AbstractTensor.create(v, v.length).to(ScalarType.Double);
                t.set_requires_grad(true);
                byName.put(p.name(), t);
                all.push_back(t);
                (p.weightDecay() ? decayed : others).push_back(t);
            }
            AdamW ours = AdamW.builder().build();
            optimizer = new org.bytedeco.pytorch.AdamW(decayed, options(ours, WD));
            optimizer.add_param_group(new OptimizerParamGroup(others, options(ours, 0f)));
            // clip_grad_norm_ with an infinite threshold multiplies by 1: the norm, unclipped.
            maxNorm = clip > 0 ? AdamWFloat64.decimal(clip) : Double.POSITIVE_INFINITY;
        }

        /** The options of a PyTorch user who typed our hyper-parameters (see AdamWFloat64.decimal). */
        static AdamWOptions options(AdamW ours, float weightDecay) {
            AdamWOptions o = new AdamWOptions(AdamWFloat64.decimal(ours.lr()));
            DoublePointer betas = o.betas();  // a std::tuple<double, double>: find which slot holds beta1 (0.9)
            int first = betas.get(0) == 0.9 ? 0 : 1;
            betas.put(first, AdamWFloat64.decimal(ours.beta1()));
            betas.put(1 - first, AdamWFloat64.decimal(ours.beta2()));
            o.eps().put(AdamWFloat64.decimal(ours.eps()));
            o.weight_decay().put(AdamWFloat64.decimal(weightDecay));
            return o;
        }

        /** Sets the gradients, clips, steps at {@code lr}; returns clip_grad_norm_'s total norm. */
        double step(Map<String, float[]> grads, float lr) {
            for (Map.Entry<String, org.bytedeco.pytorch.Tensor> e : byName.entrySet()) {
                float[] g = grads.get(e.getKey());
                e.getValue().mutable_grad().put(AbstractTensor.create(g, g.length).to(ScalarType.Double));
            }
            double norm = torch.clip_grad_norm_(all, maxNorm, 2.0, false);
            for (long i = 0; i < optimizer.param_groups().size(); i++) {
                optimizer.param_groups().get(i).options().set_lr(AdamWFloat64.decimal(lr));
            }
            optimizer.step();
            return norm;
        }

        double[] value(String name) {
            org.bytedeco.pytorch.Tensor t = byName.get(name);
            double[] out = new double[(int) t.numel()];
            t.contiguous().data_ptr_double().get(out);
            return out;
        }
    }

    @Test
    void theFlatLayoutIsAlignedDisjointAndDecayedFirst() {
        for (VitConfig config : List.of(CONFIG, VitConfig.preset("mnist-student"), VitConfig.of(8, 8, 1, 1, 32, 1, 1, 1, false))) {
            try (Backend be = CpuBackend.open(); VisionTransformer model = new VisionTransformer(be, config, 1, 0)) {
                List<Parameter> byOffset = new ArrayList<>(model.parameters());
                byOffset.sort((a, b) -> Long.compare(a.offset(), b.offset()));
                long end = 0;
                boolean decayed = true;
                for (Parameter p : byOffset) {
                    String what = config + " " + p.name() + " at " + p.offset();
                    assertEquals(0, p.offset() % VisionTransformer.ALIGNMENT, what + ": not aligned");
                    assertEquals(0, p.value().data().address() % 64, what + ": value not 64-byte aligned");
                    assertEquals(0, p.grad().data().address() % 64, what + ": grad not 64-byte aligned");
                    assertTrue(p.offset() >= end, what + ": overlaps the parameter before it (ending at " + end + ")");
                    assertTrue(p.offset() - end < VisionTransformer.ALIGNMENT, what + ": a gap of a whole alignment");
                    assertTrue(decayed || !p.weightDecay(), what + ": a decayed parameter after an undecayed one");
                    assertEquals(p.weightDecay(), p.offset() < model.decayedLength(), what + ": on the wrong side");
                    decayed = p.weightDecay();
                    end = p.offset() + p.numel();
                }
                assertTrue(end <= model.parameterBuffer().numel()
                        && model.parameterBuffer().numel() - end < VisionTransformer.ALIGNMENT, config + ": tail");
                assertEquals(model.parameterBuffer().numel(), model.gradientBuffer().numel());
            }
        }
    }

    @Test
    void zeroGradClearsTheWholeGradientBuffer() {
        for (Device d : new Device[] {Device.cpu(), Device.cudaEmu()}) {
            try (Backend be = Backends.open(d); VisionTransformer model = new VisionTransformer(be, CONFIG, 1, 0)) {
                float[] stale = new float[(int) model.gradientBuffer().numel()];
                Arrays.fill(stale, Float.NaN);
                model.gradientBuffer().copyFrom(stale);
                model.zeroGrad();
                float[] after = model.gradientBuffer().toArray();
                for (int i = 0; i < after.length; i++) assertTrue(after[i] == 0f, d + ": element " + i + " is " + after[i]);
                for (Parameter p : model.parameters()) {
                    for (float x : p.grad().toArray()) assertTrue(x == 0f, d + " " + p.name());
                }
            }
        }
    }

    /**
     * Kernel calls of the optimizer, the gradient norm and zeroGrad in one trainer step of deit-tiny-distilled,
     * counted by a backend that forwards to the CPU one: a constant few, not some per parameter tensor.
     */
    @Test
    void aTrainerStepOfDeitTinyMakesFiveCallsForZeroingNormAndAdamW() {
        VitConfig deit = VitConfig.preset("deit-tiny-distilled");
        try (CountingBackend be = new CountingBackend(); VisionTransformer model = new VisionTransformer(be, deit, 1, 0);
             Trainer trainer = new Trainer(model, null, new TrainOptions().withEpochs(1).withBatch(1), 10)) {
            be.counts.clear();
            model.zeroGrad();
            assertEquals(Map.of("zero", 1), be.counts, "zeroGrad");
            Random rng = new Random(Check.freshSeed());
            float[] images = Check.normal(rng, 3 * 224 * 224, 1);
            be.counts.clear();
            trainer.step(images, new int[] {rng.nextInt(deit.classes())}, null);
            assertEquals(1, be.counts.get("sum_squares"), "sum_squares calls: " + be.counts);
            assertEquals(1, be.counts.get("clip_scale"), "clip_scale calls: " + be.counts);
            assertEquals(2, be.counts.get("adamw"), "adamw calls: " + be.counts);
            System.out.println("FlatAdamWTest: one trainer step of deit-tiny-distilled (" + model.parameters().size()
                    + " parameter tensors) made these backend calls: " + be.counts);
        }
    }

}
