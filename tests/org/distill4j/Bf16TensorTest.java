package org.distill4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;

/** The bf16 buffer of bf16 activations: Tensor's ownership rules, bit patterns through unchanged, widened exactly. */
class Bf16TensorTest {
    private static short[] values(Random rng, int n) {
        short[] v = new short[n];
        for (int i = 0; i < n; i++) v[i] = (short) rng.nextInt();
        v[0] = Short.MIN_VALUE;  // -0
        v[n - 1] = (short) 0x7fc1;  // a NaN with a payload: bits, not values, go through
        return v;
    }

    @Test
    void valuesRoundTripOnEveryBackend() {
        long seed = Check.freshSeed();
        short[] v = values(new Random(seed), 1001);
        try (Backend cpu = CpuBackend.open(); Backend emu = CpuBackend.openCudaEmulator()) {
            for (Backend be : new Backend[] {cpu, emu}) {
                try (Bf16Tensor t = Bf16Tensor.of(be, v, 7, 143)) {
                    assertArrayEquals(v, t.toArray(), "seed " + seed + " on " + be.device());
                    assertEquals(1001, t.numel());
                    assertEquals(2, t.rank());
                    assertEquals(143, t.size(1));
                    assertArrayEquals(new long[] {7, 143}, t.shape());
                    short[] w = values(new Random(seed + 1), 1001);
                    t.copyFrom(w);
                    short[] out = new short[1001];
                    t.copyTo(out);
                    assertArrayEquals(w, out);
                    float[] f = t.toFloats();
                    for (int i = 0; i < w.length; i++) {
                        // Exact widening: the 16 bits are the float's upper half (bits compared, NaN payload too).
                        assertEquals((w[i] & 0xffff) << 16, Float.floatToRawIntBits(f[i]), "element " + i);
                    }
                }
            }
        }
    }

    @Test
    void valuesRoundTripThroughDeviceMemory() {
        try (Backend cuda = Check.cudaOrSkip()) {
            short[] v = values(new Random(Check.freshSeed()), 4097);
            try (Bf16Tensor t = Bf16Tensor.of(cuda, v, 4097)) {
                assertArrayEquals(v, t.toArray());
            }
        }
    }

    @Test
    void ownedAsTensorsAre() {
        Backend be = CpuBackend.open();
        long before = be.liveAllocations();
        Bf16Tensor closedByUser = Bf16Tensor.empty(be, 16);
        Bf16Tensor leftOpen = Bf16Tensor.empty(be, 16);
        assertEquals(before + 2, be.liveAllocations());
        closedByUser.close();
        closedByUser.close();  // twice is harmless
        assertEquals(before + 1, be.liveAllocations());
        assertThrows(IllegalStateException.class, closedByUser::data);
        assertThrows(IllegalStateException.class, closedByUser::toArray);
        assertThrows(IllegalStateException.class, closedByUser::toFloats);
        assertThrows(IllegalStateException.class, () -> closedByUser.copyFrom(new short[16]));
        assertTrue(closedByUser.toString().contains("closed"));
        be.close();
        assertTrue(leftOpen.isClosed(), "the backend's close freed it");
        assertEquals(before, be.liveAllocations());
        leftOpen.close();
    }

    @Test
    void badShapesAndLengthsAreClearExceptions() {
        try (Backend be = CpuBackend.open(); Bf16Tensor t = Bf16Tensor.empty(be, 3)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> t.copyFrom(new short[4]));
            assertTrue(e.getMessage().contains("array of length 4 does not fit bf16 tensor [3]"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> t.copyTo(new short[2]));
            assertTrue(e.getMessage().contains("cannot receive bf16 tensor [3]"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> Bf16Tensor.empty(be, 2, -1));
            assertThrows(MemoryLimitException.class, () -> Bf16Tensor.empty(be, 1L << 40, 1L << 40));
            // 2^62 elements are 2^63 bytes: one past what a long counts.
            assertThrows(MemoryLimitException.class, () -> Bf16Tensor.empty(be, 1L << 31, 1L << 31));
            try (Bf16Tensor none = Bf16Tensor.empty(be, 1L << 62, 0)) {
                assertEquals(0, none.numel());
                assertArrayEquals(new short[0], none.toArray());
            }
        }
    }

    @Test
    void allocationSitesOnlyWhenAsked() {
        try (Backend be = CpuBackend.open()) {
            try (Bf16Tensor plain = Bf16Tensor.empty(be, 2)) {
                assertNull(plain.allocationSite());
            }
            System.setProperty("distill4j.debug.allocations", "true");
            try (Bf16Tensor traced = Bf16Tensor.empty(be, 2)) {
                String site = traced.allocationSite();
                assertTrue(site != null && site.contains(Bf16TensorTest.class.getName() + ".allocationSitesOnlyWhenAsked"),
                        String.valueOf(site));
            } finally {
                System.clearProperty("distill4j.debug.allocations");
            }
        }
    }
}
