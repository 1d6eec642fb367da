package org.distill4j.cli;

import static org.distill4j.cli.CliTest.assertOneLineOnly;
import static org.distill4j.cli.CliTest.distill;
import static org.distill4j.cli.CliTest.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.distill4j.testing.Check;
import org.distill4j.testing.IdxFiles;
import org.distill4j.testing.OnnxFiles;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code distill --teacher model.onnx} on a tiny random Fashion-MNIST, and its bad input. */
class OnnxTeacherCliTest {
    @TempDir
    Path dir;

    static {
        System.setProperty("distill4j.progress", "off");
    }

    private Path onnx(String name, int side, int classes) throws IOException {
        Random rng = new Random(7);
        Path f = dir.resolve(name);
        OnnxFiles.linear(f, 0, 1, side, side, Check.normal(rng, classes * side * side, 0.1),
                Check.normal(rng, classes, 1));
        return f;
    }

    @Test
    void anOnnxTeacherRunsOnEveryAugmentedBatch() throws IOException {
        Path data = IdxFiles.randomFashionMnist(dir.resolve("idx"), 64);
        Path out = dir.resolve("soft");
        CliTest.Run r = run(distill(data, out, 16, "--teacher", onnx("t.onnx", 28, 10).toString()));
        assertEquals(0, r.status(), r.err());
        String teacher = JsonParser.parseString(Files.readString(out.resolve("results.json"))).getAsJsonObject()
                .get("teacher").getAsString();
        assertTrue(teacher.contains("ONNX teacher") && teacher.contains("run on every batch"), teacher);
        // A teacher of another resolution and normalisation, hard distillation, Mixup.
        r = run(distill(data, dir.resolve("hard"), 16, "--teacher",
                onnx("half.onnx", 14, 10).toString(),
                "--teacher-mean", "0.5", "--teacher-std", "0.25", "--distillation", "hard", "--mixup", "0.8"));
        assertEquals(0, r.status(), r.err());

        Path no = dir.resolve("no");
        Path junk = Files.writeString(dir.resolve("junk.onnx"), "not a model");
        assertOneLineOnly(run(distill(data, no, 16, "--teacher", junk.toString())), "is not an ONNX model");
        assertOneLineOnly(run(distill(data, no, 16, "--teacher", onnx("five.onnx", 28, 5).toString())),
                "predicts 5 classes");
        assertOneLineOnly(run(distill(data, no, 16, "--teacher", onnx("m.onnx", 28, 10).toString(),
                "--teacher-mean", "0.5")), "--teacher-mean and --teacher-std go together");
        Path safetensors = Files.writeString(dir.resolve("t.safetensors"), "any file: refused before it is read");
        assertOneLineOnly(run(distill(data, no, 16, "--teacher", safetensors.toString(),
                "--teacher-mean", "0.5", "--teacher-std", "0.2")), "not an .onnx file");
        assertOneLineOnly(run(distill(data, no, 16, "--teacher", dir.resolve("gone.onnx").toString())),
                "gone.onnx");
        assertFalse(Files.exists(no), "nothing written");
    }
}
