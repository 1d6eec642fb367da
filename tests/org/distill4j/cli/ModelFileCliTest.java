package org.distill4j.cli;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.distill4j.cli.CliTest.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.io.Safetensors;
import org.distill4j.io.TensorData;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.IdxFiles;
import org.distill4j.testing.SafetensorsFiles;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Model and checkpoint files that could hurt (issue #13): a header claiming a huge model, a huge file passed by
 * mistake, a model too large for the machine, NaN weights. Each is one line on stderr and a non-zero exit, decided
 * from the header before anything large is allocated.
 */
class ModelFileCliTest {
    @TempDir
    Path dir;

    static {
        System.setProperty("distill4j.progress", "off");
    }

    private static void assertOneLine(CliTest.Run r, String... expected) {
        assertTrue(r.status() != 0, "non-zero exit: " + r.err());
        for (String e : expected) assertTrue(r.err().contains(e), "'" + e + "' in stderr: " + r.err());
        assertFalse(r.err().contains("\tat "), "no stack trace: " + r.err());
        assertFalse(r.err().contains("Exception") || r.err().contains("Error:"), "no class name: " + r.err());
        assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
    }

    /** Random images and labels in Fashion-MNIST's four IDX files (64 training and 64 test images). */
    private Path randomIdxDir() throws IOException {
        return IdxFiles.randomFashionMnist(dir.resolve("random-idx"), 64);
    }

    /** A file holding only a header: {@code json}, as the 122-byte reproduction. */
    private Path headerOnly(String name, String json) throws IOException {
        byte[] h = json.getBytes(UTF_8);
        return Files.write(dir.resolve(name), ByteBuffer.allocate(8 + h.length).order(ByteOrder.LITTLE_ENDIAN)
                .putLong(h.length).put(h).array());
    }

    @Test
    void aHeaderClaimingAHugeModelIsOneLineFromTheHeaderAlone() throws IOException {
        Path data = randomIdxDir();
        // The reproduction: a header and nothing else, claiming a million blocks.
        Path million = headerOnly("million.safetensors",
                "{\"__metadata__\":{\"format\":\"pt\",\"distill4j.config\":\"28,4,1,10,64,1000000,2,2,true\"}}");
        assertOneLine(run("eval", million.toString(), "--data", data.toString(), "--device", "cpu"),
                "million.safetensors", "12000011 parameter tensors, but holds 0");
        assertOneLine(run("distill", "--teacher", million.toString(), "--data", data.toString(), "--device", "cpu",
                "--out", dir.resolve("o").toString()), "million.safetensors", "12000011 parameter tensors");
        // Configs out of any range: a head of 2^34 weights, a field past 2^31, a wrong field count, not a boolean.
        String[] configs = {"28,4,1,268435456,64,2,2,2,true", "28,4,1,10,64,4294967296,2,2,true",
            "28,4,1,10,64,2,2,2", "28,4,1,10,64,2,2,2,yes", "28,4,1,10,64,2,2,2,true,1"};
        for (String config : configs) {
            Path f = headerOnly("config.safetensors",
                    "{\"__metadata__\":{\"distill4j.config\":\"" + config + "\"}}");
            assertOneLine(run("eval", f.toString(), "--data", data.toString(), "--device", "cpu"),
                    "distill4j.config '" + config + "'");
        }
    }

    @Test
    void aLargeFileGivenByMistakeIsRefusedFromItsHeader() throws IOException {
        Path data = randomIdxDir();
        // 16 GB of someone else's weights (sparse here): more float arrays than any heap this test runs with.
        Map<String, long[]> shapes = new LinkedHashMap<>();
        shapes.put("model.embed_tokens.weight", new long[] {2_000_000_000L});
        shapes.put("lm_head.weight", new long[] {2_000_000_000L});
        Path big = SafetensorsFiles.sparse(dir.resolve("llm.safetensors"), Map.of("format", "pt"), shapes);
        assertOneLine(run("eval", big.toString(), "--model", "mnist-tiny", "--data", data.toString(), "--device",
                "cpu"), "llm.safetensors", "missing", "unexpected: [model.embed_tokens.weight, lm_head.weight]");
        String[] train = {"train", "--model", "mnist-tiny", "--data", data.toString(), "--device", "cpu", "--epochs",
            "1", "--batch", "16", "--out", dir.resolve("t").toString()};
        assertOneLine(run(concat(train, "--init", big.toString())), "llm.safetensors", "missing");
        assertOneLine(run(concat(train, "--resume", big.toString())), "llm.safetensors", "not a distill4j checkpoint");
        // A checkpoint of the right config whose moments are 2^31 values each: refused on the header as well.
        VitConfig tiny = VitConfig.preset("mnist-tiny");
        Map<String, long[]> ckpt = new LinkedHashMap<>();
        try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, tiny, 1, 0)) {
            for (var p : m.parameters()) ckpt.put(p.name(), p.shape());
            for (var p : m.parameters()) ckpt.put("optimizer.m." + p.name(), new long[] {2_000_000_000L});
        }
        Map<String, String> meta = new LinkedHashMap<>(ModelFile.metadata(tiny));
        meta.put("distill4j.kind", "checkpoint");
        Path badCheckpoint = SafetensorsFiles.sparse(dir.resolve("ckpt.safetensors"), meta, ckpt);
        assertOneLine(run(concat(train, "--resume", badCheckpoint.toString())), "ckpt.safetensors",
                "35 missing: [optimizer.v.patch_embed.proj.weight", "35 mis-shaped: [optimizer.m.patch_embed");
    }

    @Test
    void aModelTooLargeForTheMachineOrTheLimitIsOneLine() throws IOException {
        Path data = randomIdxDir();
        Path file = dir.resolve("small.safetensors");
        VitConfig wideImages = VitConfig.of(224, 16, 1, 10, 32, 1, 1, 1, false);
        try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, wideImages, 1, 3)) {
            ModelFile.save(file, m);
        }
        // Batches of 2^31 - 1 images of 224 x 224: more than a petabyte, which no machine has.
        assertOneLine(run("eval", file.toString(), "--batch", "2147483647", "--data", data.toString(), "--device",
                "cpu"), "needs", "PiB", "available");
        assertOneLine(run("eval", file.toString(), "--max-model-bytes", "1m", "--data", data.toString(), "--device",
                "cpu"), "needs", "more than the limit of 1.00 MiB (1048576 bytes)");
        Path tiny = dir.resolve("tiny.safetensors");
        try (Backend be = CpuBackend.open();
             VisionTransformer m = new VisionTransformer(be, VitConfig.preset("mnist-tiny"), 1, 3)) {
            ModelFile.save(tiny, m);
        }
        assertEquals(0, run("eval", tiny.toString(), "--max-model-bytes", "1g", "--data", data.toString(), "--device",
                "cpu").status());
    }

    @Test
    void nonFiniteWeightsAreRefusedNamingTheTensorUnlessAllowed() throws IOException {
        Path data = randomIdxDir();
        Path file = dir.resolve("nan.safetensors");
        VitConfig config = VitConfig.preset("mnist-tiny");
        try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, config, 1, 3)) {
            Map<String, TensorData> entries = ModelFile.entries(m);
            entries.get("head.weight").values()[17] = Float.NaN;
            float[] qkv = entries.get("blocks.1.attn.qkv.weight").values();
            qkv[0] = Float.POSITIVE_INFINITY;
            qkv[qkv.length - 1] = Float.NEGATIVE_INFINITY;
            Map<String, String> meta = ModelFile.metadata(config);
            meta.put("distill4j.kind", "model");
            Safetensors.write(file, entries, meta);
        }
        assertOneLine(run("eval", file.toString(), "--data", data.toString(), "--device", "cpu"), "nan.safetensors",
                "3 weights are NaN or infinite", "'blocks.1.attn.qkv.weight' (2 of 12288 values)",
                "'head.weight' (1 of 640 values)", "--allow-non-finite");
        assertOneLine(run("distill", "--teacher", file.toString(), "--data", data.toString(), "--device", "cpu",
                "--out", dir.resolve("o").toString()), "nan.safetensors", "'head.weight' (1 of 640 values)");
        assertEquals(0, run("eval", file.toString(), "--allow-non-finite", "--data", data.toString(), "--device",
                "cpu").status());
    }

    @Test
    void aHeaderTooLargeForTheHeapIsOneLine() throws Exception {
        // 165,000 empty tensors: a valid 9.9 MB header that takes about 8 times its size once parsed. In a JVM of
        // 48 MB of heap it is refused before it is parsed (it used to end in an OutOfMemoryError).
        StringBuilder json = new StringBuilder("{");
        for (int i = 0; i < 165_000; i++) {
            json.append(i == 0 ? "" : ",").append(String.format("\"t%07d\":{\"dtype\":\"F32\",\"shape\":[0],"
                    + "\"data_offsets\":[0,0]}", i));
        }
        Path file = headerOnly("wide.safetensors", json.append('}').toString());
        Path java = Path.of(System.getProperty("java.home"), "bin", "java");
        Process p = new ProcessBuilder(java.toString(), "-Xmx48m", "-cp", System.getProperty("java.class.path"),
                Main.class.getName(), "eval", file.toString(), "--model", "mnist-tiny", "--device", "cpu", "--data",
                randomIdxDir().toString()).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        String err = new String(p.getErrorStream().readAllBytes(), UTF_8);
        assertOneLine(new CliTest.Run(p.waitFor(), err), "wide.safetensors", "its header of 9900001 bytes, parsed, would need",
                "of Java heap");
    }

    private static String[] concat(String[] a, String... b) {
        String[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
