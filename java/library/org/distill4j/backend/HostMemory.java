package org.distill4j.backend;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * How much host memory this process can still take: the kernel's {@code MemAvailable} (free memory plus the page
 * cache it can drop, swap not counted), and, inside a container, what its cgroup limit leaves. Linux only; elsewhere
 * unknown ({@link Long#MAX_VALUE}).
 *
 * <p>Why not just let {@code malloc} fail: with Linux's overcommit, a huge allocation succeeds and the process is
 * killed later, when the pages are touched (zeroing a gradient), with no message.
 */
final class HostMemory {
    private static final Path MEMINFO = Path.of("/proc/meminfo");

    private HostMemory() {}

    /** Bytes of host memory available now, or {@link Long#MAX_VALUE} when this system does not say. */
    static long available() {
        long bytes = memAvailable();
        // cgroup v2 (memory.max is "max" when unlimited), then v1 (a huge number when unlimited).
        bytes = Math.min(bytes, cgroupLeft(Path.of("/sys/fs/cgroup"), "memory.max", "memory.current",
                "inactive_file"));
        bytes = Math.min(bytes, cgroupLeft(Path.of("/sys/fs/cgroup/memory"), "memory.limit_in_bytes",
                "memory.usage_in_bytes", "total_inactive_file"));
        return bytes;
    }

    private static long memAvailable() {
        try {
            for (String line : Files.readAllLines(MEMINFO)) {
                if (line.startsWith("MemAvailable:")) { // "MemAvailable:   23172404 kB"
                    return Math.multiplyExact(Long.parseLong(line.trim().split("\\s+")[1]), 1024L);
                }
            }
        } catch (IOException | RuntimeException e) {
            // Not Linux, or a kernel before 3.14: unknown.
        }
        return Long.MAX_VALUE;
    }

    /**
     * The cgroup's limit less its usage, where usage leaves out the inactive page cache the kernel reclaims before
     * it kills anything (as {@code docker stats} counts it).
     */
    private static long cgroupLeft(Path dir, String limitName, String usageName, String inactiveKey) {
        try {
            Path limitFile = dir.resolve(limitName), usageFile = dir.resolve(usageName);
            if (!Files.isReadable(limitFile) || !Files.isReadable(usageFile)) return Long.MAX_VALUE;
            String limit = Files.readString(limitFile).trim();
            if (limit.equals("max")) return Long.MAX_VALUE;
            long usage = Long.parseLong(Files.readString(usageFile).trim());
            Path stat = dir.resolve("memory.stat");
            if (Files.isReadable(stat)) {
                for (String line : Files.readAllLines(stat)) {
                    if (line.startsWith(inactiveKey + " ")) {
                        usage -= Long.parseLong(line.substring(inactiveKey.length() + 1).trim());
                    }
                }
            }
            return Math.max(0, Long.parseLong(limit) - Math.max(0, usage));
        } catch (IOException | RuntimeException e) {
            return Long.MAX_VALUE;
        }
    }
}
