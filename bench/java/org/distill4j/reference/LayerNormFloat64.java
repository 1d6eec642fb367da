package org.distill4j.reference;

/** LayerNorm forward and backward in float64 from the definitions (biased variance): the oracle of {@code selftest}. */
public final class LayerNormFloat64 {
    private LayerNormFloat64() {}

    /** y [M*C], mean [M], rstd [M], dx [M*C], dWeight [C], dBias [C] (gradients from zero). */
    public record Result(double[] y, double[] mean, double[] rstd, double[] dx, double[] dWeight, double[] dBias) {}

    public static Result compute(float[] x, float[] w, float[] b, float[] dy, int rows, int dim, double eps) {
        double[] y = new double[rows * dim], mean = new double[rows], rstd = new double[rows], dx = new double[rows * dim];
        double[] dw = new double[dim], db = new double[dim], xhat = new double[dim];
        for (int m = 0; m < rows; m++) {
            int o = m * dim;
            double s = 0, sq = 0;
            for (int c = 0; c < dim; c++) s += x[o + c];
            double mu = s / dim;
            for (int c = 0; c < dim; c++) sq += (x[o + c] - mu) * (x[o + c] - mu);
            double r = 1 / Math.sqrt(sq / dim + eps), sg = 0, sgx = 0;
            mean[m] = mu;
            rstd[m] = r;
            for (int c = 0; c < dim; c++) {
                xhat[c] = (x[o + c] - mu) * r;
                y[o + c] = xhat[c] * w[c] + b[c];
                double g = (double) dy[o + c] * w[c];
                sg += g;
                sgx += g * xhat[c];
                dw[c] += dy[o + c] * xhat[c];
                db[c] += dy[o + c];
            }
            for (int c = 0; c < dim; c++) dx[o + c] = r * ((double) dy[o + c] * w[c] - sg / dim - xhat[c] * sgx / dim);
        }
        return new Result(y, mean, rstd, dx, dw, db);
    }
}
