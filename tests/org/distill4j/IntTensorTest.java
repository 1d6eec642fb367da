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

/** The int32 buffer of labels and argmax indices: Tensor's ownership rules, values through unchanged. */
class IntTensorTest {
    private static int[] values(Random rng, int n) {
        int[] v = new int[n];
        for (int i = 0; i < n; i++) v[i] = rng.nextInt();
        v[0] = Integer.MIN_VALUE;
        v[n - 1] = Integer.MAX_VALUE;
        return v;
    }

    @Test
    void valuesRoundTripOnEveryBackend() {
        long seed = Check.freshSeed();
        int[] v = values(new Random(seed), 1001);
        try (Backend cpu = CpuBackend.open(); Backend emu = CpuBackend.openCudaEmulator()) {
            for (Backend be : new Backend[] {cpu, emu}) {
                try (IntTensor t = IntTensor.of(be, v, 7, 143)) {
                    assertArrayEquals(v, t.toArray(), "seed " + seed + " on " + be.device());
                    assertEquals(1001, t.numel());
                    assertEquals(2, t.rank());
                    assertEquals(143, t.size(1));
                    assertArrayEquals(new long[] {7, 143}, t.shape());
                    int[] w = values(new Random(seed + 1), 1001);
                    t.copyFrom(w);
                    int[] out = new int[1001];
                    t.copyTo(out);
                    assertArrayEquals(w, out);
                }
            }
        }
    }

    @Test
    void valuesRoundTripThroughDeviceMemory() {
        try (Backend cuda = Check.cudaOrSkip()) {
            int[] v = values(new Random(Check.freshSeed()), 4097);
            try (IntTensor t = IntTensor.of(cuda, v, 4097)) {
                assertArrayEquals(v, t.toArray());
            }
        }
    }

    @Test
    void ownedAsTensorsAre() {
        Backend be = CpuBackend.open();
        long before = be.liveAllocations();
        IntTensor closedByUser = IntTensor.empty(be, 16);
        IntTensor leftOpen = IntTensor.empty(be, 16);
        assertEquals(before + 2, be.liveAllocations());
        closedByUser.close();
        closedByUser.close();  // twice is harmless
        assertEquals(before + 1, be.liveAllocations());
        assertThrows(IllegalStateException.class, closedByUser::data);
        assertThrows(IllegalStateException.class, closedByUser::toArray);
        assertTrue(closedByUser.toString().contains("closed"));
        be.close();
        assertTrue(leftOpen.isClosed(), "the backend's close freed it");
        assertEquals(before, be.liveAllocations());
        leftOpen.close();
    }

    @Test
    void badShapesAndLengthsAreClearExceptions() {
        try (Backend be = CpuBackend.open(); IntTensor t = IntTensor.empty(be, 3)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> t.copyFrom(new int[4]));
            assertTrue(e.getMessage().contains("array of length 4 does not fit int tensor [3]"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> t.copyTo(new int[2]));
            assertTrue(e.getMessage().contains("cannot receive int tensor [3]"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> IntTensor.empty(be, 2, -1));
            assertThrows(MemoryLimitException.class, () -> IntTensor.empty(be, 1L << 40, 1L << 40));
            try (IntTensor none = IntTensor.empty(be, 1L << 62, 0)) {
                assertEquals(0, none.numel());
                assertArrayEquals(new int[0], none.toArray());
            }
        }
    }

    @Test
    void allocationSitesOnlyWhenAsked() {
        try (Backend be = CpuBackend.open()) {
            try (IntTensor plain = IntTensor.empty(be, 2)) {
                assertNull(plain.allocationSite());
            }
            System.setProperty("distill4j.debug.allocations", "true");
            try (IntTensor traced = IntTensor.empty(be, 2)) {
                String site = traced.allocationSite();
                assertTrue(site != null && site.contains(IntTensorTest.class.getName() + ".allocationSitesOnlyWhenAsked"),
                        String.valueOf(site));
            } finally {
                System.clearProperty("distill4j.debug.allocations");
            }
        }
    }
}
