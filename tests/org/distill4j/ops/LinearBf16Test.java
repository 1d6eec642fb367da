package org.distill4j.ops;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.javacpp.ShortPointer;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.natives.Distill4jNative;
import org.distill4j.reference.TorchLinear;
import org.distill4j.testing.Check;
import org.distill4j.testing.Float64Reference;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The bf16 linear op ({@code d4j_linear_bf16_*}: x, weight and dy bf16, everything else fp32; no Java op class yet)
 * on the CPU and the emulated CUDA backend (and CUDA where there is one) against libtorch: x, weight and dy are
 * rounded to bfloat16 by libtorch itself ({@code Tensor.to(BFloat16)}), whose bits are what the op receives, and
 * the reference is {@code F.linear(x, W, b) + residual} with autograd in float64 on those same bf16 values.
 *
 * <p>Tolerance as {@link LinearTest}'s, for the same reason: a product of two bf16 values is exact in fp32, so
 * the op's only error is its fp32 sums (≈ √n · 2⁻²⁴ relative); 1e-5 relative, or 4× libtorch's own float32 error
 * on the same bf16 values where that is larger (a sum that cancels). The accumulate contract: dweight and dbias start from
 * random values and take two backwards (+= twice), dx starts as noise and must be overwritten.
 */
class LinearBf16Test {
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

    record Shape(int m, int k, int n, boolean bias, boolean residual, boolean inputGrad) {
        @Override
        public String toString() {
            return "M=" + m + " K=" + k + " N=" + n + (bias ? " +bias" : "") + (residual ? " +residual" : "")
                    + (inputGrad ? "" : " (dx null)");
        }
    }

    /** Values rounded to bfloat16 by libtorch: the bits the op gets and the same values widened to float. */
    record Bf16(short[] bits, float[] values) {
        static Bf16 of(float[] x) {
            try (PointerScope ignored = new PointerScope()) {
                org.bytedeco.pytorch.Tensor b = AbstractTensor.create(x, x.length).to(ScalarType.BFloat16);
                short[] bits = new short[x.length];
                float[] values = new float[x.length];
                b.view(ScalarType.Short).contiguous().data_ptr_short().get(bits);
                b.to(ScalarType.Float).contiguous().data_ptr_float().get(values);
                return new Bf16(bits, values);
            }
        }
    }

    record Inputs(Bf16 x, Bf16 weight, float[] bias, float[] residual, Bf16 dy, float[] dWeight0, float[] dBias0,
                  float[] dx0) {
        static Inputs random(Shape s, Random rng) {
            int m = s.m(), k = s.k(), n = s.n();
            return new Inputs(Bf16.of(Check.normal(rng, m * k, 1)), Bf16.of(Check.normal(rng, n * k, 1 / Math.sqrt(k))),
                    s.bias() ? Check.normal(rng, n, 0.5) : null, s.residual() ? Check.normal(rng, m * n, 1) : null,
                    Bf16.of(Check.normal(rng, m * n, 1)), Check.normal(rng, n * k, 1), Check.normal(rng, n, 1),
                    Check.normal(rng, m * k, 100));
        }
    }

    /** bf16 bits in the backend's memory, freed on close. */
    private static final class Bf16Buffer implements AutoCloseable {
        final Backend be;
        final ShortPointer p;

        Bf16Buffer(Backend be, short[] bits) {
            this.be = be;
            Pointer memory = be.allocate(2L * bits.length);
            this.p = new ShortPointer(memory).capacity(bits.length);
            try (ShortPointer host = new ShortPointer(bits)) {
                be.copyFromHost(host, memory, 2L * bits.length);
            }
        }

        @Override
        public void close() {
            be.free(p);
        }
    }

    /** y, dx (null when skipped), dWeight, dBias after a forward and {@code backwards} backwards. */
    static float[][] run(Backend be, Shape s, Inputs in, int backwards) {
        try (Bf16Buffer x = new Bf16Buffer(be, in.x().bits()); Bf16Buffer w = new Bf16Buffer(be, in.weight().bits());
             Bf16Buffer dy = new Bf16Buffer(be, in.dy().bits());
             Tensor b = s.bias() ? Tensor.of(be, in.bias(), s.n()) : null;
             Tensor r = s.residual() ? Tensor.of(be, in.residual(), s.m(), s.n()) : null;
             Tensor y = Tensor.empty(be, s.m(), s.n());
             Tensor dx = s.inputGrad() ? Tensor.of(be, in.dx0(), s.m(), s.k()) : null;
             Tensor dw = Tensor.of(be, in.dWeight0(), s.n(), s.k());
             Tensor db = s.bias() ? Tensor.of(be, in.dBias0(), s.n()) : null) {
            be.call("linear_bf16 forward", () -> Distill4jNative.d4j_linear_bf16_forward(be.kernels(), be.stream(),
                    x.p, w.p, b == null ? null : b.data(), r == null ? null : r.data(), s.m(), s.k(), s.n(), y.data()));
            for (int i = 0; i < backwards; i++) {
                be.call("linear_bf16 backward", () -> Distill4jNative.d4j_linear_bf16_backward(be.kernels(),
                        be.stream(), x.p, w.p, dy.p, s.m(), s.k(), s.n(), dx == null ? null : dx.data(), dw.data(),
                        db == null ? null : db.data()));
            }
            return new float[][] {y.toArray(), dx == null ? null : dx.toArray(), dw.toArray(),
                    db == null ? null : db.toArray()};
        }
    }

    static Float64Reference reference(Shape s, Inputs in, int times) {
        return Float64Reference.of(LinearTest.NAMES, torch(s, in, times, true), torch(s, in, times, false), TOL);
    }

    private static double[][] torch(Shape s, Inputs in, int times, boolean float64) {
        try (TorchLinear torch = new TorchLinear(in.x().values(), in.weight().values(), in.bias(), in.residual(), s.m(),
                s.k(), s.n(), float64)) {
            TorchLinear.Result r = torch.run(in.dy().values());
            return new double[][] {r.y(), s.inputGrad() ? r.dx() : null,
                    LinearTest.accumulated(in.dWeight0(), r.dWeight(), times),
                    s.bias() ? LinearTest.accumulated(in.dBias0(), r.dBias(), times) : null};
        }
    }

    static Stream<Arguments> cases() {
        // Small on the emulator (its bias kernels run one OS thread per CUDA thread; the GEMMs are host OpenBLAS).
        Shape[] shapes = {new Shape(1, 1, 1, true, true, true), new Shape(8, 192, 1000, true, false, true),
                new Shape(7, 13, 5, false, false, true), new Shape(33, 97, 65, true, true, true),
                new Shape(50, 40, 70, true, true, false), new Shape(300, 24, 33, false, true, true),
                new Shape(102, 768, 192, true, true, true), new Shape(3, 1, 17, false, true, false)};
        List<Arguments> out = new ArrayList<>();
        for (String backend : new String[] {"cpu", "cuda-emu"}) {
            for (Shape s : shapes) out.add(Arguments.of(backend, s));
        }
        return out.stream();
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("cases")
    void matchesLibtorchOnItsBf16Values(String backend, Shape s) {
        long seed = Check.freshSeed();
        System.out.println("LinearBf16Test seed=" + seed + " " + backend + " " + s);
        Inputs in = Inputs.random(s, new Random(seed));
        Backend be = backend.equals("cpu") ? cpu : emu;
        // Two backwards: dWeight, dBias = initial + 2 grad; dx (prefilled with noise) = 1 grad.
        reference(s, in, 2).assertClose(run(be, s, in, 2), "seed=" + seed + " " + backend + " " + s);
    }

    @Test
    void cudaMatchesLibtorch() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (Shape s : new Shape[] {new Shape(1584, 192, 576, true, false, true),
                    new Shape(1584, 768, 192, true, true, true), new Shape(7, 13, 5, false, true, false)}) {
                Inputs in = Inputs.random(s, rng);
                reference(s, in, 2).assertClose(run(cuda, s, in, 2), "seed=" + seed + " cuda " + s);
            }
        }
    }

    @Test
    void badInputIsAClearException() {
        for (Backend be : new Backend[] {cpu, emu}) {
            try (Bf16Buffer h = new Bf16Buffer(be, new short[16]); Tensor y = Tensor.empty(be, 4, 4);
                 Tensor dw = Tensor.empty(be, 4, 4)) {
                assertMessage("linear_bf16: M, K and N must be positive", () -> be.call("linear_bf16 forward",
                        () -> Distill4jNative.d4j_linear_bf16_forward(be.kernels(), be.stream(), h.p, h.p, null, null,
                                0, 4, 4, y.data())));
                assertMessage("residual may not alias y", () -> be.call("linear_bf16 forward",
                        () -> Distill4jNative.d4j_linear_bf16_forward(be.kernels(), be.stream(), h.p, h.p, null,
                                y.data(), 4, 4, 4, y.data())));
                assertMessage("x, weight, dy and dweight must not be null", () -> be.call("linear_bf16 backward",
                        () -> Distill4jNative.d4j_linear_bf16_backward(be.kernels(), be.stream(), h.p, h.p, h.p, 4, 4,
                                4, y.data(), null, null)));
                assertMessage("linear: precision 2 is not supported", () -> be.call("linear forward",
                        () -> Distill4jNative.d4j_linear_forward(be.kernels(), be.stream(), dw.data(), dw.data(), null,
                                null, 4, 4, 4, y.data(), 2)));
            }
        }
    }

    static void assertMessage(String part, org.junit.jupiter.api.function.Executable run) {
        Throwable e = assertThrows(IllegalStateException.class, run);
        assertTrue(e.getMessage().contains(part), "message '" + e.getMessage() + "' lacks '" + part + "'");
    }
}
