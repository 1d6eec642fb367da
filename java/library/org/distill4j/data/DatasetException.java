package org.distill4j.data;

import java.io.IOException;
import java.nio.file.Path;

/**
 * A data file or directory cannot be used: missing, wrong format, truncated, or inconsistent with its partner
 * file. The message always names the file and the problem, so a user can act on it without a debugger.
 */
public class DatasetException extends IOException {
    private static final long serialVersionUID = 1L;

    /** A problem with {@code file}; the message reads "{file}: {problem}". */
    public DatasetException(Path file, String problem) {
        super(file + ": " + problem);
    }

    /** A problem with {@code file} caused by a lower-level I/O error. */
    public DatasetException(Path file, String problem, Throwable cause) {
        super(file + ": " + problem, cause);
    }

    /** A problem that involves more than one file (the message names them). */
    public DatasetException(String message) {
        super(message);
    }
}
