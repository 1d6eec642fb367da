package org.distill4j.io;

import java.util.Arrays;
import java.util.List;

/**
 * A set of named tensors (a checkpoint) that does not fit what a model expects. Lists every problem at once, so
 * a user sees the whole difference rather than the first name that failed.
 */
public final class StateDictMismatchException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

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
        StringBuilder sb = new StringBuilder("state dict does not match the model:");
        if (!missing.isEmpty()) sb.append("\n  ").append(missing.size()).append(" missing: ").append(missing);
        if (!unexpected.isEmpty()) {
            sb.append("\n  ").append(unexpected.size()).append(" unexpected: ").append(unexpected);
        }
        if (!misShaped.isEmpty()) sb.append("\n  ").append(misShaped.size()).append(" mis-shaped: ").append(misShaped);
        return sb.toString();
    }
}
