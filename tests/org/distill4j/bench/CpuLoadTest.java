package org.distill4j.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The competing process of {@code bench --under-load}: it burns CPU while open, and it is gone after close, after
 * the JVM exits without closing it, and after the JVM is killed outright.
 */
class CpuLoadTest {
    /** CPU time the child must have used to count as burning: a few scheduler slices, even on a busy machine. */
    private static final Duration BURNED = Duration.ofMillis(250);

    /** Waits (up to 60 s: a busy machine gives the child little CPU) until the process has used {@link #BURNED}. */
    static Duration awaitCpu(ProcessHandle process) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        Duration used = Duration.ZERO;
        while (System.nanoTime() < deadline && process.isAlive()) {
            used = process.info().totalCpuDuration().orElse(Duration.ZERO);
            if (used.compareTo(BURNED) >= 0) break;
            Thread.sleep(20);
        }
        return used;
    }

    static void assertGone(ProcessHandle process, String how) throws Exception {
        Optional<ProcessHandle> exited = Optional.of(process.onExit().get(30, TimeUnit.SECONDS));
        assertFalse(exited.get().isAlive(), how + ": process " + process.pid() + " still runs");
    }

    @Test
    void burnsCpuWhileOpenAndExitsOnClose() throws Exception {
        ProcessHandle child;
        try (CpuLoad load = CpuLoad.start(1)) {
            child = ProcessHandle.of(load.pid()).orElseThrow();
            assertTrue(child.isAlive());
            assertEquals(1, load.threads());
            Duration used = awaitCpu(child);
            assertTrue(used.compareTo(BURNED) >= 0, "the load used only " + used.toMillis() + " ms of CPU");
            // A spinning thread never sleeps: the child's CPU time keeps growing. Polled until it does (up to 30 s),
            // not read once after 200 ms: Linux counts it in 10 ms ticks, and a busy machine may give none in 200 ms.
            Duration later;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            do {
                Thread.sleep(20);
                later = child.info().totalCpuDuration().orElse(Duration.ZERO);
            } while (later.compareTo(used) <= 0 && System.nanoTime() < deadline);
            assertTrue(later.compareTo(used) > 0, "CPU time stopped at " + used.toMillis() + " ms for 30 s");
        }
        assertGone(child, "after close()");
    }

    @Test
    void refusesZeroThreads() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CpuLoad.start(0));
        assertTrue(e.getMessage().contains("at least 1 thread"), e.getMessage());
    }

    /** A JVM that starts a load and ends without closing it ({@code exit} runs shutdown hooks, {@code halt} not). */
    public static final class Parent {
        public static void main(String[] args) throws IOException {
            CpuLoad load = CpuLoad.start(1);
            System.out.println(load.pid());
            System.out.flush();
            if (args[0].equals("halt")) Runtime.getRuntime().halt(0); // as kill -9: no hooks, no close
            System.exit(0);                                          // as Ctrl-C or an uncaught exception
        }
    }

    private static void parentEndsWithoutClose(String how) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process parent = new ProcessBuilder(List.of(java, "-cp", System.getProperty("java.class.path"),
                Parent.class.getName(), how)).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        String line = new BufferedReader(new InputStreamReader(parent.getInputStream(), StandardCharsets.UTF_8))
                .readLine();
        assertTrue(parent.waitFor(60, TimeUnit.SECONDS), "the parent JVM did not end");
        assertTrue(line != null && line.matches("\\d+"), "the parent printed " + line);
        Optional<ProcessHandle> load = ProcessHandle.of(Long.parseLong(line));
        if (load.isPresent()) assertGone(load.get(), "after the parent's " + how);
    }

    @Test
    void noOrphanWhenTheJvmExitsWithoutClosing() throws Exception {
        parentEndsWithoutClose("exit");
    }

    @Test
    void noOrphanWhenTheJvmIsKilled() throws Exception {
        parentEndsWithoutClose("halt");
    }
}
