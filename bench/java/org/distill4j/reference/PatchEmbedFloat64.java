package org.distill4j.reference;

/**
 * The patch embedding and its gradients in float64, straight from the definition: the oracle of {@code selftest}.
 * Loops, no GEMM, no im2col; meant for small shapes.
 *
 * <pre>
 *   tokens[b, t]        = cls + pos[0] (t = 0), dist + pos[1] (t = 1, distilled),
 *                         Σ_{c,ky,kx} weight[d,c,ky,kx] · images[b, c, py·P+ky, px·P+kx] + bias[d] + pos[t]
 *                         for t = prefix + py·(W/P) + px
 *   dWeight[d,c,ky,kx]  = Σ_{b,patch} dTokens[b, t, d] · images[b, c, py·P+ky, px·P+kx]
 *   dBias[d]            = Σ_{b,patch} dTokens[b, t, d];   dPos[t] = Σ_b dTokens[b, t]
 *   dCls = Σ_b dTokens[b, 0];  dDist = Σ_b dTokens[b, 1];  dImages = Σ_d dTokens[b, t, d] · weight[d, c, ky, kx]
 * </pre>
 */
public final class PatchEmbedFloat64 {
    private PatchEmbedFloat64() {}

    /** Tokens and every gradient (dCls/dDist null when absent). */
    public record Result(double[] tokens, double[] dWeight, double[] dBias, double[] dPos, double[] dCls,
                         double[] dDist, double[] dImages) {}

    /**
     * Computes tokens and gradients.
     *
     * @param cls  [D] or null (no prefix token)
     * @param dist [D] or null (not distilled); requires cls
     */
    public static Result compute(float[] images, float[] weight, float[] bias, float[] pos, float[] cls, float[] dist,
                                 float[] dTokens, int batch, int channels, int height, int width, int patch, int dim) {
        int prefix = (cls != null ? 1 : 0) + (dist != null ? 1 : 0);
        int nx = width / patch, n = (height / patch) * nx, t = prefix + n, k = channels * patch * patch;
        double[] tokens = new double[batch * t * dim];
        double[] dWeight = new double[dim * k], dBias = new double[dim], dPos = new double[t * dim];
        double[] dCls = cls == null ? null : new double[dim], dDist = dist == null ? null : new double[dim];
        double[] dImages = new double[images.length];
        double[] patchPixels = new double[k];
        int[] pixelIndex = new int[k];
        for (int b = 0; b < batch; b++) {
            for (int row = 0; row < t; row++) {
                int base = (b * t + row) * dim;
                for (int d = 0; d < dim; d++) dPos[row * dim + d] += dTokens[base + d];
                if (row < prefix) {
                    float[] token = row == 0 ? cls : dist;
                    double[] grad = row == 0 ? dCls : dDist;
                    for (int d = 0; d < dim; d++) {
                        tokens[base + d] = (double) token[d] + pos[row * dim + d];
                        grad[d] += dTokens[base + d];
                    }
                    continue;
                }
                int p = row - prefix, py = p / nx, px = p % nx;
                for (int c = 0; c < channels; c++) {
                    for (int ky = 0; ky < patch; ky++) {
                        for (int kx = 0; kx < patch; kx++) {
                            int i = ((b * channels + c) * height + py * patch + ky) * width + px * patch + kx;
                            int col = (c * patch + ky) * patch + kx;
                            pixelIndex[col] = i;
                            patchPixels[col] = images[i];
                        }
                    }
                }
                for (int d = 0; d < dim; d++) {
                    double acc = (double) bias[d] + pos[row * dim + d];
                    double g = dTokens[base + d];
                    dBias[d] += g;
                    for (int col = 0; col < k; col++) {
                        acc += weight[d * k + col] * patchPixels[col];
                        dWeight[d * k + col] += g * patchPixels[col];
                        dImages[pixelIndex[col]] += g * weight[d * k + col];
                    }
                    tokens[base + d] = acc;
                }
            }
        }
        return new Result(tokens, dWeight, dBias, dPos, dCls, dDist, dImages);
    }
}
