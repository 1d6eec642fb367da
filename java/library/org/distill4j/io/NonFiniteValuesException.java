package org.distill4j.io;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

/**
 * Weights that are NaN or infinite: a model holding one computes NaN for every image it sees (a classifier then
 * predicts class 0 everywhere, which looks like chance accuracy rather than an error). The message names the file,
 * every such tensor and how many of its values are bad.
 */
public final class NonFiniteValuesException extends IOException {
    private static final long serialVersionUID = 1L;
    private static final int LISTED = 10;

    /** One tensor's count of NaN and infinite values, out of {@code values}. */
    public record Count(String tensor, long nonFinite, long values) {
        @Override
        public String toString() {
            return Safetensors.quote(tensor) + " (" + nonFinite + " of " + values + " values)";
        }
    }

    private final transient Path file;
    private final transient List<Count> counts;

    public NonFiniteValuesException(Path file, List<Count> counts) {
        super(message(file, counts));
        this.file = file;
        this.counts = List.copyOf(counts);
    }

    /** The file that was read. */
    public Path file() {
        return file;
    }

    /** The tensors holding NaN or infinite values, in the order they were read. */
    public List<Count> counts() {
        return counts;
    }

    private static String message(Path file, List<Count> counts) {
        long total = counts.stream().mapToLong(Count::nonFinite).sum();
        StringBuilder sb = new StringBuilder().append(file).append(": ").append(total)
                .append(total == 1 ? " weight is" : " weights are").append(" NaN or infinite, in ");
        for (int i = 0; i < Math.min(LISTED, counts.size()); i++) sb.append(i == 0 ? "" : ", ").append(counts.get(i));
        if (counts.size() > LISTED) sb.append(" and ").append(counts.size() - LISTED).append(" more tensors");
        return sb.toString();
    }
}
