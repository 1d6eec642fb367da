package org.distill4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The README's Java cannot drift from code that compiles: every ```java block of README.md, imports aside, is the
 * text between a "readme:begin NAME" and "readme:end" of tests/consumer's ReadmeSnippets.java (compiled against the
 * platform artifact by tests/run-all.sh, the fast ones run by ConsumerMain) less its lines marked readme:hidden, and
 * every import it shows is one of that file's. Indentation is compared relative to each block's first line.
 */
class ReadmeSnippetsTest {
    private static final Path ROOT = Path.of(System.getProperty("user.dir"));
    private static final Path SNIPPETS = ROOT.resolve("tests/consumer/src/main/java/example/ReadmeSnippets.java");

    @Test
    void everyJavaBlockOfTheReadmeIsCompiledCode() throws IOException {
        List<String> readme = Files.readAllLines(ROOT.resolve("README.md"));
        List<String> source = Files.readAllLines(SNIPPETS);
        Map<String, List<String>> regions = regions(source);
        List<List<String>> blocks = javaBlocks(readme);
        assertTrue(!blocks.isEmpty(), "no ```java block in README.md");
        List<String> matched = new ArrayList<>();
        for (List<String> block : blocks) {
            List<String> code = new ArrayList<>();
            for (String line : block) {
                if (line.startsWith("import ")) {
                    assertTrue(source.contains(line), "README imports what ReadmeSnippets.java does not: " + line);
                } else if (!(code.isEmpty() && line.isBlank())) {
                    code.add(line);
                }
            }
            String name = regions.entrySet().stream().filter(e -> e.getValue().equals(dedent(code)))
                    .map(Map.Entry::getKey).findFirst().orElse(null);
            assertTrue(name != null, "this README block is not in " + SNIPPETS.getFileName()
                    + " (paste it between readme:begin/readme:end markers there, as the README shows it):\n"
                    + String.join("\n", code));
            matched.add(name);
        }
        assertEquals(List.copyOf(regions.keySet()), matched,
                "every region of ReadmeSnippets.java in the README, once, in order");
    }

    private static List<List<String>> javaBlocks(List<String> lines) {
        List<List<String>> blocks = new ArrayList<>();
        List<String> current = null;
        for (String line : lines) {
            if (current == null && line.equals("```java")) {
                current = new ArrayList<>();
            } else if (current != null && line.equals("```")) {
                blocks.add(current);
                current = null;
            } else if (current != null) {
                current.add(line);
            }
        }
        assertTrue(current == null, "an unclosed ```java block in README.md");
        return blocks;
    }

    private static Map<String, List<String>> regions(List<String> source) {
        Map<String, List<String>> out = new LinkedHashMap<>();
        String name = null;
        List<String> current = null;
        for (String line : source) {
            String t = line.trim();
            if (t.startsWith("// readme:begin ")) {
                name = t.substring("// readme:begin ".length());
                current = new ArrayList<>();
            } else if (t.equals("// readme:end")) {
                assertTrue(current != null, "readme:end without readme:begin");
                out.put(name, dedent(current));
                current = null;
            } else if (current != null && !t.endsWith("// readme:hidden")) {
                current.add(line);
            }
        }
        assertTrue(current == null, "readme:begin " + name + " without readme:end");
        return out;
    }

    /** The lines less the first line's indentation (which every line must have). */
    private static List<String> dedent(List<String> lines) {
        if (lines.isEmpty()) return lines;
        String first = lines.get(0);
        int indent = first.length() - first.stripLeading().length();
        List<String> out = new ArrayList<>();
        for (String line : lines) {
            String prefix = line.substring(0, Math.min(indent, line.length()));
            out.add(prefix.isBlank() ? line.substring(prefix.length()).stripTrailing() : line.stripTrailing());
        }
        return out;
    }
}
