package org.distill4j.io;

/**
 * The element types of the safetensors format that have a whole number of bytes, with their sizes. Only the
 * floating-point ones marked {@link #readsAsFloat()} can be loaded into {@code float[]}; the others are known so
 * that a header holding them can still be validated and described.
 */
public enum SafetensorsDtype {
    BOOL(1, false),
    U8(1, false),
    I8(1, false),
    F8_E5M2(1, false),
    F8_E4M3(1, false),
    F8_E8M0(1, false),
    I16(2, false),
    U16(2, false),
    F16(2, true),
    BF16(2, true),
    I32(4, false),
    U32(4, false),
    F32(4, true),
    I64(8, false),
    U64(8, false),
    F64(8, true),
    C64(8, false);

    private final int bytes;
    private final boolean readsAsFloat;

    SafetensorsDtype(int bytes, boolean readsAsFloat) {
        this.bytes = bytes;
        this.readsAsFloat = readsAsFloat;
    }

    /** Bytes per element. */
    public int bytes() {
        return bytes;
    }

    /** Whether {@link Safetensors#read} converts it to float: F32 as is, F16 and BF16 exactly, F64 rounded. */
    public boolean readsAsFloat() {
        return readsAsFloat;
    }

    /** The dtype spelled as in a header ("F32"), or null if it is not one of these. */
    static SafetensorsDtype parse(String name) {
        for (SafetensorsDtype d : values()) {
            if (d.name().equals(name)) return d;
        }
        return null;
    }
}
