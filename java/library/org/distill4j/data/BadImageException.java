package org.distill4j.data;

import java.nio.file.Path;

/**
 * One image file cannot be decoded (corrupt, truncated, an unsupported colour space): the rest of the dataset may be
 * fine, so a loader can skip it ({@link StreamLoader.Builder#skipBadImages}) instead of stopping.
 */
public final class BadImageException extends DatasetException {
    private static final long serialVersionUID = 1L;

    public BadImageException(Path file, String problem) {
        super(file, problem);
    }

    public BadImageException(Path file, String problem, Throwable cause) {
        super(file, problem, cause);
    }
}
