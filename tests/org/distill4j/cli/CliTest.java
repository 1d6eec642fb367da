package org.distill4j.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.zip.GZIPOutputStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** Bad input to the training commands: one line on stderr, a non-zero exit, no stack trace, nothing half-written. */
class CliTest {
    @TempDir
    Path dir;

    static {
        System.setProperty("distill4j.progress", "off");
    }

    record Run(int status, String err) {}

    /** Runs the CLI in this JVM as Main does; its exit status and what it wrote to stderr. */
    static Run run(String... args) {
        CommandLine cli = Main.commandLine();
        StringWriter err = new StringWriter();
        cli.setErr(new PrintWriter(err));
        cli.setOut(new PrintWriter(new StringWriter()));
        int status = cli.execute(args);
        return new Run(status, err.toString());
    }

    private static void assertOneLine(Run r, String expected) {
        assertTrue(r.status != 0, "non-zero exit");
        assertTrue(r.err.contains(expected), "stderr: " + r.err);
        assertFalse(r.err.contains("\tat "), "no stack trace: " + r.err);
    }

    /** An IDX file per the format: magic, dims, unsigned bytes; gzip. */
    private static void idx(Path file, int magic, int[] dims, byte[] data) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(4 + 4 * dims.length + data.length);
        b.putInt(magic);
        for (int d : dims) b.putInt(d);
        b.put(data);
        try (GZIPOutputStream out = new GZIPOutputStream(Files.newOutputStream(file))) {
            out.write(b.array());
        }
    }

    @Test
    void missingDatasetIsOneLine() {
        Run r = run("train", "--data", dir.resolve("nowhere").toString(), "--out", dir.resolve("o").toString(),
                "--device", "cpu");
        assertOneLine(r, "nowhere");
    }

    @Test
    void corruptDatasetIsOneLine() throws IOException {
        Path d = Files.createDirectories(dir.resolve("idx"));
        idx(d.resolve("train-images-idx3-ubyte.gz"), 0x803, new int[] {2, 28, 28}, new byte[2 * 784]);
        idx(d.resolve("train-labels-idx1-ubyte.gz"), 0x801, new int[] {3}, new byte[3]); // 3 labels, 2 images
        idx(d.resolve("t10k-images-idx3-ubyte.gz"), 0x801, new int[] {1, 28, 28}, new byte[784]); // wrong magic
        idx(d.resolve("t10k-labels-idx1-ubyte.gz"), 0x801, new int[] {1}, new byte[1]);
        Run r = run("train", "--data", d.toString(), "--out", dir.resolve("o").toString(), "--device", "cpu");
        assertOneLine(r, "idx");
    }

    @Test
    void unwritableOutputIsRefusedBeforeAnyWork() throws IOException {
        Path file = Files.writeString(dir.resolve("a-file"), "x");
        Run r = run("train", "--out", file.resolve("sub").toString(), "--device", "cpu");
        assertOneLine(r, "output directory");
    }

    @Test
    void badTeacherFilesAreOneLine() throws IOException {
        Run r = run("distill", "--teacher", dir.resolve("missing.safetensors").toString(), "--out",
                dir.resolve("o").toString(), "--device", "cpu");
        assertOneLine(r, "missing.safetensors does not exist");
        Path junk = Files.write(dir.resolve("junk.safetensors"), new byte[] {1, 2, 3, 4, 5, 6, 7, 8, 9});
        r = run("distill", "--teacher", junk.toString(), "--out", dir.resolve("o").toString(), "--device", "cpu");
        assertOneLine(r, "junk.safetensors");
        r = run("eval", junk.toString(), "--device", "cpu");
        assertOneLine(r, "junk.safetensors");
    }

    /** Random images and labels in Fashion-MNIST's four files (n training images, 64 test images). */
    private Path randomIdxDir(int n) throws IOException {
        Path d = Files.createDirectories(dir.resolve("random-idx"));
        java.util.Random rng = new java.util.Random(n);
        for (String[] split : new String[][] {{"train", Integer.toString(n)}, {"t10k", "64"}}) {
            int m = Integer.parseInt(split[1]);
            byte[] images = new byte[m * 784], labels = new byte[m];
            rng.nextBytes(images);
            for (int i = 0; i < m; i++) labels[i] = (byte) rng.nextInt(10);
            idx(d.resolve(split[0] + "-images-idx3-ubyte.gz"), 0x803, new int[] {m, 28, 28}, images);
            idx(d.resolve(split[0] + "-labels-idx1-ubyte.gz"), 0x801, new int[] {m}, labels);
        }
        return d;
    }

    @Test
    void demoResumesFromItsCheckpointsAndRefusesOtherSettings() throws IOException {
        Path data = randomIdxDir(256), out = dir.resolve("demo");
        String[] args = {"demo", "--data", data.toString(), "--out", out.toString(), "--device", "cpu",
                "--teacher-model", "mnist-tiny", "--student-model", "mnist-tiny", "--train-limit", "256",
                "--teacher-epochs", "1", "--student-epochs", "1"};
        assertEquals(0, run(args).status);
        String first = Files.readString(out.resolve("results.json"));
        byte[] teacher = Files.readAllBytes(out.resolve("teacher/model.safetensors"));
        String[] resume = java.util.Arrays.copyOf(args, args.length + 1);
        resume[args.length] = "--resume";
        assertEquals(0, run(resume).status);
        // Every run was finished: the resumed demo trains nothing, so the models and accuracies are the same.
        assertArrayEquals(teacher, Files.readAllBytes(out.resolve("teacher/model.safetensors")));
        com.google.gson.JsonObject a = com.google.gson.JsonParser.parseString(first).getAsJsonObject(),
                b = com.google.gson.JsonParser.parseString(Files.readString(out.resolve("results.json"))).getAsJsonObject();
        for (String run : new String[] {"teacher", "student_scratch", "student_soft", "student_hard"}) {
            assertEquals(a.getAsJsonObject(run).get("test_acc"), b.getAsJsonObject(run).get("test_acc"), run);
            // The wall time of a resumed run counts the epochs before the interruption.
            double epochSeconds = a.getAsJsonObject(run).getAsJsonArray("history").get(0).getAsJsonObject()
                    .get("seconds").getAsDouble();
            assertTrue(b.getAsJsonObject(run).get("seconds").getAsDouble() > epochSeconds, run);
        }
        String[] longer = resume.clone();
        longer[java.util.Arrays.asList(args).indexOf("--student-epochs") + 1] = "2";
        assertOneLine(run(longer), "cannot resume from");
    }

    @Test
    void evalTakesATimmFileWithItsPresetAndRefusesAWrongOne() throws IOException {
        Path data = randomIdxDir(128), file = dir.resolve("timm.safetensors");
        // As timm writes it: the tensors under their names, no distill4j config in the metadata.
        try (org.distill4j.backend.Backend be = org.distill4j.backend.CpuBackend.open();
             org.distill4j.nn.VisionTransformer m = new org.distill4j.nn.VisionTransformer(be,
                     org.distill4j.nn.VitConfig.preset("mnist-tiny"), 8, 5)) {
            org.distill4j.io.Safetensors.write(file, org.distill4j.nn.ModelFile.entries(m));
        }
        assertOneLine(run("eval", file.toString(), "--data", data.toString(), "--device", "cpu"), "--model");
        assertEquals(0, run("eval", file.toString(), "--model", "mnist-tiny", "--data", data.toString(), "--device",
                "cpu").status);
        // mnist-student has other shapes (patch 4, depth 4): every mismatch in one line, no stack trace.
        assertOneLine(run("eval", file.toString(), "--model", "mnist-student", "--data", data.toString(), "--device",
                "cpu"), "missing");
    }

    @Test
    void unknownPresetAndBadOptionsAreOneLine() {
        assertOneLine(run("train", "--model", "vit-huge", "--out", dir.resolve("o").toString(), "--device", "cpu"),
                "unknown ViT preset 'vit-huge'");
        assertOneLine(run("train", "--epochs", "0", "--out", dir.resolve("o").toString(), "--device", "cpu"),
                "epochs must be >= 1");
        assertOneLine(run("distill", "--teacher", "x", "--distillation", "warm", "--out", dir.resolve("o").toString()),
                "x does not exist");
        assertEquals(0, run("train", "--help").status);
    }
}
