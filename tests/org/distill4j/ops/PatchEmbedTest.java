package org.distill4j.ops;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.reference.TorchPatchEmbed;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The fused patch embedding against libtorch (conv2d + flatten/transpose + cat + add, every gradient by autograd,
 * in float64 so that only our error shows), CPU against the emulated CUDA kernels and against CUDA, bad input,
 * accumulation and allocation behaviour.
 *
 * <p>Tolerance 1e-5 relative (‖ours − ref‖/‖ref‖, fp32 against float64): the longest fp32 sums here have
 * K = 768 terms (tokens, dImages has D = 192) and B·N = 980 (dWeight); their expected relative error is about
 * √n · 2⁻²⁴ ≈ 2e-6 at worst, observed 1e-7 to 1e-6. The emulated-CUDA and CUDA comparisons use the same bound.
 */
class PatchEmbedTest {
    private static final double TOL = 1e-5;
    private static Backend cpu;
    private static Backend emu;

    @BeforeAll
    static void open() {
        cpu = CpuBackend.open();
        emu = CpuBackend.openCudaEmulator();
    }

    @AfterAll
    static void close() {
        cpu.close();
        emu.close();
    }

    /** A shape: B, Cin, H, W, P, D and the prefix tokens (0, 1 = class, 2 = class + distillation). */
    record Shape(int b, int c, int h, int w, int p, int d, int prefix) {
        int tokens() {
            return prefix + (h / p) * (w / p);
        }

        PatchEmbed op(Backend be) {
            return PatchEmbed.builder().batch(b).channels(c).image(h, w).patch(p).dim(d).prefixTokens(prefix).build(be);
        }

        @Override
        public String toString() {
            return "B=" + b + " Cin=" + c + " H=" + h + " W=" + w + " P=" + p + " D=" + d + " prefix=" + prefix;
        }
    }

    /** Random inputs of one case; parameter gradients start from random values to check that they accumulate. */
    record Inputs(float[] images, float[] weight, float[] bias, float[] pos, float[] cls, float[] dist, float[] dTokens,
                  float[] dWeight0, float[] dBias0, float[] dPos0, float[] dCls0, float[] dDist0) {
        static Inputs random(Shape s, Random rng) {
            int t = s.tokens(), k = s.c() * s.p() * s.p();
            return new Inputs(Check.normal(rng, s.b() * s.c() * s.h() * s.w(), 1), Check.normal(rng, s.d() * k, 0.05),
                    Check.normal(rng, s.d(), 0.5), Check.normal(rng, t * s.d(), 0.5),
                    s.prefix() >= 1 ? Check.normal(rng, s.d(), 0.5) : null,
                    s.prefix() == 2 ? Check.normal(rng, s.d(), 0.5) : null, Check.normal(rng, s.b() * t * s.d(), 1),
                    Check.normal(rng, s.d() * k, 1), Check.normal(rng, s.d(), 1), Check.normal(rng, t * s.d(), 1),
                    s.prefix() >= 1 ? Check.normal(rng, s.d(), 1) : null,
                    s.prefix() == 2 ? Check.normal(rng, s.d(), 1) : null);
        }
    }

    /** Tokens and gradients of one forward + {@code backwards} backward calls (dImages null unless asked). */
    record Out(float[] tokens, float[] dWeight, float[] dBias, float[] dPos, float[] dCls, float[] dDist,
               float[] dImages) {
        float[][] all() {
            return new float[][] {tokens, dWeight, dBias, dPos, dCls, dDist, dImages};
        }
    }

    static Out run(Backend be, Shape s, Inputs in, boolean imageGrad, int backwards) {
        try (PatchEmbed op = s.op(be);
             Tensor images = Tensor.of(be, in.images(), op.imagesShape());
             Tensor weight = Tensor.of(be, in.weight(), op.weightShape()); Tensor bias = Tensor.of(be, in.bias(), s.d());
             Tensor pos = Tensor.of(be, in.pos(), op.posShape());
             Tensor cls = in.cls() == null ? null : Tensor.of(be, in.cls(), op.prefixTokenShape());
             Tensor dist = in.dist() == null ? null : Tensor.of(be, in.dist(), op.prefixTokenShape());
             Tensor tokens = Tensor.empty(be, op.tokensShape()); Tensor dTokens = Tensor.of(be, in.dTokens(), op.tokensShape());
             Tensor dWeight = Tensor.of(be, in.dWeight0(), op.weightShape()); Tensor dBias = Tensor.of(be, in.dBias0(), s.d());
             Tensor dPos = Tensor.of(be, in.dPos0(), op.posShape());
             Tensor dCls = in.cls() == null ? null : Tensor.of(be, in.dCls0(), op.prefixTokenShape());
             Tensor dDist = in.dist() == null ? null : Tensor.of(be, in.dDist0(), op.prefixTokenShape());
             Tensor dImages = imageGrad ? Tensor.empty(be, op.imagesShape()) : null) {
            op.forward(images, weight, bias, pos, cls, dist, tokens);
            for (int i = 0; i < backwards; i++) {
                op.backward(images, weight, dTokens, dWeight, dBias, dPos, dCls, dDist, dImages);
            }
            return new Out(tokens.toArray(), dWeight.toArray(), dBias.toArray(), dPos.toArray(),
                    dCls == null ? null : dCls.toArray(), dDist == null ? null : dDist.toArray(),
                    dImages == null ? null : dImages.toArray());
        }
    }

    /** The libtorch float64 result, with the initial gradient values added {@code times} times as many. */
    static double[][] reference(Shape s, Inputs in, boolean imageGrad, int times) {
        try (TorchPatchEmbed torch = new TorchPatchEmbed(in.images(), in.weight(), in.bias(), in.pos(), in.cls(),
                in.dist(), s.b(), s.c(), s.h(), s.w(), s.p(), s.d(), true, imageGrad)) {
            TorchPatchEmbed.Result r = torch.run(in.dTokens());
            return new double[][] {r.tokens(), accumulated(in.dWeight0(), r.dWeight(), times),
                    accumulated(in.dBias0(), r.dBias(), times), accumulated(in.dPos0(), r.dPos(), times),
                    accumulated(in.dCls0(), r.dCls(), times), accumulated(in.dDist0(), r.dDist(), times), r.dImages()};
        }
    }

    static double[] accumulated(float[] initial, double[] grad, int times) {
        if (initial == null) return null;
        double[] out = new double[grad.length];
        for (int i = 0; i < out.length; i++) out[i] = initial[i] + times * grad[i];
        return out;
    }

    static final String[] NAMES = {"tokens", "dWeight", "dBias", "dPos", "dCls", "dDist", "dImages"};

    static void assertClose(float[][] got, double[][] want, String what) {
        for (int i = 0; i < NAMES.length; i++) {
            assertEquals(want[i] == null, got[i] == null, what + ": " + NAMES[i] + " presence");
            if (want[i] == null) continue;
            double err = Check.relErr(got[i], want[i]);
            assertTrue(err <= TOL, what + ": " + NAMES[i] + " rel err " + err);
        }
    }

    static void assertClose(float[][] got, float[][] want, String what) {
        for (int i = 0; i < NAMES.length; i++) {
            assertEquals(want[i] == null, got[i] == null, what + ": " + NAMES[i] + " presence");
            if (want[i] == null) continue;
            double err = Check.relErr(got[i], want[i]);
            assertTrue(err <= TOL, what + ": " + NAMES[i] + " rel err " + err);
        }
    }

    /** The grid of the issue: Cin × (H, W, P) × D; B and the distillation token vary inside each case. */
    static Stream<Arguments> grid() {
        List<Arguments> out = new ArrayList<>();
        int[][] hwp = {{28, 28, 4}, {28, 28, 7}, {32, 32, 4}, {224, 224, 16}, {32, 48, 8}};
        for (int c : new int[] {1, 3}) {
            for (int[] g : hwp) {
                for (int d : new int[] {32, 192}) out.add(Arguments.of(c, g[0], g[1], g[2], d));
            }
        }
        return out.stream();
    }

    @ParameterizedTest(name = "Cin={0} H={1} W={2} P={3} D={4}")
    @MethodSource("grid")
    void matchesLibtorchWithEveryGradient(int c, int h, int w, int p, int d) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        for (int b : new int[] {1, 5}) {
            for (boolean distilled : new boolean[] {false, true}) {
                Shape s = new Shape(b, c, h, w, p, d, distilled ? 2 : 1);
                Inputs in = Inputs.random(s, rng);
                boolean imageGrad = b == 5;  // the image gradient when asked; the null path at B = 1
                assertClose(run(cpu, s, in, imageGrad, 1).all(), reference(s, in, imageGrad, 1),
                        "seed=" + seed + " " + s);
            }
        }
    }

    @Test
    void withoutPrefixTokensMatchesLibtorch() {
        long seed = Check.freshSeed();
        Shape s = new Shape(3, 3, 32, 48, 8, 32, 0);
        Inputs in = Inputs.random(s, new Random(seed));
        assertClose(run(cpu, s, in, true, 1).all(), reference(s, in, true, 1), "seed=" + seed + " " + s);
    }

    @Test
    void parameterGradientsAccumulateAndImageGradientIsWritten() {
        long seed = Check.freshSeed();
        Shape s = new Shape(2, 3, 32, 32, 8, 32, 2);
        Inputs in = Inputs.random(s, new Random(seed));
        // Two backward calls: parameters get initial + 2 × grad; dImages (written, not accumulated) stays 1 ×.
        assertClose(run(cpu, s, in, true, 2).all(), reference(s, in, true, 2), "seed=" + seed + " two backwards");
    }

    static Stream<Arguments> emulatedShapes() {
        // A few dozen patch rows each: the emulator runs one OS thread per CUDA thread.
        return Stream.of(Arguments.of(new Shape(1, 1, 28, 28, 7, 32, 1)), Arguments.of(new Shape(2, 3, 32, 48, 8, 32, 2)),
                Arguments.of(new Shape(2, 1, 28, 28, 4, 32, 0)), Arguments.of(new Shape(1, 3, 32, 32, 4, 64, 2)),
                Arguments.of(new Shape(1, 3, 32, 32, 16, 192, 2)));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("emulatedShapes")
    void emulatedCudaKernelMatchesCpuKernel(Shape s) {
        long seed = Check.freshSeed();
        Inputs in = Inputs.random(s, new Random(seed));
        assertClose(run(emu, s, in, true, 1).all(), run(cpu, s, in, true, 1).all(), "seed=" + seed + " " + s);
    }

    @Test
    void cudaKernelMatchesCpuKernel() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (Shape s : new Shape[] {new Shape(5, 3, 32, 48, 8, 32, 2), new Shape(32, 3, 224, 224, 16, 192, 2),
                    new Shape(128, 1, 28, 28, 4, 96, 1), new Shape(1, 1, 28, 28, 7, 192, 0)}) {
                Inputs in = Inputs.random(s, rng);
                assertClose(run(cuda, s, in, true, 1).all(), run(cpu, s, in, true, 1).all(), "seed=" + seed + " " + s);
            }
        }
    }

    @Test
    void forwardAndBackwardAllocateNothing() {
        Shape s = new Shape(2, 3, 32, 32, 8, 32, 2);
        Inputs in = Inputs.random(s, new Random(Check.freshSeed()));
        long before = cpu.liveAllocations();
        try (PatchEmbed op = s.op(cpu);
             Tensor images = Tensor.of(cpu, in.images(), op.imagesShape());
             Tensor weight = Tensor.of(cpu, in.weight(), op.weightShape()); Tensor bias = Tensor.of(cpu, in.bias(), s.d());
             Tensor pos = Tensor.of(cpu, in.pos(), op.posShape()); Tensor cls = Tensor.of(cpu, in.cls(), 1, 1, s.d());
             Tensor dist = Tensor.of(cpu, in.dist(), 1, 1, s.d()); Tensor tokens = Tensor.empty(cpu, op.tokensShape());
             Tensor dTokens = Tensor.of(cpu, in.dTokens(), op.tokensShape());
             Tensor dWeight = Tensor.empty(cpu, op.weightShape()); Tensor dBias = Tensor.empty(cpu, s.d());
             Tensor dPos = Tensor.empty(cpu, op.posShape()); Tensor dCls = Tensor.empty(cpu, 1, 1, s.d());
             Tensor dDist = Tensor.empty(cpu, 1, 1, s.d()); Tensor dImages = Tensor.empty(cpu, op.imagesShape())) {
            long steady = cpu.liveAllocations();
            for (int i = 0; i < 20; i++) {
                op.forward(images, weight, bias, pos, cls, dist, tokens);
                op.backward(images, weight, dTokens, dWeight, dBias, dPos, dCls, dDist, i % 2 == 0 ? dImages : null);
            }
            assertEquals(steady, cpu.liveAllocations(), "forward/backward allocated");
        }
        assertEquals(before, cpu.liveAllocations(), "the op's workspace and the tensors were freed");
    }

    @Test
    void badInputIsAClearException() {
        assertMessage(IllegalArgumentException.class, "image 30x28 is not a multiple of the patch size 4",
                () -> PatchEmbed.builder().batch(2).channels(3).image(30, 28).patch(4).dim(32).build(cpu));
        assertMessage(IllegalArgumentException.class, "image 28x30 is not a multiple of the patch size 4",
                () -> PatchEmbed.builder().batch(2).channels(3).image(28, 30).patch(4).dim(32).build(cpu));
        assertMessage(IllegalArgumentException.class, "every size must be set and >= 1, got B=0",
                () -> PatchEmbed.builder().batch(0).channels(3).image(28, 28).patch(4).dim(32).build(cpu));
        assertMessage(IllegalArgumentException.class, "prefixTokens must be 0, 1 (class) or 2",
                () -> PatchEmbed.builder().prefixTokens(3));
        Shape s = new Shape(2, 3, 28, 28, 7, 32, 2);
        try (PatchEmbed op = s.op(cpu);
             Tensor images = Tensor.empty(cpu, 2, 3, 28, 28); Tensor grey = Tensor.empty(cpu, 2, 1, 28, 28);
             Tensor weight = Tensor.empty(cpu, 32, 3, 7, 7); Tensor weightGrey = Tensor.empty(cpu, 32, 1, 7, 7);
             Tensor weight64 = Tensor.empty(cpu, 64, 3, 7, 7); Tensor bias = Tensor.empty(cpu, 32);
             Tensor pos = Tensor.empty(cpu, 1, 18, 32); Tensor pos17 = Tensor.empty(cpu, 1, 17, 32);
             Tensor cls = Tensor.empty(cpu, 1, 1, 32); Tensor dist = Tensor.empty(cpu, 1, 1, 32);
             Tensor tokens = Tensor.empty(cpu, 2, 18, 32); Tensor dW = Tensor.empty(cpu, 32, 3, 7, 7);
             Tensor dB = Tensor.empty(cpu, 32); Tensor dP = Tensor.empty(cpu, 1, 18, 32);
             Tensor dC = Tensor.empty(cpu, 1, 1, 32); Tensor dD = Tensor.empty(cpu, 1, 1, 32);
             Tensor biasOnEmu = Tensor.empty(emu, 32)) {
            assertMessage(IllegalArgumentException.class, "images must have shape [2, 3, 28, 28], got [2, 1, 28, 28]",
                    () -> op.forward(grey, weight, bias, pos, cls, dist, tokens));
            assertMessage(IllegalArgumentException.class, "weight must have shape [32, 3, 7, 7], got [32, 1, 7, 7]",
                    () -> op.forward(images, weightGrey, bias, pos, cls, dist, tokens));
            assertMessage(IllegalArgumentException.class, "weight must have shape [32, 3, 7, 7], got [64, 3, 7, 7]",
                    () -> op.forward(images, weight64, bias, pos, cls, dist, tokens));
            assertMessage(IllegalArgumentException.class, "pos must have shape [1, 18, 32], got [1, 17, 32]",
                    () -> op.forward(images, weight, bias, pos17, cls, dist, tokens));
            assertMessage(IllegalArgumentException.class, "dist is required: the op is distilled",
                    () -> op.forward(images, weight, bias, pos, cls, null, tokens));
            assertMessage(IllegalArgumentException.class, "dDist is required",
                    () -> op.backward(images, weight, tokens, dW, dB, dP, dC, null, null));
            assertMessage(IllegalArgumentException.class, "bias is on cuda-emu",
                    () -> op.forward(images, weight, biasOnEmu, pos, cls, dist, tokens));
            assertMessage(IllegalArgumentException.class, "dImages must have shape [2, 3, 28, 28]",
                    () -> op.backward(images, weight, tokens, dW, dB, dP, dC, dD, grey));
            Tensor closed = Tensor.empty(cpu, 1, 1, 32);
            closed.close();
            assertMessage(IllegalStateException.class, "cls tensor is closed",
                    () -> op.forward(images, weight, bias, pos, closed, dist, tokens));
            try (PatchEmbed vit = new Shape(2, 3, 28, 28, 7, 32, 1).op(cpu); Tensor pos17b = Tensor.empty(cpu, 1, 17, 32);
                 Tensor tokens17 = Tensor.empty(cpu, 2, 17, 32)) {
                assertMessage(IllegalArgumentException.class, "dist must be null: the op is not distilled",
                        () -> vit.forward(images, weight, bias, pos17b, cls, dist, tokens17));
            }
            PatchEmbed shut = s.op(cpu);
            shut.close();
            shut.close();  // harmless
            assertMessage(IllegalStateException.class, "is closed",
                    () -> shut.forward(images, weight, bias, pos, cls, dist, tokens));
        }
    }

    static void assertMessage(Class<? extends Throwable> type, String part, org.junit.jupiter.api.function.Executable run) {
        Throwable e = assertThrows(type, run);
        assertTrue(e.getMessage().contains(part), "message '" + e.getMessage() + "' lacks '" + part + "'");
    }
}
