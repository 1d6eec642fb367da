package org.distill4j.reference;

/**
 * The linear op from its definition, in float64: y = x Wᵀ + b + residual, dx = dy W, dW = dyᵀ x, db = Σ_rows dy
 * (gradients from zero). Row-major x [M, K], weight [N, K], bias [N] or null, residual [M, N] or null, dy [M, N].
 */
public final class LinearFloat64 {
    private LinearFloat64() {}

    /** y [M, N], dx [M, K], dWeight [N, K], dBias [N] (null without bias). */
    public record Result(double[] y, double[] dx, double[] dWeight, double[] dBias) {}

    public static Result compute(float[] x, float[] weight, float[] bias, float[] residual, float[] dy, int m, int k,
                                 int n) {
        double[] y = new double[m * n], dx = new double[m * k], dw = new double[n * k];
        double[] db = bias == null ? null : new double[n];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double s = (bias != null ? bias[j] : 0) + (residual != null ? residual[i * n + j] : 0);
                for (int l = 0; l < k; l++) s += (double) x[i * k + l] * weight[j * k + l];
                y[i * n + j] = s;
                double g = dy[i * n + j];
                for (int l = 0; l < k; l++) {
                    dx[i * k + l] += g * weight[j * k + l];
                    dw[j * k + l] += g * x[i * k + l];
                }
                if (db != null) db[j] += g;
            }
        }
        return new Result(y, dx, dw, db);
    }
}
