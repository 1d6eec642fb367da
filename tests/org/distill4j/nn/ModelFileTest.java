package org.distill4j.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.distill4j.MemoryLimitException;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.io.NonFiniteValuesException;
import org.distill4j.io.Safetensors;
import org.distill4j.io.SafetensorsFile;
import org.distill4j.io.SafetensorsFormatException;
import org.distill4j.io.SafetensorsReader;
import org.distill4j.io.TensorData;
import org.distill4j.io.UnsupportedDtypeException;
import org.distill4j.testing.Check;
import org.distill4j.testing.SafetensorsFiles;
import org.distill4j.train.Checkpoint;
import org.distill4j.train.TrainOptions;
import org.distill4j.train.Trainer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Model and checkpoint files are checked on their header before anything is allocated, then streamed. */
class ModelFileTest {
    private static final VitConfig TINY = VitConfig.of(8, 4, 1, 3, 32, 1, 1, 1, true);

    @TempDir
    Path dir;

    private Path headerOnly(String name, Map<String, String> metadata) throws IOException {
        return SafetensorsFiles.write(dir.resolve(name), SafetensorsFiles.header(metadata, Map.of(), "F32", 4)
                .toString(), new byte[0], 0);
    }

    @Test
    void aConfigIsCheckedAgainstTheHeaderAloneBeforeAnyModelExists() throws IOException {
        // The file: a header claiming a million blocks and holding no tensor.
        Path million = headerOnly("million.safetensors", Map.of("distill4j.config", "28,4,1,10,64,1000000,2,2,true"));
        SafetensorsFormatException e = assertThrows(SafetensorsFormatException.class, () -> ModelFile.config(million));
        assertTrue(e.getMessage().contains("depth 1000000") && e.getMessage().contains("12000011 parameter tensors, "
                + "but holds 0"), e.getMessage());
        // 2^31 - 1 blocks: listing their names would take hundreds of gigabytes; the counts are compared first.
        Path deepest = headerOnly("deepest.safetensors", Map.of("distill4j.config", "28,4,1,10,64,2147483647,2,2,true"));
        e = assertThrows(SafetensorsFormatException.class, () -> ModelFile.config(deepest));
        assertTrue(e.getMessage().contains("25769803775 parameter tensors, but holds 0"), e.getMessage());
        // Each field is parsed strictly and checked by VitConfig.
        Map<String, String> bad = new LinkedHashMap<>();
        bad.put("28,4,1,10,64,2,2,2", "has 8 fields, not the 9");
        bad.put("28,4,1,10,64,2,2,2,true,5", "has 10 fields");
        bad.put("28,4,1,10,64,2,2,2,yes", "distilled 'yes' is neither true nor false");
        bad.put("28,4,1,10,64,2147483648,2,2,true", "depth '2147483648' is not an integer below 2^31");
        bad.put("28,4,1,10, 64,2,2,2,true", "dim ' 64' is not an integer");
        bad.put("28,4,1,10,64,0,2,2,true", "every size must be >= 1");
        bad.put("28,4,1,268435456,64,2,2,2,true", "17179869184 elements"); // a head of 2^34 weights
        bad.put("28,4,1,10,96,2,2,2,true", "head dim 96/2 = 48");
        for (Map.Entry<String, String> c : bad.entrySet()) {
            Path f = headerOnly("bad.safetensors", Map.of("distill4j.config", c.getKey()));
            e = assertThrows(SafetensorsFormatException.class, () -> ModelFile.config(f), c.getKey());
            assertTrue(e.getMessage().contains(c.getValue()), e.getMessage());
        }
        // A header holding exactly the config's tensors (a sparse file): the config, with no data read.
        Map<String, String> meta = ModelFile.metadata(TINY);
        Map<String, long[]> shapes = VisionTransformer.parameterShapes(TINY);
        assertEquals(TINY, ModelFile.config(SafetensorsFiles.sparse(dir.resolve("ok.safetensors"), meta, shapes)));
        assertNull(ModelFile.config(SafetensorsFiles.sparse(dir.resolve("timm.safetensors"), null, shapes)));
        // One tensor off: named, with both shapes.
        Map<String, long[]> wrong = new LinkedHashMap<>(shapes);
        wrong.put("head.weight", new long[] {3, 33});
        Path f = SafetensorsFiles.sparse(dir.resolve("wrong.safetensors"), meta, wrong);
        e = assertThrows(SafetensorsFormatException.class, () -> ModelFile.config(f));
        assertTrue(e.getMessage().contains("head.weight: expected [3, 32], found [3, 33]"), e.getMessage());
        // A parameter stored as integers.
        JsonObject ints = SafetensorsFiles.header(meta, shapes, "F32", 4);
        ints.getAsJsonObject("norm.bias").addProperty("dtype", "I32");
        Path i32 = SafetensorsFiles.write(dir.resolve("i32.safetensors"), ints.toString(), null,
                SafetensorsFiles.dataLength(ints));
        UnsupportedDtypeException u = assertThrows(UnsupportedDtypeException.class, () -> ModelFile.config(i32));
        assertEquals("norm.bias", u.tensor());
    }

    @Test
    void aHugeFileIsRefusedFromItsHeaderWithoutReadingItIntoArrays() throws Exception {
        // 16 GB of F32 (sparse here), as a 4.8 GB model passed by mistake: today's heap cannot hold its arrays.
        Map<String, long[]> shapes = new LinkedHashMap<>();
        shapes.put("embed.weight", new long[] {2_000_000_000L});
        shapes.put("lm_head.weight", new long[] {2_000_000_000L});
        Path big = SafetensorsFiles.sparse(dir.resolve("big.safetensors"), Map.of("format", "pt"), shapes);
        try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, TINY, 1, 0);
             Trainer t = new Trainer(m, null, new TrainOptions().withEpochs(1).withBatch(1), 10)) {
            SafetensorsFormatException e = assertThrows(SafetensorsFormatException.class, () -> ModelFile.load(big, m));
            assertTrue(e.getMessage().contains("unexpected: [embed.weight, lm_head.weight]"), e.getMessage());
            e = assertThrows(SafetensorsFormatException.class, () -> Checkpoint.load(big, t));
            assertTrue(e.getMessage().contains("not a distill4j checkpoint"), e.getMessage());
        }
        // The whole-file reader refuses arrays the heap cannot hold, before allocating them.
        MemoryLimitException e = assertThrows(MemoryLimitException.class, () -> Safetensors.read(big));
        assertTrue(e.getMessage().contains("big.safetensors") && e.getMessage().contains("of Java heap"),
                e.getMessage());
        assertEquals(16_000_000_000L, e.bytesNeeded());
        // One tensor beyond a Java array.
        Path huge = SafetensorsFiles.sparse(dir.resolve("huge.safetensors"), null,
                Map.of("w", new long[] {3_000_000_000L}));
        try (SafetensorsReader r = SafetensorsReader.open(huge)) {
            e = assertThrows(MemoryLimitException.class, () -> r.readFloats("w"));
            assertTrue(e.getMessage().contains("'w' has 3000000000 elements, more than a Java array holds"),
                    e.getMessage());
        }
    }

    /** TINY's parameters with {@code edit} applied to their values, saved as a model file. */
    private Path modelFile(String name, java.util.function.Consumer<Map<String, TensorData>> edit) throws IOException {
        Path file = dir.resolve(name);
        try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, TINY, 1, 5)) {
            Map<String, TensorData> entries = ModelFile.entries(m);
            edit.accept(entries);
            Safetensors.write(file, entries, ModelFile.metadata(TINY));
        }
        return file;
    }

    @Test
    void nonFiniteWeightsAreRefusedWithTheirCountsUnlessAllowed() throws IOException {
        Path file = modelFile("nan.safetensors", e -> {
            e.get("head.weight").values()[7] = Float.NaN;
            float[] fc1 = e.get("blocks.0.mlp.fc1.weight").values();
            fc1[0] = Float.POSITIVE_INFINITY;
            fc1[fc1.length - 1] = Float.NEGATIVE_INFINITY;
        });
        try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, TINY, 1, 0)) {
            NonFiniteValuesException e = assertThrows(NonFiniteValuesException.class, () -> ModelFile.load(file, m));
            assertEquals(List.of(new NonFiniteValuesException.Count("blocks.0.mlp.fc1.weight", 2, 32 * 32),
                    new NonFiniteValuesException.Count("head.weight", 1, 3 * 32)), e.counts());
            assertTrue(e.getMessage().contains("nan.safetensors: 3 weights are NaN or infinite, in "
                    + "'blocks.0.mlp.fc1.weight' (2 of 1024 values), 'head.weight' (1 of 96 values)"), e.getMessage());
            ModelFile.load(file, m, ModelFile.NonFinite.ALLOW);
            assertTrue(Float.isNaN(m.parameter("head.weight").value().toArray()[7]));
        }
    }

    @Test
    void checkpointsAreStreamedAndNonFiniteMomentsRefused() throws IOException {
        Path ckpt = dir.resolve("ckpt.safetensors");
        TrainOptions options = new TrainOptions().withEpochs(1).withBatch(1);
        float[] saved;
        try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, TINY, 1, 5);
             Trainer t = new Trainer(m, null, options, 10)) {
            float[] v = new float[32]; // parameter 3 is dist_token [1, 1, 32]
            java.util.Arrays.fill(v, 0.5f);
            v[3] = Float.NaN;
            t.secondMoments().get(3).copyFrom(v);
            t.restore(7);
            Checkpoint.save(ckpt, t, options, 1, List.of());
            saved = t.firstMoments().get(0).toArray();
        }
        try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, TINY, 1, 0);
             Trainer t = new Trainer(m, null, options, 10)) {
            NonFiniteValuesException e = assertThrows(NonFiniteValuesException.class, () -> Checkpoint.load(ckpt, t));
            String name = "optimizer.v." + m.parameters().get(3).name();
            assertEquals(List.of(new NonFiniteValuesException.Count(name, 1, 32)), e.counts());
            assertEquals(0, t.steps(), "the step is restored only after every tensor is accepted");
            Checkpoint.State s = Checkpoint.load(ckpt, t, ModelFile.NonFinite.ALLOW);
            assertEquals(1, s.epoch());
            assertEquals(7, t.steps());
            assertArrayEquals(saved, t.firstMoments().get(0).toArray());
        }
    }

    @Test
    void halfDoubleAndBfloatFilesStreamIntoTheModelAsTheReaderConvertsThem() throws IOException {
        // fc1 [1024, 256] is 1 MB of F32, 2 MB of F64: the copy crosses the reader's 1 MB chunks.
        VitConfig wide = VitConfig.of(8, 4, 1, 3, 256, 1, 4, 4, false);
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        Map<String, long[]> shapes = VisionTransformer.parameterShapes(wide);
        for (String dtype : new String[] {"F16", "BF16", "F64", "F32"}) {
            int size = dtype.equals("F64") ? 8 : dtype.equals("F32") ? 4 : 2;
            JsonObject header = SafetensorsFiles.header(ModelFile.metadata(wide), shapes, dtype, size);
            ByteBuffer data = ByteBuffer.allocate((int) SafetensorsFiles.dataLength(header))
                    .order(ByteOrder.LITTLE_ENDIAN);
            while (data.hasRemaining()) {
                switch (size) {
                    case 2 -> data.putShort((short) (rng.nextInt(0x7800) | (rng.nextBoolean() ? 0x8000 : 0))); // finite
                    case 4 -> data.putFloat((float) rng.nextGaussian());
                    default -> data.putDouble(rng.nextGaussian());
                }
            }
            Path file = SafetensorsFiles.write(dir.resolve(dtype + ".safetensors"), header.toString(), data.array(), 0);
            SafetensorsFile reference = Safetensors.read(file); // checked against the IEEE definitions elsewhere
            try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, wide, 1, 0)) {
                ModelFile.load(file, m);
                for (Parameter p : m.parameters()) {
                    assertArrayEquals(reference.tensors().get(p.name()).values(), p.value().toArray(),
                            dtype + " " + p.name() + ", seed " + seed);
                }
            }
        }
    }
}
