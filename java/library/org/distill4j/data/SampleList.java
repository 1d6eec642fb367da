package org.distill4j.data;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/**
 * The training images of a dataset in index order, each with its label and a name that says which file or record it
 * is: what teacher logits computed elsewhere (in PyTorch, say) are aligned to, row i for image i.
 *
 * <p>The list is a UTF-8 text file, one tab-separated line per image ({@code index}, {@code label}, {@code name})
 * after a header; its SHA-256 ({@link #digest}) names it. Names are the path relative to the root for an image folder
 * ({@code class/file.jpg}, '/' separated), {@code file:record} for CIFAR, and {@code #index} for an in-memory dataset,
 * whose header then also carries the SHA-256 of every pixel ({@link Dataset#digest}). A logits file carries the
 * digest of the list it follows, and a run recomputes the list of its own training set and compares: a renamed,
 * added, removed or relabelled image changes it, and so does another order. For image folders and CIFAR the list
 * names files and records, not pixels (checking those would mean decoding every image): a file rewritten in place
 * under the same name is not noticed.
 */
public final class SampleList {
    /** The first line of every list: a reader checks it before anything else. */
    public static final String HEADER = "# distill4j sample list 1";

    private final String text;
    private final int size, classes;

    private SampleList(String text, int size, int classes) {
        this.text = text;
        this.size = size;
        this.classes = classes;
    }

    /** The list of {@code source}'s images, in index order. */
    public static SampleList of(ImageSource source) {
        int n = source.size();
        StringBuilder sb = new StringBuilder(n * 24 + 128);
        sb.append(HEADER).append('\n');
        sb.append("# images ").append(n).append(", classes ").append(source.classes()).append('\n');
        if (source instanceof Dataset d) sb.append("# pixels sha256 ").append(d.digest()).append('\n');
        sb.append("index\tlabel\tname\n");
        for (int i = 0; i < n; i++) {
            String name = source.sampleName(i);
            if (name.indexOf('\t') >= 0 || name.indexOf('\n') >= 0 || name.indexOf('\r') >= 0) {
                throw new IllegalArgumentException("image " + i + " of " + source.name() + " has a tab or line break "
                        + "in its name, which a sample list cannot hold: " + name.replace("\n", "\\n"));
            }
            sb.append(i).append('\t').append(source.label(i)).append('\t').append(name).append('\n');
        }
        return new SampleList(sb.toString(), n, source.classes());
    }

    /** Images listed. */
    public int size() {
        return size;
    }

    /** Classes of the dataset. */
    public int classes() {
        return classes;
    }

    /** SHA-256 of the list's text, in hex: what a logits file records as {@code distill4j.samples}. */
    public String digest() {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256")
                    .digest(text.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("the JDK has no SHA-256", e);
        }
    }

    /** The list as written by {@link #write}. */
    public String text() {
        return text;
    }

    /** Writes the list (UTF-8) to {@code file}: its bytes are the ones {@link #digest} hashes. */
    public void write(Path file) throws IOException {
        Files.writeString(file, text, StandardCharsets.UTF_8);
    }
}
