package org.distill4j;

import java.util.Locale;

/**
 * Memory that was refused before it was allocated, or that the device could not give: the message names what
 * needed it, how many bytes, and the limit it ran into (the device's free memory, the Java heap, or a limit the
 * caller set). Thrown instead of letting the JVM run out of heap or the kernel kill the process when a model or a
 * file is too large for this machine; nothing has been allocated for the request when it is thrown.
 */
public final class MemoryLimitException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final long bytesNeeded;
    private final long limit;

    /**
     * @param message     the whole sentence, naming what needed the memory, the bytes and the limit
     * @param bytesNeeded the bytes asked for ({@link Long#MAX_VALUE} when the count does not fit 64 bits)
     * @param limit       the bytes that were available, or the caller's limit
     */
    public MemoryLimitException(String message, long bytesNeeded, long limit) {
        super(message);
        this.bytesNeeded = bytesNeeded;
        this.limit = limit;
    }

    /** The bytes asked for; {@link Long#MAX_VALUE} when they do not fit a 64-bit count. */
    public long bytesNeeded() {
        return bytesNeeded;
    }

    /** The limit that was exceeded, in bytes. */
    public long limit() {
        return limit;
    }

    /**
     * The Java heap free now for an allocation of {@code wanted} bytes: the maximum heap less what is in use, and
     * when that is less than wanted, measured again after a collection (garbage counts as in use until then), as the
     * JDK does before it refuses a direct buffer.
     */
    public static long freeHeap(long wanted) {
        Runtime rt = Runtime.getRuntime();
        long free = rt.maxMemory() - (rt.totalMemory() - rt.freeMemory());
        if (free >= wanted || wanted > rt.maxMemory()) return free;
        System.gc();
        return rt.maxMemory() - (rt.totalMemory() - rt.freeMemory());
    }

    /** "1.50 GiB (1610612736 bytes)"; "more than 2^63 bytes" for {@link Long#MAX_VALUE} (a saturated count). */
    public static String formatBytes(long bytes) {
        if (bytes == Long.MAX_VALUE) return "more than 2^63 bytes";
        if (bytes < 1024) return bytes + " bytes";
        String[] units = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
        double v = bytes;
        int u = -1;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return String.format(Locale.ROOT, "%.2f %s (%d bytes)", v, units[u], bytes);
    }
}
