package org.distill4j.reference;

/**
 * Multi-head attention and its qkv gradient in float64, straight from the definition: the oracle of
 * {@code selftest}. Materialises each head's N×N probabilities; meant for small shapes.
 *
 * <pre>
 *   q, k, v [n, d] of head h = qkv[b, n, 0|1|2, h, d]
 *   P       = softmax_row(scale · q kᵀ)                 out[b, n, h·Dh + d] = (P v)[n, d]
 *   dP      = dOut_h vᵀ;  dS = P ∘ (dP − rowsum(P ∘ dP))
 *   dq      = scale · dS k;   dk = scale · dSᵀ q;   dv = Pᵀ dOut_h
 * </pre>
 */
public final class AttentionFloat64 {
    private AttentionFloat64() {}

    /** The output [B, N, H·Dh], the row log-sum-exp [B, H, N] and d qkv [B, N, 3·H·Dh]. */
    public record Result(double[] out, double[] lse, double[] dQkv) {}

    /** Computes output, log-sum-exp and d qkv (dOut may be null: then dQkv is null). */
    public static Result compute(float[] qkv, float[] dOut, int batch, int tokens, int heads, int headDim, double scale) {
        int n = tokens, dh = headDim, ld = 3 * heads * dh, ldo = heads * dh;
        double[] out = new double[batch * n * ldo], lse = new double[batch * heads * n];
        double[] dQkv = dOut == null ? null : new double[batch * n * ld];
        double[][] p = new double[n][n];
        for (int b = 0; b < batch; b++) {
            for (int h = 0; h < heads; h++) {
                int qo = b * n * ld + h * dh, ko = qo + heads * dh, vo = qo + 2 * heads * dh, oo = b * n * ldo + h * dh;
                for (int i = 0; i < n; i++) {
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j < n; j++) {
                        double s = 0;
                        for (int d = 0; d < dh; d++) s += (double) qkv[qo + i * ld + d] * qkv[ko + j * ld + d];
                        p[i][j] = s * scale;
                        max = Math.max(max, p[i][j]);
                    }
                    double sum = 0;
                    for (int j = 0; j < n; j++) sum += Math.exp(p[i][j] - max);
                    for (int j = 0; j < n; j++) p[i][j] = Math.exp(p[i][j] - max) / sum;
                    lse[(b * heads + h) * n + i] = max + Math.log(sum);
                    for (int d = 0; d < dh; d++) {
                        double acc = 0;
                        for (int j = 0; j < n; j++) acc += p[i][j] * qkv[vo + j * ld + d];
                        out[oo + i * ldo + d] = acc;
                    }
                }
                if (dOut == null) continue;
                for (int i = 0; i < n; i++) {
                    double[] dp = new double[n];
                    double rowsum = 0;
                    for (int j = 0; j < n; j++) {
                        double s = 0;
                        for (int d = 0; d < dh; d++) s += (double) dOut[oo + i * ldo + d] * qkv[vo + j * ld + d];
                        dp[j] = s;
                        rowsum += p[i][j] * s;
                    }
                    for (int j = 0; j < n; j++) {
                        double ds = p[i][j] * (dp[j] - rowsum);
                        for (int d = 0; d < dh; d++) {
                            dQkv[qo + i * ld + d] += scale * ds * qkv[ko + j * ld + d];
                            dQkv[ko + j * ld + d] += scale * ds * qkv[qo + i * ld + d];
                            dQkv[vo + j * ld + d] += p[i][j] * dOut[oo + i * ldo + d];
                        }
                    }
                }
            }
        }
        return new Result(out, lse, dQkv);
    }
}
