package org.distill4j.cli;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * The teacher the CLI ships for the demo (java/cli/teachers/, a resource of the CLI jar): a model file and its
 * provenance — the command, commit and seed that trained it, its test accuracy and its SHA-256, which is checked
 * whenever the file is used, so the demo never distils from a teacher other than the one that was measured.
 */
final class ShippedTeacher {
    /** Resource names, beside this class's package folder in the jar. */
    static final String MODEL = "/org/distill4j/cli/teachers/fashion-mnist-teacher.safetensors";
    static final String PROVENANCE = "/org/distill4j/cli/teachers/fashion-mnist-teacher.json";

    /** What the provenance file records; {@code testAccuracy} is a fraction (class head) on {@code testImages}. */
    record Provenance(String sha256, String preset, double testAccuracy, int testImages, String command, String commit,
                      long seed) {
        String describe() {
            return String.format(java.util.Locale.ROOT, "%s, %.2f %% on %d test images, seed %d, commit %s", preset,
                    100 * testAccuracy, testImages, seed, commit.substring(0, Math.min(12, commit.length())));
        }
    }

    private ShippedTeacher() {}

    /** The provenance of the teacher this build ships, or null when it ships none. */
    static Provenance provenance() throws IOException {
        try (InputStream in = ShippedTeacher.class.getResourceAsStream(PROVENANCE)) {
            if (in == null || ShippedTeacher.class.getResource(MODEL) == null) return null;
            return parse(in, PROVENANCE);
        }
    }

    static Provenance parse(InputStream json, String where) throws IOException {
        try {
            JsonObject o = JsonParser.parseReader(new InputStreamReader(json, StandardCharsets.UTF_8)).getAsJsonObject();
            return new Provenance(o.get("sha256").getAsString(), o.get("preset").getAsString(),
                    o.get("test_accuracy").getAsDouble(), o.get("test_images").getAsInt(), o.get("command").getAsString(),
                    o.get("commit").getAsString(), o.get("seed").getAsLong());
        } catch (RuntimeException e) {  // Gson's parse errors, a missing key (NullPointerException), a wrong type
            throw new IOException(where + " is not a teacher provenance file (" + e.getMessage() + ")", e);
        }
    }

    /** Copies the shipped model to {@code file} and checks it against {@code provenance}. */
    static void extract(Path file, Provenance provenance) throws IOException {
        Files.createDirectories(file.toAbsolutePath().getParent());
        try (InputStream in = ShippedTeacher.class.getResourceAsStream(MODEL)) {
            if (in == null) throw new IOException("this build ships no teacher (" + MODEL + " missing)");
            Files.copy(in, file, StandardCopyOption.REPLACE_EXISTING);
        }
        verify(file, provenance);
    }

    /** Refuses {@code file} unless its SHA-256 is the one {@code provenance} records, naming both. */
    static void verify(Path file, Provenance provenance) throws IOException {
        String actual = Runs.sha256(file);
        if (!actual.equalsIgnoreCase(provenance.sha256())) {
            throw new IOException("teacher " + file + " has SHA-256 " + actual + ", but its provenance records "
                    + provenance.sha256() + ": it is not the teacher that was measured (rebuild, or pass --teacher FILE"
                    + " or --train-teacher)");
        }
    }
}
