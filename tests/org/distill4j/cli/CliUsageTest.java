package org.distill4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.IdxFiles;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** What the CLI tells a user who asks (help, versions, option lists), and eval's test limit (issue #15). */
class CliUsageTest {
    private static final String[] COMMANDS = {"info", "selftest", "bench", "train", "distill", "eval", "export-onnx",
        "demo"};

    @TempDir
    Path dir;

    /** Runs the CLI as Main does; fails unless it exits 0; returns what picocli printed to its out. */
    private static String ok(String... args) {
        CommandLine cli = Main.commandLine();
        StringWriter out = new StringWriter(), err = new StringWriter();
        cli.setOut(new PrintWriter(out));
        cli.setErr(new PrintWriter(err));
        assertEquals(0, cli.execute(args), String.join(" ", args) + ": " + err);
        return out.toString();
    }

    @Test
    void helpIsACommand() {
        assertTrue(ok("help").contains("Usage: distill4j"), "help");
        for (String c : COMMANDS) assertTrue(ok("help", c).contains("Usage: distill4j " + c), "help " + c);
    }

    @Test
    void everyCommandPrintsTheVersion() {
        String version = Version.distill4j();
        assertTrue(ok("-V").contains(version));
        for (String c : COMMANDS) assertTrue(ok(c, "-V").contains(version), c + " -V");
    }

    @Test
    void modelAndDeviceOptionsListTheirValues() {
        for (String c : new String[] {"train", "distill", "eval", "demo"}) {
            String help = ok(c, "--help").replaceAll("\\s+", " ");
            for (String preset : VitConfig.presetNames()) assertTrue(help.contains(preset), c + ": " + preset);
            assertTrue(help.contains("cuda-emu"), c + ": cuda-emu");
        }
    }

    @Test
    void evalUsesTheFirstNTestImages() throws IOException {
        Path data = IdxFiles.randomFashionMnist(dir.resolve("idx"), 64), file = dir.resolve("m.safetensors");
        try (Backend be = CpuBackend.open();
             VisionTransformer m = new VisionTransformer(be, VitConfig.preset("mnist-tiny"), 8, 5)) {
            ModelFile.save(file, m);
        }
        PrintStream stdout = System.out;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        System.setOut(new PrintStream(captured, true, StandardCharsets.UTF_8));
        try {
            ok("eval", file.toString(), "--data", data.toString(), "--device", "cpu", "--test-limit", "24");
        } finally {
            System.setOut(stdout);
        }
        String printed = captured.toString(StandardCharsets.UTF_8);
        // The file records its preset: named, not "custom".
        assertTrue(printed.contains("(mnist-tiny(") && printed.contains(" on 24 images"), printed);
    }
}
