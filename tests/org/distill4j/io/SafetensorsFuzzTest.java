package org.distill4j.io;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import org.distill4j.MemoryLimitException;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.data.Dataset;
import org.distill4j.data.Synthetic;
import org.distill4j.nn.ConfigMismatchException;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.Parameter;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.Check;
import org.distill4j.testing.SafetensorsFiles;
import org.distill4j.train.Checkpoint;
import org.distill4j.train.Evaluator;
import org.distill4j.train.SoftLabels;
import org.distill4j.train.TrainOptions;
import org.distill4j.train.Trainer;
import org.distill4j.train.TrainingRun;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Random mutations of valid model, checkpoint and soft-label files and of hand-written headers, fed through the
 * entry points the CLI uses: header; file to config (or a preset for a file without one) to memory check to model to
 * {@link ModelFile#load}; {@link Checkpoint#load} (resume); {@link SoftLabels#load} (the cache); and
 * {@link Safetensors#read}. Each call must succeed or throw a documented exception
 * ({@link SafetensorsFormatException}, {@link UnsupportedDtypeException}, {@link NonFiniteValuesException},
 * {@link MemoryLimitException}); anything else (OutOfMemoryError, IndexOutOfBounds, NullPointer, NegativeArraySize,
 * ArithmeticException, ...) fails the test, which prints the seed. A successful load must also hold the values the
 * whole-file reader gives.
 *
 * <p>Replay: {@code mvn test -Dtest=SafetensorsFuzzTest -Ddistill4j.test.seed=S}, one case with
 * {@code -Ddistill4j.fuzz.case=I}; more cases with {@code -Ddistill4j.fuzz.cases=N} (default 3000).
 */
class SafetensorsFuzzTest {
    private static final VitConfig BASE = VitConfig.of(8, 4, 1, 3, 32, 1, 1, 1, true);
    private static final long MODEL_LIMIT = 64L << 20;
    private static final int SOFT_IMAGES = 16;
    private static final Dataset SOFT_DATA = Synthetic.dataset(3, SOFT_IMAGES, BASE.classes(), 8, 8);
    private static final List<Class<? extends Throwable>> DOCUMENTED = List.of(SafetensorsFormatException.class,
            UnsupportedDtypeException.class, NonFiniteValuesException.class, MemoryLimitException.class,
            ConfigMismatchException.class);

    private static final long[] DIMS = {0, 1, 2, 3, 31, 32, 33, 64, 96, 2147483647L, 2147483648L, 4294967296L,
        1L << 40, 1L << 62, Long.MAX_VALUE};
    private static final String[] NUMBER_LITERALS = {"-1", "1.5", "1e3", "18446744073709551616", "\"3\"", "null",
        "[]", "{}", "true"};
    private static final String[] DTYPES = {"F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "C64",
        "X", "", "f32"};
    private static final String[] NAMES = {"blocks.1.norm1.weight", "optimizer.m.head.weight", "optimizer.zzz", "",
        "head.weight ", "__metadata__x", "a".repeat(300), "logits", "topk_classes", "dist_token"};
    private static final String[] FIELDS = {"0", "-1", "1", "2", "3", "4", "7", "8", "16", "31", "32", "64", "1000000",
        "2147483647", "2147483648", "", "x", "1e3", " 8", "true", "false", "TRUE", "08"};
    private static final String[] CONFIGS = {"28,4,1,10,64,1000000,2,2,true", "28,4,1,10,64,2147483647,2,2,true",
        "8,4,1,3,32,1,1,1,false",
        "8,4,1,3,32,2,1,1,true", "8,4,1,1000000000,32,1,1,1,true", "23170,2,1,3,64,1,1,1,true",
        "8,4,1,3,32,1,1,1,true,true", "8,4,1,3,32,1,1,1", ",,,,,,,,", "8,4,1,3,32,1,1,1,true"};
    private static final String[] META_KEYS = {"distill4j.kind", "distill4j.step", "distill4j.epoch",
        "distill4j.history", "distill4j.settings", "teacher", "dataset", "format"};
    private static final String[] META_VALUES = {"checkpoint", "model", "-1", "99999999999999999999", "[", "[{}]",
        "[{\"epoch\":\"x\"}]", "null", "", "teacher", SOFT_DATA.digest()};

    @TempDir
    Path dir;

    /** A file as its parts: the header's JSON and the data bytes. */
    private record Parts(String name, String json, byte[] data) {}

    /** What is written: the length field, the header bytes, then the data (or a hole of {@code holeLength}). */
    private static final class Mutant {
        final List<String> steps = new ArrayList<>();
        JsonObject header;      // null once the header is no longer JSON we edit structurally
        byte[] headerBytes;
        Long declaredLength;    // null: the header's length
        byte[] data;            // null: a hole of holeLength zero bytes
        long holeLength;
        long truncateAt = -1;
        byte[] appended;
    }

    @Test
    void mutatedFilesGiveSuccessOrADocumentedException() throws IOException {
        long seed = Check.freshSeed();
        int cases = Integer.getInteger("distill4j.fuzz.cases", 3000);
        Integer only = Integer.getInteger("distill4j.fuzz.case");
        System.out.println("SafetensorsFuzzTest: seed " + seed + ", " + cases + " cases (replay with "
                + "-Ddistill4j.test.seed=" + seed + ")");
        TrainOptions options = new TrainOptions().withEpochs(1).withBatch(1);
        Map<String, Integer> outcomes = new TreeMap<>();
        List<String> failures = new ArrayList<>();
        long t0 = System.nanoTime();
        try (Backend be = CpuBackend.open(); VisionTransformer model = new VisionTransformer(be, BASE, 1, 1);
             Trainer trainer = new Trainer(model, null, options, 10)) {
            List<Parts> bases = bases(model, trainer, options);
            Map<VitConfig, VisionTransformer> others = new HashMap<>();
            Path file = dir.resolve("case.safetensors");
            try {
                for (int i = 0; i < cases; i++) {
                    if (only != null && i != only) continue;
                    Random rng = new Random(seed ^ (i * 0x9E3779B97F4A7C15L));
                    // Half the cases start from a model or a checkpoint: the files users pass.
                    Parts base = bases.get(rng.nextInt(rng.nextBoolean() ? 2 : bases.size()));
                    Mutant m = mutate(base, rng);
                    write(file, m);
                    String what = "case " + i + " (" + base.name() + ": " + String.join(", ", m.steps) + ")";
                    runCase(file, what, be, model, trainer, others, outcomes, failures);
                }
            } finally {
                others.values().forEach(VisionTransformer::close);
            }
        }
        System.out.printf("SafetensorsFuzzTest: %d cases in %.1f s; outcomes %s%n", cases,
                (System.nanoTime() - t0) / 1e9, outcomes);
        assertTrue(failures.isEmpty(), failures.size() + " calls gave an undocumented outcome (seed " + seed + "):\n"
                + String.join("\n", failures.subList(0, Math.min(10, failures.size()))));
        if (only == null && cases >= 1000) {
            // Not vacuous: the mutants reached every stage, and every documented refusal happened.
            for (String expected : List.of("model:ok", "checkpoint:ok", "softlabels:ok", "read:ok",
                    "header:SafetensorsFormatException", "config:SafetensorsFormatException",
                    "config:UnsupportedDtypeException", "model:NonFiniteValuesException",
                    "checkpoint:NonFiniteValuesException", "read:MemoryLimitException")) {
                assertTrue(outcomes.containsKey(expected), expected + " never happened (seed " + seed + "): "
                        + outcomes);
            }
        }
    }

    /** A call of the pipeline; its outcome is counted, an undocumented one recorded as a failure. */
    private interface Call {
        void run() throws Exception;
    }

    private static boolean call(String step, Call c, String what, Map<String, Integer> outcomes,
                                List<String> failures) {
        try {
            c.run();
            outcomes.merge(step + ":ok", 1, Integer::sum);
            return true;
        } catch (Throwable e) { // OutOfMemoryError included: that is what this test is for
            if (DOCUMENTED.contains(e.getClass()) && e.getMessage() != null && !e.getMessage().isBlank()) {
                outcomes.merge(step + ":" + e.getClass().getSimpleName(), 1, Integer::sum);
            } else {
                StackTraceElement[] at = e.getStackTrace();
                failures.add(what + " " + step + ": " + e + (at.length > 0 ? " at " + at[0] : ""));
            }
            return false;
        }
    }

    private void runCase(Path file, String what, Backend be, VisionTransformer model, Trainer trainer,
                         Map<VitConfig, VisionTransformer> others, Map<String, Integer> outcomes,
                         List<String> failures) {
        call("header", () -> Safetensors.readHeader(file), what, outcomes, failures);
        SafetensorsFile[] whole = new SafetensorsFile[1];
        call("read", () -> whole[0] = Safetensors.read(file), what, outcomes, failures);
        // As eval and distill --teacher do: config (or the preset given for a file without one), size, model, load.
        VitConfig[] config = new VitConfig[1];
        boolean ok = call("config", () -> {
            VitConfig c = ModelFile.config(file);
            config[0] = c != null ? c : BASE;
        }, what, outcomes, failures);
        ok = ok && call("memory", () -> VisionTransformer.checkMemory(be, config[0], 1, MODEL_LIMIT), what, outcomes,
                failures);
        if (ok) {
            VisionTransformer target = config[0].equals(BASE) ? model
                    : others.computeIfAbsent(config[0], c -> new VisionTransformer(be, c, 1, 0));
            if (call("model", () -> ModelFile.load(file, target), what, outcomes, failures) && whole[0] != null) {
                for (Parameter p : target.parameters()) {
                    float[] expected = whole[0].tensors().get(p.name()).values(), got = p.value().toArray();
                    for (int j = 0; j < got.length; j++) {
                        if (Float.floatToRawIntBits(got[j]) != Float.floatToRawIntBits(expected[j])) {
                            failures.add(what + " model: " + p.name() + "[" + j + "] = " + got[j]
                                    + " streamed, " + expected[j] + " read whole");
                            break;
                        }
                    }
                }
            }
        }
        call("checkpoint", () -> Checkpoint.load(file, trainer), what, outcomes, failures);
        call("softlabels", () -> SoftLabels.load(file, "teacher", SOFT_DATA), what,
                outcomes, failures);
    }

    // ------------------------------------------------------------------------------------------- the base files

    private List<Parts> bases(VisionTransformer model, Trainer trainer, TrainOptions options) throws IOException {
        List<Parts> out = new ArrayList<>();
        Path f = dir.resolve("base.safetensors");
        ModelFile.save(f, model);
        out.add(parts("model", f));
        List<TrainingRun.Epoch> history = List.of(new TrainingRun.Epoch(1, 1.5, 0.25,
                new Evaluator.Accuracy(0.5, Double.NaN, 0.5, 8), 2.0, 100, 0));
        Checkpoint.save(f, trainer, options, 1, history);
        out.add(parts("checkpoint", f));
        Safetensors.write(f, ModelFile.entries(model)); // as timm writes it: no metadata
        out.add(parts("timm", f));
        SoftLabels soft = SoftLabels.compute(model, SOFT_DATA, "t");
        soft.save(f, "teacher", 0);
        out.add(parts("soft-labels", f));
        soft.save(f, "teacher", 2);
        out.add(parts("top-2 soft labels", f));
        Random rng = new Random(1);
        Map<String, long[]> shapes = VisionTransformer.parameterShapes(BASE);
        for (String dtype : new String[] {"F16", "BF16", "F64"}) {
            int size = dtype.equals("F64") ? 8 : 2;
            JsonObject h = SafetensorsFiles.header(ModelFile.metadata(BASE), shapes, dtype, size);
            ByteBuffer data = ByteBuffer.allocate((int) SafetensorsFiles.dataLength(h)).order(ByteOrder.LITTLE_ENDIAN);
            while (data.hasRemaining()) {
                if (size == 8) {
                    data.putDouble(rng.nextGaussian());
                } else {
                    data.putShort((short) rng.nextInt(0x3c00)); // finite and below 1, in both half formats
                }
            }
            out.add(new Parts(dtype + " model", h.toString(), data.array()));
        }
        out.add(new Parts("issue header", "{\"__metadata__\":{\"format\":\"pt\",\"distill4j.config\":"
                + "\"28,4,1,10,64,1000000,2,2,true\"}}", new byte[0]));
        out.add(new Parts("empty header", "{}", new byte[0]));
        out.add(new Parts("one tensor", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                new byte[8]));
        return out;
    }

    private static Parts parts(String name, Path file) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        int n = (int) ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        return new Parts(name, new String(bytes, 8, n, UTF_8).strip(), Arrays.copyOfRange(bytes, 8 + n, bytes.length));
    }

    // ----------------------------------------------------------------------------------------------- mutations

    private static Mutant mutate(Parts base, Random rng) {
        Mutant m = new Mutant();
        m.header = JsonParser.parseString(base.json()).getAsJsonObject();
        m.data = base.data().clone();
        int count = 1 + rng.nextInt(3);
        for (int k = 0; k < count; k++) {
            // 0-4 work on bytes (and mostly break the header), 5-11 on the JSON structure, three times as often.
            int op = m.header == null || rng.nextInt(4) == 0 ? rng.nextInt(5) : 5 + rng.nextInt(7);
            switch (op) {
                case 0 -> flipHeaderBytes(m, rng);
                case 1 -> flipDataBytes(m, rng);
                case 2 -> declaredLength(m, rng);
                case 3 -> truncateOrAppend(m, rng);
                case 4 -> editJsonText(m, rng);
                case 5 -> shape(m, rng);
                case 6 -> offsets(m, rng);
                case 7 -> dtype(m, rng);
                case 8 -> tensorEntries(m, rng);
                case 9 -> config(m, rng);
                case 10 -> metadata(m, rng);
                default -> nonFinite(m, rng);
            }
            if (op >= 5 && op <= 8 && m.header != null && rng.nextBoolean()) relayout(m, rng);
        }
        if (m.headerBytes == null) m.headerBytes = m.header.toString().getBytes(UTF_8);
        return m;
    }

    /** Freezes the structure into bytes: later edits work on the text. */
    private static byte[] headerBytes(Mutant m) {
        if (m.headerBytes == null) {
            m.headerBytes = m.header.toString().getBytes(UTF_8);
            m.header = null;
        }
        return m.headerBytes;
    }

    private static List<String> tensorNames(Mutant m) {
        List<String> names = new ArrayList<>(m.header.keySet());
        names.remove("__metadata__");
        return names;
    }

    private static JsonObject randomEntry(Mutant m, Random rng) {
        List<String> names = tensorNames(m);
        if (names.isEmpty()) return null;
        JsonElement e = m.header.get(names.get(rng.nextInt(names.size())));
        return e.isJsonObject() ? e.getAsJsonObject() : null;
    }

    private static void flipHeaderBytes(Mutant m, Random rng) {
        byte[] h = headerBytes(m);
        if (h.length == 0) return;
        byte[] values = {'"', '{', '}', '[', ']', ',', ':', '0', '9', '-', ' ', (byte) 0xFF, (byte) 0xC0, 0};
        for (int n = 1 + rng.nextInt(4); n > 0; n--) {
            int at = rng.nextInt(h.length);
            h[at] = rng.nextBoolean() ? values[rng.nextInt(values.length)] : (byte) rng.nextInt(256);
        }
        m.steps.add("header bytes flipped");
    }

    private static void flipDataBytes(Mutant m, Random rng) {
        if (m.data == null || m.data.length == 0) return;
        for (int n = 1 + rng.nextInt(8); n > 0; n--) m.data[rng.nextInt(m.data.length)] = (byte) rng.nextInt(256);
        m.steps.add("data bytes flipped");
    }

    private static void declaredLength(Mutant m, Random rng) {
        long n = headerBytes(m).length;
        long[] choices = {0, 1, 7, n - 1, n + 1, n + 8, 1L << 63, -1, 100_000_001L, Integer.MAX_VALUE, rng.nextLong()};
        m.declaredLength = choices[rng.nextInt(choices.length)];
        m.steps.add("header length " + Long.toUnsignedString(m.declaredLength));
    }

    private static void truncateOrAppend(Mutant m, Random rng) {
        long total = 8 + headerBytes(m).length + (m.data != null ? m.data.length : m.holeLength);
        if (rng.nextBoolean()) {
            m.truncateAt = rng.nextInt(10) == 0 ? rng.nextInt(9) : (long) (rng.nextDouble() * total);
            m.steps.add("truncated at " + m.truncateAt);
        } else {
            m.appended = new byte[1 + rng.nextInt(64)];
            rng.nextBytes(m.appended);
            m.steps.add(m.appended.length + " bytes appended");
        }
    }

    /** Text edits the structure cannot make: a duplicate key, a stray or missing character. */
    private static void editJsonText(Mutant m, Random rng) {
        String s = new String(headerBytes(m), UTF_8);
        int r = rng.nextInt(3);
        if (r == 0 && s.startsWith("{") && s.length() > 2) {
            // Repeat the first member: a duplicate tensor or a second __metadata__.
            int end = s.indexOf("},") + 1;
            if (end > 1) s = "{" + s.substring(1, end) + "," + s.substring(1);
            m.steps.add("first member repeated");
        } else if (r == 1) {
            int at = rng.nextInt(s.length() + 1);
            String[] inserts = {",", "}", "\"", "0", "-", "\\u0000", "\\ud800", "é"};
            s = s.substring(0, at) + inserts[rng.nextInt(inserts.length)] + s.substring(at);
            m.steps.add("character inserted");
        } else if (!s.isEmpty()) {
            int at = rng.nextInt(s.length());
            s = s.substring(0, at) + s.substring(Math.min(s.length(), at + 1 + rng.nextInt(8)));
            m.steps.add("characters deleted");
        }
        m.headerBytes = s.getBytes(UTF_8);
    }

    private static JsonElement number(Random rng) {
        if (rng.nextInt(5) == 0) return JsonParser.parseString(NUMBER_LITERALS[rng.nextInt(NUMBER_LITERALS.length)]);
        return new JsonPrimitive(DIMS[rng.nextInt(DIMS.length)]);
    }

    private static void shape(Mutant m, Random rng) {
        JsonObject t = randomEntry(m, rng);
        if (t == null || !t.has("shape") || !t.get("shape").isJsonArray()) return;
        JsonArray shape = t.getAsJsonArray("shape");
        int r = rng.nextInt(4);
        if (r == 0) {
            shape.add(number(rng));
        } else if (r == 1 && shape.size() > 0) {
            shape.remove(rng.nextInt(shape.size()));
        } else if (shape.size() > 0) {
            shape.set(rng.nextInt(shape.size()), number(rng));
        } else {
            t.add("shape", rng.nextBoolean() ? JsonNull.INSTANCE : new JsonPrimitive(3));
        }
        m.steps.add("shape " + t.get("shape"));
    }

    private static void offsets(Mutant m, Random rng) {
        JsonObject t = randomEntry(m, rng);
        if (t == null || !t.has("data_offsets") || !t.get("data_offsets").isJsonArray()) return;
        JsonArray o = t.getAsJsonArray("data_offsets");
        if (o.size() == 2 && rng.nextBoolean()) {
            JsonElement b = o.get(0);
            o.set(0, o.get(1));
            o.set(1, b);
        } else if (o.size() > 0) {
            int i = rng.nextInt(o.size());
            o.set(i, rng.nextBoolean() ? number(rng) : new JsonPrimitive(o.get(i).getAsLong() + rng.nextInt(9) - 4));
        }
        m.steps.add("data_offsets " + o);
    }

    private static void dtype(Mutant m, Random rng) {
        JsonObject t = randomEntry(m, rng);
        if (t == null) return;
        t.addProperty("dtype", DTYPES[rng.nextInt(DTYPES.length)]);
        m.steps.add("dtype " + t.get("dtype"));
    }

    private static void tensorEntries(Mutant m, Random rng) {
        List<String> names = tensorNames(m);
        if (names.isEmpty()) return;
        String name = names.get(rng.nextInt(names.size()));
        String other = NAMES[rng.nextInt(NAMES.length)];
        int r = rng.nextInt(3);
        if (r == 0) {
            m.header.remove(name);
            m.steps.add("removed " + name);
        } else if (r == 1) {
            m.header.add(other, m.header.get(name).deepCopy());
            m.steps.add("copied " + name + " as " + Safetensors.shorten(other));
        } else {
            JsonElement e = m.header.remove(name);
            m.header.add(other, e);
            m.steps.add("renamed " + name + " to " + Safetensors.shorten(other));
        }
    }

    private static JsonObject metadataObject(Mutant m) {
        JsonElement e = m.header.get("__metadata__");
        if (e == null || !e.isJsonObject()) {
            JsonObject o = new JsonObject();
            m.header.add("__metadata__", o);
            return o;
        }
        return e.getAsJsonObject();
    }

    private static void config(Mutant m, Random rng) {
        JsonObject meta = metadataObject(m);
        String config;
        if (rng.nextBoolean() && meta.has("distill4j.config")) {
            String[] f = meta.get("distill4j.config").getAsString().split(",", -1);
            f[rng.nextInt(f.length)] = FIELDS[rng.nextInt(FIELDS.length)];
            config = String.join(",", f);
        } else {
            config = CONFIGS[rng.nextInt(CONFIGS.length)];
        }
        meta.addProperty("distill4j.config", config);
        m.steps.add("config " + config);
    }

    private static void metadata(Mutant m, Random rng) {
        int r = rng.nextInt(4);
        if (r == 0) {
            JsonElement[] odd = {JsonNull.INSTANCE, new JsonPrimitive(5), new JsonArray(), new JsonPrimitive("x")};
            m.header.add("__metadata__", odd[rng.nextInt(odd.length)]);
            m.steps.add("__metadata__ " + m.header.get("__metadata__"));
        } else if (r == 1) {
            m.header.remove("__metadata__");
            m.steps.add("no metadata");
        } else {
            String key = META_KEYS[rng.nextInt(META_KEYS.length)], value = META_VALUES[rng.nextInt(META_VALUES.length)];
            metadataObject(m).addProperty(key, value);
            m.steps.add(key + " = " + value);
        }
    }

    /** One value of an F32 tensor set to NaN or an infinity. */
    private static void nonFinite(Mutant m, Random rng) {
        JsonObject t = randomEntry(m, rng);
        if (t == null || m.data == null || !t.has("dtype") || !"F32".equals(t.get("dtype").getAsString())) return;
        try {
            long begin = t.getAsJsonArray("data_offsets").get(0).getAsLong();
            long end = t.getAsJsonArray("data_offsets").get(1).getAsLong();
            if (end - begin < 4 || end > m.data.length) return;
            int at = (int) (begin + 4 * rng.nextInt((int) ((end - begin) / 4)));
            float[] bad = {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY};
            ByteBuffer.wrap(m.data).order(ByteOrder.LITTLE_ENDIAN).putFloat(at, bad[rng.nextInt(3)]);
            m.steps.add("non-finite value at byte " + at);
        } catch (RuntimeException e) {
            // offsets already mutated into something else: leave the data alone
        }
    }

    /**
     * Lays the tensors out again from their shapes and dtypes, so that a mutated shape passes the layout checks and
     * reaches the checks behind them; the data is random when small, else a hole (a sparse file of up to 1 TiB: far
     * past any heap, and under every file system's limit; ext4's 16 TiB, header included, was not).
     */
    private static void relayout(Mutant m, Random rng) {
        Map<String, Integer> sizes = Map.of("F32", 4, "F16", 2, "BF16", 2, "F64", 8, "I64", 8, "I32", 4, "U8", 1,
                "BOOL", 1, "F8_E4M3", 1, "C64", 8);
        long offset = 0;
        try {
            for (String name : tensorNames(m)) {
                JsonObject t = m.header.getAsJsonObject(name);
                long n = sizes.getOrDefault(t.get("dtype").getAsString(), 4);
                for (JsonElement d : t.getAsJsonArray("shape")) n = Math.multiplyExact(n, d.getAsLong());
                if (n < 0) return;
                JsonArray o = new JsonArray();
                o.add(offset);
                o.add(Math.addExact(offset, n));
                t.add("data_offsets", o);
                offset += n;
            }
        } catch (RuntimeException e) {
            return; // a shape that is no longer an array of numbers, or a size past 2^63
        }
        if (offset <= 4 << 20) {
            m.data = new byte[(int) offset];
            rng.nextBytes(m.data);
        } else if (offset <= 1L << 40) {
            m.data = null;
            m.holeLength = offset;
        } else {
            return;
        }
        m.steps.add("laid out again (" + offset + " data bytes)");
    }

    private static void write(Path file, Mutant m) throws IOException {
        // A new file each time: truncating one and writing it again makes ext4 flush it (auto_da_alloc), 20x slower.
        Files.deleteIfExists(file);
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            long n = m.declaredLength != null ? m.declaredLength : m.headerBytes.length;
            f.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(n).array());
            f.write(m.headerBytes);
            if (m.data != null) {
                f.write(m.data);
            } else {
                f.setLength(f.length() + m.holeLength);
            }
            if (m.appended != null) {
                f.seek(f.length());
                f.write(m.appended);
            }
            if (m.truncateAt >= 0 && m.truncateAt < f.length()) f.setLength(m.truncateAt);
        }
    }
}
