package org.distill4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;

class TensorTest {
    @Test
    void copiesRoundTripOnEveryHostBackendAndAcrossThem() {
        Random rng = new Random(Check.freshSeed());
        float[] values = Check.normal(rng, 3 * 5, 1);
        try (Backend cpu = Backends.open(Device.cpu()); Backend emu = Backends.open(Device.cudaEmu());
             Tensor a = Tensor.of(cpu, values, 3, 5); Tensor b = Tensor.empty(emu, 15); Tensor c = Tensor.empty(cpu, 5, 3)) {
            assertArrayEquals(values, a.toArray());
            a.copyTo(b);
            b.copyTo(c);
            assertArrayEquals(values, c.toArray(), "cpu -> cuda-emu -> cpu");
            assertArrayEquals(new long[] {5, 3}, c.shape());
            assertEquals(15, c.numel());
            assertEquals(Device.cudaEmu(), b.device());
        }
    }

    @Test
    void scalarHasRankZeroAndOneElement() {
        try (Backend cpu = Backends.open(Device.cpu()); Tensor s = Tensor.of(cpu, new float[] {2.5f})) {
            assertEquals(0, s.rank());
            assertEquals(1, s.numel());
            assertEquals(2.5f, s.toArray()[0]);
        }
    }

    @Test
    void closingFreesOnceAndUseAfterCloseThrows() {
        try (Backend cpu = Backends.open(Device.cpu())) {
            long before = cpu.liveAllocations();
            Tensor t = Tensor.empty(cpu, 4, 4);
            assertEquals(before + 1, cpu.liveAllocations());
            t.close();
            t.close();
            assertEquals(before, cpu.liveAllocations(), "a second close frees nothing");
            assertTrue(t.isClosed());
            IllegalStateException e = assertThrows(IllegalStateException.class, t::toArray);
            assertTrue(e.getMessage().contains("closed"), e.getMessage());
            assertThrows(IllegalStateException.class, () -> t.copyFrom(new float[16]));
        }
    }

    @Test
    void wrongSizesAreRejectedWithTheShapes() {
        try (Backend cpu = Backends.open(Device.cpu()); Tensor t = Tensor.empty(cpu, 2, 3)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> t.copyFrom(new float[5]));
            assertTrue(e.getMessage().contains("length 5") && e.getMessage().contains("[2, 3]"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> t.copyTo(new float[7]));
            e = assertThrows(IllegalArgumentException.class, () -> Tensor.empty(cpu, 2, -1));
            assertTrue(e.getMessage().contains("[2, -1]"), e.getMessage());
            try (Tensor other = Tensor.empty(cpu, 4)) {
                assertThrows(IllegalArgumentException.class, () -> t.copyTo(other));
            }
        }
    }

    @Test
    void aPartIsCopiedIntoItsRangeAndARangeOutsideIsRefused() {
        try (Backend cpu = Backends.open(Device.cpu()); Tensor t = Tensor.empty(cpu, 2, 5).zero()) {
            t.copyFrom(3, new float[] {9, 1, 2, 8}, 1, 2);
            t.copyFrom(8, new float[] {7, 6}, 0, 2);
            t.copyFrom(10, new float[0], 0, 0);
            assertArrayEquals(new float[] {0, 0, 0, 1, 2, 0, 0, 0, 7, 6}, t.toArray());
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> t.copyFrom(9, new float[2], 0, 2));
            assertTrue(e.getMessage().contains("[9, 9 + 2)") && e.getMessage().contains("[2, 5]"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> t.copyFrom(-1, new float[2], 0, 1));
            assertThrows(IndexOutOfBoundsException.class, () -> t.copyFrom(0, new float[2], 1, 2));
        }
    }

    @Test
    void scopeClosesWhatItTracksAndKeepsWhatItReleases() {
        try (Backend cpu = Backends.open(Device.cpu())) {
            long before = cpu.liveAllocations();
            Tensor kept;
            Tensor a;
            try (TensorScope scope = new TensorScope()) {
                a = scope.track(Tensor.empty(cpu, 3));
                scope.track(Tensor.empty(cpu, 2, 2));
                kept = scope.release(scope.track(Tensor.empty(cpu, 5)));
                assertEquals(before + 3, cpu.liveAllocations());
                try (Tensor stranger = Tensor.empty(cpu, 1)) {
                    assertThrows(IllegalArgumentException.class, () -> scope.release(stranger));
                }
            }
            assertTrue(a.isClosed());
            assertTrue(!kept.isClosed(), "a released tensor stays open");
            assertEquals(before + 1, cpu.liveAllocations(), "only the released tensor is live");
            kept.close();
        }
    }
}
