package org.distill4j.nn;

import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.distill4j.io.Safetensors;
import org.distill4j.io.SafetensorsFormatException;
import org.distill4j.io.SafetensorsFile;
import org.distill4j.io.StateDictMismatchException;
import org.distill4j.io.TensorData;

/**
 * A model's parameters as a safetensors file with timm's names and shapes ({@code patch_embed.proj.weight},
 * {@code cls_token}, {@code dist_token}, {@code pos_embed}, {@code blocks.{i}...}, {@code norm}, {@code head},
 * {@code head_dist}): loadable by timm's {@code load_state_dict(strict=True)}, and a timm state dict saved as
 * safetensors loads here. The metadata records our config (a timm file without it loads into a config given by the
 * caller).
 */
public final class ModelFile {
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
        m.put("distill4j.config", describe(config));
        return m;
    }

    /** Writes the model file atomically. */
    public static void save(Path file, VisionTransformer model) throws IOException {
        Map<String, String> meta = metadata(model.config());
        meta.put("distill4j.kind", "model");
        Safetensors.write(file, entries(model), meta);
    }

    /**
     * The config a file was saved with, or null when it has none (a file from timm).
     *
     * @throws SafetensorsFormatException when the recorded config cannot be parsed
     */
    public static VitConfig config(Path file, Map<String, String> metadata) throws SafetensorsFormatException {
        String s = metadata.get("distill4j.config");
        if (s == null) return null;
        try {
            String[] f = s.split(",");
            return VitConfig.of(Integer.parseInt(f[0]), Integer.parseInt(f[1]), Integer.parseInt(f[2]),
                    Integer.parseInt(f[3]), Integer.parseInt(f[4]), Integer.parseInt(f[5]), Integer.parseInt(f[6]),
                    Integer.parseInt(f[7]), Boolean.parseBoolean(f[8]));
        } catch (RuntimeException e) {
            throw new SafetensorsFormatException(file, "unreadable distill4j.config '" + s + "': " + e.getMessage());
        }
    }

    /** Reads only the config of a model or checkpoint file (null for a file without one). */
    public static VitConfig config(Path file) throws IOException {
        return config(file, Safetensors.readHeader(file).metadata());
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
            throw new SafetensorsFormatException(file, "does not match the model: " + e.getMessage(), e);
        }
    }

    /** Throws unless the file's recorded config (when it has one) is {@code config}. */
    public static void checkConfig(Path file, Map<String, String> metadata, VitConfig config) throws SafetensorsFormatException {
        VitConfig saved = config(file, metadata);
        if (saved != null && !saved.equals(config)) {
            throw new SafetensorsFormatException(file, "saved for " + saved + ", not for " + config);
        }
    }

    /**
     * Loads the parameters of {@code file} into {@code model}: every tensor must be there with timm's shape, and
     * nothing else (apart from {@code optimizer.*} entries of a checkpoint); one exception lists all differences.
     */
    public static void load(Path file, VisionTransformer model) throws IOException {
        SafetensorsFile c = Safetensors.read(file);
        checkConfig(file, c.metadata(), model.config());
        Map<String, long[]> expected = new LinkedHashMap<>(), actual = new LinkedHashMap<>();
        for (Parameter p : model.parameters()) expected.put(p.name(), p.shape());
        c.tensors().forEach((k, v) -> {
            if (!k.startsWith("optimizer.")) actual.put(k, v.shape());
        });
        ModelFile.checkNames(file, expected, actual);
        for (Parameter p : model.parameters()) p.value().copyFrom(c.tensors().get(p.name()).values());
    }

    private static String describe(VitConfig c) {
        return c.imageSize() + "," + c.patch() + "," + c.channels() + "," + c.classes() + "," + c.dim() + ","
                + c.depth() + "," + c.heads() + "," + c.mlpRatio() + "," + c.distilled();
    }
}
