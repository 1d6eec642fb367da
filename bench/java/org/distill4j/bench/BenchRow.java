package org.distill4j.bench;

import java.util.List;
import java.util.Locale;

/**
 * One benchmark result, the JSON row of DESIGN.md: ours against a reference, timed in the same run. {@code underLoad}
 * is the number of busy threads a competing process ran meanwhile ({@code bench --under-load}), 0 on a quiet run.
 */
public record BenchRow(String op, String backend, String shape, double oursMs, String reference, double referenceMs,
                       double maxRelErr, int underLoad) {
    /** A row timed without a competing load. */
    public BenchRow(String op, String backend, String shape, double oursMs, String reference, double referenceMs,
                    double maxRelErr) {
        this(op, backend, shape, oursMs, reference, referenceMs, maxRelErr, 0);
    }

    /** The same row, recorded as timed beside a load of {@code threads} busy threads. */
    public BenchRow withUnderLoad(int threads) {
        return new BenchRow(op, backend, shape, oursMs, reference, referenceMs, maxRelErr, threads);
    }

    /** reference_ms / ours_ms. */
    public double speedup() {
        return referenceMs / oursMs;
    }

    /** The row as one JSON object. */
    public String toJson() {
        return String.format(Locale.ROOT, "{\"op\": \"%s\", \"backend\": \"%s\", \"shape\": \"%s\", \"ours_ms\": %.4f, "
                        + "\"reference\": \"%s\", \"reference_ms\": %.4f, \"speedup\": %.3f, \"max_rel_err\": %.3e, "
                        + "\"under_load\": %d}",
                op, backend, shape, oursMs, reference, referenceMs, speedup(), maxRelErr, underLoad);
    }

    /** Rows as a JSON array, one row per line. */
    public static String toJson(List<BenchRow> rows) {
        StringBuilder sb = new StringBuilder("[\n");
        for (int i = 0; i < rows.size(); i++) {
            sb.append("  ").append(rows.get(i).toJson()).append(i + 1 < rows.size() ? ",\n" : "\n");
        }
        return sb.append("]\n").toString();
    }

    /** A fixed-width line for the console table. */
    public String toLine() {
        return String.format(Locale.ROOT, "%-8s %-8s %-26s %10.3f  %-22s %10.3f  %8.2fx  %.2e", op, backend, shape,
                oursMs, reference, referenceMs, speedup(), maxRelErr);
    }

    /** The header matching {@link #toLine()}. */
    public static String header() {
        return String.format(Locale.ROOT, "%-8s %-8s %-26s %10s  %-22s %10s  %9s  %s", "op", "backend", "shape",
                "ours_ms", "reference", "ref_ms", "speedup", "max_rel_err");
    }
}
