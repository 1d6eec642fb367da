package org.distill4j.cli;

import static org.distill4j.cli.TransferSetCliTest.args;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Set;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.io.SafetensorsReader;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.IdxFiles;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --mixup}/{@code --cutmix} and {@code --reprob} on train and distill, on a tiny random Fashion-MNIST, and their
 * bad input.
 */
class DeitRecipeCliTest {
    @TempDir
    Path dir;

    static {
        System.setProperty("distill4j.progress", "off");
    }

    private static String settings(Path out) throws IOException {
        try (SafetensorsReader r = SafetensorsReader.open(out.resolve("checkpoint.safetensors"))) {
            return r.header().metadata().get("distill4j.settings");
        }
    }

    @Test
    void mixedRunsRecordTheirSettingsAndRunTheTeacherOnEveryBatch() throws IOException {
        Path data = IdxFiles.randomFashionMnist(dir.resolve("idx"), 64);
        Path teacher = dir.resolve("teacher.safetensors");
        VitConfig config = VitConfig.preset("mnist-tiny").withDistilled(false);
        try (Backend be = CpuBackend.open(); VisionTransformer m = new VisionTransformer(be, config, 8, 5)) {
            ModelFile.save(teacher, m);
        }
        Path soft = dir.resolve("soft");
        assertEquals(0, CliTest.run(args("distill", data, soft, "--teacher", teacher.toString(), "--mixup", "0.8",
                "--cutmix", "1.0")).status());
        assertTrue(settings(soft).contains("mixup 0.8, cutmix 1.0 (prob 1.0, switch 0.5)"), settings(soft));
        JsonObject r = JsonParser.parseString(Files.readString(soft.resolve("results.json"))).getAsJsonObject();
        assertTrue(r.get("teacher").getAsString().contains("run on every"), r.toString());
        assertFalse(Files.exists(soft.resolve("teacher-logits.safetensors")),
                "mixed images have no cached soft labels, even with --no-augment");
        Path scratch = dir.resolve("scratch");
        assertEquals(0, CliTest.run(args("train", data, scratch, "--cutmix", "1.0", "--mixup-prob", "0.5")).status());
        assertTrue(settings(scratch).contains("mixup 0.0, cutmix 1.0 (prob 0.5, switch 0.5)"), settings(scratch));
        Path erased = dir.resolve("erased");
        assertEquals(0, CliTest.run(args("distill", data, erased, "--teacher", teacher.toString(), "--reprob", "0.25"))
                .status());
        assertTrue(settings(erased).contains("random erasing 0.25"), settings(erased));
        assertFalse(Files.exists(erased.resolve("teacher-logits.safetensors")), "erased images have no cache either");

        // Bad values and a transfer set: one line, nothing written.
        Path out = dir.resolve("never");
        String[][] cases = {
            {"--mixup", "-1"}, {"alphas must be finite and >= 0"},
            {"--mixup-prob", "1.5", "--mixup", "0.8"}, {"probabilities must be in [0, 1]"},
            {"--mixup", "0.8", "--labeled", "20"}, {"--mixup/--cutmix cannot mix a transfer set (--labeled)"},
            {"--reprob", "2"}, {"random erasing probability must be in [0, 1], got 2.0"},
        };
        for (int k = 0; k < cases.length; k += 2) {
            String[] more = Arrays.copyOf(cases[k], cases[k].length + 2);
            more[cases[k].length] = "--teacher";
            more[cases[k].length + 1] = teacher.toString();
            CliTest.Run run = CliTest.run(args("distill", data, out, more));
            assertTrue(run.status() != 0 && run.err().contains(cases[k + 1][0]), "stderr: " + run.err());
            assertEquals(1, run.err().strip().lines().count(), "one line: " + run.err());
            assertFalse(Files.exists(out), String.join(" ", cases[k]) + " wrote " + out);
        }
    }

    @Test
    void resizedCropRecordsItsRangesAndRefusesBadOnes() throws IOException {
        Path data = IdxFiles.randomFashionMnist(dir.resolve("idx"), 64);
        String[] base = {"train", "--model", "mnist-tiny", "--data", data.toString(), "--device", "cpu", "--epochs",
            "1", "--batch", "16", "--out"};
        Path out = dir.resolve("rrc");
        CliTest.Run ok = CliTest.run(concat(base, out.toString(), "--scale", "0.08", "1", "--ratio", "0.75,1.3333"));
        assertEquals(0, ok.status(), ok.err());
        assertTrue(settings(out).contains("augment random resized crop (scale 0.08-1.0, ratio 0.75-1.3333)"),
                settings(out));
        Path never = dir.resolve("never");
        String[][] cases = {
            {"--scale", "0", "1"}, {"crop scale must satisfy 0 < min <= max <= 1, got 0.0, 1.0"},
            {"--scale", "0.5"}, {"--scale takes two numbers, MIN and MAX"},
            {"--ratio", "2", "1"}, {"crop aspect ratio must satisfy 0 < min <= max < inf, got 2.0, 1.0"},
            {"--scale", "0.1", "1", "--no-augment"}, {"--scale/--ratio crop training images: not with --no-augment"},
        };
        refusedInOneLine(base, never, cases);
    }

    @Test
    void augmentViewsCacheTheTeachersLogitsOfEveryViewAndReuseThem() throws IOException {
        Path data = IdxFiles.randomFashionMnist(dir.resolve("idx"), 64);
        Path teacher = tinyTeacher();
        String[] base = {"distill", "--model", "mnist-tiny", "--data", data.toString(), "--device", "cpu", "--epochs",
            "3", "--batch", "16", "--teacher", teacher.toString(), "--out"};
        Path out = dir.resolve("views");
        CliTest.Run r = CliTest.run(concat(base, out.toString(), "--augment-views", "2"));
        assertEquals(0, r.status(), r.err());
        assertTrue(Files.exists(out.resolve("teacher-logits-views.safetensors")));
        assertTrue(settings(out).contains(", 2 augment views"), settings(out));
        assertTrue(teacherOf(out).contains("2 augmented views per image, computed once"), teacherOf(out));
        r = CliTest.run(concat(base, out.toString(), "--augment-views", "2", "--force"));
        assertEquals(0, r.status(), r.err());
        assertTrue(teacherOf(out).contains("2 augmented views per image from"), teacherOf(out));

        // FKD's top-k storage: the file holds the views' top-2 classes only, and the run trains on what it holds.
        Path top = dir.resolve("views-top2");
        r = CliTest.run(concat(base, top.toString(), "--augment-views", "2", "--soft-label-topk", "2"));
        assertEquals(0, r.status(), r.err());
        try (SafetensorsReader reader = SafetensorsReader.open(top.resolve("teacher-logits-views.safetensors"))) {
            assertEquals(Set.of("view_topk_logprobs", "view_topk_classes"), reader.header().tensors().keySet());
            assertEquals(2, reader.header().tensors().get("view_topk_logprobs").shape()[2]);
        }
        assertTrue(teacherOf(top).contains("top-2 teacher logits of 2 augmented views per image from"), teacherOf(top));

        Path never = dir.resolve("never");
        String[][] cases = {{"--augment-views", "2", "--no-augment"},
            {"--augment-views fixes views of the augmentation: not with --no-augment"},
            {"--augment-views", "-1"}, {"augment views must be >= 0, got -1"}};
        refusedInOneLine(base, never, cases);
    }

    @Test
    void randAugmentIsRecordedCachedPerViewAndBadConfigsAreOneLine() throws IOException {
        Path data = IdxFiles.randomFashionMnist(dir.resolve("idx"), 64);
        Path teacher = tinyTeacher();
        String[] train = {"train", "--model", "mnist-tiny", "--data", data.toString(), "--device", "cpu", "--epochs",
            "1", "--batch", "16", "--out"};
        Path out = dir.resolve("ra");
        CliTest.Run ok = CliTest.run(concat(train, out.toString(), "--aa", "rand-m9-mstd0.5-inc1", "--scale", "0.08",
                "1"));
        assertEquals(0, ok.status(), ok.err());
        assertTrue(settings(out).contains("RandAugment rand-m9-mstd0.5-inc1"), settings(out));

        // FKD: views without RandAugment are not served to a run with it; its own views are computed once.
        String[] distill = {"distill", "--model", "mnist-tiny", "--data", data.toString(), "--device", "cpu",
            "--epochs", "2", "--batch", "16", "--teacher", teacher.toString(), "--augment-views", "2", "--out"};
        Path views = dir.resolve("views");
        assertEquals(0, CliTest.run(concat(distill, views.toString())).status());
        CliTest.Run r = CliTest.run(concat(distill, views.toString(), "--aa", "rand-m9-mstd0.5-inc1", "--force"));
        assertEquals(0, r.status(), r.err());
        assertTrue(teacherOf(views).contains("2 augmented views per image, computed once"), teacherOf(views));
        assertTrue(settings(views).contains("RandAugment rand-m9-mstd0.5-inc1"), settings(views));
        r = CliTest.run(concat(distill, views.toString(), "--aa", "rand-m9-mstd0.5-inc1", "--force"));
        assertEquals(0, r.status(), r.err());
        assertTrue(teacherOf(views).contains("2 augmented views per image from"), teacherOf(views));

        Path never = dir.resolve("never");
        String[][] cases = {
            {"--aa", "rand-m9-foo1"}, {"RandAugment config 'rand-m9-foo1': unknown section 'foo1'"},
            {"--aa", "m9-mstd0.5"}, {"must start with 'rand'"},
            {"--aa", "rand-m9", "--no-augment"}, {"--aa augments training images: not with --no-augment"},
        };
        refusedInOneLine(train, never, cases);
        refusedInOneLine(distill, never, cases);
    }

    /**
     * Each {@code cases[k]} added to {@code base} and {@code never}: refused with {@code cases[k + 1][0]} in one line
     * of stderr, nothing written.
     */
    private static void refusedInOneLine(String[] base, Path never, String[][] cases) {
        for (int k = 0; k < cases.length; k += 2) {
            CliTest.Run run = CliTest.run(concat(concat(base, never.toString()), cases[k]));
            assertTrue(run.status() != 0 && run.err().contains(cases[k + 1][0]), "stderr: " + run.err());
            assertEquals(1, run.err().strip().lines().count(), "one line: " + run.err());
            assertFalse(Files.exists(never), String.join(" ", cases[k]) + " wrote " + never);
        }
    }

    /** An untrained mnist-tiny teacher (no distillation token) written to the test folder. */
    private Path tinyTeacher() throws IOException {
        Path teacher = dir.resolve("teacher.safetensors");
        try (Backend be = CpuBackend.open();
             VisionTransformer m = new VisionTransformer(be, VitConfig.preset("mnist-tiny").withDistilled(false), 8,
                     5)) {
            ModelFile.save(teacher, m);
        }
        return teacher;
    }

    private static String teacherOf(Path out) throws IOException {
        return JsonParser.parseString(Files.readString(out.resolve("results.json"))).getAsJsonObject().get("teacher")
                .getAsString();
    }

    private static String[] concat(String[] a, String... b) {
        String[] all = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, all, a.length, b.length);
        return all;
    }
}
