package org.distill4j.bench;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A competing CPU-bound process for {@code bench --under-load}: a child JVM whose threads spin until it is closed,
 * so ours and the reference are timed on a machine where cores are taken, as on a shared CI runner or laptop. The
 * same load runs through every alternating pair of timings, so both sides see it alike.
 *
 * <p>The child never outlives this process: {@link #close} kills it, a shutdown hook does on Ctrl-C and on an
 * uncaught exception, and the child exits by itself when its standard input closes, which also happens when this
 * JVM is killed outright.
 */
public final class CpuLoad implements AutoCloseable {
    private static final String READY = "burning";

    private final Process process;
    private final int threads;
    private final Thread killOnExit;

    private CpuLoad(Process process, int threads) {
        this.process = process;
        this.threads = threads;
        this.killOnExit = new Thread(process::destroyForcibly, "distill4j-cpu-load-kill");
        Runtime.getRuntime().addShutdownHook(killOnExit);
    }

    /**
     * Starts a child process with {@code threads} spinning threads and returns once they spin.
     *
     * @param threads busy threads, &ge; 1 (one takes about one core)
     * @throws IOException if the child cannot start or dies before it spins
     */
    public static CpuLoad start(int threads) throws IOException {
        if (threads < 1) throw new IllegalArgumentException("the load needs at least 1 thread, not " + threads);
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        // Small heap, serial GC, no JIT compiler threads beyond C1: the child's own housekeeping stays negligible.
        ProcessBuilder pb = new ProcessBuilder(List.of(java, "-Xmx16m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-cp", System.getProperty("java.class.path"), CpuLoad.class.getName(), Integer.toString(threads)));
        pb.redirectError(ProcessBuilder.Redirect.INHERIT);
        Process p = pb.start();
        CpuLoad load = new CpuLoad(p, threads);
        try {
            BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
            String line = out.readLine();
            if (!READY.equals(line)) {
                throw new IOException("the CPU load process did not start (it printed " + line + ")");
            }
        } catch (IOException | RuntimeException e) {
            load.close();
            throw e;
        }
        return load;
    }

    /** The child's process id. */
    public long pid() {
        return process.pid();
    }

    /** How many threads spin in the child. */
    public int threads() {
        return threads;
    }

    /** Whether the child is still running. */
    public boolean isAlive() {
        return process.isAlive();
    }

    /** Kills the child and waits for it to exit; closing twice is harmless. */
    @Override
    public void close() {
        process.destroyForcibly();
        try {
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                throw new IllegalStateException("the CPU load process " + process.pid() + " did not exit");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        try {
            Runtime.getRuntime().removeShutdownHook(killOnExit);
        } catch (IllegalStateException shuttingDown) {
            // Called from another shutdown hook: the JVM is exiting, and the child has been killed above.
        }
    }

    /** The child: {@code args[0]} threads spin until standard input reaches its end. */
    public static void main(String[] args) throws IOException {
        int n = Integer.parseInt(args[0]);
        for (int i = 0; i < n; i++) {
            Thread t = new Thread(CpuLoad::spin, "spin-" + i);
            t.setDaemon(true);
            t.start();
        }
        System.out.println(READY);
        System.out.flush();
        // The parent never writes: end of input means it closed us or died.
        while (System.in.read() >= 0) {
            // discard
        }
        System.exit(0);
    }

    private static volatile long sink;

    private static void spin() {
        long x = Thread.currentThread().getId();
        while (true) {
            // A dependent integer chain the JIT cannot drop; published now and then so it stays live.
            for (int i = 0; i < 1_000_000; i++) x = x * 6364136223846793005L + 1442695040888963407L;
            sink = x;
        }
    }
}
