package org.distill4j.io;

import static java.nio.charset.StandardCharsets.UTF_8;

import com.google.gson.Strictness;
import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;
import com.google.gson.stream.JsonWriter;
import java.io.IOException;
import java.io.StringReader;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.CharBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.distill4j.MemoryLimitException;

/**
 * Reads and writes the safetensors format (huggingface/safetensors): an 8-byte little-endian header length
 * {@code N}, {@code N} bytes of UTF-8 JSON mapping each tensor name to {@code {"dtype", "shape", "data_offsets"}}
 * (plus an optional {@code "__metadata__"} string map), then the data buffer, little-endian and row-major, with
 * offsets relative to its start.
 *
 * <p>Reading accepts what the reference implementation accepts: header at most 100 MB, valid UTF-8, strict JSON,
 * and tensors whose byte ranges tile the data buffer with no overlap, gap or trailing byte; in addition, shapes of at
 * most {@value #MAX_RANK} dimensions. Every check runs on the header before a byte of data is read or allocated, so
 * a hostile file yields a {@link SafetensorsFormatException}, never an out-of-bounds read or an
 * {@link OutOfMemoryError}. The data is streamed through a 1 MB buffer with positional reads rather than
 * memory-mapped ({@link SafetensorsReader}): a mapping lives until the garbage collector drops it, and on some
 * systems keeps the file locked against the atomic replace that {@link #write} does when a checkpoint is saved again.
 */
public final class Safetensors {
    /** Largest header accepted, the reference implementation's limit. */
    public static final long MAX_HEADER_BYTES = 100_000_000L;

    static final String METADATA_KEY = "__metadata__";
    /**
     * Most dimensions a shape may have. The format sets none; a bound keeps a 100 MB header from holding one shape
     * of millions of numbers, which would take gigabytes as arrays and in messages; no model comes near 64.
     */
    public static final int MAX_RANK = 64;

    static final int MAX_ARRAY = Integer.MAX_VALUE - 8; // the largest float[] a JVM reliably allocates
    private static final long HEADER_HEAP_FACTOR = 10;
    private static final int CHUNK_BYTES = 1 << 20;

    private Safetensors() {}

    // ------------------------------------------------------------------------------------------------ reading

    /** The validated header of {@code file}, without reading its data. */
    public static SafetensorsHeader readHeader(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            return readHeader(ch, file);
        }
    }

    /**
     * Every tensor of {@code file} as float: F32 as stored, F16 and BF16 converted exactly, F64 rounded to nearest.
     * For files small enough to hold on the Java heap (test data, soft-label caches); a model or checkpoint is read
     * tensor by tensor into its own memory with a {@link SafetensorsReader}.
     *
     * @throws SafetensorsFormatException if the file is not valid safetensors
     * @throws UnsupportedDtypeException if a tensor has another dtype (checked before any data is read)
     * @throws MemoryLimitException if the arrays would not fit the free Java heap (checked before any is allocated)
     */
    public static SafetensorsFile read(Path file) throws IOException {
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            long bytes = 0;
            for (TensorInfo t : reader.header().tensors().values()) {
                if (!t.dtype().readsAsFloat()) throw new UnsupportedDtypeException(file, t.name(), t.dtype());
                bytes = t.numel() > (Long.MAX_VALUE - bytes) / Float.BYTES ? Long.MAX_VALUE
                        : bytes + t.numel() * Float.BYTES;
            }
            checkHeap(file, bytes, "its tensors as float arrays");
            Map<String, TensorData> tensors = new LinkedHashMap<>();
            for (TensorInfo t : reader.header().tensors().values()) {
                tensors.put(t.name(), new TensorData(t.shape(), reader.readFloats(t.name())));
            }
            return new SafetensorsFile(tensors, reader.header().metadata());
        }
    }

    /** Refuses, before anything is allocated, {@code bytes} of Java heap that are not free. */
    static void checkHeap(Path file, long bytes, String what) {
        long free = MemoryLimitException.freeHeap(bytes);
        if (bytes > free) {
            Runtime rt = Runtime.getRuntime();
            throw new MemoryLimitException(file + ": " + what + " would need "
                    + MemoryLimitException.formatBytes(bytes) + " of Java heap, more than the "
                    + MemoryLimitException.formatBytes(free) + " free (the heap's maximum is "
                    + MemoryLimitException.formatBytes(rt.maxMemory()) + ", -Xmx)", bytes, free);
        }
    }

    /** A name or string read from a file, in quotes and cut to 200 characters: for messages about it. */
    public static String quote(String s) {
        return "'" + shorten(s) + "'";
    }

    /** A string from a file cut to 200 characters: a message about it stays one readable line. */
    public static String shorten(String s) {
        return s.length() <= 200 ? s : s.substring(0, 200) + "... (" + s.length() + " characters)";
    }

    static SafetensorsHeader readHeader(FileChannel ch, Path file) throws IOException {
        long size = ch.size();
        if (size < 8) {
            throw new SafetensorsFormatException(file, "the file has " + size
                    + " bytes, fewer than the 8 of the header length");
        }
        ByteBuffer lengthBytes = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        readFully(ch, file, lengthBytes, 0);
        long n = lengthBytes.getLong(0); // a u64: negative here means >= 2^63
        if (n < 0 || n > MAX_HEADER_BYTES) {
            throw new SafetensorsFormatException(file, "header length " + Long.toUnsignedString(n)
                    + " exceeds the limit of " + MAX_HEADER_BYTES + " bytes");
        }
        if (n > size - 8) {
            throw new SafetensorsFormatException(file, "header length " + n + " runs past the end of the file ("
                    + size + " bytes)");
        }
        // Parsed, a header takes up to about 8 times its size on the heap (a million tiny entries: names, shapes,
        // maps, and their copies for the name checks; 768 MB was enough for 99 MB, 512 MB too little): 10 times.
        checkHeap(file, HEADER_HEAP_FACTOR * n, "its header of " + n + " bytes, parsed,");
        ByteBuffer headerBytes = ByteBuffer.allocate((int) n); // n <= file size: a header cannot claim memory
        readFully(ch, file, headerBytes, 8);
        headerBytes.flip();
        String json;
        try {
            json = UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(headerBytes)
                    .toString();
        } catch (CharacterCodingException e) {
            throw new SafetensorsFormatException(file, "the header is not valid UTF-8 (bad byte at offset "
                    + (8 + headerBytes.position()) + ")", e);
        }
        long dataStart = 8 + n;
        SafetensorsHeader header = parseHeader(json, file, dataStart);
        checkLayout(header, file, size - dataStart);
        return header;
    }

    private static SafetensorsHeader parseHeader(String json, Path file, long dataStart) throws IOException {
        Map<String, TensorInfo> tensors = new LinkedHashMap<>();
        Map<String, String> metadata = null;
        try {
            JsonReader r = new JsonReader(new StringReader(json));
            r.setStrictness(Strictness.STRICT);
            if (r.peek() != JsonToken.BEGIN_OBJECT) {
                throw new SafetensorsFormatException(file, "the header is not a JSON object (starts with "
                        + r.peek() + ")");
            }
            r.beginObject();
            while (r.hasNext()) {
                String name = r.nextName();
                if (name.equals(METADATA_KEY)) {
                    if (metadata != null) throw new SafetensorsFormatException(file, "'" + METADATA_KEY + "' twice");
                    metadata = parseMetadata(r, file);
                } else {
                    if (tensors.containsKey(name)) {
                        throw new SafetensorsFormatException(file, "tensor " + quote(name) + " appears twice");
                    }
                    tensors.put(name, parseEntry(r, file, name));
                }
            }
            r.endObject();
            if (r.peek() != JsonToken.END_DOCUMENT) {
                throw new SafetensorsFormatException(file, "content after the header's JSON object");
            }
        } catch (SafetensorsFormatException e) {
            throw e;
        } catch (IOException | IllegalStateException | NumberFormatException e) {
            // Gson's MalformedJsonException / EOFException for syntax, IllegalStateException for a wrong token.
            throw new SafetensorsFormatException(file, "the header is not valid JSON: " + jsonProblem(e), e);
        }
        return new SafetensorsHeader(tensors, metadata == null ? Map.of() : metadata, dataStart);
    }

    /** Gson's message, less its advice to parse leniently and its link: what is wrong, and where. */
    private static String jsonProblem(Exception e) {
        String m = String.valueOf(e.getMessage());
        int newline = m.indexOf('\n');
        if (newline >= 0) m = m.substring(0, newline);
        m = m.replace("Use JsonReader.setStrictness(Strictness.LENIENT) to accept malformed JSON", "malformed");
        return m.length() <= 300 ? m : m.substring(0, 300) + "..."; // its JSON path holds names of any length
    }

    private static Map<String, String> parseMetadata(JsonReader r, Path file) throws IOException {
        Map<String, String> m = new LinkedHashMap<>();
        if (r.peek() == JsonToken.NULL) { // the reference's Option<HashMap<String, String>> accepts null
            r.nextNull();
            return m;
        }
        if (r.peek() != JsonToken.BEGIN_OBJECT) {
            throw new SafetensorsFormatException(file, "'" + METADATA_KEY + "' is not an object of strings");
        }
        r.beginObject();
        while (r.hasNext()) {
            String key = r.nextName();
            if (r.peek() != JsonToken.STRING) {
                throw new SafetensorsFormatException(file, "metadata " + quote(key) + " is not a string");
            }
            if (m.put(key, r.nextString()) != null) {
                throw new SafetensorsFormatException(file, "metadata " + quote(key) + " appears twice");
            }
        }
        r.endObject();
        return m;
    }

    private static TensorInfo parseEntry(JsonReader r, Path file, String name) throws IOException {
        String where = "tensor " + quote(name);
        if (r.peek() != JsonToken.BEGIN_OBJECT) {
            throw new SafetensorsFormatException(file, where + " is not an object {dtype, shape, data_offsets}");
        }
        String dtypeName = null;
        long[] shape = null;
        long[] offsets = null;
        r.beginObject();
        while (r.hasNext()) {
            String key = r.nextName();
            switch (key) {
                case "dtype" -> {
                    if (dtypeName != null) throw new SafetensorsFormatException(file, where + ": 'dtype' twice");
                    if (r.peek() != JsonToken.STRING) {
                        throw new SafetensorsFormatException(file, where + ": 'dtype' is not a string");
                    }
                    dtypeName = r.nextString();
                }
                case "shape" -> {
                    if (shape != null) throw new SafetensorsFormatException(file, where + ": 'shape' twice");
                    shape = parseNaturals(r, file, where, "shape");
                }
                case "data_offsets" -> {
                    if (offsets != null) {
                        throw new SafetensorsFormatException(file, where + ": 'data_offsets' twice");
                    }
                    offsets = parseNaturals(r, file, where, "data_offsets");
                }
                default -> throw new SafetensorsFormatException(file, where + " has an unknown field " + quote(key));
            }
        }
        r.endObject();
        if (dtypeName == null) throw new SafetensorsFormatException(file, where + " has no 'dtype'");
        if (shape == null) throw new SafetensorsFormatException(file, where + " has no 'shape'");
        if (offsets == null) throw new SafetensorsFormatException(file, where + " has no 'data_offsets'");
        SafetensorsDtype dtype = SafetensorsDtype.parse(dtypeName);
        if (dtype == null) {
            throw new SafetensorsFormatException(file, where + " has unknown dtype " + quote(dtypeName) + " (known: "
                    + Arrays.toString(SafetensorsDtype.values()) + ")");
        }
        if (offsets.length != 2) {
            throw new SafetensorsFormatException(file, where + ": 'data_offsets' has " + offsets.length
                    + " numbers, not 2 (begin, end)");
        }
        long begin = offsets[0];
        long end = offsets[1];
        if (begin > end) {
            throw new SafetensorsFormatException(file, where + ": data_offsets begin " + begin + " > end " + end);
        }
        long bytes;
        try {
            long numel = 1;
            for (long d : shape) numel = Math.multiplyExact(numel, d);
            bytes = Math.multiplyExact(numel, (long) dtype.bytes());
        } catch (ArithmeticException e) {
            throw new SafetensorsFormatException(file, where + ": shape " + Arrays.toString(shape)
                    + " has more elements than a 64-bit count holds");
        }
        if (bytes != end - begin) {
            throw new SafetensorsFormatException(file, where + ": shape " + Arrays.toString(shape) + " of " + dtype
                    + " needs " + bytes + " bytes but data_offsets [" + begin + ", " + end + "] span " + (end - begin));
        }
        return new TensorInfo(name, dtype, shape, begin, end);
    }

    /** A JSON array of integers in [0, 2^63): dims and offsets. */
    private static long[] parseNaturals(JsonReader r, Path file, String where, String field) throws IOException {
        if (r.peek() != JsonToken.BEGIN_ARRAY) {
            throw new SafetensorsFormatException(file, where + ": '" + field + "' is not an array");
        }
        long[] a = new long[4];
        int n = 0;
        r.beginArray();
        while (r.hasNext()) {
            if (n == MAX_RANK) {
                throw new SafetensorsFormatException(file, where + ": '" + field + "' has more than " + MAX_RANK
                        + " numbers");
            }
            if (r.peek() != JsonToken.NUMBER) {
                throw new SafetensorsFormatException(file, where + ": '" + field + "' holds a " + r.peek()
                        + ", not an integer");
            }
            String literal = r.nextString(); // the number as written: "2.5" and "1e3" are not integers here
            long v;
            try {
                v = Long.parseLong(literal);
            } catch (NumberFormatException e) {
                throw new SafetensorsFormatException(file, where + ": '" + field + "' holds " + shorten(literal)
                        + ", not an integer below 2^63");
            }
            if (v < 0) {
                throw new SafetensorsFormatException(file, where + ": '" + field + "' holds the negative number " + v);
            }
            if (n == a.length) a = Arrays.copyOf(a, 2 * n);
            a[n++] = v;
        }
        r.endArray();
        return Arrays.copyOf(a, n);
    }

    /** The byte ranges must tile [0, dataLength): in bounds, no overlap, no gap, no trailing byte. */
    private static void checkLayout(SafetensorsHeader header, Path file, long dataLength) throws IOException {
        List<TensorInfo> byOffset = new ArrayList<>(header.tensors().values());
        for (TensorInfo t : byOffset) {
            if (t.end() > dataLength) {
                throw new SafetensorsFormatException(file, "tensor " + quote(t.name()) + ": data_offsets [" + t.begin()
                        + ", " + t.end() + "] run past the end of the data buffer (" + dataLength + " bytes)");
            }
        }
        byOffset.sort(Comparator.comparingLong(TensorInfo::begin).thenComparingLong(TensorInfo::end));
        long covered = 0;
        TensorInfo previous = null;
        for (TensorInfo t : byOffset) {
            if (t.begin() < covered) {
                throw new SafetensorsFormatException(file, "tensor " + quote(t.name()) + " [" + t.begin() + ", "
                        + t.end() + ") overlaps tensor " + quote(previous.name()) + " [" + previous.begin() + ", "
                        + previous.end() + ")");
            }
            if (t.begin() > covered) {
                throw new SafetensorsFormatException(file, "bytes [" + covered + ", " + t.begin()
                        + ") of the data buffer, before tensor " + quote(t.name()) + ", belong to no tensor");
            }
            covered = t.end();
            previous = t;
        }
        if (covered != dataLength) {
            throw new SafetensorsFormatException(file, "the data buffer has " + dataLength
                    + " bytes but the tensors cover only " + covered);
        }
    }

    static void readFully(FileChannel ch, Path file, ByteBuffer buf, long position) throws IOException {
        long p = position;
        while (buf.hasRemaining()) {
            int n = ch.read(buf, p);
            if (n < 0) {
                throw new SafetensorsFormatException(file, "the file ended at byte " + p
                        + " while reading (truncated while open?)");
            }
            p += n;
        }
    }

    /** IEEE 754 binary16 to binary32; exact, since every half is a float (NaN payloads kept). */
    static float f16ToFloat(short h) {
        int bits = h & 0xffff;
        int sign = (bits & 0x8000) << 16;
        int exponent = (bits >>> 10) & 0x1f;
        int mantissa = bits & 0x3ff;
        if (exponent == 0) { // zero or subnormal: mantissa * 2^-24, exact in float
            float magnitude = Math.scalb((float) mantissa, -24);
            return sign == 0 ? magnitude : -magnitude;
        }
        if (exponent == 0x1f) return Float.intBitsToFloat(sign | 0x7f800000 | (mantissa << 13)); // inf, NaN
        return Float.intBitsToFloat(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
    }

    /** bfloat16 is the top half of a binary32. */
    static float bf16ToFloat(short b) {
        return Float.intBitsToFloat((b & 0xffff) << 16);
    }

    // ------------------------------------------------------------------------------------------------ writing

    /** Writes {@code tensors} (in the map's order) as F32, with no metadata. See {@link #write(Path, Map, Map)}. */
    public static void write(Path file, Map<String, TensorData> tensors) throws IOException {
        write(file, tensors, Map.of());
    }

    /**
     * Writes {@code tensors} as F32 in the map's iteration order, and {@code metadata} as {@code __metadata__}
     * (omitted when empty). The header is padded with spaces to a multiple of 8 bytes, as the reference
     * implementation does, so the data starts 8-byte aligned.
     *
     * <p>Atomic ({@link AtomicFile}): a crash leaves either the old file or the new one, never part of one.
     */
    public static void write(Path file, Map<String, TensorData> tensors, Map<String, String> metadata)
            throws IOException {
        Objects.requireNonNull(file, "file");
        byte[] header = headerBytes(tensors, metadata);
        AtomicFile.write(file, ch -> {
            ByteBuffer chunk = ByteBuffer.allocate(CHUNK_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            chunk.putLong(header.length);
            for (int i = 0; i < header.length; ) {
                if (!chunk.hasRemaining()) drain(ch, chunk);
                int n = Math.min(chunk.remaining(), header.length - i);
                chunk.put(header, i, n);
                i += n;
            }
            for (TensorData t : tensors.values()) {
                float[] v = t.values();
                for (int i = 0; i < v.length; ) {
                    if (chunk.remaining() < Float.BYTES) drain(ch, chunk);
                    int n = Math.min(chunk.remaining() / Float.BYTES, v.length - i);
                    chunk.asFloatBuffer().put(v, i, n);
                    chunk.position(chunk.position() + n * Float.BYTES);
                    i += n;
                }
            }
            drain(ch, chunk);
        });
    }

    private static void drain(FileChannel ch, ByteBuffer chunk) throws IOException {
        chunk.flip();
        while (chunk.hasRemaining()) ch.write(chunk);
        chunk.clear();
    }

    private static byte[] headerBytes(Map<String, TensorData> tensors, Map<String, String> metadata) {
        Objects.requireNonNull(tensors, "tensors");
        Objects.requireNonNull(metadata, "metadata");
        StringWriter json = new StringWriter();
        try (JsonWriter w = new JsonWriter(json)) {
            w.beginObject();
            if (!metadata.isEmpty()) { // first, as the reference writes it
                w.name(METADATA_KEY).beginObject();
                for (Map.Entry<String, String> e : metadata.entrySet()) {
                    w.name(Objects.requireNonNull(e.getKey(), "metadata key"))
                            .value(Objects.requireNonNull(e.getValue(), () -> "metadata '" + e.getKey() + "'"));
                }
                w.endObject();
            }
            long offset = 0;
            for (Map.Entry<String, TensorData> e : tensors.entrySet()) {
                String name = Objects.requireNonNull(e.getKey(), "tensor name");
                TensorData t = Objects.requireNonNull(e.getValue(), () -> "tensor '" + name + "'");
                if (name.equals(METADATA_KEY)) {
                    throw new IllegalArgumentException("'" + METADATA_KEY + "' is reserved, not a tensor name");
                }
                long end = offset + (long) t.numel() * Float.BYTES;
                w.name(name).beginObject().name("dtype").value("F32").name("shape").beginArray();
                for (long d : t.shape()) w.value(d);
                w.endArray().name("data_offsets").beginArray().value(offset).value(end).endArray().endObject();
                offset = end;
            }
            w.endObject();
        } catch (IOException e) {
            throw new AssertionError("a StringWriter does not fail", e);
        }
        byte[] utf8;
        try {
            // REPORT: a name with a lone surrogate would otherwise be written as '?' without a word.
            ByteBuffer b = UTF_8.newEncoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .encode(CharBuffer.wrap(json.toString()));
            utf8 = Arrays.copyOf(b.array(), b.limit());
        } catch (CharacterCodingException e) {
            throw new IllegalArgumentException("a tensor name or metadata string is not valid Unicode", e);
        }
        int padded = (utf8.length + 7) / 8 * 8;
        if (padded > MAX_HEADER_BYTES) {
            throw new IllegalArgumentException("the header would take " + padded + " bytes, over the "
                    + MAX_HEADER_BYTES + " that readers accept");
        }
        byte[] header = Arrays.copyOf(utf8, padded);
        Arrays.fill(header, utf8.length, padded, (byte) ' ');
        return header;
    }

    // ------------------------------------------------------------------------------------------ state dicts

    /** Name to shape of {@code tensors}, in their order. */
    public static Map<String, long[]> shapes(Map<String, TensorData> tensors) {
        Map<String, long[]> m = new LinkedHashMap<>();
        tensors.forEach((name, t) -> m.put(name, t.shape()));
        return m;
    }

    /**
     * Checks that {@code actual} (a file's tensors) has exactly the names and shapes of {@code expected} (a
     * model's), and otherwise throws one exception listing every missing, unexpected and mis-shaped tensor.
     *
     * @throws StateDictMismatchException if the two differ in any name or shape
     */
    public static void checkNames(Map<String, long[]> expected, Map<String, long[]> actual) {
        Objects.requireNonNull(expected, "expected");
        Objects.requireNonNull(actual, "actual");
        List<String> missing = new ArrayList<>();
        List<StateDictMismatchException.ShapeMismatch> misShaped = new ArrayList<>();
        for (Map.Entry<String, long[]> e : expected.entrySet()) {
            long[] found = actual.get(e.getKey());
            if (found == null) {
                missing.add(e.getKey());
            } else if (!Arrays.equals(e.getValue(), found)) {
                misShaped.add(new StateDictMismatchException.ShapeMismatch(e.getKey(), e.getValue(), found));
            }
        }
        List<String> unexpected = new ArrayList<>();
        for (String name : actual.keySet()) {
            if (!expected.containsKey(name)) unexpected.add(name);
        }
        if (!missing.isEmpty() || !unexpected.isEmpty() || !misShaped.isEmpty()) {
            throw new StateDictMismatchException(missing, unexpected, misShaped);
        }
    }
}
