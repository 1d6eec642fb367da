package org.distill4j.io;

import java.util.Arrays;
import java.util.List;

/**
 * A set of named tensors (a checkpoint) that does not fit what a model expects. Lists every problem at once, so
 * a user sees the whole difference rather than the first name that failed.
 */
public final class StateDictMismatchException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;
    private static final int LISTED = 20;

    /** A tensor present on both sides with different shapes. */
    public record ShapeMismatch(String name, long[] expected, long[] actual) {
        public ShapeMismatch {
            expected = expected.clone();
            actual = actual.clone();
        }

        @Override
        public long[] expected() {
            return expected.clone();
        }

        @Override
        public long[] actual() {
            return actual.clone();
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof ShapeMismatch m && name.equals(m.name) && Arrays.equals(expected, m.expected)
                    && Arrays.equals(actual, m.actual);
        }

        @Override
        public int hashCode() {
            return 31 * (31 * name.hashCode() + Arrays.hashCode(expected)) + Arrays.hashCode(actual);
        }

        @Override
        public String toString() {
            return name + ": expected " + Arrays.toString(expected) + ", found " + Arrays.toString(actual);
        }
    }

    private final transient List<String> missing;
    private final transient List<String> unexpected;
    private final transient List<ShapeMismatch> misShaped;

    public StateDictMismatchException(List<String> missing, List<String> unexpected, List<ShapeMismatch> misShaped) {
        super(message(missing, unexpected, misShaped));
        this.missing = List.copyOf(missing);
        this.unexpected = List.copyOf(unexpected);
        this.misShaped = List.copyOf(misShaped);
    }

    /** Expected names the file lacks, in the expected order. */
    public List<String> missing() {
        return missing;
    }

    /** Names in the file that are not expected, in the file's order. */
    public List<String> unexpected() {
        return unexpected;
    }

    /** Names on both sides whose shapes differ, in the expected order. */
    public List<ShapeMismatch> misShaped() {
        return misShaped;
    }

    private static String message(List<String> missing, List<String> unexpected, List<ShapeMismatch> misShaped) {
        // One line: a command-line error is one line on stderr.
        List<String> parts = new java.util.ArrayList<>();
        if (!missing.isEmpty()) parts.add(missing.size() + " missing: " + first(missing));
        if (!unexpected.isEmpty()) parts.add(unexpected.size() + " unexpected: " + first(unexpected));
        if (!misShaped.isEmpty()) parts.add(misShaped.size() + " mis-shaped: " + first(misShaped));
        return "state dict does not match the model: " + String.join("; ", parts);
    }

    /** The first {@value #LISTED} items (the accessors have all): a file of a million tensors gives a short message. */
    private static String first(List<?> items) {
        StringBuilder sb = new StringBuilder("[");
        for (int i = 0; i < Math.min(LISTED, items.size()); i++) {
            Object item = items.get(i);
            sb.append(i == 0 ? "" : ", ").append(Safetensors.shorten(String.valueOf(item)));
        }
        if (items.size() > LISTED) sb.append(", ... ").append(items.size() - LISTED).append(" more");
        return sb.append(']').toString();
    }
}
