package org.distill4j.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Safetensors against the format's definition: files built byte by byte here from the spec (header length, JSON,
 * little-endian data), conversions from IEEE bit patterns, and every kind of damaged file.
 */
class SafetensorsTest {
    @TempDir
    Path dir;

    /** A file from the spec: u64 LE header length, the header text, then the data bytes. */
    private Path file(String name, String header, byte[] data) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h).put(data);
        Path p = dir.resolve(name);
        Files.write(p, b.array());
        return p;
    }

    private static byte[] floatsLe(float... v) {
        ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float f : v) b.putFloat(f);
        return b.array();
    }

    @Test
    void roundTripKeepsNamesOrderShapesValuesAndMetadata() throws IOException {
        Random rng = new Random(Check.freshSeed());
        Map<String, Safetensors.Entry> t = new LinkedHashMap<>();
        t.put("blocks.0.attn.qkv.weight", new Safetensors.Entry(new long[] {6, 4}, Check.normal(rng, 24, 1)));
        t.put("cls_token", new Safetensors.Entry(new long[] {1, 1, 4}, Check.normal(rng, 4, 1)));
        t.put("scalar", new Safetensors.Entry(new long[] {}, new float[] {rng.nextFloat()}));
        t.put("empty", new Safetensors.Entry(new long[] {0, 3}, new float[0]));
        Path p = dir.resolve("m.safetensors");
        Safetensors.write(p, t, Map.of("k", "v"));
        byte[] raw = Files.readAllBytes(p);
        long headerLen = ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertEquals(0, (8 + headerLen) % 8, "data starts 8-byte aligned");
        Safetensors.Contents c = Safetensors.read(p);
        assertEquals(t.keySet().stream().toList(), c.tensors().keySet().stream().toList());
        for (String k : t.keySet()) {
            assertArrayEquals(t.get(k).shape(), c.tensors().get(k).shape(), k);
            assertArrayEquals(t.get(k).values(), c.tensors().get(k).values(), k);
        }
        assertEquals("v", c.metadata().get("k"));
        try (var files = Files.list(dir)) {
            assertEquals(1, files.count(), "no temporary file left behind");
        }
    }

    @Test
    void readsAFileBuiltFromTheSpecWithEveryDtype() throws IOException {
        // F32 [2] = {1.5, -2}; F16 [3] = {1.0 (0x3C00), -2.5 (0xC100), 2^-24 (0x0001, subnormal)};
        // BF16 [2] = {1.0 (0x3F80), -0.15625 (0xBE20)}; F64 [1] = {0.1}
        ByteBuffer d = ByteBuffer.allocate(8 + 6 + 4 + 8).order(ByteOrder.LITTLE_ENDIAN);
        d.put(floatsLe(1.5f, -2f)).putShort((short) 0x3C00).putShort((short) 0xC100).putShort((short) 0x0001);
        d.putShort((short) 0x3F80).putShort((short) 0xBE20).putDouble(0.1);
        String header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                + "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[8,14]},"
                + "\"c\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[14,18]},"
                + "\"d\":{\"dtype\":\"F64\",\"shape\":[1,1],\"data_offsets\":[18,26]},"
                + "\"__metadata__\":{\"format\":\"pt\"}}";
        Safetensors.Contents c = Safetensors.read(file("spec.safetensors", header, d.array()));
        assertArrayEquals(new float[] {1.5f, -2f}, c.tensors().get("a").values());
        assertArrayEquals(new float[] {1f, -2.5f, (float) Math.pow(2, -24)}, c.tensors().get("b").values());
        assertArrayEquals(new float[] {1f, -0.15625f}, c.tensors().get("c").values());
        assertArrayEquals(new float[] {0.1f}, c.tensors().get("d").values());
        assertArrayEquals(new long[] {1, 1}, c.tensors().get("d").shape());
        assertEquals("pt", c.metadata().get("format"));
    }

    @Test
    void halfPrecisionSpecialValues() {
        assertEquals(Float.POSITIVE_INFINITY, Safetensors.halfToFloat((short) 0x7C00));
        assertEquals(Float.NEGATIVE_INFINITY, Safetensors.halfToFloat((short) 0xFC00));
        assertTrue(Float.isNaN(Safetensors.halfToFloat((short) 0x7E00)));
        assertEquals(65504f, Safetensors.halfToFloat((short) 0x7BFF)); // largest normal
        assertEquals((float) Math.pow(2, -14), Safetensors.halfToFloat((short) 0x0400)); // smallest normal
        assertEquals(-0f, Safetensors.halfToFloat((short) 0x8000));
    }

    private void assertBad(String expected, Path p) {
        SafetensorsException e = assertThrows(SafetensorsException.class, () -> Safetensors.read(p));
        assertTrue(e.getMessage().contains(expected), "message: " + e.getMessage());
        assertTrue(e.getMessage().startsWith(p.toString()), "names the file: " + e.getMessage());
    }

    @Test
    void damagedFilesAreClearErrors() throws IOException {
        String ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        Path truncated = dir.resolve("short");
        Files.write(truncated, new byte[] {1, 2, 3});
        assertBad("truncated", truncated);
        Path huge = dir.resolve("huge");
        Files.write(huge, ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(Long.MIN_VALUE).array());
        assertBad("bad header length 9223372036854775808", huge);
        Path past = dir.resolve("past");
        Files.write(past, ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(100).array());
        assertBad("bad header length 100", past);
        assertBad("outside the 4 data bytes", file("cut", ok, floatsLe(1f)));
        assertBad("overlap", file("overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", floatsLe(1f, 2f)));
        assertBad("dtype Q7 is not supported", file("dtype",
                "{\"a\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", floatsLe(1f, 2f)));
        assertBad("needs 12 bytes, data_offsets give 8", file("size",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", floatsLe(1f, 2f)));
        assertBad("negative dimension", file("neg",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", floatsLe(1f, 2f)));
        assertBad("not valid JSON", file("json", "{\"a\": [1, 2", floatsLe(1f, 2f)));
        assertBad("needs dtype, shape and data_offsets", file("fields", "{\"a\":{\"dtype\":\"F32\"}}", floatsLe(1f)));
        byte[] bad = {'{', '"', (byte) 0xC3, (byte) 0x28, '"', ':', '1', '}'}; // 0xC3 0x28: invalid UTF-8
        ByteBuffer b = ByteBuffer.allocate(8 + bad.length).order(ByteOrder.LITTLE_ENDIAN).putLong(bad.length).put(bad);
        Path utf = dir.resolve("utf");
        Files.write(utf, b.array());
        assertBad("not valid UTF-8", utf);
    }

    @Test
    void checkNamesListsEveryProblemAtOnce() {
        Map<String, long[]> expected = new LinkedHashMap<>(), actual = new LinkedHashMap<>();
        expected.put("head.weight", new long[] {10, 64});
        expected.put("head.bias", new long[] {10});
        expected.put("norm.weight", new long[] {64});
        actual.put("head.weight", new long[] {1000, 64});
        actual.put("norm.weight", new long[] {64});
        actual.put("fc.weight", new long[] {3});
        SafetensorsException e = assertThrows(SafetensorsException.class,
                () -> Safetensors.checkNames(dir.resolve("x"), expected, actual));
        assertTrue(e.getMessage().contains("missing 1 [head.bias]"), e.getMessage());
        assertTrue(e.getMessage().contains("unexpected 1 [fc.weight]"), e.getMessage());
        assertTrue(e.getMessage().contains("head.weight (file [1000, 64], model [10, 64])"), e.getMessage());
    }
}
