package org.distill4j.cli;

import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.util.regex.Pattern;

/**
 * An exception as one sentence for the command line: about the user's files and values, never a Java class name.
 * Wrappers ({@link UncheckedIOException}) are looked through; the file system's exceptions, whose messages are a
 * bare path, get their reason in words.
 */
final class Messages {
    // "java.nio.file.NoSuchFileException: " or "org.distill4j.io.SafetensorsFormatException: ", as Throwable.toString
    // writes a wrapped cause into its wrapper's message.
    private static final Pattern CLASS_PREFIX = Pattern.compile("^(?:[a-z_][a-z0-9_]*\\.)+[A-Z]\\w*(?:Exception|Error): ");

    private Messages() {}

    static String of(Throwable e) {
        Throwable t = e;
        while (t instanceof UncheckedIOException && t.getCause() != null) t = t.getCause();
        if (t instanceof FileSystemException f) return fileSystem(f);
        if (t instanceof OutOfMemoryError) {
            return "out of memory (" + t.getMessage() + "): lower --batch, or give Java more with -Xmx";
        }
        String m = t.getMessage();
        if (m == null || m.isBlank()) {
            return "an internal error stopped the command; run it again with -Ddistill4j.stacktrace=true to see where, "
                    + "and report it";
        }
        String before;
        do {
            before = m;
            m = CLASS_PREFIX.matcher(m).replaceFirst("");
        } while (!m.equals(before));
        return m;
    }

    private static String fileSystem(FileSystemException f) {
        String reason = f instanceof NoSuchFileException ? "no such file or directory"
                : f instanceof AccessDeniedException ? "permission denied"
                : f instanceof FileAlreadyExistsException ? "already exists"
                : f instanceof NotDirectoryException ? "not a directory"
                : f instanceof DirectoryNotEmptyException ? "directory not empty"
                : f.getReason() != null ? f.getReason() : "cannot be used";
        String where = f.getFile() == null ? "" : f.getFile() + (f.getOtherFile() == null ? "" : " -> " + f.getOtherFile());
        return where.isEmpty() ? reason : where + ": " + reason;
    }
}
