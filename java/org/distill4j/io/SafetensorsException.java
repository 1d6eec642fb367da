package org.distill4j.io;

import java.io.IOException;
import java.nio.file.Path;

/** A safetensors file that cannot be read as such: the file and what is wrong with it. */
public final class SafetensorsException extends IOException {
    private static final long serialVersionUID = 1L;

    /** {@code file: problem}. */
    public SafetensorsException(Path file, String problem) {
        super(file + ": " + problem);
    }
}
