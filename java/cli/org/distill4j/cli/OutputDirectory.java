package org.distill4j.cli;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.distill4j.io.AtomicFile;

/**
 * The {@code --out} directory of a training command. {@link #check} looks at it without changing anything, so a
 * command validates all its arguments before the first file exists; {@link #create} makes it when the work starts;
 * {@link #abandon} removes it again when the command fails before writing anything into it.
 *
 * <p>A finished run is never overwritten by accident: the directory must be new or empty, or the command must
 * continue the run in it ({@code --resume}) or replace it ({@code --force}, which deletes the files a run of ours
 * writes there, and nothing else, when the work starts). Temporary files left by a killed write of ours are
 * removed when the work starts, in every mode.
 */
final class OutputDirectory {
    /** How a command may treat a directory that already holds files. */
    private enum Mode {
        /** The directory must be new or empty. */
        NEW,
        /** Files there are the run being continued. */
        RESUME,
        /** The files a run of ours writes there are deleted first. */
        FORCE
    }

    /** The files a training run writes into its directory (the soft-label cache is not one: it is reusable). */
    static final List<String> RUN_FILES = List.of("model.safetensors", "checkpoint.safetensors", "results.json",
            "accuracy.png");
    private static final String CACHE_FILE = "teacher-logits.safetensors";
    private static final String VIEWS_CACHE_FILE = "teacher-logits-views.safetensors";
    /** Written by runs on CIFAR or image folders only (after training), so not one of {@link #RUN_FILES}. */
    static final String CLASS_INDEX = "class_index.json";
    private static final int LISTED = 4;

    private final Path dir;
    private final Mode mode;
    private final List<String> runs;
    private boolean created;

    private OutputDirectory(Path dir, Mode mode, List<String> runs) {
        this.dir = dir;
        this.mode = mode;
        this.runs = runs;
    }

    /**
     * Checks that {@code dir} can be the output of a command, changing nothing.
     *
     * @param resuming whether the command continues the run in {@code dir} ({@code --resume})
     * @param force    whether it replaces the run there ({@code --force}); not together with {@code resuming}
     * @param runs     the runs a command keeps in runs of {@code dir} (the demo's), each holding
     *     {@link #RUN_FILES}; empty for a command whose run writes into {@code dir} itself
     * @throws IOException naming the directory and what to do, when it cannot be used
     */
    static OutputDirectory check(Path dir, boolean resuming, boolean force, List<String> runs) throws IOException {
        if (resuming && force) {
            throw new IllegalArgumentException("--resume continues the run in --out and --force replaces it: give one");
        }
        Mode mode = resuming ? Mode.RESUME : force ? Mode.FORCE : Mode.NEW;
        Path d = dir.toAbsolutePath().normalize();
        if (Files.exists(d)) {
            if (!Files.isDirectory(d)) throw new IOException("--out " + dir + " is a file, not a directory");
            if (!Files.isWritable(d)) throw new IOException("--out " + dir + " is not writable");
            List<String> held = entries(d);
            if (mode == Mode.NEW && !held.isEmpty()) {
                throw new IOException("--out " + dir + " is not empty (it holds " + describe(held) + "): give a new or "
                        + "empty directory, continue the run there with --resume, or replace it with --force");
            }
        } else {
            Path ancestor = d.getParent();
            while (ancestor != null && !Files.exists(ancestor, LinkOption.NOFOLLOW_LINKS)) ancestor = ancestor.getParent();
            if (ancestor == null || !Files.isDirectory(ancestor)) {
                throw new IOException("cannot create --out " + dir + ": " + ancestor + " is not a directory");
            }
            if (!Files.isWritable(ancestor)) {
                throw new IOException("cannot create --out " + dir + ": " + ancestor + " is not writable");
            }
        }
        return new OutputDirectory(d, mode, List.copyOf(runs));
    }

    /** The directory (absolute). */
    Path path() {
        return dir;
    }

    /**
     * Creates the directory and the runs' runs, removes our stale temporary files, and with
     * {@link Mode#FORCE} the files of the run being replaced.
     */
    Path create() throws IOException {
        if (!Files.isDirectory(dir)) {
            try {
                Files.createDirectories(dir);
            } catch (IOException e) {
                throw new IOException("cannot create --out " + dir + ": " + Messages.of(e));
            }
            created = true;
        }
        List<Path> runDirs = new ArrayList<>();
        runDirs.add(dir);
        for (String s : runs) runDirs.add(dir.resolve(s));
        for (Path d : runDirs) {
            if (!Files.isDirectory(d)) continue;
            removeStaleTemporaries(d);
            // The demo's summary (results.json, accuracy.png) sits beside its runs: the same names.
            if (mode == Mode.FORCE) {
                for (String f : RUN_FILES) Files.deleteIfExists(d.resolve(f));
                Files.deleteIfExists(d.resolve(CLASS_INDEX));
            }
        }
        for (String s : runs) Files.createDirectories(dir.resolve(s));
        return dir;
    }

    /** What a command does in its output directory. */
    @FunctionalInterface
    interface Work<T> {
        T in(Path dir) throws Exception;
    }

    /** {@link #create}s the directory and does {@code work} in it; when the work fails, {@link #abandon}s it. */
    <T> T use(Work<T> work) throws Exception {
        Path d = create();
        try {
            return work.in(d);
        } catch (Exception | Error e) {
            abandon();
            throw e;
        }
    }

    /**
     * After a failure: removes what {@link #create} made if nothing has been written into it since (a rejected
     * command leaves no empty directory behind). Never throws: it runs while another exception is on its way out.
     */
    void abandon() {
        if (!created) return;
        try {
            for (String s : runs) {
                Path d = dir.resolve(s);
                if (Files.isDirectory(d) && entries(d).isEmpty()) Files.delete(d);
            }
            if (entries(dir).isEmpty()) Files.delete(dir);
        } catch (IOException e) {
            // Left in place: an empty directory is untidy, not harmful.
        }
    }

    /** The entries of {@code d}, less our stale temporary files (a run killed in its first write left only those). */
    private static List<String> entries(Path d) throws IOException {
        List<String> names = new ArrayList<>();
        try (DirectoryStream<Path> s = Files.newDirectoryStream(d)) {
            for (Path p : s) {
                String name = p.getFileName().toString();
                if (!isOurTemporary(name)) names.add(name);
            }
        }
        names.sort(null);
        return names;
    }

    private static void removeStaleTemporaries(Path d) throws IOException {
        try (DirectoryStream<Path> s = Files.newDirectoryStream(d)) {
            for (Path p : s) {
                if (isOurTemporary(p.getFileName().toString()) && Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS)) {
                    Files.deleteIfExists(p);
                }
            }
        }
    }

    private static boolean isOurTemporary(String name) {
        if (AtomicFile.isTemporaryOf(name, CACHE_FILE) || AtomicFile.isTemporaryOf(name, VIEWS_CACHE_FILE)) return true;
        for (String f : RUN_FILES) {
            if (AtomicFile.isTemporaryOf(name, f)) return true;
        }
        return false;
    }

    private static String describe(List<String> names) {
        String shown = String.join(", ", names.subList(0, Math.min(LISTED, names.size())));
        return names.size() <= LISTED ? shown : shown + " and " + (names.size() - LISTED) + " more";
    }
}
