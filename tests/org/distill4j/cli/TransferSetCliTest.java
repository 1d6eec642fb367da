package org.distill4j.cli;

import static org.distill4j.cli.CliTest.assertOneLineOnly;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.io.SafetensorsReader;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.IdxFiles;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code distill --labeled} and {@code train --labeled} on a tiny random Fashion-MNIST, and their bad input. */
class TransferSetCliTest {
    private static final int N = 128;

    @TempDir
    Path dir;

    static {
        System.setProperty("distill4j.progress", "off");
    }

    private Path data() throws IOException {
        return IdxFiles.randomFashionMnist(dir.resolve("idx"), N);
    }

    /** An untrained model file of {@code config}: the teacher's logits need not be good to be plumbed. */
    private Path teacher(String name, VitConfig config) throws IOException {
        Path file = dir.resolve(name + ".safetensors");
        try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, config, 8, 5)) {
            ModelFile.save(file, m);
        }
        return file;
    }

    /** A one-epoch mnist-tiny run on {@code data}, batch 16, no augmentation, plus {@code more}. */
    static String[] args(String command, Path data, Path out, String... more) {
        String[] base = {command, "--model", "mnist-tiny", "--data", data.toString(), "--out", out.toString(),
            "--device", "cpu", "--epochs", "1", "--batch", "16", "--no-augment"};
        String[] all = Arrays.copyOf(base, base.length + more.length);
        System.arraycopy(more, 0, all, base.length, more.length);
        return all;
    }

    private static JsonObject results(Path out) throws IOException {
        return JsonParser.parseString(Files.readString(out.resolve("results.json"))).getAsJsonObject();
    }

    private static String metadata(Path file, String key) throws IOException {
        try (SafetensorsReader r = SafetensorsReader.open(file)) {
            return r.header().metadata().get(key);
        }
    }

    @Test
    void distillKeepsNLabelsAndTheTeacherLabelsEveryImage() throws IOException {
        Path data = data(), teacher = teacher("teacher", VitConfig.preset("mnist-tiny").withDistilled(false));
        Path out = dir.resolve("soft");
        assertEquals(0, CliTest.run(args("distill", data, out, "--teacher", teacher.toString(), "--labeled", "20"))
                .status());
        JsonObject r = results(out);
        assertEquals(20, r.get("labeled").getAsInt());
        assertEquals(N, r.get("train_images").getAsInt(), "distillation visits every image of the transfer set");
        assertEquals("20 stratified by class, seed 0", r.get("labeled_subset").getAsString());
        try (SafetensorsReader cache = SafetensorsReader.open(out.resolve("teacher-logits.safetensors"))) {
            assertArrayEquals(new long[] {N, 10}, cache.header().tensors().get("logits").shape(),
                    "the soft-label cache covers every image, labeled or not");
        }
        Path ckpt = out.resolve("checkpoint.safetensors");
        assertEquals("20 stratified by class, seed 0", metadata(ckpt, "distill4j.labeled"));
        // Resuming with other labeled images is refused, naming both; the run in --out stays as it was.
        byte[] model = Files.readAllBytes(out.resolve("model.safetensors"));
        assertOneLineOnly(CliTest.run(args("distill", data, out, "--teacher", teacher.toString(), "--labeled", "21",
                "--resume", ckpt.toString())), "its labeled images were 20 stratified by class, seed 0; this run asks "
                + "for 21 stratified by class, seed 0");
        assertOneLineOnly(CliTest.run(args("distill", data, out, "--teacher", teacher.toString(), "--resume",
                ckpt.toString())), "this run asks for all");
        assertArrayEquals(model, Files.readAllBytes(out.resolve("model.safetensors")));

        Path list = Files.writeString(dir.resolve("labeled.txt"), "0, 5\n7 9\n\n 127,");
        Path hard = dir.resolve("hard");
        assertEquals(0, CliTest.run(args("distill", data, hard, "--teacher", teacher.toString(), "--distillation",
                "hard", "--labeled-list", list.toString())).status());
        r = results(hard);
        assertEquals(5, r.get("labeled").getAsInt());
        assertEquals(N, r.get("train_images").getAsInt());
        assertTrue(r.get("labeled_subset").getAsString().startsWith("list of 5, sha256 "), r.toString());
    }

    @Test
    void trainWithLabeledTrainsOnTheLabeledImagesAlone() throws IOException {
        Path data = data(), out = dir.resolve("scratch");
        assertEquals(0, CliTest.run(args("train", data, out, "--labeled", "40")).status());
        JsonObject r = results(out);
        assertEquals(40, r.get("labeled").getAsInt());
        assertEquals(40, r.get("train_images").getAsInt(), "an epoch is the labeled images");
        assertEquals("40 stratified by class, seed 0", metadata(out.resolve("checkpoint.safetensors"),
                "distill4j.labeled"));
        // Without --labeled the records say so.
        Path all = dir.resolve("all");
        assertEquals(0, CliTest.run(args("train", data, all)).status());
        assertEquals(N, results(all).get("labeled").getAsInt());
        assertEquals("all", results(all).get("labeled_subset").getAsString());
    }

    @Test
    void badTransferSetsAreOneLineAndWriteNothing() throws IOException {
        Path data = data(), teacher = teacher("teacher", VitConfig.preset("mnist-tiny").withDistilled(false));
        Path five = teacher("five", VitConfig.preset("mnist-tiny").withDistilled(false).withClasses(5));
        Path out = dir.resolve("never");
        Path junkList = Files.writeString(dir.resolve("junk.txt"), "1 2 three"),
                farList = Files.writeString(dir.resolve("far.txt"), "1 " + N),
                twiceList = Files.writeString(dir.resolve("twice.txt"), "4,4"),
                emptyList = Files.writeString(dir.resolve("empty.txt"), " \n"),
                okList = Files.writeString(dir.resolve("ok.txt"), "1 2 3");
        String[][] cases = {
            {"--labeled", "0"}, {"the labeled images must number >= 1, got 0"},
            {"--labeled", "-3"}, {"the labeled images must number >= 1, got -3"},
            {"--labeled", "129"}, {"cannot keep the labels of 129 images: the training set has 128"},
            {"--train-limit", "64", "--labeled", "65"},
            {"cannot keep the labels of 65 images: the training set has 64"},
            {"--labeled-list", junkList.toString()}, {"--labeled-list " + junkList + ": 'three' is not an image index"},
            {"--labeled-list", farList.toString()}, {"labeled image index 128 is outside the training set of 128"},
            {"--labeled-list", twiceList.toString()}, {"labeled image index 4 is listed twice"},
            {"--labeled-list", emptyList.toString()}, {"--labeled-list " + emptyList + " lists no image"},
            {"--labeled-list", dir.resolve("none.txt").toString()}, {"--labeled-list " + dir.resolve("none.txt")
                + ": no such file"},
            {"--labeled", "3", "--labeled-list", okList.toString()}, {"--labeled and --labeled-list both choose"},
        };
        for (int k = 0; k < cases.length; k += 2) {
            for (String command : new String[] {"train", "distill"}) {
                String[] more = command.equals("train") ? cases[k]
                        : concat(cases[k], "--teacher", teacher.toString());
                assertOneLineOnly(CliTest.run(args(command, data, out, more)), cases[k + 1][0]);
                assertFalse(Files.exists(out), command + " " + String.join(" ", cases[k]) + " wrote " + out);
            }
        }
        // A teacher of another class count labels nothing: refused before the soft-label cache is written.
        assertOneLineOnly(CliTest.run(args("distill", data, out, "--teacher", five.toString(), "--labeled", "20")),
                "the teacher predicts 5 classes, the student 10");
        assertFalse(Files.exists(out));
    }

    private static String[] concat(String[] a, String... b) {
        String[] all = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, all, a.length, b.length);
        return all;
    }
}
