package org.distill4j.nn;

import java.nio.file.Path;

/**
 * A valid model or checkpoint file recorded for another configuration than the model it is loaded into (a student's
 * file loaded into a teacher): the file is fine, the pairing is not.
 */
public final class ConfigMismatchException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;
    private final transient Path file;
    private final VitConfig saved, wanted;

    /** {@code file} records {@code saved}; the model it was loaded into is {@code wanted}. */
    public ConfigMismatchException(Path file, VitConfig saved, VitConfig wanted) {
        super(file + " holds a model of " + saved + ", but the model it is loaded into is " + wanted
                + ": allocate the model with the file's config (ModelFile.config(file)) or load the file made for it");
        this.file = file;
        this.saved = saved;
        this.wanted = wanted;
    }

    /** The file. */
    public Path file() {
        return file;
    }

    /** The configuration the file records. */
    public VitConfig saved() {
        return saved;
    }

    /** The configuration of the model it was loaded into. */
    public VitConfig wanted() {
        return wanted;
    }
}
