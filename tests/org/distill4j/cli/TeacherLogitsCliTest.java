package org.distill4j.cli;

import static org.distill4j.cli.CliTest.assertOneLineOnly;
import static org.distill4j.cli.CliTest.distill;
import static org.distill4j.cli.CliTest.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import org.distill4j.io.Safetensors;
import org.distill4j.io.TensorData;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code dataset-index}, then {@code distill --teacher-logits} from a file a user's own script wrote; bad input. */
class TeacherLogitsCliTest {
    @TempDir
    Path dir;

    static {
        System.setProperty("distill4j.progress", "off");
    }

    /** What a user's script does with the list: logits per row, sure of each row's label, and the list's SHA-256. */
    private Path logitsFor(Path list, String name, int classes) throws Exception {
        List<String> rows = Files.readAllLines(list).stream().filter(l -> !l.startsWith("#"))
                .filter(l -> !l.equals("index\tlabel\tname")).toList();
        float[] logits = new float[rows.size() * classes];
        for (String row : rows) {
            String[] f = row.split("\t");
            logits[Integer.parseInt(f[0]) * classes + Integer.parseInt(f[1])] = 4f;
        }
        String sha = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(list)));
        Path file = dir.resolve(name);
        Safetensors.write(file, Map.of("logits", new TensorData(new long[] {rows.size(), classes}, logits)),
                Map.of("distill4j.samples", sha));
        return file;
    }

    @Test
    void logitsComputedElsewhereFollowTheSampleListAndTrainAStudent() throws Exception {
        Path root = DataCliTest.imageFolders(dir, "f", List.of("ant", "bee", "cat"), 8);
        Path list = dir.resolve("samples.tsv");
        CliTest.Run r = run("dataset-index", "--data", root.toString(), "--model", "mnist-tiny", "--out",
                list.toString());
        assertEquals(0, r.status(), r.err());
        assertTrue(Files.readString(list).contains("\n0\t0\tant/0.png\n"), Files.readString(list));
        Path logits = logitsFor(list, "logits.safetensors", 3);

        Path out = dir.resolve("run");
        r = run(distill(root, out, 8, "--teacher-logits", logits.toString(), "--no-augment"));
        assertEquals(0, r.status(), r.err());
        assertTrue(Files.exists(out.resolve("model.safetensors")) && Files.exists(out.resolve("class_index.json")));
        r = run(distill(root, dir.resolve("hard"), 8, "--teacher-logits", logits.toString(),
                "--no-augment", "--distillation", "hard", "--labeled", "6"));
        assertEquals(0, r.status(), r.err());

        // A list of the first 16 images is another list; an existing list is kept unless --force.
        Path head = dir.resolve("head.tsv");
        assertEquals(0, run("dataset-index", "--data", root.toString(), "--model", "mnist-tiny",
                "--train-limit", "16", "--out", head.toString()).status());
        assertOneLineOnly(run("dataset-index", "--data", root.toString(), "--model", "mnist-tiny", "--out",
                head.toString()), "exists");
        assertEquals(0, run("dataset-index", "--data", root.toString(), "--model", "mnist-tiny",
                "--train-limit", "16", "--out", head.toString(), "--force").status());
        Path headLogits = logitsFor(head, "head.safetensors", 3);
        r = run(distill(root, dir.resolve("h16"), 8, "--teacher-logits", headLogits.toString(),
                "--no-augment", "--train-limit", "16"));
        assertEquals(0, r.status(), r.err());

        // Each mismatch: one line, and no output directory.
        Path no = dir.resolve("no");
        assertOneLineOnly(run(distill(root, no, 8, "--teacher-logits", headLogits.toString(),
                "--no-augment")),
                "not the training set's");
        assertOneLineOnly(run(distill(root, no, 8, "--teacher-logits", logits.toString())), "--no-augment");
        assertOneLineOnly(run(distill(root, no, 8, "--teacher-logits", logits.toString(), "--no-augment",
                "--teacher", logits.toString())), "one of them");
        assertOneLineOnly(run(distill(root, no, 8, "--no-augment")), "one of them");
        Path bare = dir.resolve("bare.safetensors");
        Safetensors.write(bare, Map.of("logits", new TensorData(new long[] {24, 3}, new float[72])));
        assertOneLineOnly(run(distill(root, no, 8, "--teacher-logits", bare.toString(), "--no-augment")),
                "no distill4j.samples metadata");
        assertOneLineOnly(run(distill(root, no, 8, "--teacher-logits", dir.resolve("missing").toString(),
                "--no-augment")), "missing");
        assertFalse(Files.exists(no), "nothing written");
    }
}
