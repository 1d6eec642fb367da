package org.distill4j.nn;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.distill4j.io.NonFiniteValuesException;
import org.distill4j.io.Safetensors;
import org.distill4j.io.SafetensorsFormatException;
import org.distill4j.io.SafetensorsHeader;
import org.distill4j.io.SafetensorsReader;
import org.distill4j.io.StateDictMismatchException;
import org.distill4j.io.TensorData;
import org.distill4j.io.TensorInfo;
import org.distill4j.io.UnsupportedDtypeException;

/**
 * A model's parameters as a safetensors file with timm's names and shapes ({@code patch_embed.proj.weight},
 * {@code cls_token}, {@code dist_token}, {@code pos_embed}, {@code blocks.{i}...}, {@code norm}, {@code head},
 * {@code head_dist}): loadable by timm's {@code load_state_dict(strict=True)}, and a timm state dict saved as
 * safetensors loads here. The metadata records our config (a timm file without it loads into a config given by the
 * caller).
 *
 * <p>A file is untrusted input, read in an order that allocates nothing it has not checked:
 * <ol>
 *   <li>{@link #config(Path)} reads the header alone: the recorded config (nine fields, each in range, sizes in 64
 *       bits) and the header's tensor names, shapes and dtypes, which must be exactly that config's;</li>
 *   <li>{@link VisionTransformer#checkMemory} refuses a model larger than the free memory or the caller's limit,
 *       naming the bytes it would need (the constructor checks the free memory itself);</li>
 *   <li>{@link #load} checks the header against the model, then copies the tensors one at a time straight into its
 *       memory (a 1 MB buffer on the Java heap, whatever the file's size), and refuses NaN and infinite weights.</li>
 * </ol>
 */
public final class ModelFile {
    /** What {@link #load} does with weights that are NaN or infinite. */
    public enum NonFinite {
        /** Refuse the file with a {@link NonFiniteValuesException} naming each such tensor and its count. */
        REFUSE,
        /** Load them anyway: to look into a model whose training diverged. */
        ALLOW
    }

    private static final String CONFIG_KEY = "distill4j.config";
    private static final String PRESET_KEY = "distill4j.preset";  // the name only: the shape is CONFIG_KEY's
    private static final String OPTIMIZER_PREFIX = "optimizer.";
    private static final String[] CONFIG_FIELDS = {"image size", "patch", "channels", "classes", "dim", "depth",
        "heads", "mlp ratio", "distilled"};

    private ModelFile() {}

    /** The parameters as safetensors entries (copied to the host), in parameter order. */
    public static Map<String, TensorData> entries(VisionTransformer model) {
        Map<String, TensorData> out = new LinkedHashMap<>();
        for (Parameter p : model.parameters()) out.put(p.name(), new TensorData(p.shape(), p.value().toArray()));
        return out;
    }

    /** The metadata describing {@code config}. */
    public static Map<String, String> metadata(VitConfig config) {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("format", "pt");
        m.put(CONFIG_KEY, describe(config));
        if (!config.name().equals("custom")) m.put(PRESET_KEY, config.name());
        return m;
    }

    /** Writes the model file atomically. */
    public static void save(Path file, VisionTransformer model) throws IOException {
        Map<String, String> meta = metadata(model.config());
        meta.put("distill4j.kind", "model");
        Safetensors.write(file, entries(model), meta);
    }

    /**
     * The config recorded in {@code metadata}, or null when there is none (a file from timm): nine comma-separated
     * fields (image size, patch, channels, classes, dim, depth, heads, mlp ratio as integers; distilled as true or
     * false), each checked by {@link VitConfig#of}.
     *
     * @throws SafetensorsFormatException when the recorded config is malformed or not a valid config, naming the field
     */
    public static VitConfig config(Path file, Map<String, String> metadata) throws SafetensorsFormatException {
        String s = metadata.get(CONFIG_KEY);
        if (s == null) return null;
        String where = CONFIG_KEY + " " + Safetensors.quote(s);
        String[] f = s.split(",", -1);
        if (f.length != CONFIG_FIELDS.length) {
            throw new SafetensorsFormatException(file, where + " has " + f.length + " fields, not the "
                    + CONFIG_FIELDS.length + " of " + String.join(",", CONFIG_FIELDS));
        }
        int[] v = new int[CONFIG_FIELDS.length - 1];
        for (int i = 0; i < v.length; i++) {
            try {
                v[i] = Integer.parseInt(f[i]);
            } catch (NumberFormatException e) {
                throw new SafetensorsFormatException(file, where + ": " + CONFIG_FIELDS[i] + " "
                        + Safetensors.quote(f[i]) + " is not an integer below 2^31");
            }
        }
        String distilled = f[v.length];
        if (!distilled.equals("true") && !distilled.equals("false")) {
            throw new SafetensorsFormatException(file, where + ": distilled " + Safetensors.quote(distilled)
                    + " is neither true nor false");
        }
        VitConfig config;
        try {
            config = VitConfig.of(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], distilled.equals("true"));
        } catch (IllegalArgumentException e) {
            throw new SafetensorsFormatException(file, where + " is not a valid config: " + e.getMessage());
        }
        // Named after the preset it was saved from when that preset still has this shape; otherwise "custom".
        String preset = metadata.get(PRESET_KEY);
        for (String name : VitConfig.presetNames()) {
            if (name.equals(preset) && VitConfig.preset(name).equals(config)) return VitConfig.preset(name);
        }
        return config;
    }

    /**
     * The config of a model or checkpoint file (null for a file without one, from timm), from its header alone: the
     * recorded config must be valid and the header must hold exactly its parameters (names, shapes, float dtypes;
     * a checkpoint's {@code optimizer.*} entries aside). Reads no tensor data and allocates nothing in proportion to
     * what the metadata claims, so a header that asks for a model of any size costs nothing.
     *
     * @throws SafetensorsFormatException when the file is not valid safetensors, or its config is malformed or does
     *     not match its tensors
     * @throws UnsupportedDtypeException when a parameter is stored in a dtype that is not a float one
     */
    public static VitConfig config(Path file) throws IOException {
        SafetensorsHeader header = Safetensors.readHeader(file);
        VitConfig config = config(file, header.metadata());
        if (config != null) checkTensors(file, header, config);
        return config;
    }

    /**
     * Throws unless {@code header} holds exactly the parameters of a model of {@code config} (a checkpoint's
     * {@code optimizer.*} entries aside): names, shapes and float dtypes.
     */
    public static void checkTensors(Path file, SafetensorsHeader header, VitConfig config) throws IOException {
        SafetensorsHeader model = withoutOptimizerState(header);
        long expected = VisionTransformer.parameterTensors(config), found = model.tensors().size();
        // Listing a config's names takes memory in proportion to its depth, which the metadata can set to 2^31 - 1:
        // compare the counts first, and list the names only when they are within reach of what the header holds.
        if (expected > found + 1000) {
            throw new SafetensorsFormatException(file, "records the config " + config + ", which has " + expected
                    + " parameter tensors, but holds " + found);
        }
        checkTensors(file, model, VisionTransformer.parameterShapes(config));
    }

    /**
     * Throws unless {@code header} holds exactly the tensors of {@code expected} (names and shapes; one exception
     * lists every difference), each in a dtype read as float.
     */
    public static void checkTensors(Path file, SafetensorsHeader header, Map<String, long[]> expected)
            throws IOException {
        checkNames(file, expected, header.shapes());
        for (TensorInfo t : header.tensors().values()) {
            if (!t.dtype().readsAsFloat()) throw new UnsupportedDtypeException(file, t.name(), t.dtype());
        }
    }

    /**
     * Throws ONE exception naming the file and listing every missing, unexpected and mis-shaped tensor (as
     * PyTorch's {@code load_state_dict(strict=True)}).
     */
    public static void checkNames(Path file, Map<String, long[]> expected, Map<String, long[]> actual)
            throws SafetensorsFormatException {
        try {
            Safetensors.checkNames(expected, actual);
        } catch (StateDictMismatchException e) {
            throw new SafetensorsFormatException(file, e.getMessage(), e);
        }
    }

    /**
     * Throws unless the file's recorded config (when it has one) is {@code config}.
     *
     * @throws ConfigMismatchException when the file records another config
     * @throws SafetensorsFormatException when its recorded config is malformed
     */
    public static void checkConfig(Path file, Map<String, String> metadata, VitConfig config)
            throws SafetensorsFormatException {
        VitConfig saved = config(file, metadata);
        if (saved != null && !saved.equals(config)) throw new ConfigMismatchException(file, saved, config);
    }

    /** {@link #load(Path, VisionTransformer, NonFinite)} refusing NaN and infinite weights. */
    public static void load(Path file, VisionTransformer model) throws IOException {
        load(file, model, NonFinite.REFUSE);
    }

    /**
     * Loads the parameters of {@code file} into {@code model}: every tensor must be there with timm's shape, and
     * nothing else (apart from {@code optimizer.*} entries of a checkpoint); one exception lists all differences.
     * Everything is checked on the header before the first value is read; then each tensor is copied straight into
     * the model's memory, F16, BF16 and F64 converted on the way.
     *
     * <p>When it throws after the header checks (NaN or infinite weights, a file truncated meanwhile), the model's
     * parameters have been partly or wholly overwritten.
     *
     * @param nonFinite {@link NonFinite#REFUSE}: NaN or infinite weights throw a {@link NonFiniteValuesException}
     *     naming each tensor and its count of them (after all are counted); {@link NonFinite#ALLOW}: they load
     * @throws SafetensorsFormatException when the file is not valid safetensors or does not match the model
     * @throws UnsupportedDtypeException when a parameter is stored in a dtype that is not a float one
     * @throws NoSuchFileException when there is no {@code file}, saying where the CLI writes models
     */
    public static void load(Path file, VisionTransformer model, NonFinite nonFinite) throws IOException {
        Objects.requireNonNull(model, "model");
        Objects.requireNonNull(nonFinite, "nonFinite");
        if (!Files.exists(file)) {
            throw new NoSuchFileException(file.toString(), null, "no such model file (`distill4j train --out DIR` "
                    + "writes DIR/model.safetensors)");
        }
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            SafetensorsHeader header = reader.header();
            checkConfig(file, header.metadata(), model.config());
            Map<String, long[]> expected = new LinkedHashMap<>();
            for (Parameter p : model.parameters()) expected.put(p.name(), p.shape());
            checkTensors(file, withoutOptimizerState(header), expected);
            List<NonFiniteValuesException.Count> bad = new ArrayList<>();
            for (Parameter p : model.parameters()) {
                long n = reader.copyTo(p.name(), p.value());
                if (n > 0) bad.add(new NonFiniteValuesException.Count(p.name(), n, p.numel()));
            }
            if (!bad.isEmpty() && nonFinite == NonFinite.REFUSE) throw new NonFiniteValuesException(file, bad);
        }
    }

    private static SafetensorsHeader withoutOptimizerState(SafetensorsHeader header) {
        Map<String, TensorInfo> model = new LinkedHashMap<>(header.tensors());
        model.keySet().removeIf(name -> name.startsWith(OPTIMIZER_PREFIX));
        return new SafetensorsHeader(model, header.metadata(), header.dataStart());
    }

    private static String describe(VitConfig c) {
        return c.imageSize() + "," + c.patch() + "," + c.channels() + "," + c.classes() + "," + c.dim() + ","
                + c.depth() + "," + c.heads() + "," + c.mlpRatio() + "," + c.distilled();
    }
}
