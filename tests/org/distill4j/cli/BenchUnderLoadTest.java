package org.distill4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code bench --under-load}: a competing process burns CPU while the bench times, is gone when it returns, and the
 * JSON rows say under how many busy threads they were timed.
 */
class BenchUnderLoadTest {
    @TempDir
    Path dir;

    @Test
    void startsABurningProcessForTheRunAndStopsIt() throws Exception {
        Path json = dir.resolve("rows.json");
        // Watches this JVM's children while the bench runs: the load's pid and the most CPU it was seen to use.
        Map<Long, Duration> loads = new ConcurrentHashMap<>();
        Thread watcher = new Thread(() -> {
            while (!Thread.currentThread().isInterrupted()) {
                ProcessHandle.current().children()
                        .filter(p -> p.info().commandLine().orElse("").contains("org.distill4j.bench.CpuLoad"))
                        .forEach(p -> loads.merge(p.pid(), p.info().totalCpuDuration().orElse(Duration.ZERO),
                                (a, b) -> a.compareTo(b) >= 0 ? a : b));
                try {
                    Thread.sleep(10);
                } catch (InterruptedException e) {
                    return;
                }
            }
        });
        watcher.setDaemon(true);
        watcher.start();
        CliTest.Run r;
        try {
            r = CliTest.run("bench", "patch-embed", "--runs", "3", "--warmup", "1", "--under-load", "2", "--json",
                    json.toString());
        } finally {
            watcher.interrupt();
            watcher.join();
        }
        assertEquals(0, r.status(), "stderr: " + r.err());
        assertEquals(1, loads.size(), "one load process during the run, seen: " + loads.keySet());
        long pid = loads.keySet().iterator().next();
        assertTrue(loads.get(pid).toMillis() > 0, "the load process used no CPU");
        assertFalse(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false),
                "the load process " + pid + " still runs after the bench returned");

        String rows = Files.readString(json, StandardCharsets.UTF_8);
        Matcher m = Pattern.compile("\"under_load\": (\\d+)").matcher(rows);
        int count = 0;
        while (m.find()) {
            assertEquals("2", m.group(1), rows);
            count++;
        }
        assertEquals(2, count, "one under_load per patch-embed row: " + rows);
    }

    @Test
    void quietRowsSayZero() throws Exception {
        Path json = dir.resolve("quiet.json");
        CliTest.Run r = CliTest.run("bench", "patch-embed", "--runs", "1", "--warmup", "0", "--json", json.toString());
        assertEquals(0, r.status(), "stderr: " + r.err());
        String rows = Files.readString(json, StandardCharsets.UTF_8);
        assertEquals(2, rows.split("\"under_load\": 0", -1).length - 1, rows);
        assertTrue(ProcessHandle.current().children().noneMatch(
                p -> p.info().commandLine().orElse("").contains("org.distill4j.bench.CpuLoad")), "no load process");
    }

    @Test
    void negativeLoadIsOneLine() {
        CliTest.Run r = CliTest.run("bench", "kl", "--under-load", "-1");
        assertTrue(r.status() != 0, "non-zero exit");
        assertTrue(r.err().contains("--under-load must be >= 0"), "stderr: " + r.err());
        assertFalse(r.err().contains("\tat "), "no stack trace: " + r.err());
        assertTrue(r.err().strip().lines().count() == 1, "one line: " + r.err());
    }
}
