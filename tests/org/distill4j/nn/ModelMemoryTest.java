package org.distill4j.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.distill4j.Device;
import org.distill4j.MemoryLimitException;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.testing.CountingBackend;
import org.junit.jupiter.api.Test;

/** What a model's config costs, known before anything is allocated, and refused when it does not fit. */
class ModelMemoryTest {
    @Test
    void bytesNeededIsExactlyWhatTheConstructorAllocates() {
        List<VitConfig> configs = List.of(VitConfig.preset("mnist-tiny"), VitConfig.preset("mnist-teacher"),
                VitConfig.of(16, 4, 3, 7, 96, 3, 3, 3, true), VitConfig.of(8, 8, 1, 1, 32, 1, 1, 1, false));
        try (CountingBackend be = new CountingBackend()) {
            for (VitConfig config : configs) {
                for (int batch : new int[] {1, 5, 32}) {
                    long expected = VisionTransformer.bytesNeeded(be, config, batch);
                    be.allocatedBytes = 0;
                    try (VisionTransformer m = new VisionTransformer(be, config, batch, 1)) {
                        assertEquals(expected, be.allocatedBytes, m + ": bytes allocated");
                    }
                    assertEquals(0, be.liveAllocations());
                }
            }
        }
    }

    @Test
    void parameterShapesAreTheModelsWithoutAllocatingIt() {
        for (VitConfig config : List.of(VitConfig.preset("mnist-student"), VitConfig.preset("mnist-teacher"))) {
            Map<String, long[]> shapes = VisionTransformer.parameterShapes(config);
            assertEquals(shapes.size(), VisionTransformer.parameterTensors(config));
            long count = 0;
            try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, config, 2, 0)) {
                assertEquals(List.copyOf(shapes.keySet()), m.parameters().stream().map(Parameter::name).toList());
                for (Parameter p : m.parameters()) {
                    assertArrayEquals(shapes.get(p.name()), p.shape(), p.name());
                    count += p.numel();
                    // timm decays weight matrices and the patch kernel only.
                    boolean decays = p.name().endsWith("qkv.weight") || p.name().endsWith("proj.weight")
                            || p.name().endsWith("fc1.weight") || p.name().endsWith("fc2.weight")
                            || p.name().equals("head.weight") || p.name().equals("head_dist.weight");
                    assertEquals(decays, p.weightDecay(), p.name());
                }
            }
            assertEquals(config.parameterCount(), count, config.toString());
        }
    }

    @Test
    void aModelBeyondTheLimitOrTheMachineIsRefusedBeforeAnythingIsAllocated() {
        VitConfig tiny = VitConfig.preset("mnist-tiny");
        try (Backend be = CpuBackend.open()) {
            long bytes = VisionTransformer.bytesNeeded(be, tiny, 8);
            VisionTransformer.checkMemory(be, tiny, 8, bytes); // exactly the limit: fits
            MemoryLimitException e = assertThrows(MemoryLimitException.class,
                    () -> VisionTransformer.checkMemory(be, tiny, 8, bytes - 1));
            assertEquals(bytes, e.bytesNeeded());
            assertEquals(bytes - 1, e.limit());
            assertTrue(e.getMessage().contains("needs " + MemoryLimitException.formatBytes(bytes))
                    && e.getMessage().contains("more than the limit of " + MemoryLimitException.formatBytes(bytes - 1)),
                    e.getMessage());
            // Batches of 2^31 - 1 RGB images of 224 x 224: 5 PB, more than any machine has. The constructor refuses
            // it before its first allocation (it used to fail on a malloc, or be killed later).
            VitConfig wide = VitConfig.of(224, 16, 3, 10, 32, 1, 1, 1, false);
            long live = be.liveAllocations();
            e = assertThrows(MemoryLimitException.class, () -> new VisionTransformer(be, wide, Integer.MAX_VALUE, 0));
            assertTrue(e.getMessage().contains("available") && e.getMessage().contains("PiB"), e.getMessage());
            assertTrue(e.bytesNeeded() > 1L << 51, e.getMessage());
            assertEquals(live, be.liveAllocations(), "nothing allocated");
            // Sizes past 2^63 saturate instead of wrapping to a small or negative number.
            VitConfig deep = VitConfig.of(224, 14, 3, 1000, 26752, Integer.MAX_VALUE, 418, 2, true);
            assertEquals(Long.MAX_VALUE, deep.parameterCount());
            assertEquals(Long.MAX_VALUE, VisionTransformer.bytesNeeded(be, deep, Integer.MAX_VALUE));
            e = assertThrows(MemoryLimitException.class, () -> new VisionTransformer(be, deep, 1, 0));
            assertTrue(e.getMessage().contains("more than 2^63 bytes"), e.getMessage());
            // A tensor whose byte count does not fit 64 bits, and one larger than the host's memory.
            e = assertThrows(MemoryLimitException.class, () -> Tensor.empty(be, 1L << 40, 1L << 30));
            assertTrue(e.getMessage().contains("more than 2^63 bytes"), e.getMessage());
            e = assertThrows(MemoryLimitException.class, () -> Tensor.empty(be, 1L << 50));
            assertTrue(e.getMessage().contains("host memory available"), e.getMessage());
            assertEquals(live, be.liveAllocations(), "nothing allocated");
        }
    }

    @Test
    void configsWhoseTensorsCannotBeSavedAreRefusedByTheConfig() {
        // qkv would be 3 x 32768^2 = 3.2e9 weights: more than a Java array, so the model could never be saved.
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> VitConfig.of(28, 4, 1, 10, 32768, 1, 512, 1, false));
        assertTrue(e.getMessage().contains("3221225472 elements"), e.getMessage());
        assertFalse(VitConfig.of(28, 4, 1, 10, 16384, 1, 256, 1, false).toString().isEmpty());
    }
}
