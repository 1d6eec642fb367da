package org.distill4j.data;

import java.math.BigDecimal;
import java.math.RoundingMode;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.SplittableRandom;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * RandAugment (Cubuk et al. 2020) as timm's {@code rand_augment_transform} applies it in DeiT's recipe
 * ({@code --aa rand-m9-mstd0.5-inc1}): {@code n} layers (default 2), each an operation chosen uniformly with
 * replacement from 15 and applied with probability {@code p} (default ½) at a magnitude drawn from
 * N({@code m}, {@code mstd}) and clipped to [0, 10] ({@code mmax} raises the bound). The operations and their
 * magnitude-to-argument maps are timm's; with {@code inc1} the set is timm's increasing one ({@link Op}).
 *
 * <p>The pixels are Pillow's: each operation is a rewrite of the Pillow 9.4 function timm calls
 * ({@code ImageOps.autocontrast}, {@code ImageEnhance.Color}, {@code Image.rotate}, ...), on 8-bit pixels, with
 * Pillow's integer and float32 arithmetic, so that its output equals Pillow's pixel for pixel (the tests compare
 * them). Geometric operations resample bicubically (DeiT passes {@code interpolation='bicubic'}, which timm forwards
 * to RandAugment) and fill uncovered pixels with the dataset mean rounded to 8 bits (timm's {@code img_mean},
 * {@code round(255·mean)}); translations move by 0.45 × the side at magnitude 10 (timm's {@code translate_pct}).
 *
 * <p>What differs from timm:
 * <ul>
 *   <li>Images here are normalised floats, not 8-bit Pillow images. An image that gets at least one operation is
 *       un-normalised, rounded to the nearest 8-bit value (clamped to [0, 255]), transformed and normalised again
 *       with the decoder's table ({@code (q/255 − mean)/std}); pixels decoded from 8-bit files come back exactly,
 *       a resized crop's in-between values are quantised as Pillow's resize would have. An image that gets no
 *       operation is left untouched (not quantised).
 *   <li>Randomness: timm draws the op choice from NumPy's global generator and the rest from Python's; here every
 *       draw comes from one stream keyed by (seed, view, sample index), in timm's order ({@link #draw}), so a
 *       resumed run and an FKD view replay it exactly.
 *   <li>Config strings: timm ignores sections without a digit, treats {@code inc0} as on ({@code bool("0")}) and
 *       keeps the first {@code mstd}/{@code mmax} but the last {@code m}/{@code n}; here an unknown or repeated
 *       section is an error, {@code inc0} is off, and the {@code w} (weighted choice) and {@code t} (transform
 *       set) sections are not supported. The {@code p} section and the caps of Solarize's threshold at 256 and
 *       SolarizeAdd's amount at 128 are recent timm's, absent from older releases; the caps matter only above
 *       magnitude 10 ({@code mmax}).
 *   <li>Only 1- and 3-channel images (Pillow's L and RGB).
 * </ul>
 *
 * <p>Instances are immutable and thread-safe.
 */
public final class RandAugment {
    /** Keeps RandAugment's draws independent of the crop's, erasing's and Mixup's for the same seed. */
    static final long STREAM = 0x72616e6461756aL;  // "randauj"
    private static final double LEVEL_DENOM = 10;  // timm's _LEVEL_DENOM: magnitude 10 is the full range
    private static final double TRANSLATE_PCT = 0.45;

    /**
     * The operations, named as in timm. The first 15 ({@link #increasingSet}) are timm's
     * {@code _RAND_INCREASING_TRANSFORMS}, where a larger magnitude always means a stronger change; the set without
     * {@code inc1} replaces the six {@code *_INCREASING} ones by their plain forms.
     */
    public enum Op {
        AUTO_CONTRAST("AutoContrast", false),
        EQUALIZE("Equalize", false),
        INVERT("Invert", false),
        ROTATE("Rotate", true),
        POSTERIZE_INCREASING("PosterizeIncreasing", false),
        SOLARIZE_INCREASING("SolarizeIncreasing", false),
        SOLARIZE_ADD("SolarizeAdd", false),
        COLOR_INCREASING("ColorIncreasing", true),
        CONTRAST_INCREASING("ContrastIncreasing", true),
        BRIGHTNESS_INCREASING("BrightnessIncreasing", true),
        SHARPNESS_INCREASING("SharpnessIncreasing", true),
        SHEAR_X("ShearX", true),
        SHEAR_Y("ShearY", true),
        TRANSLATE_X_REL("TranslateXRel", true),
        TRANSLATE_Y_REL("TranslateYRel", true),
        POSTERIZE("Posterize", false),
        SOLARIZE("Solarize", false),
        COLOR("Color", false),
        CONTRAST("Contrast", false),
        BRIGHTNESS("Brightness", false),
        SHARPNESS("Sharpness", false);

        private final String timmName;
        private final boolean signed;

        Op(String timmName, boolean signed) {
            this.timmName = timmName;
            this.signed = signed;
        }

        /** timm's name of the operation. */
        public String timmName() {
            return timmName;
        }

        /** Whether timm negates the argument with probability ½ ({@code _randomly_negate}). */
        public boolean signed() {
            return signed;
        }

        /** timm's {@code _RAND_INCREASING_TRANSFORMS}, in timm's order. */
        public static List<Op> increasingSet() {
            return List.of(AUTO_CONTRAST, EQUALIZE, INVERT, ROTATE, POSTERIZE_INCREASING, SOLARIZE_INCREASING,
                    SOLARIZE_ADD, COLOR_INCREASING, CONTRAST_INCREASING, BRIGHTNESS_INCREASING, SHARPNESS_INCREASING,
                    SHEAR_X, SHEAR_Y, TRANSLATE_X_REL, TRANSLATE_Y_REL);
        }

        /** timm's {@code _RAND_TRANSFORMS}, in timm's order. */
        public static List<Op> plainSet() {
            return List.of(AUTO_CONTRAST, EQUALIZE, INVERT, ROTATE, POSTERIZE, SOLARIZE, SOLARIZE_ADD, COLOR, CONTRAST,
                    BRIGHTNESS, SHARPNESS, SHEAR_X, SHEAR_Y, TRANSLATE_X_REL, TRANSLATE_Y_REL);
        }

        /**
         * timm's {@code level_to_arg} of this operation at {@code magnitude} (already clipped), negated when
         * {@code negated}: degrees (Rotate), shear factor, translation as a fraction of the side, bits kept
         * (Posterize), threshold (Solarize), the amount added (SolarizeAdd), enhancement factor; 0 for the three
         * operations without an argument.
         */
        public double argument(double magnitude, boolean negated) {
            double level = magnitude / LEVEL_DENOM;
            double sign = negated ? -1 : 1;
            return switch (this) {
                case AUTO_CONTRAST, EQUALIZE, INVERT -> 0;
                case ROTATE -> sign * (level * 30.0);
                case SHEAR_X, SHEAR_Y -> sign * (level * 0.3);
                case TRANSLATE_X_REL, TRANSLATE_Y_REL -> sign * (level * TRANSLATE_PCT);
                case POSTERIZE -> (int) (level * 4);
                case POSTERIZE_INCREASING -> 4 - (int) (level * 4);
                case SOLARIZE -> Math.min(256, (int) (level * 256));
                case SOLARIZE_INCREASING -> 256 - Math.min(256, (int) (level * 256));
                case SOLARIZE_ADD -> Math.min(128, (int) (level * 110));
                case COLOR, CONTRAST, BRIGHTNESS, SHARPNESS -> level * 1.8 + 0.1;
                // Away from 1 (no change) towards 0 or 2, kept >= 0.1.
                case COLOR_INCREASING, CONTRAST_INCREASING, BRIGHTNESS_INCREASING, SHARPNESS_INCREASING ->
                        Math.max(0.1, 1.0 + sign * (level * 0.9));
            };
        }
    }

    /**
     * One layer of a sample's draw.
     *
     * @param op the operation chosen
     * @param applied whether it is applied (probability {@code p})
     * @param magnitude the magnitude after clipping; 0 when not applied
     * @param negated whether the argument is negated (signed operations only; false when not applied)
     */
    public record Layer(Op op, boolean applied, double magnitude, boolean negated) {
        /** The operation's argument ({@link Op#argument}). */
        public double argument() {
            return op.argument(magnitude, negated);
        }
    }

    /** Everything RandAugment decided for one sample: its layers, in the order they are applied. */
    public record Draw(List<Layer> layers) {
        public Draw {
            layers = List.copyOf(layers);
        }

        /** Whether any layer changes the image. */
        public boolean anyApplied() {
            for (Layer l : layers) {
                if (l.applied()) return true;
            }
            return false;
        }
    }

    private static final Pattern SECTION = Pattern.compile("([a-z]*)(\\d.*)");

    private final long seed;
    private final String config;
    private final int layers;
    private final int magnitude;
    private final double magnitudeStd;  // +inf: uniform in [0, magnitude]
    private final double magnitudeMax;
    private final double prob;
    private final List<Op> ops;

    /**
     * RandAugment as timm's config string {@code config} describes it, e.g. {@code rand-m9-mstd0.5-inc1}: sections
     * after {@code rand}, separated by '-': {@code m} magnitude (integer, default 10), {@code n} layers (default 2),
     * {@code mstd} magnitude std (default 0; above 100, uniform in [0, m]), {@code mmax} clip bound (integer,
     * default 10), {@code inc} 1 for the increasing set, {@code p} probability of each layer (default 0.5).
     *
     * @throws IllegalArgumentException naming the section when the string is not such a config
     */
    public RandAugment(long seed, String config) {
        Objects.requireNonNull(config, "RandAugment config");
        this.seed = seed;
        this.config = config;
        String[] parts = config.split("-", -1);
        if (!parts[0].equals("rand")) {
            throw new IllegalArgumentException("RandAugment config '" + config + "' must start with 'rand' (e.g. "
                    + "rand-m9-mstd0.5-inc1)");
        }
        int m = 10, n = 2;
        double mstd = 0, mmax = LEVEL_DENOM, p = 0.5;
        boolean increasing = false;
        java.util.Set<String> seen = new java.util.HashSet<>();
        for (int i = 1; i < parts.length; i++) {
            String part = parts[i];
            Matcher mt = SECTION.matcher(part);
            if (!mt.matches()) throw bad(config, "section '" + part + "' is not a key followed by a number");
            String key = mt.group(1), val = mt.group(2);
            if (!seen.add(key)) throw bad(config, "section '" + key + "' is given twice");
            try {
                switch (key) {
                    case "m" -> m = Integer.parseInt(val);
                    case "n" -> n = Integer.parseInt(val);
                    case "mstd" -> {
                        mstd = Double.parseDouble(val);
                        if (mstd > 100) mstd = Double.POSITIVE_INFINITY;  // timm: uniform in [0, m]
                    }
                    case "mmax" -> {
                        int v = Integer.parseInt(val);
                        mmax = v == 0 ? LEVEL_DENOM : v;  // timm: `magnitude_max or _LEVEL_DENOM`
                    }
                    case "inc" -> {
                        int v = Integer.parseInt(val);
                        if (v != 0 && v != 1) throw bad(config, "inc must be 0 or 1, got " + val);
                        increasing = v == 1;
                    }
                    case "p" -> p = Double.parseDouble(val);
                    default -> throw bad(config, "unknown section '" + part + "' (known: m, n, mstd, mmax, inc, p)");
                }
            } catch (NumberFormatException e) {
                throw bad(config, "section '" + part + "': '" + val + "' is not a number of the right kind");
            }
        }
        if (m < 0) throw bad(config, "magnitude m must be >= 0, got " + m);
        if (n < 0 || n > 100) throw bad(config, "layers n must be in [0, 100], got " + n);
        if (!(mstd >= 0)) throw bad(config, "mstd must be >= 0, got " + mstd);
        if (!(mmax > 0)) throw bad(config, "mmax must be > 0, got " + mmax);
        if (!(p >= 0 && p <= 1)) throw bad(config, "p must be in [0, 1], got " + p);
        this.magnitude = m;
        this.layers = n;
        this.magnitudeStd = mstd;
        this.magnitudeMax = mmax;
        this.prob = p;
        this.ops = increasing ? Op.increasingSet() : Op.plainSet();
    }

    private static IllegalArgumentException bad(String config, String why) {
        return new IllegalArgumentException("RandAugment config '" + config + "': " + why);
    }

    /** The seed its draws are keyed by, with the view and sample index. */
    public long seed() {
        return seed;
    }

    /** The config string this was made from. */
    public String config() {
        return config;
    }

    /** The operations layers choose from. */
    public List<Op> ops() {
        return ops;
    }

    public int layers() {
        return layers;
    }

    public int magnitude() {
        return magnitude;
    }

    public double magnitudeStd() {
        return magnitudeStd;
    }

    public double magnitudeMax() {
        return magnitudeMax;
    }

    public double prob() {
        return prob;
    }

    /**
     * The draw of sample {@code index} in {@code view} (the epoch, or FKD's view of it), in timm's order: first the
     * {@code n} operations (uniform, with replacement), then per layer: applied unless a uniform u &gt; p; the
     * magnitude m + mstd·N(0, 1) (or uniform in [0, m]) clipped to [0, mmax]; for a signed operation, negated when
     * a uniform u &gt; ½. Nothing more is drawn for a layer that is not applied.
     */
    public Draw draw(int view, int index) {
        SplittableRandom rng = new SplittableRandom(Seeds.of(seed, STREAM, view, index));
        Op[] chosen = new Op[layers];
        for (int i = 0; i < layers; i++) chosen[i] = ops.get(rng.nextInt(ops.size()));
        List<Layer> out = new ArrayList<>(layers);
        for (Op op : chosen) {
            if (prob < 1.0 && rng.nextDouble() > prob) {
                out.add(new Layer(op, false, 0, false));
                continue;
            }
            double mag = magnitude;
            if (magnitudeStd == Double.POSITIVE_INFINITY) {
                mag = magnitude * rng.nextDouble();
            } else if (magnitudeStd > 0) {
                mag = magnitude + magnitudeStd * rng.nextGaussian();
            }
            mag = Math.max(0.0, Math.min(mag, magnitudeMax));
            boolean negated = op.signed() && rng.nextDouble() > 0.5;
            out.add(new Layer(op, true, mag, negated));
        }
        return new Draw(out);
    }

    /**
     * Applies sample {@code index}'s draw for {@code view} to the normalised [channels, h, w] image at
     * {@code img[offset ..]}, in place. {@code norm} is the image's normalisation: it maps floats to 8-bit pixels
     * and back, and gives the fill of geometric operations.
     *
     * @return the draw applied
     */
    public Draw apply(float[] img, int offset, int channels, int h, int w, Normalization norm, int view, int index) {
        checkShape(channels, h, w);
        norm.checkChannels(channels, "the image");
        if (offset < 0 || offset + (long) channels * h * w > img.length) {
            throw new IllegalArgumentException("RandAugment: an image of " + channels + "x" + h + "x" + w
                    + " floats at offset " + offset + " does not fit in " + img.length);
        }
        Draw d = draw(view, index);
        if (!d.anyApplied()) return d;
        float[] mean = norm.mean(), std = norm.std();
        int plane = h * w;
        int[] px = new int[channels * plane];
        for (int c = 0; c < channels; c++) {
            for (int i = 0; i < plane; i++) {
                // Round to nearest: a pixel decoded from a byte comes back as that byte (error ~1e-5 of a step).
                double p = Math.rint(((double) img[offset + c * plane + i] * std[c] + mean[c]) * 255.0);
                px[c * plane + i] = p <= 0 ? 0 : p >= 255 ? 255 : (int) p;
            }
        }
        int[] fill = fill(norm);
        for (Layer l : d.layers()) {
            if (l.applied()) px = apply(l.op(), l.argument(), px, channels, h, w, fill);
        }
        float[][] lut = norm.byteTables();
        for (int c = 0; c < channels; c++) {
            for (int i = 0; i < plane; i++) img[offset + c * plane + i] = lut[c][px[c * plane + i]];
        }
        return d;
    }

    /** timm's {@code img_mean}: {@code min(255, round(255·mean))} per channel, Python's half-to-even round. */
    static int[] fill(Normalization norm) {
        float[] mean = norm.mean();
        int[] fill = new int[mean.length];
        for (int c = 0; c < mean.length; c++) {
            fill[c] = (int) Math.max(0, Math.min(255, Math.rint(255.0 * mean[c])));
        }
        return fill;
    }

    private static void checkShape(int channels, int h, int w) {
        if (channels != 1 && channels != 3) {
            throw new IllegalArgumentException("RandAugment works on grey or RGB images, got " + channels
                    + " channels");
        }
        if (h <= 0 || w <= 0) throw new IllegalArgumentException("RandAugment: empty image " + h + "x" + w);
    }

    /**
     * Operation {@code op} with argument {@code arg} ({@link Op#argument}) on 8-bit pixels {@code px}
     * ([channels, h, w], values 0..255), as the Pillow call timm makes; {@code fill} per channel. May return
     * {@code px} itself, changed or not.
     */
    static int[] apply(Op op, double arg, int[] px, int channels, int h, int w, int[] fill) {
        checkShape(channels, h, w);
        return switch (op) {
            case AUTO_CONTRAST -> PillowOps.autoContrast(px, channels, h * w);
            case EQUALIZE -> PillowOps.equalize(px, channels, h * w);
            case INVERT -> PillowOps.lut(px, PillowOps.invertTable());
            case POSTERIZE, POSTERIZE_INCREASING -> (int) arg >= 8 ? px  // timm skips 8 bits
                    : PillowOps.lut(px, PillowOps.posterizeTable((int) arg));
            case SOLARIZE, SOLARIZE_INCREASING -> PillowOps.lut(px, PillowOps.solarizeTable((int) arg));
            case SOLARIZE_ADD -> PillowOps.lut(px, PillowOps.solarizeAddTable((int) arg, 128));
            case COLOR, COLOR_INCREASING -> PillowOps.blend(PillowOps.grey(px, channels, h * w, true), px,
                    (float) arg);
            case CONTRAST, CONTRAST_INCREASING -> PillowOps.blend(PillowOps.meanGrey(px, channels, h * w), px,
                    (float) arg);
            case BRIGHTNESS, BRIGHTNESS_INCREASING -> PillowOps.blend(new int[px.length], px, (float) arg);
            case SHARPNESS, SHARPNESS_INCREASING -> PillowOps.blend(PillowOps.smooth(px, channels, h, w), px,
                    (float) arg);
            case ROTATE -> PillowOps.rotate(px, channels, h, w, arg, fill);
            case SHEAR_X -> PillowOps.affine(px, channels, h, w, new double[] {1, arg, 0, 0, 1, 0}, fill);
            case SHEAR_Y -> PillowOps.affine(px, channels, h, w, new double[] {1, 0, 0, arg, 1, 0}, fill);
            case TRANSLATE_X_REL -> PillowOps.affine(px, channels, h, w, new double[] {1, 0, arg * w, 0, 1, 0}, fill);
            case TRANSLATE_Y_REL -> PillowOps.affine(px, channels, h, w, new double[] {1, 0, 0, 0, 1, arg * h}, fill);
        };
    }

    /** Python's {@code round(x, 15)}: to the nearest multiple of 1e−15, ties to even, of the exact binary value. */
    static double round15(double x) {
        return new BigDecimal(x).setScale(15, RoundingMode.HALF_EVEN).doubleValue();
    }

    @Override
    public String toString() {
        return "RandAugment " + config;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof RandAugment r && r.seed == seed && r.config.equals(config);
    }

    @Override
    public int hashCode() {
        return Long.hashCode(seed) * 31 + config.hashCode();
    }
}
