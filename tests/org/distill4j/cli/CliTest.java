package org.distill4j.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import org.distill4j.testing.IdxFiles;
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

    /** The arguments of a one-epoch {@code mnist-tiny} distill run on the CPU, then {@code more}. */
    static String[] distill(Path data, Path out, int batch, String... more) {
        String[] base = {"distill", "--model", "mnist-tiny", "--data", data.toString(), "--out", out.toString(),
            "--device", "cpu", "--epochs", "1", "--batch", Integer.toString(batch)};
        String[] all = java.util.Arrays.copyOf(base, base.length + more.length);
        System.arraycopy(more, 0, all, base.length, more.length);
        return all;
    }

    /** Runs the CLI in this JVM as Main does; its exit status and what it wrote to stderr. */
    static Run run(String... args) {
        CommandLine cli = Main.commandLine();
        StringWriter err = new StringWriter();
        cli.setErr(new PrintWriter(err));
        cli.setOut(new PrintWriter(new StringWriter()));
        int status = cli.execute(args);
        return new Run(status, err.toString());
    }

    // A Java class name as Throwable.toString writes it ("java.nio.file.NoSuchFileException", "org.x.FooError").
    private static final java.util.regex.Pattern CLASS_NAME =
            java.util.regex.Pattern.compile("\\b(?:[a-z_][a-z0-9_]*\\.)+[A-Z]\\w*(?:Exception|Error)\\b");

    private static void assertOneLine(Run r, String expected) {
        assertTrue(r.status != 0, "non-zero exit");
        assertTrue(r.err.contains(expected), "stderr: " + r.err);
        assertFalse(r.err.contains("\tat "), "no stack trace: " + r.err);
        assertFalse(CLASS_NAME.matcher(r.err).find(), "no Java class name: " + r.err);
    }

    /** A failure told in exactly one line of stderr, saying {@code expected}: no stack trace, no class name. */
    static void assertOneLineOnly(Run r, String expected) {
        assertOneLine(r, expected);
        assertEquals(1, r.err.strip().lines().count(), "one line: " + r.err);
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
        IdxFiles.write(d.resolve("train-images-idx3-ubyte.gz"), 0x803, new int[] {2, 28, 28}, new byte[2 * 784]);
        // 3 labels for 2 images; then test images with the labels' magic.
        IdxFiles.write(d.resolve("train-labels-idx1-ubyte.gz"), 0x801, new int[] {3}, new byte[3]);
        IdxFiles.write(d.resolve("t10k-images-idx3-ubyte.gz"), 0x801, new int[] {1, 28, 28}, new byte[784]);
        IdxFiles.write(d.resolve("t10k-labels-idx1-ubyte.gz"), 0x801, new int[] {1}, new byte[1]);
        Run r = run("train", "--data", d.toString(), "--out", dir.resolve("o").toString(), "--device", "cpu");
        assertOneLine(r, "idx");
    }

    @Test
    void unwritableOutputIsRefusedBeforeAnyWork() throws IOException {
        Path file = Files.writeString(dir.resolve("a-file"), "x");
        Run r = run("train", "--out", file.resolve("sub").toString(), "--device", "cpu");
        assertOneLine(r, "cannot create --out " + file.resolve("sub") + ": " + file + " is not a directory");
        assertOneLine(run("train", "--out", file.toString(), "--device", "cpu"), "--out " + file + " is a file");
    }

    @Test
    void badTeacherFilesAreOneLine() throws IOException {
        Run r = run("distill", "--teacher", dir.resolve("missing.safetensors").toString(), "--out",
                dir.resolve("o").toString(), "--device", "cpu");
        assertOneLine(r, "--teacher " + dir.resolve("missing.safetensors") + ": no such file");
        Path junk = Files.write(dir.resolve("junk.safetensors"), new byte[] {1, 2, 3, 4, 5, 6, 7, 8, 9});
        r = run("distill", "--teacher", junk.toString(), "--out", dir.resolve("o").toString(), "--device", "cpu");
        assertOneLine(r, "junk.safetensors");
        r = run("eval", junk.toString(), "--device", "cpu");
        assertOneLine(r, "junk.safetensors");
    }

    /** Random images and labels in Fashion-MNIST's four files (n training images, 64 test images). */
    private Path randomIdxDir(int n) throws IOException {
        return IdxFiles.randomFashionMnist(dir.resolve("random-idx"), n);
    }

    @Test
    void demoResumesFromItsCheckpointsAndRefusesOtherSettings() throws IOException {
        Path data = randomIdxDir(256), out = dir.resolve("demo");
        String[] args = {"demo", "--data", data.toString(), "--out", out.toString(), "--device", "cpu",
                "--teacher-model", "mnist-tiny", "--student-model", "mnist-tiny", "--train-limit", "256",
                "--train-teacher", "--teacher-epochs", "1", "--student-epochs", "1", "--labeled", "128",
                "--seeds", "1"};
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
                "--teacher x: no such file");
        assertEquals(0, run("train", "--help").status);
    }

    /**
     * {@code --precision bf16} trains (on the CPU, which computes bf16's roundings) and results.json counts the skipped
     * steps; an unknown precision and a negative skip count are one line each.
     */
    @Test
    void precisionAndSkippedStepsFromTheCommandLine() throws IOException {
        Path data = randomIdxDir(64), out = dir.resolve("bf16");
        assertOneLine(run(tinyTrain(data, dir.resolve("p"), "--precision", "fp16")),
                "unknown precision 'fp16': expected fp32, tf32 or bf16");
        assertOneLine(run(tinyTrain(data, dir.resolve("s"), "--skip-non-finite", "-1")),
                "non-finite steps to skip must be >= 0, got -1");
        assertEquals(0, run(tinyTrain(data, out, "--precision", "bf16")).status);
        String json = Files.readString(out.resolve("results.json"));
        assertTrue(json.contains("\"skipped_steps\": 0"), json);
    }

    /**
     * {@code --cuda-graph}: on the emulated CUDA backend the run writes the same model, byte for byte, as without it
     * (two steps: the first runs as usual, the second is captured and replayed); on the CPU it is one line saying why
     * not.
     */
    @Test
    void cudaGraphFromTheCommandLine() throws IOException {
        Path data = randomIdxDir(64);
        assertOneLine(run(tinyTrain(data, dir.resolve("g-cpu"), "--cuda-graph")),
                "CUDA graphs need a backend that captures them (cuda, cuda-emu); the student is on cpu");
        Path plain = dir.resolve("g-plain"), graphed = dir.resolve("g-graph");
        assertEquals(0, run(onEmulator(tinyTrain(data, plain, "--test-limit", "32"))).status);
        assertEquals(0, run(onEmulator(tinyTrain(data, graphed, "--test-limit", "32", "--cuda-graph"))).status);
        assertArrayEquals(Files.readAllBytes(plain.resolve("model.safetensors")),
                Files.readAllBytes(graphed.resolve("model.safetensors")), "the same model with and without the graph");
    }

    /** {@code args} with {@code --device cpu} replaced by the emulated CUDA backend. */
    private static String[] onEmulator(String[] args) {
        String[] out = args.clone();
        int i = java.util.Arrays.asList(out).indexOf("--device");
        out[i + 1] = "cuda-emu";
        return out;
    }

    /** The arguments of a one-epoch mnist-tiny training run on {@code data} into {@code out}, then {@code more}. */
    private static String[] tinyTrain(Path data, Path out, String... more) {
        String[] base = {"train", "--model", "mnist-tiny", "--data", data.toString(), "--out", out.toString(),
                "--device", "cpu", "--epochs", "1", "--batch", "32", "--no-augment"};
        String[] all = java.util.Arrays.copyOf(base, base.length + more.length);
        System.arraycopy(more, 0, all, base.length, more.length);
        return all;
    }

    @Test
    void aFinishedRunIsNeverOverwrittenWithoutResumeOrForce() throws IOException {
        Path data = randomIdxDir(64), out = dir.resolve("run");
        assertEquals(0, run(tinyTrain(data, out)).status);
        Path model = out.resolve("model.safetensors");
        byte[] first = Files.readAllBytes(model);
        Files.writeString(out.resolve("notes.txt"), "the user's own file");

        assertOneLine(run(tinyTrain(data, out, "--seed", "1")), "--out " + out + " is not empty (it holds "
                + "accuracy.png, checkpoint.safetensors, model.safetensors, notes.txt and 1 more): give a new or empty "
                + "directory, continue the run there with --resume, or replace it with --force");
        assertArrayEquals(first, Files.readAllBytes(model), "the finished run is untouched");
        String checkpoint = out.resolve("checkpoint.safetensors").toString();
        assertOneLine(run(tinyTrain(data, out, "--force", "--resume", checkpoint)),
                "--resume continues the run in --out and --force replaces it: give one");

        assertEquals(0, run(tinyTrain(data, out, "--seed", "1", "--force")).status);
        assertFalse(java.util.Arrays.equals(first, Files.readAllBytes(model)), "--force replaced the model");
        assertEquals("the user's own file", Files.readString(out.resolve("notes.txt")), "--force deletes only ours");
        for (String f : OutputDirectory.RUN_FILES) assertTrue(Files.isRegularFile(out.resolve(f)), f);
    }

    /** Refused before any work, or failing inside the run: either way no --out directory is left behind. */
    @Test
    void aRejectedCommandLeavesNoOutputDirectory() throws IOException {
        Path data = randomIdxDir(64), junk = Files.write(dir.resolve("junk.safetensors"), new byte[16]);
        Path out = dir.resolve("never");
        assertOneLine(run("train", "--model", "vit-huge", "--out", out.toString(), "--device", "cpu"), "vit-huge");
        assertOneLine(run("train", "--epochs", "0", "--out", out.toString(), "--device", "cpu"), "epochs");
        assertOneLine(run("train", "--data", dir.resolve("nowhere").toString(), "--out", out.toString()), "nowhere");
        assertOneLine(run(tinyTrain(data, out, "--init", junk.toString())), "junk.safetensors");
        assertOneLine(run(tinyTrain(data, out, "--resume", dir.resolve("none.ckpt").toString())),
                "--resume " + dir.resolve("none.ckpt") + ": no such file");
        assertOneLine(run("distill", "--teacher", junk.toString(), "--data", data.toString(), "--out", out.toString(),
                "--device", "cpu"), "junk.safetensors");
        // Past every check, failing in the run itself (64 images, a batch of 128): the created directory goes again.
        assertOneLine(run("train", "--model", "mnist-tiny", "--data", data.toString(), "--out", out.toString(),
                "--device", "cpu", "--epochs", "1"), "fewer than one batch");
        // A checkpoint that is not one: read inside the run, its error unwrapped to the file's own sentence.
        assertOneLine(run(tinyTrain(data, out, "--resume", junk.toString())), "junk.safetensors");
        assertFalse(Files.exists(out), "no --out directory after rejected commands");
    }

    @Test
    void filesThatAreDirectoriesOrMissingAreNamedAsSuch() throws IOException {
        Path data = randomIdxDir(64);
        assertOneLine(run("eval", dir.toString(), "--device", "cpu"),
                "model file " + dir + " is a directory, not a file");
        assertOneLine(run("eval", dir.resolve("absent.safetensors").toString(), "--device", "cpu"),
                "model file " + dir.resolve("absent.safetensors") + ": no such file");
        assertOneLine(run(tinyTrain(data, dir.resolve("o"), "--init", dir.toString())),
                "--init " + dir + " is a directory, not a file");
    }

    /** A run killed while writing leaves .NAME.HEX.tmp files: the next run in that directory removes ours only. */
    @Test
    void staleTemporaryFilesOfOursAreRemovedWhenARunStarts() throws IOException {
        Path data = randomIdxDir(64), out = Files.createDirectories(dir.resolve("killed"));
        Path ours = Files.write(out.resolve(".checkpoint.safetensors.5f3a9c01d2e4b687.tmp"), new byte[100]);
        Path old = Files.write(out.resolve(".results.json8231907761.tmp"), new byte[10]); // distill4j 0.1.0's form
        assertEquals(0, run(tinyTrain(data, out)).status, "a directory holding only our leftovers counts as empty");
        assertFalse(Files.exists(ours));
        assertFalse(Files.exists(old));
        Path theirs = Files.write(out.resolve(".notes.tmp"), new byte[1]);
        Path again = Files.write(out.resolve(".model.safetensors.0123456789abcdef.tmp"), new byte[1]);
        assertEquals(0, run(tinyTrain(data, out, "--force")).status);
        assertFalse(Files.exists(again));
        assertTrue(Files.exists(theirs), "not ours: kept");
    }

    /** results.json and accuracy.png get the umask's permissions, as the model files and any file the user makes. */
    @Test
    void outputFilesGetTheUsersUmask() throws IOException {
        Path data = randomIdxDir(64), out = dir.resolve("perm");
        assertEquals(0, run(tinyTrain(data, out)).status);
        var expected = Files.getPosixFilePermissions(Files.write(dir.resolve("reference"), new byte[1]));
        for (String f : OutputDirectory.RUN_FILES) {
            assertEquals(expected, Files.getPosixFilePermissions(out.resolve(f)), f);
        }
    }
}
