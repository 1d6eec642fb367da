package org.distill4j.io;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Safetensors read/write. libtorch (org.bytedeco:pytorch) has no safetensors writer, so the independent files
 * here are built byte by byte from the format's definition: a JSON string, a little-endian length, and
 * little-endian values through ByteBuffer.
 */
class SafetensorsTest {
    @TempDir
    Path dir;

    // -------------------------------------------------------------------------------------------- round trip

    @Test
    void randomTensorsRoundTripBitExactInOrderWithMetadata() throws IOException {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        Map<String, TensorData> tensors = new LinkedHashMap<>();
        // Names out of alphabetical order: the file keeps the map's order.
        tensors.put("blocks.1.mlp.fc1.weight", random(rng, 1 + rng.nextInt(40), 1 + rng.nextInt(40)));
        tensors.put("blocks.0.attn.qkv.bias", random(rng, 1 + rng.nextInt(100)));
        tensors.put("patch_embed.proj.weight", random(rng, 2 + rng.nextInt(3), 3, 4, 4));
        tensors.put("scale", random(rng)); // rank 0
        tensors.put("empty", new TensorData(new long[] {0, 3}, new float[0]));
        tensors.put("special", new TensorData(new long[] {7}, new float[] {Float.NaN, -0.0f, 0.0f,
                Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.MIN_VALUE, -Float.MAX_VALUE}));
        tensors.put("größe ✓", random(rng, 3)); // non-ASCII name
        tensors.put("big", random(rng, 700_001 + rng.nextInt(1000))); // spans the 1 MB I/O chunks, unaligned
        Map<String, String> metadata = Map.of("format", "pt", "note", "quote \" and newline \n");
        Path file = dir.resolve("model.safetensors");

        Safetensors.write(file, tensors, metadata);
        SafetensorsFile back = Safetensors.read(file);

        assertEquals(List.copyOf(tensors.keySet()), List.copyOf(back.tensors().keySet()), "order, seed " + seed);
        assertEquals(tensors, back.tensors(), "values bit for bit (NaN, -0.0 included), seed " + seed);
        assertEquals(metadata, back.metadata());
        SafetensorsHeader header = Safetensors.readHeader(file);
        assertTrue(header.tensors().values().stream().allMatch(t -> t.dtype() == SafetensorsDtype.F32));
        assertEquals(0, header.dataStart() % 8, "header padded to a multiple of 8");
        byte[] bytes = Files.readAllBytes(file);
        long n = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        assertEquals(header.dataStart(), 8 + n);
        String json = new String(bytes, 8, (int) n, UTF_8);
        assertTrue(json.startsWith("{") && json.stripTrailing().endsWith("}"), json);
        assertTrue(json.substring(json.stripTrailing().length()).chars().allMatch(c -> c == ' '), "space padding");
        long dataBytes = tensors.values().stream().mapToLong(t -> 4L * t.numel()).sum();
        assertEquals(8 + n + dataBytes, bytes.length);
    }

    @Test
    void writeReplacesAtomicallyAndLeavesNoTemporaryFile() throws IOException {
        Path file = dir.resolve("ckpt.safetensors");
        Safetensors.write(file, Map.of("a", new TensorData(new long[] {2}, new float[] {1, 2})));
        Safetensors.write(file, Map.of("b", new TensorData(new long[] {1}, new float[] {3})));
        assertEquals(Map.of("b", new TensorData(new long[] {1}, new float[] {3})), Safetensors.read(file).tensors());
        // A write that fails leaves the previous file as it was, and nothing else.
        Map<String, TensorData> bad = new LinkedHashMap<>();
        bad.put("ok", new TensorData(new long[] {1}, new float[] {5}));
        bad.put("__metadata__", new TensorData(new long[] {1}, new float[] {6}));
        assertThrows(IllegalArgumentException.class, () -> Safetensors.write(file, bad));
        assertEquals(Map.of("b", new TensorData(new long[] {1}, new float[] {3})), Safetensors.read(file).tensors());
        try (Stream<Path> files = Files.list(dir)) {
            assertEquals(List.of(file), files.toList());
        }
        assertThrows(IOException.class, () -> Safetensors.write(dir.resolve("no/such/dir/x.safetensors"), Map.of()));
    }

    @Test
    void tensorDataChecksItsShape() {
        assertThrows(IllegalArgumentException.class, () -> new TensorData(new long[] {2, 3}, new float[5]));
        assertThrows(IllegalArgumentException.class, () -> new TensorData(new long[] {-1}, new float[0]));
    }

    // ----------------------------------------------------------------------------------- independent files

    @Test
    void readsAFileBuiltFromTheSpecification() throws IOException {
        // Data laid out in a different order than the header lists the tensors; metadata last; spaces in the JSON.
        ByteBuffer data = ByteBuffer.allocate(4 * 6 + 2 * 3 + 2 * 2 + 8 * 2).order(ByteOrder.LITTLE_ENDIAN);
        data.putShort((short) 0x3C00).putShort((short) 0xC000).putShort((short) 0x7BFF);  // F16 [0, 6): 1, -2, 65504
        data.putShort((short) 0x3F80).putShort((short) 0x4049);                            // BF16 [6, 10): 1, 3.140625
        for (float v : new float[] {1.5f, -2.25f, 3e-8f, 4e30f, -0f, 6.125f}) data.putFloat(v); // F32 [10, 34)
        data.putDouble(0.1).putDouble(-1e300);                                             // F64 [34, 50)
        String json = "{ \"w\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [10, 34]},"
                + " \"h\": {\"shape\": [3], \"dtype\": \"F16\", \"data_offsets\": [0, 6]},"
                + " \"b\": {\"data_offsets\": [6, 10], \"dtype\": \"BF16\", \"shape\": [2]},"
                + " \"d\": {\"dtype\": \"F64\", \"shape\": [1, 2], \"data_offsets\": [34, 50]},"
                + " \"__metadata__\": {\"format\": \"pt\"} }";
        Path file = file("spec.safetensors", json.getBytes(UTF_8), data.array());

        SafetensorsFile f = Safetensors.read(file);

        assertEquals(List.of("w", "h", "b", "d"), List.copyOf(f.tensors().keySet()));
        assertEquals(Map.of("format", "pt"), f.metadata());
        assertArrayEquals(new long[] {2, 3}, f.tensors().get("w").shape());
        assertArrayEquals(new float[] {1.5f, -2.25f, 3e-8f, 4e30f, -0f, 6.125f}, f.tensors().get("w").values());
        assertArrayEquals(new float[] {1f, -2f, 65504f}, f.tensors().get("h").values());
        assertArrayEquals(new float[] {1f, 3.140625f}, f.tensors().get("b").values());
        assertArrayEquals(new float[] {0.1f, Float.NEGATIVE_INFINITY}, f.tensors().get("d").values(), "F64 rounded");
        assertArrayEquals(new long[] {1, 2}, f.shapes().get("d"));
    }

    @Test
    void everyHalfAndBfloat16ConvertsToItsIeeeValue() throws IOException {
        // Every bit pattern; the F16 ones nine times over, so the read crosses its 1 MB chunks.
        int copies = 9;
        int f16Bytes = 2 * 65536 * copies;
        ByteBuffer data = ByteBuffer.allocate(f16Bytes + 2 * 65536).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < 65536 * copies; i++) data.putShort((short) i);
        for (int bits = 0; bits < 65536; bits++) data.putShort((short) bits);
        String json = "{\"f16\":{\"dtype\":\"F16\",\"shape\":[" + copies + ",65536],\"data_offsets\":[0,"
                + f16Bytes + "]},\"bf16\":{\"dtype\":\"BF16\",\"shape\":[256,256],\"data_offsets\":[" + f16Bytes
                + "," + (f16Bytes + 131072) + "]}}";
        SafetensorsFile f = Safetensors.read(file("halves.safetensors", json.getBytes(UTF_8), data.array()));
        float[] f16 = f.tensors().get("f16").values();
        float[] bf16 = f.tensors().get("bf16").values();
        for (int i = 0; i < f16.length; i++) {
            int b = i & 0xffff;
            assertEquals(0, Double.compare(ieee(b, 5, 10), f16[i]), () -> String.format("F16 0x%04x", b));
        }
        for (int bits = 0; bits < 65536; bits++) {
            int b = bits;
            assertEquals(0, Double.compare(ieee(bits, 8, 7), bf16[bits]), () -> String.format("BF16 0x%04x", b));
        }
        assertEquals(Math.pow(2, -24), f16[0x0001], "smallest half subnormal");
        assertEquals(65504f, f16[0x7BFF], "largest half");
    }

    /**
     * The value of a 16-bit IEEE-754-style pattern with the given exponent and fraction widths, from the
     * definition: (-1)^s × 2^(e - bias) × (1 + f / 2^p) when normal, (-1)^s × 2^(1 - bias) × f / 2^p when e = 0,
     * ±∞ or NaN when e is all ones. Powers of two are exact in double.
     */
    private static double ieee(int bits, int exponentBits, int fractionBits) {
        int sign = bits >>> (exponentBits + fractionBits);
        int e = (bits >>> fractionBits) & ((1 << exponentBits) - 1);
        int f = bits & ((1 << fractionBits) - 1);
        int bias = (1 << (exponentBits - 1)) - 1;
        double magnitude;
        if (e == (1 << exponentBits) - 1) {
            magnitude = f == 0 ? Double.POSITIVE_INFINITY : Double.NaN;
        } else if (e == 0) {
            magnitude = Math.pow(2, 1 - bias) * f / Math.pow(2, fractionBits);
        } else {
            magnitude = Math.pow(2, e - bias) * (1 + f / Math.pow(2, fractionBits));
        }
        return sign == 1 ? -magnitude : magnitude;
    }

    // ---------------------------------------------------------------------------------------------- bad files

    @Test
    void truncatedFilesAreRejected() throws IOException {
        assertFormatError(write("empty", new byte[0]), "fewer than the 8");
        assertFormatError(write("five", new byte[5]), "fewer than the 8");
        // A valid file cut in the middle of its data.
        Path whole = dir.resolve("whole.safetensors");
        Safetensors.write(whole, Map.of("a", new TensorData(new long[] {4}, new float[] {1, 2, 3, 4})));
        byte[] bytes = Files.readAllBytes(whole);
        assertFormatError(write("cut", java.util.Arrays.copyOf(bytes, bytes.length - 3)), "run past the end");
        assertFormatError(write("cutheader", java.util.Arrays.copyOf(bytes, 12)), "runs past the end of the file");
    }

    @Test
    void absurdHeaderLengthsAreRejectedWithoutAllocating() throws IOException {
        assertFormatError(write("2pow63", lengthPrefixed(1L << 63, new byte[16])), "9223372036854775808");
        assertFormatError(write("max", lengthPrefixed(-1L, new byte[16])), "18446744073709551615");
        assertFormatError(write("200mb", lengthPrefixed(200_000_000L, new byte[16])), "exceeds the limit");
        assertFormatError(write("past", lengthPrefixed(1000, "{}".getBytes(UTF_8))), "runs past the end");
    }

    @Test
    void headerThatIsNotUtf8OrNotJsonIsRejected() throws IOException {
        byte[] bad = "{\"a\u0000\":{}}".getBytes(UTF_8);
        bad[3] = (byte) 0xFF; // 0xFF never occurs in UTF-8
        assertFormatError(file("utf8", bad, new byte[0]), "not valid UTF-8");
        byte[] overlong = {'{', '"', (byte) 0xC0, (byte) 0x80, '"', ':', '1', '}'}; // overlong NUL
        assertFormatError(file("overlong", overlong, new byte[0]), "not valid UTF-8");
        assertFormatError(file("garbage", "{not json at all".getBytes(UTF_8), new byte[0]), "not valid JSON");
        assertFormatError(file("unclosed", "{\"a\": {\"dtype\": \"F32\",".getBytes(UTF_8), new byte[0]),
                "not valid JSON");
        assertFormatError(file("trailing", "{} {}".getBytes(UTF_8), new byte[0]), "JSON");
        assertFormatError(file("array", "[1, 2]".getBytes(UTF_8), new byte[0]), "not a JSON object");
        assertFormatError(file("blank", "        ".getBytes(UTF_8), new byte[0]), "not valid JSON");
        assertFormatError(file("lenient", "{a: {}}".getBytes(UTF_8), new byte[0]), "not valid JSON");
        assertFormatError(header("{\"a\": 5}", 0), "tensor 'a' is not an object");
        assertFormatError(header("{\"__metadata__\": {\"k\": 1}}", 0), "metadata 'k' is not a string");
    }

    @Test
    void missingAndMalformedFieldsAreNamed() throws IOException {
        assertFormatError(header("{\"t\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4), "tensor 't' has no 'dtype'");
        assertFormatError(header("{\"t\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4), "has no 'shape'");
        assertFormatError(header("{\"t\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4), "has no 'data_offsets'");
        assertFormatError(header("{\"t\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], \"x\": 1}}", 4),
                "unknown field 'x'");
        assertFormatError(header(entry("t", "F32", "[2.5]", "[0, 10]"), 10), "2.5, not an integer");
        assertFormatError(header(entry("t", "F32", "[\"2\"]", "[0, 8]"), 8), "not an integer");
        assertFormatError(header(entry("t", "F32", "[1]", "[0, 4, 8]"), 8), "3 numbers, not 2");
        assertFormatError(header(entry("t", "F32", "[1]", "[0, 4]") .replace("}}", "}, \"t\": {}}"), 4), "appears twice");
    }

    @Test
    void unknownDtypeIsNamedAndUnsupportedDtypeFailsOnlyWhenReadAsFloat() throws IOException {
        assertFormatError(header(entry("w", "Q7", "[2]", "[0, 8]"), 8), "tensor 'w' has unknown dtype 'Q7'");
        Path ints = header(entry("steps", "I64", "[2]", "[0, 16]"), 16);
        assertEquals(SafetensorsDtype.I64, Safetensors.readHeader(ints).tensors().get("steps").dtype());
        UnsupportedDtypeException e = assertThrows(UnsupportedDtypeException.class, () -> Safetensors.read(ints));
        assertTrue(e.getMessage().contains("'steps'") && e.getMessage().contains("I64"), e.getMessage());
    }

    @Test
    void inconsistentShapesAndOffsetsAreRejected() throws IOException {
        assertFormatError(header(entry("t", "F32", "[2, 3]", "[0, 20]"), 20), "needs 24 bytes but data_offsets [0, 20] span 20");
        assertFormatError(header(entry("t", "F32", "[-2]", "[0, 8]"), 8), "negative number -2");
        assertFormatError(header(entry("t", "F32", "[2]", "[8, 0]"), 8), "begin 8 > end 0");
        assertFormatError(header(entry("t", "F32", "[4]", "[0, 16]"), 8), "run past the end of the data buffer");
        // Huge but consistent claims fail on the file size, before anything is allocated.
        assertFormatError(header(entry("t", "F32", "[1000000000000]", "[0, 4000000000000]"), 8), "run past the end");
        assertFormatError(header(entry("t", "F32", "[4294967296, 4294967296, 4]", "[0, 4]"), 4), "64-bit count");
        assertFormatError(header(entry("t", "F32", "[1]", "[0, 99999999999999999999]"), 4), "not an integer below 2^63");
    }

    @Test
    void rangesMustTileTheDataBuffer() throws IOException {
        String overlapping = "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                + " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}";
        assertFormatError(header(overlapping, 12), "tensor 'b' [4, 12) overlaps tensor 'a' [0, 8)");
        String same = "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                + " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}";
        assertFormatError(header(same, 8), "overlaps");
        assertFormatError(header(entry("a", "F32", "[2]", "[4, 12]"), 12), "bytes [0, 4)");
        assertFormatError(header(entry("a", "F32", "[2]", "[0, 8]"), 12), "cover only 8");
        // Empty tensors take no bytes and may sit anywhere on the boundaries.
        String empties = "{\"e\": {\"dtype\": \"F32\", \"shape\": [0, 5], \"data_offsets\": [0, 0]},"
                + " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                + " \"f\": {\"dtype\": \"F16\", \"shape\": [0], \"data_offsets\": [4, 4]}}";
        assertDoesNotThrow(() -> Safetensors.read(header(empties, 4)));
    }

    // ----------------------------------------------------------------------------------------- state dicts

    @Test
    void checkNamesListsEveryProblemAtOnce() {
        Map<String, long[]> expected = new LinkedHashMap<>();
        expected.put("cls_token", new long[] {1, 1, 192});
        expected.put("head.weight", new long[] {10, 192});
        expected.put("head.bias", new long[] {10});
        expected.put("norm.weight", new long[] {192});
        Map<String, long[]> actual = new LinkedHashMap<>();
        actual.put("head.weight", new long[] {1000, 192});
        actual.put("cls_token", new long[] {1, 1, 192});
        actual.put("dist_token", new long[] {1, 1, 192});
        actual.put("head.bias", new long[] {1000});
        actual.put("fc_norm.weight", new long[] {192});

        StateDictMismatchException e = assertThrows(StateDictMismatchException.class,
                () -> Safetensors.checkNames(expected, actual));

        assertEquals(List.of("norm.weight"), e.missing());
        assertEquals(List.of("dist_token", "fc_norm.weight"), e.unexpected());
        assertEquals(List.of(new StateDictMismatchException.ShapeMismatch("head.weight", new long[] {10, 192},
                        new long[] {1000, 192}),
                new StateDictMismatchException.ShapeMismatch("head.bias", new long[] {10}, new long[] {1000})),
                e.misShaped());
        for (String s : List.of("norm.weight", "dist_token", "fc_norm.weight", "head.weight: expected [10, 192], "
                + "found [1000, 192]", "head.bias")) {
            assertTrue(e.getMessage().contains(s), s + " in " + e.getMessage());
        }
        Map<String, long[]> copy = new LinkedHashMap<>();
        expected.forEach((k, v) -> copy.put(k, v.clone()));
        assertDoesNotThrow(() -> Safetensors.checkNames(expected, copy));
    }

    // -------------------------------------------------------------------------------------------- helpers

    private static TensorData random(Random rng, long... shape) {
        long n = 1;
        for (long d : shape) n *= d;
        return new TensorData(shape, Check.normal(rng, (int) n, 1));
    }

    private static String entry(String name, String dtype, String shape, String offsets) {
        return "{\"" + name + "\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape + ", \"data_offsets\": "
                + offsets + "}}";
    }

    /** A file with this JSON header (unpadded) and {@code dataBytes} zero bytes of data. */
    private Path header(String json, int dataBytes) throws IOException {
        return file("h" + Math.abs((long) json.hashCode()) + "_" + dataBytes, json.getBytes(UTF_8), new byte[dataBytes]);
    }

    private Path file(String name, byte[] header, byte[] data) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(lengthPrefixed(header.length, header));
        out.write(data);
        return write(name, out.toByteArray());
    }

    private static byte[] lengthPrefixed(long length, byte[] rest) {
        return ByteBuffer.allocate(8 + rest.length).order(ByteOrder.LITTLE_ENDIAN).putLong(length).put(rest).array();
    }

    private Path write(String name, byte[] bytes) throws IOException {
        Path p = dir.resolve(name.endsWith(".safetensors") ? name : name + ".safetensors");
        Files.write(p, bytes);
        return p;
    }

    private static void assertFormatError(Path file, String expectedInMessage) {
        SafetensorsFormatException e = assertThrows(SafetensorsFormatException.class, () -> Safetensors.read(file));
        assertTrue(e.getMessage().contains(expectedInMessage),
                () -> "expected '" + expectedInMessage + "' in: " + e.getMessage());
        assertTrue(e.getMessage().contains(file.getFileName().toString()), e.getMessage());
        assertEquals(file, e.file());
    }
}
