package org.distill4j.train;

import java.io.PrintStream;
import java.time.Duration;
import java.util.Locale;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;

/**
 * Progress of one training or evaluation pass: steps done, running mean loss and accuracy, images per second, ETA.
 *
 * <p>On a terminal it draws a progress bar (me.tongfei:progressbar, an optional dependency: the CLI brings it; a
 * program without it on its classpath gets plain lines) redrawn in place. When standard output is not a terminal —
 * CI logs, {@code > file} — a bar's carriage returns make unreadable logs, so it prints a plain line every
 * {@code every} steps and a final one instead. The choice can be forced with {@code -Ddistill4j.progress=bar},
 * {@code plain} or {@code off}.
 *
 * <p>Loss and accuracy are means over the images seen so far in this pass, weighted by batch size (what Keras and
 * timm print), not the last batch's values.
 *
 * <pre>{@code
 * try (Progress p = Progress.start("epoch 3/10", loader.batchesPerEpoch())) {
 *     for (...) { ...; p.step(batch.size(), loss, correct / (double) batch.size()); }
 * }
 * }</pre>
 */
public final class Progress implements AutoCloseable {
    /** How often a plain line is printed by default, in steps. */
    public static final int DEFAULT_EVERY = 50;

    private enum Mode { BAR, PLAIN, OFF }

    private final String task;
    private final long total;
    private final int every;
    private final PrintStream out;
    private final TerminalBar bar;
    private final long startNanos;
    private long steps, skippedSteps;
    private long images;
    private double lossSum;
    private double accSum;
    private long accImages;  // the images accuracy counts: all of them, or a transfer set's labeled ones
    private boolean closed;

    private Progress(String task, long total, Mode mode, int every, PrintStream out) {
        if (total < 0) {
            throw new IllegalArgumentException("total steps must be >= 0, got " + total);
        }
        if (every < 1) {
            throw new IllegalArgumentException("every must be >= 1, got " + every);
        }
        this.task = task;
        this.total = total;
        this.every = every;
        this.out = mode == Mode.OFF ? null : out;
        this.bar = mode == Mode.BAR ? new TerminalBar(task, total) : null;
        this.startNanos = System.nanoTime();
    }

    /** A progress display for {@code totalSteps} steps: a bar on a terminal, plain lines otherwise. */
    public static Progress start(String task, long totalSteps) {
        return new Progress(task, totalSteps, chooseMode(), DEFAULT_EVERY, System.out);
    }

    /** Plain lines to {@code out} every {@code every} steps and at the end, whatever stdout is (logs, tests). */
    public static Progress plain(String task, long totalSteps, int every, PrintStream out) {
        return new Progress(task, totalSteps, Mode.PLAIN, every, out);
    }

    /** Counts without printing anything (library use, quiet mode); the means are still available. */
    public static Progress silent(String task, long totalSteps) {
        return new Progress(task, totalSteps, Mode.OFF, DEFAULT_EVERY, System.out);
    }

    private static Mode chooseMode() {
        Mode mode = chooseDisplay();
        return mode == Mode.BAR && !barLibraryPresent() ? Mode.PLAIN : mode;
    }

    private static boolean barLibraryPresent() {
        try {
            return TerminalBar.present();
        } catch (LinkageError missing) {
            return false;
        }
    }

    private static Mode chooseDisplay() {
        String forced = System.getProperty("distill4j.progress", "").trim().toLowerCase(Locale.ROOT);
        switch (forced) {
            case "bar":
                return Mode.BAR;
            case "plain":
                return Mode.PLAIN;
            case "off":
            case "none":
                return Mode.OFF;
            default:
                break;
        }
        // System.console() is null when stdin or stdout is redirected (Java 17; 22+ changed this, hence the check
        // of TERM as well). "dumb" terminals (Emacs shells, some CI runners) cannot redraw a line.
        String term = System.getenv("TERM");
        boolean terminal = System.console() != null && term != null && !term.equals("dumb");
        return terminal ? Mode.BAR : Mode.PLAIN;
    }

    /**
     * One step over {@code batchImages} images, with that batch's mean loss and accuracy (a fraction in [0, 1]).
     */
    public void step(int batchImages, double loss, double accuracy) {
        advance(batchImages, loss, accuracy * batchImages, batchImages);
    }

    /**
     * One step over {@code batchImages} images with that batch's mean loss, where the accuracy is {@code correct} of
     * the {@code scored} images whose labels are known (a transfer set's labeled images; 0 is allowed).
     */
    public void step(int batchImages, double loss, int correct, int scored) {
        advance(batchImages, loss, correct, scored);
    }

    /**
     * One step whose update was skipped (its loss or gradient norm was not finite): it advances the count and the
     * ETA, not the means, and the status line says how many were skipped.
     */
    public void skipped() {
        skippedSteps++;
        advance(0, 0, 0, 0);  // no images: the means and the rate are over the images that trained
    }

    /** Steps skipped so far ({@link #skipped}). */
    public long skippedSteps() {
        return skippedSteps;
    }

    private void advance(int batchImages, double loss, double correct, long scored) {
        if (closed) {
            throw new IllegalStateException("progress '" + task + "' is closed");
        }
        steps++;
        images += batchImages;
        lossSum += loss * batchImages;
        accSum += correct;
        accImages += scored;
        if (bar != null) {
            bar.step(stats(false));
        } else if (out != null && steps % every == 0 && steps != total) {
            out.println(line());
        }
    }

    /** Mean loss over the images so far (NaN before the first step). */
    public double meanLoss() {
        return images == 0 ? Double.NaN : lossSum / images;
    }

    /** Mean accuracy over the images so far (labeled ones only, when told), a fraction (NaN before any). */
    public double meanAccuracy() {
        return accImages == 0 ? Double.NaN : accSum / accImages;
    }

    /** Images per second since the start. */
    public double imagesPerSecond() {
        double s = (System.nanoTime() - startNanos) / 1e9;
        return s <= 0 ? 0 : images / s;
    }

    /** Steps done. */
    public long steps() {
        return steps;
    }

    /** Estimated time left, from the mean step time so far (zero when done, null before the first step). */
    public Duration eta() {
        if (steps == 0) {
            return null;
        }
        long left = Math.max(0, total - steps);
        return Duration.ofNanos((long) ((System.nanoTime() - startNanos) / (double) steps * left));
    }

    /** The plain-text status: "task: 120/468 (25.6%) loss 0.5321 acc 81.20% 5230 img/s ETA 0:00:07". */
    public String line() {
        String pct = total > 0 ? String.format(Locale.ROOT, " (%.1f%%)", 100.0 * steps / total) : "";
        return String.format(Locale.ROOT, "%s: %d/%d%s %s", task, steps, total, pct, stats(true));
    }

    private String stats(boolean withEta) {
        String s = String.format(Locale.ROOT, "loss %.4f acc %.2f%% %.0f img/s", meanLoss(), 100 * meanAccuracy(),
                imagesPerSecond());
        if (skippedSteps > 0) s += " skipped " + skippedSteps;
        if (withEta) {
            Duration eta = eta();
            s += " ETA " + (eta == null ? "?" : format(eta));
        }
        return s;
    }

    private static String format(Duration d) {
        long s = d.getSeconds();
        return String.format(Locale.ROOT, "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
    }

    /** Ends the display: closes the bar, or prints the final plain line. Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (bar != null) {
            bar.close();
        } else if (out != null && steps > 0) {
            out.println(line());
        }
    }

    /**
     * The progressbar library's bar. Its own class, so that Progress loads without the (optional) library: the JVM
     * resolves ProgressBar only when this class is first used, which {@link #barLibraryPresent} guards.
     */
    private static final class TerminalBar {
        private final ProgressBar bar;

        TerminalBar(String task, long total) {
            bar = new ProgressBarBuilder().setTaskName(task).setInitialMax(total)
                    .setStyle(ProgressBarStyle.COLORFUL_UNICODE_BLOCK).setUpdateIntervalMillis(250)
                    .setMaxRenderedLength(120).build();
        }

        /** True, or NoClassDefFoundError when the library is not on the classpath. */
        static boolean present() {
            return ProgressBar.class.getName() != null;
        }

        void step(String extra) {
            bar.setExtraMessage(extra);
            bar.step();
        }

        void close() {
            bar.close();
        }
    }
}
