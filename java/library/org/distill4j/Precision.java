package org.distill4j;

import java.util.Locale;

/**
 * The arithmetic of a model's forward and backward passes. Parameters, their gradients, the optimizer's moments,
 * LayerNorm statistics, softmax and the losses are float32 in every mode; the modes differ in what the GEMMs and the
 * attention multiply.
 *
 * <ul>
 *   <li>{@link #FP32}: everything float32 (the default until the GPU figures of the mixed modes are measured).</li>
 *   <li>{@link #TF32}: the linear layers' GEMMs take their float32 operands rounded to TensorFloat-32 (10 explicit
 *       mantissa bits) and sum in float32, as cuBLAS does on tensor cores with {@code CUBLAS_COMPUTE_32F_FAST_TF32}
 *       (PyTorch's {@code allow_tf32}); the rest is FP32.</li>
 *   <li>{@link #BF16}: mixed precision as PyTorch's bf16 autocast: the GEMMs and the attention take bfloat16
 *       operands (activations, weights, activation gradients) and sum in float32; the float32 master weights are
 *       rounded to bf16 once per forward.</li>
 * </ul>
 * The CPU backend computes the same roundings (slowly: it has no bf16 arithmetic), so a CPU run and a GPU run of the
 * same mode differ only by the order of float32 sums. On CUDA, TF32 and BF16 need tensor cores that have them:
 * compute capability 8.0 (Ampere) or newer.
 */
public enum Precision {
    FP32, TF32, BF16;

    /** The command-line name: fp32, tf32, bf16. */
    public String cliName() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** Parses {@code fp32}, {@code tf32} or {@code bf16} (any case). */
    public static Precision parse(String text) {
        if (text != null) {
            for (Precision p : values()) {
                if (p.cliName().equals(text.trim().toLowerCase(Locale.ROOT))) return p;
            }
        }
        throw new IllegalArgumentException("unknown precision '" + text + "': expected fp32, tf32 or bf16");
    }
}
