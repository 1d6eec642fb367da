package org.distill4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.distill4j.testing.IdxFiles;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A slim container or the GPU machine's bare image: Java2D without its font libraries, or without any font. A run
 * must finish, write its model and results, and warn that the chart is missing and why. Each case runs the CLI in a
 * child JVM inside a private mount namespace ({@code unshare -m}, root only) where the libraries or the font
 * directories are hidden by mounts that vanish with the child. CI runs as root, and tests/run-all.sh fails when
 * this test was skipped there.
 */
class HeadlessNoFontTest {
    private static final String[] FONT_DIRS = {"/usr/share/fonts", "/usr/local/share/fonts", "/var/cache/fontconfig"};

    @TempDir
    static Path dir;

    private static Path data;

    @BeforeAll
    static void data() throws IOException {
        data = IdxFiles.randomFashionMnist(dir.resolve("idx"), 128);
    }

    private record Result(int status, String out, String err) {}

    /** Whether this process may make a mount namespace (root, util-linux's unshare). */
    private static boolean canIsolate() {
        try {
            Process p = new ProcessBuilder("unshare", "-m", "true").redirectErrorStream(true).start();
            p.getInputStream().readAllBytes();
            return p.waitFor() == 0;
        } catch (IOException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    /** The shared libraries libfontmanager.so loads to draw text, as the dynamic loader finds them here. */
    private static List<String> fontLibraries() throws IOException, InterruptedException {
        Path fontmanager = Path.of(System.getProperty("java.home"), "lib", "libfontmanager.so");
        Process p = new ProcessBuilder("ldd", fontmanager.toString()).redirectErrorStream(true).start();
        String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), "ldd " + fontmanager + ": " + text);
        List<String> libs = new ArrayList<>();
        for (String line : text.split("\n")) {
            String[] f = line.trim().split("\\s+");
            boolean font = f.length >= 3 && (f[0].startsWith("libfreetype") || f[0].startsWith("libharfbuzz"));
            if (font && f[1].equals("=>")) {
                libs.add(f[0] + " " + Path.of(f[2]).toRealPath()); // soname, file
            }
        }
        assertFalse(libs.isEmpty(), "libfontmanager.so loads no libfreetype/libharfbuzz here: " + text);
        return libs;
    }

    /** Runs {@code ./distill4j args} in a child JVM after {@code hide} (shell lines) in a fresh mount namespace. */
    private static Result isolated(List<String> hide, String... args) throws Exception {
        Path empty = Files.write(dir.resolve("empty-file"), new byte[0]);
        StringBuilder script = new StringBuilder("set -e\n");
        for (String line : hide) script.append(line.replace("$EMPTY", empty.toString())).append('\n');
        script.append("exec \"$@\"\n");
        List<String> cmd = new ArrayList<>(List.of("unshare", "-m", "sh", "-c", script.toString(), "sh",
                Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-Xmx1g",
                "-Ddistill4j.progress=off", "-cp", System.getProperty("java.class.path"), Main.class.getName()));
        cmd.addAll(List.of(args));
        Path out = dir.resolve("stdout"), err = dir.resolve("stderr");
        Process p = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile()).start();
        if (!p.waitFor(5, TimeUnit.MINUTES)) {
            p.destroyForcibly();
            throw new AssertionError("the isolated run did not finish in 5 minutes");
        }
        return new Result(p.exitValue(), Files.readString(out), Files.readString(err));
    }

    /** No stack trace, no Java class name: what the user reads is about their machine. */
    private static void assertClean(String err) {
        assertFalse(err.contains("\tat "), "no stack trace: " + err);
        assertFalse(java.util.regex.Pattern.compile("\\b(?:[a-z_][a-z0-9_]*\\.)+[A-Z]\\w*(?:Exception|Error)\\b")
                .matcher(err).find(), "no Java class name: " + err);
    }

    private static List<String> hideFonts() {
        List<String> lines = new ArrayList<>();
        for (String d : FONT_DIRS) lines.add("if [ -d " + d + " ]; then mount -t tmpfs none " + d + "; fi");
        return lines;
    }

    @Test
    void withoutFontLibrariesTheDemoFinishesAndWarnsAboutItsCharts() throws Exception {
        assumeTrue(canIsolate(), "needs root to hide files in a mount namespace (unshare -m); CI runs as root");
        List<String> hide = new ArrayList<>();
        List<String> libs = fontLibraries();
        for (String lib : libs) hide.add("mount --bind $EMPTY " + lib.split(" ")[1]);
        Path out = dir.resolve("demo");
        Result r = isolated(hide, "demo", "--data", data.toString(), "--out", out.toString(), "--device", "cpu",
                "--teacher-model", "mnist-tiny", "--student-model", "mnist-tiny", "--train-limit", "128",
                "--train-teacher", "--teacher-epochs", "1", "--student-epochs", "1", "--labeled", "128",
                "--seeds", "1");
        assertEquals(0, r.status, "exit status; stderr: " + r.err);
        for (String run : new String[] {"teacher", "student_scratch", "student_soft", "student_hard"}) {
            assertTrue(Files.isRegularFile(out.resolve(run).resolve("model.safetensors")), run);
            assertTrue(Files.isRegularFile(out.resolve(run).resolve("results.json")), run);
            assertFalse(Files.exists(out.resolve(run).resolve("accuracy.png")), run);
        }
        assertTrue(Files.isRegularFile(out.resolve("results.json")));
        Path teacherChart = out.resolve("teacher").resolve("accuracy.png");
        assertTrue(r.err.contains("warning: " + teacherChart + " not written"), r.err);
        assertTrue(libs.stream().anyMatch(lib -> r.err.contains(lib.split(" ")[0])),
                "the warning names the missing library: " + r.err);
        assertEquals(5, r.err.lines().filter(l -> l.startsWith("warning: ")).count(), "a warning per chart: " + r.err);
        assertClean(r.err);
    }

    @Test
    void withoutFontsATrainingRunFinishesAndWarnsAboutItsChart() throws Exception {
        assumeTrue(canIsolate(), "needs root to hide files in a mount namespace (unshare -m); CI runs as root");
        Path out = dir.resolve("train");
        Result r = isolated(hideFonts(), "train", "--model", "mnist-tiny", "--data", data.toString(), "--out",
                out.toString(), "--device", "cpu", "--epochs", "1", "--batch", "32");
        assertEquals(0, r.status, "exit status; stderr: " + r.err);
        assertTrue(Files.isRegularFile(out.resolve("model.safetensors")));
        assertTrue(Files.isRegularFile(out.resolve("results.json")));
        assertFalse(Files.exists(out.resolve("accuracy.png")));
        assertTrue(r.err.contains("warning: " + out.resolve("accuracy.png") + " not written: Java cannot draw text"),
                r.err);
        assertTrue(r.err.contains("font"), "the warning says a font is missing: " + r.err);
        assertClean(r.err);
    }
}
