package org.distill4j.cli;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Locale;
import org.distill4j.backend.Backend;
import org.distill4j.io.NonFiniteValuesException;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Option;
import picocli.CommandLine.TypeConversionException;

/** The options of commands that build a model from a file (eval, distill's teacher): picocli mixin. */
final class ModelFileFlags {
    @Option(names = "--max-model-bytes", paramLabel = "SIZE", converter = ByteSize.class,
            description = "refuse a model file whose model would need more memory than SIZE (parameters, gradients "
                    + "and activations for the batch), e.g. 2g, 512m or 1000000 (default: the memory available)")
    Long maxModelBytes;

    @Option(names = "--allow-non-finite",
            description = "load NaN or infinite weights, to look into a model that diverged (refused by default)")
    boolean allowNonFinite;

    /**
     * The model of {@code file}: its size checked against --max-model-bytes and the free memory before anything is
     * allocated, then its weights loaded ({@code config} comes from {@link Runs#configOf}, which has checked the
     * header against it).
     */
    VisionTransformer load(Backend backend, Path file, VitConfig config, int batch) throws IOException {
        VisionTransformer.checkMemory(backend, config, batch, maxModelBytes != null ? maxModelBytes : Long.MAX_VALUE);
        VisionTransformer model = new VisionTransformer(backend, config, batch, 0);
        try {
            ModelFile.load(file, model, allowNonFinite ? ModelFile.NonFinite.ALLOW : ModelFile.NonFinite.REFUSE);
            return model;
        } catch (NonFiniteValuesException e) {
            model.close();
            throw new IOException(e.getMessage() + " (--allow-non-finite loads them anyway)", e);
        } catch (IOException | RuntimeException e) {
            model.close();
            throw e;
        }
    }

    /** A byte count: digits with an optional k, m, g or t suffix (powers of 1024, as java -Xmx). */
    static final class ByteSize implements ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            String v = value.trim().toLowerCase(Locale.ROOT);
            int shift = v.isEmpty() ? 0 : "kmgt".indexOf(v.charAt(v.length() - 1)) * 10 + 10;
            String digits = shift > 0 ? v.substring(0, v.length() - 1) : v;
            try {
                long n = Long.parseLong(digits);
                if (n >= 1 && n <= Long.MAX_VALUE >> shift) return n << shift;
            } catch (NumberFormatException e) {
                // reported below
            }
            throw new TypeConversionException("'" + value + "' is not a size of at least 1 byte (e.g. 2g, 512m, "
                    + "1000000)");
        }
    }
}
