package org.distill4j.data;

/**
 * The Pillow 9.4 image operations {@link RandAugment} uses, rewritten on 8-bit pixels held as ints in planar
 * [channels][h·w] order (1 channel: Pillow's mode L; 3: RGB). Each follows Pillow's arithmetic step for step —
 * integer tables, float32 blends, the double-precision bicubic filter and its truncation — because the point is to
 * produce Pillow's bytes, not an approximation of them; the tests compare with Pillow itself.
 */
final class PillowOps {
    private PillowOps() {}

    /** {@code Image.point(table)} with one table for every channel. */
    static int[] lut(int[] px, int[] table) {
        for (int i = 0; i < px.length; i++) px[i] = table[px[i]];
        return px;
    }

    static int[] invertTable() {
        int[] t = new int[256];
        for (int i = 0; i < 256; i++) t[i] = 255 - i;
        return t;
    }

    /** {@code ImageOps.posterize}: keeps the {@code bits} high bits (0 keeps none: black). */
    static int[] posterizeTable(int bits) {
        int mask = ~((1 << (8 - bits)) - 1);
        int[] t = new int[256];
        for (int i = 0; i < 256; i++) t[i] = i & mask;
        return t;
    }

    /** {@code ImageOps.solarize}: values at or above {@code threshold} are inverted. */
    static int[] solarizeTable(int threshold) {
        int[] t = new int[256];
        for (int i = 0; i < 256; i++) t[i] = i < threshold ? i : 255 - i;
        return t;
    }

    /** timm's {@code solarize_add}: {@code add} is added (saturating) to values below {@code threshold}. */
    static int[] solarizeAddTable(int add, int threshold) {
        int[] t = new int[256];
        for (int i = 0; i < 256; i++) t[i] = i < threshold ? Math.min(255, i + add) : i;
        return t;
    }

    private static int[] histogram(int[] px, int from, int plane) {
        int[] hist = new int[256];
        for (int i = from; i < from + plane; i++) hist[px[i]]++;
        return hist;
    }

    /** {@code ImageOps.autocontrast(img)} (no cutoff): each channel stretched so its range becomes [0, 255]. */
    static int[] autoContrast(int[] px, int channels, int plane) {
        for (int c = 0; c < channels; c++) {
            int[] hist = histogram(px, c * plane, plane);
            int lo = 0, hi = 255;
            while (lo < 255 && hist[lo] == 0) lo++;
            while (hi > 0 && hist[hi] == 0) hi--;
            if (hi <= lo) continue;
            double scale = 255.0 / (hi - lo);
            double offset = -lo * scale;
            int[] t = new int[256];
            for (int i = 0; i < 256; i++) {
                int v = (int) (i * scale + offset);  // Python's int(): towards zero
                t[i] = v < 0 ? 0 : Math.min(v, 255);
            }
            for (int i = c * plane; i < (c + 1) * plane; i++) px[i] = t[px[i]];
        }
        return px;
    }

    /** {@code ImageOps.equalize(img)}: per channel, Pillow's cumulative-histogram table with its integer steps. */
    static int[] equalize(int[] px, int channels, int plane) {
        for (int c = 0; c < channels; c++) {
            int[] hist = histogram(px, c * plane, plane);
            long total = 0;
            int nonzero = 0, last = 0;
            for (int i = 0; i < 256; i++) {
                if (hist[i] == 0) continue;
                total += hist[i];
                nonzero++;
                last = hist[i];
            }
            if (nonzero <= 1) continue;
            long step = (total - last) / 255;  // the last occupied level does not count
            if (step == 0) continue;
            int[] t = new int[256];
            long n = step / 2;
            for (int i = 0; i < 256; i++) {
                t[i] = (int) Math.min(255, n / step);  // Image.point clips its table to 8 bits
                n += hist[i];
            }
            for (int i = c * plane; i < (c + 1) * plane; i++) px[i] = t[px[i]];
        }
        return px;
    }

    /** Pillow's RGB→L: ITU-R 601-2 luma in 16-bit fixed point, rounded. */
    private static int luma(int r, int g, int b) {
        return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
    }

    /** {@code img.convert("L").convert(img.mode)}: the grey image in every channel (a copy for grey input). */
    static int[] grey(int[] px, int channels, int plane, boolean replicate) {
        if (channels == 1) return px.clone();
        int[] out = new int[replicate ? px.length : plane];
        for (int i = 0; i < plane; i++) {
            int l = luma(px[i], px[plane + i], px[2 * plane + i]);
            out[i] = l;
            if (replicate) out[plane + i] = out[2 * plane + i] = l;
        }
        return out;
    }

    /** {@code ImageEnhance.Contrast}'s degenerate image: the mean grey level, rounded half up, everywhere. */
    static int[] meanGrey(int[] px, int channels, int plane) {
        int[] l = grey(px, channels, plane, false);
        int[] hist = histogram(l, 0, plane);
        double sum = 0;  // ImageStat sums j·h[j] in doubles; exact for any image that fits in memory
        for (int j = 0; j < 256; j++) sum += (double) j * hist[j];
        int mean = (int) (sum / plane + 0.5);
        int[] out = new int[px.length];
        java.util.Arrays.fill(out, mean);
        return out;
    }

    /**
     * {@code Image.blend(degenerate, img, alpha)}, which every {@code ImageEnhance} class is: {@code alpha} is a C
     * float, the sum is float arithmetic, truncated to 8 bits (clamped first when {@code alpha} is outside [0, 1]).
     */
    static int[] blend(int[] degenerate, int[] px, float alpha) {
        int[] out = new int[px.length];
        boolean inside = alpha >= 0 && alpha <= 1.0;
        for (int i = 0; i < px.length; i++) {
            float v = degenerate[i] + alpha * (px[i] - degenerate[i]);
            out[i] = inside ? (int) v : v <= 0 ? 0 : v >= 255 ? 255 : (int) v;
        }
        return out;
    }

    /**
     * {@code img.filter(ImageFilter.SMOOTH)}: the 3×3 kernel (1 1 1 / 1 5 1 / 1 1 1)/13 in float32, summed from the row
     * below to the row above as Pillow does, plus ½ and truncated; the border rows and columns are copied, and an
     * image under 3×3 is copied whole.
     */
    static int[] smooth(int[] px, int channels, int h, int w) {
        int[] out = px.clone();
        if (h < 3 || w < 3) return out;
        float k1 = 1f / 13f, k5 = 5f / 13f;
        for (int c = 0; c < channels; c++) {
            int base = c * h * w;
            for (int y = 1; y < h - 1; y++) {
                int below = base + (y + 1) * w, row = base + y * w, above = base + (y - 1) * w;
                for (int x = 1; x < w - 1; x++) {
                    float ss = 0.5f;
                    ss += px[below + x - 1] * k1 + px[below + x] * k1 + px[below + x + 1] * k1;
                    ss += px[row + x - 1] * k1 + px[row + x] * k5 + px[row + x + 1] * k1;
                    ss += px[above + x - 1] * k1 + px[above + x] * k1 + px[above + x + 1] * k1;
                    out[row + x] = ss <= 0 ? 0 : ss >= 255 ? 255 : (int) ss;
                }
            }
        }
        return out;
    }

    /**
     * {@code img.rotate(degrees, resample=BICUBIC, fillcolor=fill)}: counter-clockwise about the image centre, same
     * size, with Pillow's matrix (angle taken mod 360, cos and sin rounded to 15 decimals). 0° returns the image.
     */
    static int[] rotate(int[] px, int channels, int h, int w, double degrees, int[] fill) {
        double angle = degrees % 360.0;
        if (angle < 0) angle += 360.0;  // Python's float %: the sign of the divisor
        if (angle == 0) return px;
        double rad = -Math.toRadians(angle);
        double cos = RandAugment.round15(StrictMath.cos(rad)), sin = RandAugment.round15(StrictMath.sin(rad));
        double[] m = {cos, sin, 0.0, RandAugment.round15(-StrictMath.sin(rad)), cos, 0.0};
        double cx = w / 2.0, cy = h / 2.0;
        double c = m[0] * -cx + m[1] * -cy + m[2], f = m[3] * -cx + m[4] * -cy + m[5];
        m[2] = c + cx;
        m[5] = f + cy;
        return affine(px, channels, h, w, m, fill);
    }

    /**
     * {@code img.transform(img.size, AFFINE, a, resample=BICUBIC, fillcolor=fill)}: output pixel (x, y) samples the
     * input at (a0·x' + a1·y' + a2, a3·x' + a4·y' + a5) with x' = x + ½, y' = y + ½; outside the input it is
     * {@code fill}. Pillow's bicubic is the a = −1 cubic convolution in doubles, edge pixels repeated, truncated to
     * 8 bits.
     */
    static int[] affine(int[] px, int channels, int h, int w, double[] a, int[] fill) {
        int plane = h * w;
        int[] out = new int[px.length];
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                double xin = x + 0.5, yin = y + 0.5;
                double xx = a[0] * xin + a[1] * yin + a[2];
                double yy = a[3] * xin + a[4] * yin + a[5];
                int o = y * w + x;
                if (xx < 0.0 || xx >= w || yy < 0.0 || yy >= h) {
                    for (int c = 0; c < channels; c++) out[c * plane + o] = fill[c];
                    continue;
                }
                xx -= 0.5;
                yy -= 0.5;
                int ix = (int) Math.floor(xx), iy = (int) Math.floor(yy);
                double dx = xx - ix, dy = yy - iy;
                ix--;
                iy--;
                int x0 = clip(ix, w), x1 = clip(ix + 1, w), x2 = clip(ix + 2, w), x3 = clip(ix + 3, w);
                for (int c = 0; c < channels; c++) {
                    int base = c * plane;
                    int r = base + clip(iy, h) * w;
                    double v1 = cubic(px[r + x0], px[r + x1], px[r + x2], px[r + x3], dx);
                    // Rows past the bottom (or above the top) repeat the previous row's value, as Pillow does.
                    double v2 = v1, v3, v4;
                    if (iy + 1 >= 0 && iy + 1 < h) {
                        r = base + (iy + 1) * w;
                        v2 = cubic(px[r + x0], px[r + x1], px[r + x2], px[r + x3], dx);
                    }
                    v3 = v2;
                    if (iy + 2 >= 0 && iy + 2 < h) {
                        r = base + (iy + 2) * w;
                        v3 = cubic(px[r + x0], px[r + x1], px[r + x2], px[r + x3], dx);
                    }
                    v4 = v3;
                    if (iy + 3 >= 0 && iy + 3 < h) {
                        r = base + (iy + 3) * w;
                        v4 = cubic(px[r + x0], px[r + x1], px[r + x2], px[r + x3], dx);
                    }
                    double v = cubic(v1, v2, v3, v4, dy);
                    out[base + o] = v <= 0.0 ? 0 : v >= 255.0 ? 255 : (int) v;
                }
            }
        }
        return out;
    }

    private static int clip(int i, int size) {
        return i < 0 ? 0 : i < size ? i : size - 1;
    }

    /** Pillow's BICUBIC macro, its operations in its order. */
    private static double cubic(double v1, double v2, double v3, double v4, double d) {
        double p1 = v2;
        double p2 = -v1 + v3;
        double p3 = 2 * (v1 - v2) + v3 - v4;
        double p4 = -v1 + v2 - v3 + v4;
        return p1 + d * (p2 + d * (p3 + d * p4));
    }
}
