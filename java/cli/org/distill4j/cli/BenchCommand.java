package org.distill4j.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.backend.CpuBackend;
import org.distill4j.bench.AttentionBench;
import org.distill4j.bench.BenchRow;
import org.distill4j.bench.CpuLoad;
import org.distill4j.bench.KlDivBench;
import org.distill4j.bench.LinearBench;
import org.distill4j.bench.PatchEmbedBench;
import org.distill4j.bench.Timing;
import org.distill4j.bench.TrainStepBench;
import org.distill4j.io.AtomicFile;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code ./distill4j bench <op|all>}: ours against the reference in the same run, as ratios. */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = "Time an op against its reference in the same process; print speedups (reference/ours).")
final class BenchCommand implements Callable<Integer> {
    /** One benchmark: times its shapes on a backend and returns the rows. */
    private interface Bench {
        List<BenchRow> run(Backend backend, int warmup, int runs, PrintStream log);
    }

    /** The benchmarks by op name, in the order {@code all} runs them. */
    private static final Map<String, Bench> BENCHES = benches();

    private static Map<String, Bench> benches() {
        Map<String, Bench> m = new LinkedHashMap<>();
        m.put("kl", KlDivBench::run);
        m.put("patch-embed", PatchEmbedBench::run);
        m.put("attention", AttentionBench::run);
        m.put("linear", LinearBench::run);
        m.put("train-step", TrainStepBench::run);
        return Collections.unmodifiableMap(m);
    }

    @Parameters(index = "0", description = "the op: kl, patch-embed, attention, linear, train-step, or all")
    String op;

    @Option(names = "--backend", defaultValue = "cpu", description = "cpu or cuda (default ${DEFAULT-VALUE})")
    String backend;

    @Option(names = "--json", description = "also write the rows to this file (JSON array)")
    Path json;

    @Option(names = "--runs", defaultValue = "15", description = "timed runs of each side (default ${DEFAULT-VALUE})")
    int runs;

    @Option(names = "--warmup", defaultValue = "3", description = "untimed runs first (default ${DEFAULT-VALUE})")
    int warmup;

    @Option(names = "--under-load", arity = "0..1", defaultValue = "0", fallbackValue = "1", paramLabel = "N",
            description = "time beside a competing process that keeps N threads busy (default N: 1), started "
                    + "before the first timing and killed after the last; the rows record N")
    int underLoad;

    @Override
    public Integer call() throws IOException {
        List<Bench> benches = op.equals("all") ? new ArrayList<>(BENCHES.values())
                : BENCHES.containsKey(op) ? List.of(BENCHES.get(op)) : null;
        if (benches == null) {
            throw new IllegalArgumentException("unknown op '" + op + "': expected " + String.join(", ", BENCHES.keySet())
                    + " or all");
        }
        if (runs < 1 || warmup < 0) throw new IllegalArgumentException("--runs must be >= 1 and --warmup >= 0");
        if (underLoad < 0) {
            throw new IllegalArgumentException("--under-load must be >= 0 busy threads, not " + underLoad);
        }
        Device device = Device.parse(backend);
        if (device.kind() == Device.Kind.CUDA_EMU) {
            throw new IllegalArgumentException("the emulated CUDA backend is for correctness, not timing: use cpu or cuda");
        }
        String noTorch = Libtorch.unavailableReason();
        if (noTorch != null) throw new IllegalStateException("bench needs libtorch: " + noTorch);
        List<BenchRow> rows = new ArrayList<>();
        try (Backend be = Backends.open(device); CpuLoad load = underLoad > 0 ? CpuLoad.start(underLoad) : null) {
            if (load != null) {
                System.out.println("under load: process " + load.pid() + " keeps " + underLoad + " thread"
                        + (underLoad == 1 ? "" : "s") + " busy until the last timing");
            }
            if (be instanceof CpuBackend cpu) {
                System.out.println("threads: ours up to " + cpu.threads() + " (fewer while other processes keep the "
                        + "CPUs busy, unless OMP_NUM_THREADS is set), libtorch " + Timing.referenceThreads(be));
            }
            System.out.println(BenchRow.header());
            for (Bench bench : benches) {
                for (BenchRow row : bench.run(be, warmup, runs, System.out)) rows.add(row.withUnderLoad(underLoad));
            }
        }
        if (json != null) {
            AtomicFile.write(json, BenchRow.toJson(rows).getBytes(StandardCharsets.UTF_8)); // never half-written
            System.out.println("wrote " + json);
        }
        return 0;
    }
}
