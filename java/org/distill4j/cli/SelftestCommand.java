package org.distill4j.cli;

import java.util.Locale;
import java.util.Random;
import java.util.concurrent.Callable;
import org.distill4j.Device;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.ops.KlDiv;
import org.distill4j.ops.Reduction;
import org.distill4j.reference.Errors;
import org.distill4j.reference.KlDivFloat64;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code ./distill4j selftest}: fresh random cases on a backend, each against the float64 oracle and, for
 * cuda and cuda-emu, against the CPU backend; the max relative error per case; exit 1 on any failure.
 */
@Command(name = "selftest", mixinStandardHelpOptions = true,
        description = "Run fresh random cases of an op on a backend against float64 and the CPU backend.")
final class SelftestCommand implements Callable<Integer> {
    private static final double TOL = 1e-5;

    @Option(names = "--backend", defaultValue = "cpu", description = "cpu, cuda-emu or cuda (default ${DEFAULT-VALUE})")
    String backend;

    @Option(names = "--op", defaultValue = "kl", description = "kl (default ${DEFAULT-VALUE})")
    String op;

    @Option(names = "--seed", description = "seed of the random cases (default: fresh)")
    Long seed;

    @Override
    public Integer call() {
        Device device = Device.parse(backend);
        if (!op.equals("kl")) throw new IllegalArgumentException("unknown op '" + op + "': expected kl");
        long s = seed != null ? seed : System.nanoTime();
        System.out.println("selftest op=" + op + " backend=" + device + " seed=" + s);
        try (Backend be = Backends.open(device);
             Backend cpu = device.kind() == Device.Kind.CPU ? null : Backends.open(Device.cpu())) {
            int failures = klCases(be, cpu, new Random(s), device.kind() == Device.Kind.CUDA_EMU);
            System.out.println(failures == 0 ? "selftest passed" : "selftest FAILED: " + failures + " case(s)");
            return failures == 0 ? 0 : 1;
        }
    }

    /** Runs the KL cases and returns how many failed. {@code small}: keep the emulator's work short. */
    private static int klCases(Backend be, Backend cpu, Random rng, boolean small) {
        int[][] shapes = small ? new int[][] {{1, 1}, {5, 10}, {9, 37}, {3, 1000}, {2, 4099}}
                : new int[][] {{1, 1}, {7, 10}, {64, 1000}, {16, 32001}, {4, 4099}};
        int failures = 0;
        for (int[] shape : shapes) {
            int b = shape[0], c = shape[1];
            float[] s = normal(rng, b * c), t = normal(rng, b * c);
            for (float temperature : new float[] {1f, 4f}) {
                for (Reduction r : Reduction.values()) {
                    KlDiv kl = KlDiv.builder().temperature(temperature).reduction(r).build();
                    float[][] ours = run(be, kl, s, t, b, c);
                    KlDivFloat64.Result ref = KlDivFloat64.compute(s, t, b, c, temperature, r, false, true, null);
                    double err = Math.max(Errors.relative(ours[0], ref.loss()), Errors.relative(ours[1], ref.grad()));
                    String vsCpu = "";
                    if (cpu != null) {
                        float[][] base = run(cpu, kl, s, t, b, c);
                        double e = Math.max(Errors.relative(ours[0], base[0]), Errors.relative(ours[1], base[1]));
                        err = Math.max(err, e);
                        vsCpu = String.format(Locale.ROOT, "  vs_cpu=%.2e", e);
                    }
                    boolean ok = err <= TOL;
                    failures += ok ? 0 : 1;
                    System.out.printf(Locale.ROOT, "  %-4s kl B=%d C=%d T=%s %-9s max_rel_err=%.2e%s%n", ok ? "ok" : "FAIL",
                            b, c, temperature, r.torchName(), err, vsCpu);
                }
            }
        }
        return failures;
    }

    private static float[][] run(Backend be, KlDiv kl, float[] s, float[] t, int b, int c) {
        boolean none = kl.reduction() == Reduction.NONE;
        try (Tensor st = Tensor.of(be, s, b, c); Tensor tt = Tensor.of(be, t, b, c);
             Tensor loss = none ? Tensor.empty(be, b) : Tensor.empty(be); Tensor grad = Tensor.empty(be, b, c);
             Tensor rows = Tensor.empty(be, b)) {
            kl.compute(st, tt, null, loss, grad, rows);
            return new float[][] {loss.toArray(), grad.toArray()};
        }
    }

    private static float[] normal(Random rng, int n) {
        float[] out = new float[n];
        for (int i = 0; i < n; i++) out[i] = (float) (rng.nextGaussian() * 3);
        return out;
    }
}
