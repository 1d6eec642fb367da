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

    @Test
    void aViewSharesItsRangeOfTheMemoryAndOwnsNone() {
        Random rng = new Random(Check.freshSeed());
        float[] values = Check.normal(rng, 40, 1);
        for (Device d : new Device[] {Device.cpu(), Device.cudaEmu()}) {
            try (Backend be = Backends.open(d); Tensor t = Tensor.of(be, values, 4, 10)) {
                long before = be.liveAllocations();
                Tensor v = t.view(16, 3, 4);
                assertTrue(v.isView() && !t.isView());
                assertArrayEquals(new long[] {3, 4}, v.shape());
                assertArrayEquals(java.util.Arrays.copyOfRange(values, 16, 28), v.toArray(), "reads its range");
                assertEquals(t.data().address() + 16 * Float.BYTES, v.data().address(), "its own address");
                assertEquals(before, be.liveAllocations(), "a view allocates nothing");
                v.copyFrom(2, new float[] {7, 8}, 0, 2);  // a part, relative to the view's start
                v.view(8, 4).zero();                      // a view of a view: elements 24..27 of t
                float[] want = values.clone();
                want[18] = 7;
                want[19] = 8;
                java.util.Arrays.fill(want, 24, 28, 0f);
                assertArrayEquals(want, t.toArray(), "writes through the view land in the tensor");
                try (Tensor dst = Tensor.empty(be, 12)) {
                    v.copyTo(dst);
                    assertArrayEquals(java.util.Arrays.copyOfRange(want, 16, 28), dst.toArray(), "copyTo");
                }
                v.close();
                v.close();
                assertTrue(v.isClosed());
                assertThrows(IllegalStateException.class, v::toArray);
                assertEquals(before, be.liveAllocations(), "closing a view frees nothing");
                assertArrayEquals(want, t.toArray(), "the tensor outlives its view");
            }
        }
    }

    @Test
    void aViewOfAClosedTensorThrowsAndARangeOutsideIsRefused() {
        try (Backend cpu = Backends.open(Device.cpu())) {
            Tensor t = Tensor.empty(cpu, 10).zero();
            Tensor v = t.view(4, 6), w = v.view(1, 2, 2);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> t.view(5, 6));
            assertTrue(e.getMessage().contains("offset 5") && e.getMessage().contains("[10]"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> t.view(-1, 2));
            assertThrows(IllegalArgumentException.class, () -> v.view(1, 6), "a view's view stays in the view");
            assertThrows(IllegalArgumentException.class, () -> t.view(0, 2, -1));
            assertEquals(0, t.view(10, 0).numel(), "an empty view at the end");
            long before = cpu.liveAllocations();
            t.close();
            assertEquals(before - 1, cpu.liveAllocations());
            for (Tensor x : new Tensor[] {v, w}) {
                assertTrue(x.isClosed());
                IllegalStateException s = assertThrows(IllegalStateException.class, x::toArray);
                assertTrue(s.getMessage().contains("closed"), s.getMessage());
                assertThrows(IllegalStateException.class, x::data);
                assertThrows(IllegalStateException.class, x::zero);
                assertThrows(IllegalStateException.class, () -> x.copyFrom(new float[x.numel() > 4 ? 6 : 4]));
            }
            assertThrows(IllegalStateException.class, () -> t.view(0, 1));
            assertThrows(IllegalStateException.class, () -> w.view(0, 1));
            v.close();  // after its tensor: harmless
            assertEquals(before - 1, cpu.liveAllocations());
        }
    }
}
