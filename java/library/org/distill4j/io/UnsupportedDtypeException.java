package org.distill4j.io;

import java.io.IOException;
import java.nio.file.Path;

/**
 * A valid safetensors file holding a tensor whose dtype cannot be read as float (integers, booleans, 8-bit
 * floats). {@link Safetensors#readHeader} still describes such files.
 */
public final class UnsupportedDtypeException extends IOException {
    private static final long serialVersionUID = 1L;

    private final transient Path file;
    private final String tensor;
    private final SafetensorsDtype dtype;

    public UnsupportedDtypeException(Path file, String tensor, SafetensorsDtype dtype) {
        super(file + ": tensor " + Safetensors.quote(tensor) + " has dtype " + dtype
                + ", which is not read as float (supported: F32, F16, BF16, F64)");
        this.file = file;
        this.tensor = tensor;
        this.dtype = dtype;
    }

    public Path file() {
        return file;
    }

    public String tensor() {
        return tensor;
    }

    public SafetensorsDtype dtype() {
        return dtype;
    }
}
