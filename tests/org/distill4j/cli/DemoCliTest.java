package org.distill4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.IdxFiles;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The demo's story on a tiny synthetic dataset (issue #16): teacher, transfer set, students over seeds, the gains
 * written from the runs' own results, and its bad inputs (one line, exit ≠ 0, nothing written).
 */
class DemoCliTest {
    @TempDir
    Path dir;

    private static final String[] TINY = {"--device", "cpu", "--teacher-model", "mnist-tiny", "--student-model",
        "mnist-tiny", "--train-limit", "256", "--student-epochs", "1"};

    private String[] args(String... more) {
        List<String> a = new ArrayList<>(List.of("demo", "--data", dir.resolve("idx").toString()));
        a.addAll(List.of(TINY));
        a.addAll(List.of(more));
        return a.toArray(new String[0]);
    }

    @Test
    void twoSeedsWithATeacherFileWriteEveryRunAndTheGainsOfEachSeed() throws IOException {
        IdxFiles.randomFashionMnist(dir.resolve("idx"), 256);
        Path first = dir.resolve("first"), second = dir.resolve("second");
        assertEquals(0, CliTest.run(args("--out", first.toString(), "--train-teacher", "--teacher-epochs", "1",
                "--labeled", "128", "--seeds", "1")).status());
        Path teacher = first.resolve("teacher/model.safetensors");
        assertTrue(Files.isRegularFile(teacher));
        // The teacher trained above, as a file: not trained again, its hash recorded.
        assertEquals(0, CliTest.run(args("--out", second.toString(), "--teacher", teacher.toString(), "--labeled",
                "128", "--seeds", "2", "--seed", "5")).status());
        assertFalse(Files.exists(second.resolve("teacher/checkpoint.safetensors")), "the teacher was trained again");
        JsonObject r = JsonParser.parseString(Files.readString(second.resolve("results.json"))).getAsJsonObject();
        assertEquals(Runs.sha256(teacher), r.getAsJsonObject("teacher").get("sha256").getAsString());
        assertEquals(128, r.get("labeled").getAsInt());
        assertEquals(256, r.get("train_images").getAsInt());
        assertEquals(2, r.get("seeds").getAsInt());
        String[][] runs = {{"student_scratch", "student_scratch-seed6"}, {"student_soft", "student_soft-seed6"},
            {"student_hard", "student_hard-seed6"}};
        double[][] acc = new double[3][2];
        for (int m = 0; m < 3; m++) {
            for (int s = 0; s < 2; s++) {
                // Each run's own results.json, written by the run, not by the demo's summary.
                JsonObject run = JsonParser.parseString(Files.readString(second.resolve(runs[m][s])
                        .resolve("results.json"))).getAsJsonObject();
                acc[m][s] = run.get("test_acc").getAsDouble();
                // As many optimizer steps and evaluations: one epoch of 256 images each, the scratch student's being
                // its 128 labeled images twice over.
                assertEquals(256, run.get("train_images").getAsInt(), runs[m][s]);
                assertEquals(1, run.get("epochs").getAsInt(), runs[m][s]);
                JsonObject summary = r.getAsJsonObject(runs[m][s]);
                assertEquals(128, summary.get("labeled").getAsInt(), runs[m][s]);
                if (m == 0) {
                    assertEquals(2, summary.get("labeled_repeats").getAsInt());
                } else {
                    assertEquals(128, run.get("labeled").getAsInt(), runs[m][s]);  // a transfer set of 256
                }
            }
        }
        String[] modes = {"soft", "hard"};
        for (int m = 1; m < 3; m++) {
            JsonArray perSeed = r.getAsJsonArray("gain_" + modes[m - 1] + "_points_per_seed");
            double sum = 0;
            for (int s = 0; s < 2; s++) {
                double want = 100 * (acc[m][s] - acc[0][s]);
                assertTrue(Math.abs(perSeed.get(s).getAsDouble() - want) <= 1e-9, modes[m - 1] + " seed " + s);
                sum += want;
            }
            assertTrue(Math.abs(r.get("gain_" + modes[m - 1] + "_points").getAsDouble() - sum / 2) <= 1e-9);
        }
        double mean = (acc[1][0] + acc[1][1]) / 2, sd = Math.sqrt(((acc[1][0] - mean) * (acc[1][0] - mean)
                + (acc[1][1] - mean) * (acc[1][1] - mean)) / 1);
        JsonObject soft = r.getAsJsonObject("student_soft_summary");
        assertTrue(Math.abs(soft.get("test_acc_mean").getAsDouble() - mean) <= 1e-12);
        assertTrue(Math.abs(soft.get("test_acc_std").getAsDouble() - sd) <= 1e-12);
    }

    @Test
    void badInputIsOneLineAndWritesNothing() throws IOException {
        IdxFiles.randomFashionMnist(dir.resolve("idx"), 256);
        Path out = dir.resolve("out");
        Path fiveClasses = dir.resolve("five.safetensors");
        try (Backend be = CpuBackend.open();
             VisionTransformer m = new VisionTransformer(be, VitConfig.preset("mnist-tiny").withClasses(5), 8, 1)) {
            ModelFile.save(fiveClasses, m);
        }
        String[][] bad = {
            {"--labeled", "0"},
            {"--labeled", "9"},              // below the 10 classes: a class without a labeled image
            {"--labeled", "257"},            // more than the training set
            {"--seeds", "0", "--labeled", "128"},
            {"--teacher", fiveClasses.toString(), "--labeled", "128"},
            {"--teacher", dir.resolve("missing.safetensors").toString(), "--labeled", "128"},
            {"--teacher", fiveClasses.toString(), "--train-teacher", "--labeled", "128"},
            {"--alpha", "1.5", "--labeled", "128"},
            {"--tau", "0", "--labeled", "128"},
        };
        String[] expected = {"--labeled 0", "10 classes", "257", "--seeds", "differ in classes", "missing", "give one",
            "alpha must be in [0, 1], got 1.5", "temperature"};
        for (int i = 0; i < bad.length; i++) {
            List<String> a = new ArrayList<>(List.of(args(bad[i])));
            a.addAll(List.of("--out", out.toString()));
            CliTest.Run r = CliTest.run(a.toArray(new String[0]));
            assertTrue(r.status() != 0, String.join(" ", bad[i]));
            assertTrue(r.err().contains(expected[i]), String.join(" ", bad[i]) + ": " + r.err());
            assertFalse(r.err().contains("\tat "), r.err());
            assertFalse(Files.exists(out), String.join(" ", bad[i]) + " left " + out);
        }
        // 100 of 190 labeled: the scratch student's epoch is its 100 images once, less than a batch (TINY's
        // --train-limit is 256, and an option may be given once).
        CliTest.Run r = CliTest.run("demo", "--data", dir.resolve("idx").toString(), "--device", "cpu",
                "--student-model", "mnist-tiny", "--train-limit", "190", "--labeled", "100", "--out", out.toString());
        assertTrue(r.status() != 0 && r.err().contains("less than one batch of 128"), r.err());
        assertFalse(Files.exists(out), "left " + out);
    }

    @Test
    void withoutATeacherFlagTheDemoDistilsFromTheShippedTeacher() throws IOException {
        ShippedTeacher.Provenance shipped = ShippedTeacher.provenance();
        assertNotNull(shipped, "this build ships no teacher (java/cli/teachers/)");
        IdxFiles.randomFashionMnist(dir.resolve("idx"), 256);
        Path out = dir.resolve("shipped");
        CliTest.Run run = CliTest.run(args("--out", out.toString(), "--labeled", "128", "--seeds", "1"));
        assertEquals(0, run.status(), run.err());
        Path teacher = out.resolve("teacher/model.safetensors");
        assertEquals(shipped.sha256(), Runs.sha256(teacher), "the file the demo distilled from is the measured one");
        assertFalse(Files.exists(out.resolve("teacher/checkpoint.safetensors")), "a teacher was trained");
        JsonObject t = JsonParser.parseString(Files.readString(out.resolve("results.json"))).getAsJsonObject()
                .getAsJsonObject("teacher");
        assertEquals(shipped.sha256(), t.get("sha256").getAsString());
        assertEquals(shipped.preset(), t.getAsJsonObject("provenance").get("preset").getAsString());
        assertEquals(shipped.commit(), t.getAsJsonObject("provenance").get("commit").getAsString());
    }

    @Test
    void theShippedTeacherIsRefusedWhenItsHashIsNotTheRecordedOne() throws IOException {
        Path file = dir.resolve("teacher.safetensors");
        Files.write(file, "not the measured teacher".getBytes(StandardCharsets.UTF_8));
        String recorded = "0".repeat(64);
        ShippedTeacher.Provenance p = ShippedTeacher.parse(new ByteArrayInputStream(("{\"sha256\": \"" + recorded
                + "\", \"preset\": \"mnist-teacher\", \"test_accuracy\": 0.9228, \"test_images\": 10000, \"command\": "
                + "\"./distill4j train\", \"commit\": \"abc\", \"seed\": 0}").getBytes(StandardCharsets.UTF_8)), "p");
        IOException e = assertThrows(IOException.class, () -> ShippedTeacher.verify(file, p));
        assertTrue(e.getMessage().contains(recorded) && e.getMessage().contains(Runs.sha256(file)), e.getMessage());
        ShippedTeacher.verify(file, new ShippedTeacher.Provenance(Runs.sha256(file), "mnist-teacher", 0.9, 10000,
                "c", "abc", 0));  // the recorded hash: accepted
        assertThrows(IOException.class, () -> ShippedTeacher.parse(new ByteArrayInputStream(
                "{\"preset\": \"x\"}".getBytes(StandardCharsets.UTF_8)), "p"));
    }
}
