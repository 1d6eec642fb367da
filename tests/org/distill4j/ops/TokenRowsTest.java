package org.distill4j.ops;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The prefix-token gather against libtorch ({@code tokens[:, :prefix].transpose(0, 1)} and its autograd gradient),
 * CPU against the emulated CUDA kernels, bad input. Pure copies: the results must be exact.
 */
@SuppressWarnings("try")
class TokenRowsTest {
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

    static final int[][] SHAPES = {{1, 1, 1, 1}, {3, 7, 5, 2}, {8, 198, 192, 2}, {4, 50, 33, 1}, {2, 2, 17, 2}};

    /** rows and dTokens from libtorch; tokens and dRows as float32 (copies are exact either way). */
    static float[][] reference(float[] tokens, float[] dRows, int b, int t, int d, int prefix) {
        try (PointerScope ignored = new PointerScope()) {
            org.bytedeco.pytorch.Tensor x = AbstractTensor.create(tokens, b, t, d);
            x.set_requires_grad(true);
            org.bytedeco.pytorch.Tensor rows = x.narrow(1, 0, prefix).transpose(0, 1).contiguous();
            rows.backward(AbstractTensor.create(dRows, prefix, b, d), new BoolOptional(), false,
                    new TensorArrayRefOptional());
            float[] r = new float[prefix * b * d], g = new float[b * t * d];
            rows.data_ptr_float().get(r);
            x.grad().contiguous().data_ptr_float().get(g);
            return new float[][] {r, g};
        }
    }

    static float[][] run(Backend be, float[] tokens, float[] dRows, float[] dTokens0, int b, int t, int d, int prefix) {
        try (Tensor x = Tensor.of(be, tokens, b, t, d); Tensor rows = Tensor.empty(be, prefix, b, d);
             Tensor dr = Tensor.of(be, dRows, prefix, b, d); Tensor dx = Tensor.of(be, dTokens0, b, t, d)) {
            TokenRows.forward(x, prefix, rows);
            TokenRows.backward(dr, prefix, dx);
            return new float[][] {rows.toArray(), dx.toArray()};
        }
    }

    @Test
    void matchesLibtorchOnEveryBackend() {
        long seed = Check.freshSeed();
        System.out.println("TokenRowsTest seed=" + seed);
        Random rng = new Random(seed);
        for (int[] s : SHAPES) {
            int b = s[0], t = s[1], d = s[2], prefix = s[3];
            float[] tokens = Check.normal(rng, b * t * d, 1), dRows = Check.normal(rng, prefix * b * d, 1);
            float[] dTokens0 = Check.normal(rng, b * t * d, 1);  // noise: dTokens must be written whole
            float[][] want = reference(tokens, dRows, b, t, d, prefix);
            String what = "seed=" + seed + " B=" + b + " T=" + t + " D=" + d + " prefix=" + prefix;
            for (Backend be : new Backend[] {cpu, emu}) {
                float[][] got = run(be, tokens, dRows, dTokens0, b, t, d, prefix);
                assertArrayEquals(want[0], got[0], what + " rows on " + be.device());
                assertArrayEquals(want[1], got[1], what + " dTokens on " + be.device());
            }
        }
    }

    @Test
    void cudaMatchesLibtorch() {
        try (Backend cuda = Check.cudaOrSkip()) {
            Random rng = new Random(Check.freshSeed());
            for (int[] s : SHAPES) {
                int b = s[0], t = s[1], d = s[2], prefix = s[3];
                float[] tokens = Check.normal(rng, b * t * d, 1), dRows = Check.normal(rng, prefix * b * d, 1);
                float[][] want = reference(tokens, dRows, b, t, d, prefix);
                float[][] got = run(cuda, tokens, dRows, Check.normal(rng, b * t * d, 1), b, t, d, prefix);
                assertArrayEquals(want[0], got[0]);
                assertArrayEquals(want[1], got[1]);
            }
        }
    }

    @Test
    void badInputIsAClearException() {
        try (Tensor x = Tensor.empty(cpu, 2, 5, 4); Tensor rows = Tensor.empty(cpu, 2, 2, 4);
             Tensor rows1 = Tensor.empty(cpu, 1, 2, 4); Tensor flat = Tensor.empty(cpu, 10, 4);
             Tensor rowsEmu = Tensor.empty(emu, 2, 2, 4)) {
            assertMessage("prefix must be in [1, T = 5], got 6", () -> TokenRows.forward(x, 6, rows));
            assertMessage("prefix must be in [1, T = 5], got 0", () -> TokenRows.forward(x, 0, rows));
            assertMessage("rows must have shape [2, 2, 4], got [1, 2, 4]", () -> TokenRows.forward(x, 2, rows1));
            assertMessage("must be a non-empty [B, T, D], got [10, 4]", () -> TokenRows.forward(flat, 1, rows1));
            assertMessage("rows is on cuda-emu", () -> TokenRows.forward(x, 2, rowsEmu));
            assertMessage("dRows must have shape [1, 2, 4], got [2, 2, 4]", () -> TokenRows.backward(rows, 1, x));
        }
    }

    static void assertMessage(String part, org.junit.jupiter.api.function.Executable run) {
        Throwable e = assertThrows(IllegalArgumentException.class, run);
        assertTrue(e.getMessage().contains(part), "message '" + e.getMessage() + "' lacks '" + part + "'");
    }
}
