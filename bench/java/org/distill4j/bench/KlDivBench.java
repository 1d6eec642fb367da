package org.distill4j.bench;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.bytedeco.javacpp.Pointer;
import org.distill4j.Device;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.ops.KlDiv;
import org.distill4j.ops.Reduction;
import org.distill4j.reference.Errors;
import org.distill4j.reference.TorchKlDiv;

/**
 * {@code bench kl}: the fused KL forward + gradient against libtorch's log_softmax + kl_div + backward chain on
 * the CPU, and against a device-to-device copy of the same bytes on a GPU (speedup = fraction of the card's
 * copy bandwidth our kernel reaches: it reads student and teacher and writes the gradient, 12 bytes an element).
 */
public final class KlDivBench {
    private KlDivBench() {}

    /** Times every shape of this backend's list and returns one row per shape. */
    public static List<BenchRow> run(Backend backend, int warmup, int runs, PrintStream log) {
        boolean cuda = backend.device().kind() == Device.Kind.CUDA;
        int[][] shapes = cuda ? new int[][] {{256, 1000}, {1024, 32000}, {8192, 32000}}
                : new int[][] {{256, 1000}, {1024, 32000}};
        float temperature = 4f;
        List<BenchRow> rows = new ArrayList<>();
        TorchKlDiv.setThreads(Timing.referenceThreads(backend));
        for (int[] shape : shapes) {
            int b = shape[0], c = shape[1];
            Random rng = new Random(b * 31L + c);
            float[] s = new float[b * c], t = new float[b * c];
            for (int i = 0; i < s.length; i++) {
                s[i] = (float) (rng.nextGaussian() * 3);
                t[i] = (float) (rng.nextGaussian() * 3);
            }
            KlDiv kl = KlDiv.builder().temperature(temperature).reduction(Reduction.BATCHMEAN).build();
            try (Tensor st = Tensor.of(backend, s, b, c); Tensor tt = Tensor.of(backend, t, b, c);
                 Tensor loss = Tensor.empty(backend); Tensor grad = Tensor.empty(backend, b, c);
                 Tensor work = Tensor.empty(backend, b)) {
                Runnable ours = () -> {
                    kl.compute(st, tt, null, loss, grad, work);
                    backend.synchronize();
                };
                String shapeText = "B=" + b + ",C=" + c + ",T=" + (int) temperature;
                Timing.Pair p;
                String reference;
                double err;
                try (TorchKlDiv torch = new TorchKlDiv(s, t, b, c, false)) {
                    TorchKlDiv.Result ref = torch.run(temperature, Reduction.BATCHMEAN, false, true, null);
                    ours.run();
                    err = Math.max(Errors.relative(loss.toArray(), ref.loss()), Errors.relative(grad.toArray(), ref.grad()));
                    if (cuda) {
                        long bytes = 3L * b * c * Float.BYTES / 2;  // a copy of this many bytes moves 12 B/element
                        Pointer src = backend.allocate(bytes), dst = backend.allocate(bytes);
                        try {
                            p = Timing.alternate(ours, () -> {
                                backend.copy(src, dst, bytes);
                                backend.synchronize();
                            }, warmup, runs);
                        } finally {
                            backend.free(src);
                            backend.free(dst);
                        }
                        reference = "cuda_memcpy_same_bytes";
                    } else {
                        p = Timing.alternate(ours, () -> torch.runNoCopy(temperature, Reduction.BATCHMEAN, false, true),
                                warmup, runs);
                        reference = "libtorch_logsoftmax_kldiv_backward";
                    }
                }
                BenchRow row = new BenchRow("kl", backend.device().kind().label(), shapeText, p.oursMs(), reference,
                        p.referenceMs(), err);
                log.println(row.toLine());
                rows.add(row);
            }
        }
        return rows;
    }
}
