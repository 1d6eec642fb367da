package org.distill4j.io;

import com.google.gson.Gson;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * Reads and writes the safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes of
 * UTF-8 JSON {@code {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}}, then the
 * little-endian row-major data, offsets relative to its start.
 *
 * <p>Reading accepts F32 and converts F16, BF16 and F64 to float; every inconsistency of a hostile or damaged file
 * (truncation, a header length past the end, non-UTF-8 or malformed JSON, offsets past the end, overlapping or
 * mis-sized ranges, unknown dtypes, negative dims) is a {@link SafetensorsException} naming the file and the tensor,
 * never an out-of-bounds read. Writing is F32, header padded with spaces to a multiple of 8 (as the reference
 * implementation), into a temporary file moved into place: never a half-written file.
 */
public final class Safetensors {
    private static final long MAX_HEADER = 100L << 20;
    private static final Gson GSON = new Gson();

    private Safetensors() {}

    /** One tensor: its shape and its values as floats (row-major). */
    public record Entry(long[] shape, float[] values) {
        /** Checks that the values fill the shape. */
        public Entry {
            Objects.requireNonNull(shape, "shape");
            Objects.requireNonNull(values, "values");
            long n = 1;
            for (long d : shape) {
                if (d < 0) throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
                n = Math.multiplyExact(n, d);
            }
            if (n != values.length) {
                throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " holds " + n
                        + " values, got " + values.length);
            }
        }
    }

    /** A file's tensors in file order and its {@code __metadata__} (empty when absent). */
    public record Contents(Map<String, Entry> tensors, Map<String, String> metadata) {}

    /** Reads every tensor of {@code file}. */
    public static Contents read(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < 8) throw new SafetensorsException(file, "truncated: " + size + " bytes, not even a header length");
            ByteBuffer lenBuf = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, lenBuf, 0, file);
            long headerLen = lenBuf.getLong(0);
            if (headerLen < 2 || headerLen > MAX_HEADER || headerLen > size - 8) {
                throw new SafetensorsException(file, "bad header length " + Long.toUnsignedString(headerLen)
                        + " for a file of " + size + " bytes");
            }
            ByteBuffer header = ByteBuffer.allocate((int) headerLen);
            readFully(ch, header, 8, file);
            header.flip();
            String json;
            try {
                json = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT).decode(header).toString();
            } catch (CharacterCodingException e) {
                throw new SafetensorsException(file, "the header is not valid UTF-8");
            }
            JsonObject root;
            try {
                JsonElement e = JsonParser.parseString(json);
                if (!e.isJsonObject()) throw new SafetensorsException(file, "the header is not a JSON object");
                root = e.getAsJsonObject();
            } catch (JsonParseException | IllegalStateException e) {
                throw new SafetensorsException(file, "the header is not valid JSON: " + e.getMessage());
            }
            long dataStart = 8 + headerLen, dataLen = size - dataStart;
            Map<String, String> metadata = new LinkedHashMap<>();
            List<Object[]> specs = new ArrayList<>(); // name, dtype, shape, begin, end
            for (Map.Entry<String, JsonElement> e : root.entrySet()) {
                String name = e.getKey();
                if (name.equals("__metadata__")) {
                    if (!e.getValue().isJsonObject()) throw new SafetensorsException(file, "__metadata__ is not an object");
                    for (Map.Entry<String, JsonElement> m : e.getValue().getAsJsonObject().entrySet()) {
                        if (!m.getValue().isJsonPrimitive()) {
                            throw new SafetensorsException(file, "__metadata__." + m.getKey() + " is not a string");
                        }
                        metadata.put(m.getKey(), m.getValue().getAsString());
                    }
                    continue;
                }
                specs.add(parseSpec(file, name, e.getValue(), dataLen));
            }
            // Ranges must not overlap (the format forbids it; a file that does is damaged or crafted).
            List<Object[]> sorted = new ArrayList<>(specs);
            sorted.sort(Comparator.comparingLong(s -> (Long) s[3]));
            for (int i = 1; i < sorted.size(); i++) {
                Object[] a = sorted.get(i - 1), b = sorted.get(i);
                if ((Long) b[3] < (Long) a[4]) {
                    throw new SafetensorsException(file, "tensors " + a[0] + " and " + b[0] + " overlap in the data");
                }
            }
            Map<String, Entry> tensors = new LinkedHashMap<>();
            for (Object[] s : specs) {
                long begin = (Long) s[3], end = (Long) s[4];
                ByteBuffer raw = ByteBuffer.allocate(Math.toIntExact(end - begin)).order(ByteOrder.LITTLE_ENDIAN);
                readFully(ch, raw, dataStart + begin, file);
                raw.flip();
                tensors.put((String) s[0], new Entry((long[]) s[2], decode((String) s[1], raw)));
            }
            return new Contents(Collections.unmodifiableMap(tensors), Collections.unmodifiableMap(metadata));
        }
    }

    private static Object[] parseSpec(Path file, String name, JsonElement value, long dataLen)
            throws SafetensorsException {
        if (!value.isJsonObject()) throw new SafetensorsException(file, "tensor " + name + ": not an object");
        JsonObject o = value.getAsJsonObject();
        JsonElement dt = o.get("dtype"), sh = o.get("shape"), off = o.get("data_offsets");
        if (dt == null || !dt.isJsonPrimitive() || sh == null || !sh.isJsonArray() || off == null
                || !off.isJsonArray() || off.getAsJsonArray().size() != 2) {
            throw new SafetensorsException(file, "tensor " + name + ": needs dtype, shape and data_offsets [begin, end]");
        }
        String dtype = dt.getAsString();
        int width = switch (dtype) {
            case "F32" -> 4;
            case "F16", "BF16" -> 2;
            case "F64" -> 8;
            default -> throw new SafetensorsException(file, "tensor " + name + ": dtype " + dtype
                    + " is not supported (F32, F16, BF16, F64)");
        };
        JsonArray dims = sh.getAsJsonArray();
        long[] shape = new long[dims.size()];
        long n = 1;
        for (int i = 0; i < shape.length; i++) {
            shape[i] = integer(file, name, "shape", dims.get(i));
            if (shape[i] < 0) throw new SafetensorsException(file, "tensor " + name + ": negative dimension " + shape[i]);
            if (shape[i] > 0 && n > (Integer.MAX_VALUE / 8) / shape[i]) {
                throw new SafetensorsException(file, "tensor " + name + ": shape " + Arrays.toString(shape)
                        + " is too large");
            }
            n *= shape[i];
        }
        long begin = integer(file, name, "data_offsets", off.getAsJsonArray().get(0));
        long end = integer(file, name, "data_offsets", off.getAsJsonArray().get(1));
        if (begin < 0 || end < begin || end > dataLen) {
            throw new SafetensorsException(file, "tensor " + name + ": data_offsets [" + begin + ", " + end
                    + "] are outside the " + dataLen + " data bytes");
        }
        if (end - begin != n * width) {
            throw new SafetensorsException(file, "tensor " + name + ": " + dtype + " " + Arrays.toString(shape)
                    + " needs " + n * width + " bytes, data_offsets give " + (end - begin));
        }
        return new Object[] {name, dtype, shape, begin, end};
    }

    private static long integer(Path file, String name, String field, JsonElement e) throws SafetensorsException {
        try {
            if (e.isJsonPrimitive() && e.getAsJsonPrimitive().isNumber()) {
                double d = e.getAsDouble();
                long v = e.getAsLong();
                if (d == v) return v;
            }
        } catch (NumberFormatException ignored) {
            // reported below
        }
        throw new SafetensorsException(file, "tensor " + name + ": " + field + " holds " + e + ", not an integer");
    }

    private static float[] decode(String dtype, ByteBuffer raw) {
        switch (dtype) {
            case "F32": {
                float[] out = new float[raw.remaining() / 4];
                raw.asFloatBuffer().get(out);
                return out;
            }
            case "F64": {
                float[] out = new float[raw.remaining() / 8];
                for (int i = 0; i < out.length; i++) out[i] = (float) raw.getDouble(8 * i);
                return out;
            }
            case "BF16": {
                float[] out = new float[raw.remaining() / 2];
                // bfloat16 is the top half of a float32: exact.
                for (int i = 0; i < out.length; i++) out[i] = Float.intBitsToFloat((raw.getShort(2 * i) & 0xffff) << 16);
                return out;
            }
            case "F16": {
                float[] out = new float[raw.remaining() / 2];
                for (int i = 0; i < out.length; i++) out[i] = halfToFloat(raw.getShort(2 * i));
                return out;
            }
            default:
                throw new AssertionError(dtype);
        }
    }

    /** IEEE 754 binary16 to float, exactly (Java 17 has no Float.float16ToFloat). */
    static float halfToFloat(short h) {
        int sign = (h >>> 15) & 1, exp = (h >>> 10) & 0x1f, mant = h & 0x3ff;
        float v;
        if (exp == 0) {
            v = mant * 0x1p-24f;                      // subnormal: mant · 2^-24
        } else if (exp == 31) {
            v = mant == 0 ? Float.POSITIVE_INFINITY : Float.NaN;
        } else {
            v = Float.intBitsToFloat(((exp - 15 + 127) << 23) | (mant << 13));
        }
        return sign == 1 ? -v : v;
    }

    /**
     * Writes {@code tensors} (in map order) as F32 with {@code metadata}, atomically: into a temporary file beside
     * {@code file}, then moved over it.
     */
    public static void write(Path file, Map<String, Entry> tensors, Map<String, String> metadata) throws IOException {
        Objects.requireNonNull(tensors, "tensors");
        JsonObject header = new JsonObject();
        if (metadata != null && !metadata.isEmpty()) {
            JsonObject m = new JsonObject();
            metadata.forEach(m::addProperty);
            header.add("__metadata__", m);
        }
        long offset = 0;
        for (Map.Entry<String, Entry> e : tensors.entrySet()) {
            if (e.getKey().equals("__metadata__")) throw new IllegalArgumentException("__metadata__ is not a tensor name");
            JsonObject t = new JsonObject();
            t.addProperty("dtype", "F32");
            JsonArray shape = new JsonArray();
            for (long d : e.getValue().shape()) shape.add(d);
            t.add("shape", shape);
            JsonArray off = new JsonArray();
            long bytes = 4L * e.getValue().values().length;
            off.add(offset);
            off.add(offset + bytes);
            t.add("data_offsets", off);
            header.add(e.getKey(), t);
            offset += bytes;
        }
        byte[] json = GSON.toJson(header).getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) / 8 * 8;
        Path dir = file.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        Path tmp = Files.createTempFile(dir, "." + file.getFileName(), ".tmp");
        try {
            try (OutputStream out = Files.newOutputStream(tmp, StandardOpenOption.WRITE)) {
                ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(padded);
                out.write(len.array());
                out.write(json);
                for (int i = json.length; i < padded; i++) out.write(' ');
                ByteBuffer chunk = ByteBuffer.allocate(1 << 16).order(ByteOrder.LITTLE_ENDIAN);
                for (Entry e : tensors.values()) {
                    for (float v : e.values()) {
                        if (!chunk.hasRemaining()) {
                            out.write(chunk.array(), 0, chunk.position());
                            chunk.clear();
                        }
                        chunk.putFloat(v);
                    }
                }
                out.write(chunk.array(), 0, chunk.position());
            }
            Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    /**
     * Compares a file's tensors with what a model expects and throws ONE exception listing every missing,
     * unexpected and mis-shaped tensor (as PyTorch's {@code load_state_dict(strict=True)} does).
     */
    public static void checkNames(Path file, Map<String, long[]> expected, Map<String, long[]> actual)
            throws SafetensorsException {
        List<String> missing = new ArrayList<>(), unexpected = new ArrayList<>(), misshaped = new ArrayList<>();
        for (Map.Entry<String, long[]> e : expected.entrySet()) {
            long[] got = actual.get(e.getKey());
            if (got == null) {
                missing.add(e.getKey());
            } else if (!Arrays.equals(got, e.getValue())) {
                misshaped.add(e.getKey() + " (file " + Arrays.toString(got) + ", model " + Arrays.toString(e.getValue())
                        + ")");
            }
        }
        for (String name : actual.keySet()) if (!expected.containsKey(name)) unexpected.add(name);
        if (missing.isEmpty() && unexpected.isEmpty() && misshaped.isEmpty()) return;
        StringBuilder sb = new StringBuilder("does not match the model:");
        if (!missing.isEmpty()) sb.append(" missing ").append(missing.size()).append(' ').append(missing).append(';');
        if (!unexpected.isEmpty()) {
            sb.append(" unexpected ").append(unexpected.size()).append(' ').append(unexpected).append(';');
        }
        if (!misshaped.isEmpty()) {
            sb.append(" wrong shape ").append(misshaped.size()).append(' ').append(misshaped).append(';');
        }
        sb.setLength(sb.length() - 1);
        throw new SafetensorsException(file, sb.toString());
    }

    private static void readFully(FileChannel ch, ByteBuffer buf, long position, Path file) throws IOException {
        long pos = position;
        while (buf.hasRemaining()) {
            int n = ch.read(buf, pos);
            if (n < 0) throw new SafetensorsException(file, "truncated at byte " + pos);
            pos += n;
        }
    }

}
