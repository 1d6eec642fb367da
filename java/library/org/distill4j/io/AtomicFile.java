package org.distill4j.io;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Objects;
import java.util.concurrent.ThreadLocalRandom;
import java.util.regex.Pattern;

/**
 * Writes a file so that a reader, or a crash, sees either the old file or the whole new one: the bytes go to
 * {@code .<name>.<random hex>.tmp} in the same directory, are forced to disk, and that file is renamed over the
 * target; the directory is then forced too, so the rename itself survives a power cut.
 *
 * <p>The temporary file is created with the process's umask, like any file the user creates (not with
 * {@link Files#createTempFile}'s 0600, which the rename would hand on to the result). A process killed between
 * creating it and the rename leaves it behind; {@link #isTemporaryOf} recognises such leftovers so that the
 * owner of a directory can remove them.
 */
public final class AtomicFile {
    /** What writes the content: the channel is positioned at 0 and forced and closed by the caller. */
    @FunctionalInterface
    public interface Content {
        void writeTo(FileChannel channel) throws IOException;
    }

    // Ours, and the forms of distill4j 0.1.0 (createTempFile: a decimal number straight after the name).
    private static final Pattern SUFFIX = Pattern.compile("\\.?[0-9a-f]+\\.tmp");

    private AtomicFile() {}

    /** Writes {@code content} to {@code file} atomically, replacing what was there. */
    public static void write(Path file, Content content) throws IOException {
        Objects.requireNonNull(file, "file");
        Objects.requireNonNull(content, "content");
        Path target = file.toAbsolutePath();
        Path dir = target.getParent();
        Path tmp = dir.resolve("." + target.getFileName() + "." + Long.toHexString(ThreadLocalRandom.current()
                .nextLong()) + ".tmp");
        boolean moved = false;
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                content.writeTo(ch);
                ch.force(true); // data on disk before the rename is: else a crash can leave an empty file
            }
            try {
                Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE);
            } catch (AtomicMoveNotSupportedException e) {
                throw new IOException("cannot replace " + target + " atomically (" + e.getMessage() + ")", e);
            }
            moved = true;
            syncDirectory(dir);
        } finally {
            if (!moved) Files.deleteIfExists(tmp);
        }
    }

    /** Writes {@code bytes} to {@code file} atomically. */
    public static void write(Path file, byte[] bytes) throws IOException {
        Objects.requireNonNull(bytes, "bytes");
        write(file, ch -> {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(bytes);
            while (b.hasRemaining()) ch.write(b);
        });
    }

    /** Whether {@code fileName} is a temporary file that {@link #write} leaves when killed while writing {@code of}. */
    public static boolean isTemporaryOf(String fileName, String of) {
        String prefix = "." + of;
        return fileName.startsWith(prefix) && SUFFIX.matcher(fileName.substring(prefix.length())).matches();
    }

    /** Makes a rename durable where the platform allows opening a directory (Linux, macOS). */
    private static void syncDirectory(Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (IOException e) {
            // Windows cannot open a directory; its rename is already as durable as it gets.
        }
    }
}
