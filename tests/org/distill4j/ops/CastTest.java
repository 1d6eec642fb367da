package org.distill4j.ops;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import java.util.stream.Stream;
import org.bytedeco.javacpp.ShortPointer;
import org.distill4j.Bf16Tensor;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.natives.Distill4jNative;
import org.distill4j.testing.Check;
import org.distill4j.testing.TorchBf16;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * fp32 ↔ bf16 casts against libtorch's own conversions ({@code x.to(torch.bfloat16)} and back), bit for bit, on the
 * CPU kernel, the emulated CUDA kernel and (where there is one) CUDA.
 *
 * <p>To bf16: every non-NaN value must give libtorch's bits (round to nearest even). NaN is where libtorch has no
 * single answer (its scalar conversion returns 0x7FC0, its vectorised one 0xFFFF); there the contract is x86's
 * VCVTNEPS2BF16 rule (Intel SDM: the input's upper 16 bits with the quiet bit 0x0040 set), and libtorch must agree
 * that it is a NaN. Inputs: fresh random bit patterns (every exponent, NaNs included), normal values at several
 * scales, and the edge cases placed at random positions: ties to even both ways (normal and subnormal), values just
 * either side of a tie, the smallest subnormals, the largest subnormal (rounds up into the normals), the largest
 * finite bf16, the float between it and the next power of two (a tie that rounds to infinity), Float.MAX_VALUE, ±0,
 * ±inf, quiet and signalling NaNs of both signs. To fp32: all 65536 bit patterns, widened bit for bit as libtorch.
 *
 * <p>Sizes: 1, below and above the CUDA kernel's vector of 4 (its scalar tail), past the emulator's 8 blocks × 256
 * threads × 4 elements (the grid-stride loop's later turns), and the CPU kernel's 16384-element blocks. Alignment:
 * the CUDA kernel takes its vector path only when the fp32 side is 16-byte and the bf16 side 8-byte aligned; every
 * combination of offsets 0..3 elements on each side is run, between guard elements that must stay untouched, into
 * outputs pre-filled with a sentinel (every element must be written).
 */
class CastTest {
    private static Backend cpu, emu;
    private static final int[] SIZES = {1, 2, 3, 4, 5, 7, 8, 9, 31, 1023, 4099, 8193, 10007, 16385, 40000};
    private static final short SENTINEL16 = (short) 0x4321;  // not bf16(SENTINEL32): an overrun shows
    private static final float SENTINEL32 = Float.intBitsToFloat(0x12345678);

    /** Float bit patterns of the edge cases (see the class comment). */
    private static final int[] EDGES = {
        0x3f808000, 0xbf808000,  // 1 + 2^-8: a tie, kept part even (0x3F80): down
        0x3f818000, 0xbf818000,  // 1 + 3 * 2^-8: a tie, kept part odd (0x3F81): up to 0x3F82
        0x3f808001, 0x3f807fff,  // just above / below a tie
        0x00008000, 0x00018000,  // subnormal ties: even (0x0000) stays, odd (0x0001) goes up
        0x00000001, 0x80000001,  // the smallest subnormals: to ±0
        0x00007fff, 0x00008001,  // below / above a subnormal tie
        0x007fffff, 0x807fffff,  // the largest subnormal: rounds up to the smallest normal 0x0080
        0x7f7f0000, 0xff7f0000,  // the largest finite bf16
        0x7f7f7fff,              // below the tie past it: stays finite
        0x7f7f8000, 0xff7f8000,  // the tie past it (kept part odd): to ±inf
        0x7f7fffff, 0xff7fffff,  // Float.MAX_VALUE: to ±inf
        0x00000000, 0x80000000, 0x7f800000, 0xff800000,  // ±0, ±inf
        0x7fc00000, 0xffc00000, 0x7f800001, 0xff812345, 0x7fffffff, 0xffffffff, 0x7fa00000,  // NaNs
    };

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

    static Stream<String> backends() {
        return Stream.of("cpu", "cuda-emu");
    }

    static Backend backend(String name) {
        return name.equals("cpu") ? cpu : emu;
    }

    /** n fresh values: random bit patterns, normals of random scale, and edge cases at random positions. */
    static float[] values(Random rng, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            switch (rng.nextInt(3)) {
                case 0 -> x[i] = Float.intBitsToFloat(rng.nextInt());
                case 1 -> x[i] = (float) (rng.nextGaussian() * Math.pow(2, rng.nextInt(40) - 20));
                default -> x[i] = Float.intBitsToFloat(EDGES[rng.nextInt(EDGES.length)]);
            }
        }
        return x;
    }

    /** What bf16(x) must be: libtorch's bits, or for a NaN the contract's (libtorch must call it a NaN too). */
    static short[] expected(float[] x) {
        short[] torch = TorchBf16.round(x), want = torch.clone();
        for (int i = 0; i < x.length; i++) {
            if (Float.isNaN(x[i])) {
                assertTrue(Float.isNaN(Bf16Tensor.toFloat(torch[i])), "libtorch: NaN in, " + hex(torch[i]) + " out");
                want[i] = (short) ((Float.floatToRawIntBits(x[i]) >>> 16) | 0x0040);
            }
        }
        return want;
    }

    static String hex(short s) {
        return String.format("0x%04x", s & 0xffff);
    }

    static void assertBits(short[] want, short[] got, float[] x, String what) {
        assertEquals(want.length, got.length, what);
        for (int i = 0; i < want.length; i++) {
            if (want[i] != got[i]) {
                throw new AssertionError(what + ": element " + i + " of " + want.length + ", x = " + x[i] + " (0x"
                        + Integer.toHexString(Float.floatToRawIntBits(x[i])) + "): want " + hex(want[i]) + ", got "
                        + hex(got[i]));
            }
        }
    }

    @Test
    void edgeCasesMatchLibtorch() {
        float[] x = new float[EDGES.length];
        for (int i = 0; i < x.length; i++) x[i] = Float.intBitsToFloat(EDGES[i]);
        short[] want = expected(x);
        // The edge cases mean what the comments say (libtorch decides, these only guard the list's intent).
        assertEquals((short) 0x3f80, want[0]);
        assertEquals((short) 0x3f82, want[2]);
        assertEquals((short) 0x0080, want[12]);
        assertEquals((short) 0x7f80, want[17]);
        for (String name : new String[] {"cpu", "cuda-emu"}) {
            assertBits(want, toBf16(backend(name), x), x, name);
        }
        short[] host = new short[x.length];
        for (int i = 0; i < x.length; i++) host[i] = Bf16Tensor.fromFloat(x[i]);
        assertBits(want, host, x, "Bf16Tensor.fromFloat");
    }

    static short[] toBf16(Backend be, float[] x) {
        try (Tensor xt = Tensor.of(be, x, x.length); Bf16Tensor y = Bf16Tensor.empty(be, x.length)) {
            short[] fill = new short[x.length];
            java.util.Arrays.fill(fill, SENTINEL16);
            y.copyFrom(fill);
            Cast.toBf16(xt, y);
            return y.toArray();
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("backends")
    void toBf16MatchesLibtorchBitForBit(String name) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        Backend be = backend(name);
        for (int n : SIZES) {
            float[] x = values(rng, n);
            assertBits(expected(x), toBf16(be, x), x, "seed=" + seed + " n=" + n + " " + name);
        }
        float[] x = values(rng, 5000);
        short[] host = new short[x.length];
        for (int i = 0; i < x.length; i++) host[i] = Bf16Tensor.fromFloat(x[i]);
        assertBits(expected(x), host, x, "seed=" + seed + " Bf16Tensor.fromFloat");
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("backends")
    void toFloatWidensEveryPatternAsLibtorch(String name) {
        Backend be = backend(name);
        short[] all = new short[65536];
        for (int i = 0; i < all.length; i++) all[i] = (short) i;
        float[] want = TorchBf16.widen(all);
        try (Bf16Tensor x = Bf16Tensor.of(be, all, 256, 256); Tensor y = Tensor.empty(be, 65536)) {
            y.copyFrom(filled32(65536));
            Cast.toFloat(x, y);
            float[] got = y.toArray();
            for (int i = 0; i < all.length; i++) {
                assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]),
                        name + ": bf16 " + hex(all[i]));
            }
            float[] host = x.toFloats();
            for (int i = 0; i < all.length; i++) {
                assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(host[i]),
                        "Bf16Tensor.toFloats: bf16 " + hex(all[i]));
            }
        }
        // The sizes: the scalar tail and the grid-stride loop.
        Random rng = new Random(Check.freshSeed());
        for (int n : SIZES) {
            short[] bits = new short[n];
            for (int i = 0; i < n; i++) bits[i] = (short) rng.nextInt();
            float[] w = TorchBf16.widen(bits);
            try (Bf16Tensor x = Bf16Tensor.of(be, bits, n); Tensor y = Tensor.of(be, filled32(n), n)) {
                Cast.toFloat(x, y);
                float[] got = y.toArray();
                for (int i = 0; i < n; i++) {
                    assertEquals(Float.floatToRawIntBits(w[i]), Float.floatToRawIntBits(got[i]), name + " n=" + n + " i=" + i);
                }
            }
        }
    }

    static float[] filled32(int n) {
        float[] f = new float[n];
        java.util.Arrays.fill(f, SENTINEL32);
        return f;
    }

    /**
     * Every alignment of both sides, offsets 0..3 elements (a view on the fp32 side, an offset pointer on the bf16
     * side): the CUDA kernel's vector path at offsets 0 and 0, its scalar loop elsewhere. Guards around each side
     * must stay untouched.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("backends")
    void everyAlignmentGivesTheSameBitsAndStaysInside(String name) {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        Backend be = backend(name);
        for (int n : new int[] {1, 6, 13, 4099, 9001}) {
            float[] x = values(rng, n);
            short[] want = expected(x);
            float[] wantBack = TorchBf16.widen(want);
            for (int fo = 0; fo < 4; fo++) {
                for (int bo = 0; bo < 4; bo++) {
                    String what = "seed=" + seed + " " + name + " n=" + n + " fp32 offset " + fo + " bf16 offset " + bo;
                    float[] xs = filled32(n + 8);
                    System.arraycopy(x, 0, xs, fo, n);
                    short[] ys = new short[n + 8];
                    java.util.Arrays.fill(ys, SENTINEL16);
                    try (Tensor xt = Tensor.of(be, xs, n + 8); Tensor xv = xt.view(fo, n);
                         Bf16Tensor y = Bf16Tensor.of(be, ys, n + 8)) {
                        ShortPointer yp = y.data().getPointer(bo);
                        assertEquals(0, Distill4jNative.d4j_cast_bf16(be.kernels(), be.stream(), xv.data(), n, yp), what);
                        short[] got = y.toArray();
                        for (int i = 0; i < n + 8; i++) {
                            if (i < bo || i >= bo + n) assertEquals(SENTINEL16, got[i], what + ": guard " + i + " written");
                        }
                        assertBits(want, java.util.Arrays.copyOfRange(got, bo, bo + n), x, what);

                        // And back: the bf16 side at offset bo, the fp32 side at offset fo.
                        xt.copyFrom(filled32(n + 8));
                        assertEquals(0, Distill4jNative.d4j_cast_f32(be.kernels(), be.stream(), yp, n, xv.data()), what);
                        float[] back = xt.toArray();
                        for (int i = 0; i < n + 8; i++) {
                            int bits = Float.floatToRawIntBits(back[i]);
                            if (i < fo || i >= fo + n) {
                                assertEquals(Float.floatToRawIntBits(SENTINEL32), bits, what + ": fp32 guard " + i);
                            } else {
                                assertEquals(Float.floatToRawIntBits(wantBack[i - fo]), bits, what + ": back " + (i - fo));
                            }
                        }
                    }
                }
            }
        }
    }

    @Test
    void cudaMatchesLibtorch() {
        try (Backend cuda = Check.cudaOrSkip()) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            for (int n : new int[] {1, 5, 4099, 1 << 20, (1 << 24) + 3}) {
                float[] x = values(rng, n);
                assertBits(expected(x), toBf16(cuda, x), x, "seed=" + seed + " n=" + n + " cuda");
            }
            short[] all = new short[65536];
            for (int i = 0; i < all.length; i++) all[i] = (short) i;
            float[] want = TorchBf16.widen(all);
            try (Bf16Tensor x = Bf16Tensor.of(cuda, all, 65536); Tensor y = Tensor.empty(cuda, 65536)) {
                Cast.toFloat(x, y);
                float[] got = y.toArray();
                for (int i = 0; i < all.length; i++) {
                    assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]), "cuda: " + hex(all[i]));
                }
            }
        }
    }

    @Test
    void badArgumentsAreClearExceptions() {
        try (Tensor x = Tensor.empty(cpu, 2, 3); Bf16Tensor y = Bf16Tensor.empty(cpu, 6);
             Bf16Tensor y5 = Bf16Tensor.empty(cpu, 5); Tensor x5 = Tensor.empty(cpu, 5);
             Tensor none = Tensor.empty(cpu, 0); Bf16Tensor yNone = Bf16Tensor.empty(cpu, 0);
             Bf16Tensor yEmu = Bf16Tensor.empty(emu, 6); Tensor xEmu = Tensor.empty(emu, 6)) {
            AttentionTest.assertMessage(IllegalArgumentException.class, "cast: y must have 6 elements as x [2, 3], got [5]",
                    () -> Cast.toBf16(x, y5));
            AttentionTest.assertMessage(IllegalArgumentException.class, "cast: y must have 6 elements as x [6], got [5]",
                    () -> Cast.toFloat(y, x5));
            AttentionTest.assertMessage(IllegalArgumentException.class, "cast: x is empty", () -> Cast.toBf16(none, yNone));
            AttentionTest.assertMessage(IllegalArgumentException.class, "cast: x is empty", () -> Cast.toFloat(yNone, none));
            AttentionTest.assertMessage(IllegalArgumentException.class, "cast: y is on", () -> Cast.toBf16(x, yEmu));
            AttentionTest.assertMessage(IllegalArgumentException.class, "cast: y is on", () -> Cast.toFloat(y, xEmu));
            AttentionTest.assertMessage(IllegalArgumentException.class, "cast: x is required", () -> Cast.toBf16(null, y));
            AttentionTest.assertMessage(IllegalArgumentException.class, "cast: y is required", () -> Cast.toBf16(x, null));
            AttentionTest.assertMessage(IllegalArgumentException.class, "cast: x is required", () -> Cast.toFloat(null, x));
            AttentionTest.assertMessage(IllegalArgumentException.class, "cast: y is required", () -> Cast.toFloat(y, null));
            Tensor closedX = Tensor.empty(cpu, 6);
            closedX.close();
            Bf16Tensor closedY = Bf16Tensor.empty(cpu, 6);
            closedY.close();
            AttentionTest.assertMessage(IllegalStateException.class, "cast: x tensor is closed", () -> Cast.toBf16(closedX, y));
            AttentionTest.assertMessage(IllegalStateException.class, "cast: y tensor is closed", () -> Cast.toBf16(x, closedY));
            AttentionTest.assertMessage(IllegalStateException.class, "cast: x tensor is closed", () -> Cast.toFloat(closedY, x));
            AttentionTest.assertMessage(IllegalStateException.class, "cast: y tensor is closed", () -> Cast.toFloat(y, closedX));
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("backends")
    void nativeEntriesRejectMisuseWithoutCrashing(String name) {
        // Below the Java checks: the C entries validate their own arguments (another binding may call them).
        Backend be = backend(name);
        try (Tensor x = Tensor.empty(be, 6); Bf16Tensor y = Bf16Tensor.empty(be, 6)) {
            assertNotEquals(0, Distill4jNative.d4j_cast_bf16(be.kernels(), be.stream(), x.data(), 0, y.data()));
            assertNotEquals(0, Distill4jNative.d4j_cast_bf16(be.kernels(), be.stream(), x.data(), -1, y.data()));
            assertNotEquals(0, Distill4jNative.d4j_cast_bf16(be.kernels(), be.stream(), null, 6, y.data()));
            assertNotEquals(0, Distill4jNative.d4j_cast_bf16(be.kernels(), be.stream(), x.data(), 6, null));
            assertNotEquals(0, Distill4jNative.d4j_cast_f32(be.kernels(), be.stream(), y.data(), 0, x.data()));
            assertNotEquals(0, Distill4jNative.d4j_cast_f32(be.kernels(), be.stream(), null, 6, x.data()));
            assertNotEquals(0, Distill4jNative.d4j_cast_f32(be.kernels(), be.stream(), y.data(), 6, null));
        }
        // A failing call through the op surfaces as an exception with the kernel's message.
        try (Tensor x = Tensor.empty(be, 6); Bf16Tensor y = Bf16Tensor.empty(be, 6)) {
            RuntimeException e = assertThrows(RuntimeException.class,
                    () -> be.call("cast", () -> Distill4jNative.d4j_cast_bf16(be.kernels(), be.stream(), x.data(), 0,
                            y.data())));
            assertTrue(e.getMessage().contains("cast_bf16: null buffer or n <= 0"), e.getMessage());
        }
    }
}
