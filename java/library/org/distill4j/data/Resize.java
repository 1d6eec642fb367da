package org.distill4j.data;

/**
 * Resampling of planar float images: torchvision's eval transform {@code Resize(round-down(size / cropPct))} on the
 * shorter side, then {@code CenterCrop(size)} (timm's eval with {@code crop_pct}; cropPct 1 resizes the shorter side
 * straight to the model size).
 *
 * <p>The filter is Pillow's antialiased bilinear resampling ({@code Image.resize(..., BILINEAR)}, the one
 * torchvision's {@code Resize} calls on PIL images): a triangle kernel widened by the scale factor when shrinking,
 * weights normalised per output pixel, the horizontal pass then the vertical pass, each skipped when that side does
 * not change (so an image already at the target size passes through bit for bit). Pillow rounds to 8 bits between
 * the two passes and at the end; this works in float throughout, so results may differ from Pillow's by up to about
 * 1/255 per pixel.
 */
public final class Resize {
    private Resize() {}

    /**
     * The shorter side to {@code scaled}, the longer in proportion (truncated, as torchvision), then the centre
     * {@code size}×{@code size} (offsets rounded half to even, as Python's {@code round}).
     *
     * @param src [c, h, w] floats
     * @return [c, size, size]
     */
    public static float[] shorterSideThenCenterCrop(float[] src, int c, int h, int w, int scaled, int size) {
        if (scaled < size) {
            throw new IllegalArgumentException("resize to " + scaled + " then crop " + size + ": the crop is larger");
        }
        int nh, nw;
        if (h <= w) {
            nh = scaled;
            nw = (int) ((long) scaled * w / h);
        } else {
            nw = scaled;
            nh = (int) ((long) scaled * h / w);
        }
        float[] resized = resize(src, c, h, w, nh, nw);
        int top = (int) Math.rint((nh - size) / 2.0);
        int left = (int) Math.rint((nw - size) / 2.0);
        if (top == 0 && left == 0 && nh == size && nw == size) return resized;
        float[] out = new float[c * size * size];
        for (int ch = 0; ch < c; ch++) {
            for (int y = 0; y < size; y++) {
                System.arraycopy(resized, (ch * nh + top + y) * nw + left, out, (ch * size + y) * size, size);
            }
        }
        return out;
    }

    /** Resizes [c, h, w] to [c, nh, nw] with Pillow's antialiased bilinear filter, in float. */
    public static float[] resize(float[] src, int c, int h, int w, int nh, int nw) {
        float[] x = src;
        if (nw != w) {
            Kernel k = kernel(w, nw);
            float[] out = new float[c * h * nw];
            for (int row = 0; row < c * h; row++) {
                int s = row * w, d = row * nw;
                for (int ox = 0; ox < nw; ox++) {
                    double acc = 0;
                    int base = ox * k.taps;
                    for (int t = 0; t < k.count[ox]; t++) acc += k.weights[base + t] * x[s + k.first[ox] + t];
                    out[d + ox] = (float) acc;
                }
            }
            x = out;
        }
        if (nh != h) {
            Kernel k = kernel(h, nh);
            float[] out = new float[c * nh * nw];
            for (int ch = 0; ch < c; ch++) {
                for (int oy = 0; oy < nh; oy++) {
                    int d = (ch * nh + oy) * nw;
                    int base = oy * k.taps;
                    for (int ox = 0; ox < nw; ox++) {
                        double acc = 0;
                        for (int t = 0; t < k.count[oy]; t++) {
                            acc += k.weights[base + t] * x[(ch * h + k.first[oy] + t) * nw + ox];
                        }
                        out[d + ox] = (float) acc;
                    }
                }
            }
            x = out;
        }
        return x;
    }

    private record Kernel(int taps, int[] first, int[] count, double[] weights) {}

    /** Pillow's precompute_coeffs for the bilinear (triangle, support 1) filter. */
    private static Kernel kernel(int in, int out) {
        double scale = (double) in / out;
        double filterScale = Math.max(scale, 1.0);
        double support = filterScale;
        int taps = (int) Math.ceil(support) * 2 + 1;
        int[] first = new int[out], count = new int[out];
        double[] weights = new double[out * taps];
        for (int o = 0; o < out; o++) {
            double center = (o + 0.5) * scale;
            int lo = Math.max((int) (center - support + 0.5), 0);
            int hi = Math.min((int) (center + support + 0.5), in);
            double sum = 0;
            int n = hi - lo;
            for (int t = 0; t < n; t++) {
                double v = Math.abs((t + lo - center + 0.5) / filterScale);
                double wt = v < 1 ? 1 - v : 0;
                weights[o * taps + t] = wt;
                sum += wt;
            }
            for (int t = 0; t < n; t++) weights[o * taps + t] /= sum;
            first[o] = lo;
            count[o] = n;
        }
        return new Kernel(taps, first, count, weights);
    }
}
