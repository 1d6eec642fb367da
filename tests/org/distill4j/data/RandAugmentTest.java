package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.distill4j.data.RandAugment.Op;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * RandAugment's pixels against Pillow 9.4 (Debian's python3-pil, run as /usr/bin/python3), the library timm applies
 * them with; its draw against timm's steps rewritten on our stream; its statistics; its config strings.
 */
class RandAugmentTest {
    private static final String PYTHON = "/usr/bin/python3";

    /**
     * Applies, for each line of the cases file ({@code mode w h op arg fill in out}), the Pillow call timm's op makes
     * (timm/data/auto_augment.py: resample BICUBIC, fillcolor = img_mean; SolarizeAdd is timm's table).
     */
    private static final String PILLOW_SCRIPT = """
            import sys
            from PIL import Image, ImageOps, ImageEnhance

            def add_table(add):
                return [min(255, i + add) if i < 128 else i for i in range(256)]

            for line in open(sys.argv[1]):
                mode, w, h, op, arg, fill, src, dst = line.split()
                size, arg = (int(w), int(h)), float(arg)
                fill = [int(v) for v in fill.split(",")]
                fill = fill[0] if mode == "L" else tuple(fill)
                img = Image.frombytes(mode, size, open(src, "rb").read())
                geo = dict(resample=Image.BICUBIC, fillcolor=fill)
                if op == "AutoContrast": out = ImageOps.autocontrast(img)
                elif op == "Equalize": out = ImageOps.equalize(img)
                elif op == "Invert": out = ImageOps.invert(img)
                elif op == "Posterize": out = img if int(arg) >= 8 else ImageOps.posterize(img, int(arg))
                elif op == "Solarize": out = ImageOps.solarize(img, int(arg))
                elif op == "SolarizeAdd": out = img.point(add_table(int(arg)) * len(img.getbands()))
                elif op == "Color": out = ImageEnhance.Color(img).enhance(arg)
                elif op == "Contrast": out = ImageEnhance.Contrast(img).enhance(arg)
                elif op == "Brightness": out = ImageEnhance.Brightness(img).enhance(arg)
                elif op == "Sharpness": out = ImageEnhance.Sharpness(img).enhance(arg)
                elif op == "Rotate": out = img.rotate(arg, **geo)
                elif op == "ShearX": out = img.transform(size, Image.AFFINE, (1, arg, 0, 0, 1, 0), **geo)
                elif op == "ShearY": out = img.transform(size, Image.AFFINE, (1, 0, 0, arg, 1, 0), **geo)
                elif op == "TranslateXRel": out = img.transform(size, Image.AFFINE, (1, 0, arg * size[0], 0, 1, 0), **geo)
                elif op == "TranslateYRel": out = img.transform(size, Image.AFFINE, (1, 0, 0, 0, 1, arg * size[1]), **geo)
                else: sys.exit("unknown op " + op)
                open(dst, "wb").write(out.tobytes())
            """;

    @TempDir
    Path tmp;

    /** One image: 8-bit planar pixels. */
    private record Image(String name, int channels, int h, int w, int[] px) {}

    private static Image image(String name, int channels, int h, int w, Random rng, int lo, int hi) {
        int[] px = new int[channels * h * w];
        for (int i = 0; i < px.length; i++) px[i] = lo + rng.nextInt(hi - lo + 1);
        return new Image(name, channels, h, w, px);
    }

    /** Grey and RGB, square and not, full range, narrow range (autocontrast has work), skewed, tiny. */
    private static List<Image> images(long seed) {
        Random rng = new Random(seed);
        List<Image> out = new ArrayList<>();
        out.add(image("grey 17x23 full", 1, 17, 23, rng, 0, 255));
        out.add(image("grey 16x16 narrow", 1, 16, 16, rng, 40, 180));
        out.add(image("rgb 32x32 full", 3, 32, 32, rng, 0, 255));
        out.add(image("rgb 20x37 narrow", 3, 20, 37, rng, 60, 200));
        out.add(image("grey 2x5 tiny", 1, 2, 5, rng, 10, 250));
        Image skew = image("rgb 24x18 skewed", 3, 24, 18, rng, 0, 255);
        for (int i = 0; i < skew.px().length; i++) skew.px()[i] = skew.px()[i] * skew.px()[i] / 255;
        out.add(skew);
        // A smooth image: resampling lands between close values, where truncation is most fragile.
        int[] ramp = new int[3 * 21 * 21];
        for (int c = 0; c < 3; c++) {
            for (int i = 0; i < 21 * 21; i++) ramp[c * 441 + i] = (i / 21 * 7 + i % 21 * 5 + c * 40) % 256;
        }
        out.add(new Image("rgb 21x21 ramp", 3, 21, 21, ramp));
        return out;
    }

    /** Arguments per op: each op's magnitude map at 0, 5, 9, 10 (both signs), and the edges of its range. */
    private static Map<Op, double[]> cases() {
        Map<Op, double[]> m = new EnumMap<>(Op.class);
        for (Op op : Op.values()) {
            List<Double> args = new ArrayList<>();
            for (double mag : new double[] {0, 5, 9, 9.37, 10}) {
                args.add(op.argument(mag, false));
                if (op.signed()) args.add(op.argument(mag, true));
            }
            m.put(op, args.stream().mapToDouble(Double::doubleValue).distinct().toArray());
        }
        m.put(Op.POSTERIZE, new double[] {0, 1, 2, 3, 4, 7, 8});
        m.put(Op.SOLARIZE, new double[] {0, 1, 127, 128, 200, 255, 256});
        m.put(Op.SOLARIZE_ADD, new double[] {0, 1, 55, 99, 110, 128});
        m.put(Op.BRIGHTNESS, new double[] {0, 0.1, 0.37, 0.5, 1, 1.27, 1.9, 2.5});
        m.put(Op.ROTATE, new double[] {-30, -27, -13.3, 0.5, 27, 30, 45, 90, 180, 359});
        m.put(Op.SHEAR_X, new double[] {-0.3, -0.27, 0.013, 0.27, 0.3});
        m.put(Op.TRANSLATE_X_REL, new double[] {-0.45, -0.405, 0.01, 0.1, 0.405, 0.45});
        return m;
    }

    private static String pillowName(Op op) {
        String n = op.timmName();
        return n.endsWith("Increasing") ? n.substring(0, n.length() - "Increasing".length()) : n;
    }

    private static void requirePillow() throws Exception {
        String why;
        try {
            Process p = new ProcessBuilder(PYTHON, "-c", "import PIL; print(PIL.__version__)")
                    .redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
            if (p.waitFor() == 0) return;
            why = out;
        } catch (IOException e) {
            why = e.getMessage();
        }
        fail("RandAugment is checked against Pillow: install it with `apt-get install -y python3-pil` (" + PYTHON
                + " cannot import PIL: " + why + ")");
    }

    private static byte[] interleaved(Image im) {
        int plane = im.h() * im.w();
        byte[] b = new byte[im.px().length];
        for (int c = 0; c < im.channels(); c++) {
            for (int i = 0; i < plane; i++) b[i * im.channels() + c] = (byte) im.px()[c * plane + i];
        }
        return b;
    }

    private static int[] planar(byte[] b, int channels, int plane) {
        int[] px = new int[b.length];
        for (int c = 0; c < channels; c++) {
            for (int i = 0; i < plane; i++) px[c * plane + i] = b[i * channels + c] & 0xff;
        }
        return px;
    }

    private record Case(Image image, Op op, double arg, int[] fill, Path out) {}

    /**
     * Every op at every argument on every image, ours against Pillow's bytes. All are expected exact: ours repeats
     * Pillow's arithmetic (integer tables; the blend's float32; the bicubic filter's doubles, same operations in the
     * same order, truncated), so there is no tolerance and any differing pixel fails, with the count per case.
     */
    @Test
    void everyOpEqualsPillowPixelForPixel() throws Exception {
        requirePillow();
        long seed = Check.freshSeed();
        Path script = tmp.resolve("ops.py");
        Files.writeString(script, PILLOW_SCRIPT);
        StringBuilder lines = new StringBuilder();
        List<Case> all = new ArrayList<>();
        List<Image> images = images(seed);
        for (int k = 0; k < images.size(); k++) {
            Image im = images.get(k);
            Path in = tmp.resolve("img" + k + ".raw");
            Files.write(in, interleaved(im));
            int[] fill = im.channels() == 1 ? new int[] {73} : new int[] {124, 116, 104};  // timm's ImageNet img_mean
            for (Map.Entry<Op, double[]> e : cases().entrySet()) {
                for (double arg : e.getValue()) {
                    Path out = tmp.resolve("out" + all.size() + ".raw");
                    all.add(new Case(im, e.getKey(), arg, fill, out));
                    StringBuilder f = new StringBuilder();
                    for (int v : fill) f.append(f.length() == 0 ? "" : ",").append(v);
                    lines.append(im.channels() == 1 ? "L" : "RGB").append(' ').append(im.w()).append(' ')
                            .append(im.h()).append(' ').append(pillowName(e.getKey())).append(' ')
                            .append(Double.toString(arg)).append(' ').append(f).append(' ').append(in).append(' ')
                            .append(out).append('\n');
                }
            }
        }
        Path casesFile = tmp.resolve("cases.txt");
        Files.writeString(casesFile, lines);
        Process p = new ProcessBuilder(PYTHON, script.toString(), casesFile.toString()).redirectErrorStream(true)
                .start();
        String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), "the Pillow script failed: " + log);
        List<String> failures = new ArrayList<>();
        int compared = 0;
        for (Case c : all) {
            Image im = c.image();
            int plane = im.h() * im.w();
            int[] want = planar(Files.readAllBytes(c.out()), im.channels(), plane);
            int[] got = RandAugment.apply(c.op(), c.arg(), im.px().clone(), im.channels(), im.h(), im.w(), c.fill());
            assertEquals(want.length, got.length, c.toString());
            int bad = 0, worst = 0;
            for (int i = 0; i < want.length; i++) {
                assertTrue(got[i] >= 0 && got[i] <= 255, "not a byte: " + got[i]);
                if (got[i] != want[i]) {
                    bad++;
                    worst = Math.max(worst, Math.abs(got[i] - want[i]));
                }
            }
            compared += want.length;
            if (bad > 0) {
                failures.add(im.name() + " " + c.op() + "(" + c.arg() + "): " + bad + " of " + want.length
                        + " pixels differ, by up to " + worst);
            }
        }
        assertTrue(compared > 500_000, "pixels compared: " + compared);
        assertTrue(failures.isEmpty(), "seed=" + seed + ": " + failures.size() + " of " + all.size()
                + " cases differ from Pillow:\n" + String.join("\n", failures));
    }

    @Test
    void magnitudesMapToTimmsArguments() {
        // timm's level_to_arg at DeiT's m9 and at 10: written out by hand from the formulas.
        assertEquals(27.0, Op.ROTATE.argument(9, false), 1e-12);
        assertEquals(-30.0, Op.ROTATE.argument(10, true), 1e-12);
        assertEquals(1, Op.POSTERIZE_INCREASING.argument(9, false));     // 4 − int(3.6)
        assertEquals(0, Op.POSTERIZE_INCREASING.argument(10, false));    // keeps no bit
        assertEquals(4, Op.POSTERIZE_INCREASING.argument(0, false));
        assertEquals(3, Op.POSTERIZE.argument(9, false));
        assertEquals(26, Op.SOLARIZE_INCREASING.argument(9, false));     // 256 − int(230.4)
        assertEquals(256, Op.SOLARIZE_INCREASING.argument(0, false));    // threshold 256: nothing inverted
        assertEquals(230, Op.SOLARIZE.argument(9, false));
        assertEquals(99, Op.SOLARIZE_ADD.argument(9, false));            // int(99.0)
        assertEquals(110, Op.SOLARIZE_ADD.argument(10, false));
        assertEquals(1.81, Op.COLOR_INCREASING.argument(9, false), 1e-12);
        assertEquals(0.19, Op.CONTRAST_INCREASING.argument(9, true), 1e-12);
        assertEquals(0.1, Op.SHARPNESS_INCREASING.argument(10, true), 1e-12);  // max(0.1, 1 − 0.9)
        assertEquals(1.72, Op.BRIGHTNESS.argument(9, false), 1e-12);
        assertEquals(0.27, Op.SHEAR_X.argument(9, false), 1e-12);
        assertEquals(-0.405, Op.TRANSLATE_Y_REL.argument(9, true), 1e-12);
        for (Op op : List.of(Op.AUTO_CONTRAST, Op.EQUALIZE, Op.INVERT)) assertEquals(0, op.argument(9, true));
        assertEquals(15, Op.increasingSet().size());
        assertEquals(15, Op.plainSet().size());
        // DeiT's fill: round(255·mean) of ImageNet's mean.
        assertEquals(List.of(124, 116, 104), java.util.Arrays.stream(RandAugment.fill(Normalization.IMAGENET))
                .boxed().toList());
    }

    /** timm's RandAugment.__call__ and AugmentOp.__call__, step by step, on our stream. */
    private static List<RandAugment.Layer> timmSteps(long seed, int view, int index, List<Op> ops, int n, double m,
            double mstd, double mmax, double p) {
        SplittableRandom rng = new SplittableRandom(Seeds.of(seed, RandAugment.STREAM, view, index));
        List<Op> chosen = new ArrayList<>();
        for (int i = 0; i < n; i++) chosen.add(ops.get(rng.nextInt(ops.size())));  // np.random.choice, replace
        List<RandAugment.Layer> out = new ArrayList<>();
        for (Op op : chosen) {
            if (p < 1.0 && rng.nextDouble() > p) {
                out.add(new RandAugment.Layer(op, false, 0, false));
                continue;
            }
            double mag = m;
            if (mstd > 100) {
                mag = 0 + (m - 0) * rng.nextDouble();   // random.uniform(0, m)
            } else if (mstd > 0) {
                mag = m + rng.nextGaussian() * mstd;    // random.gauss(m, mstd)
            }
            mag = Math.max(0.0, Math.min(mag, mmax));
            boolean neg = op.signed() && rng.nextDouble() > 0.5;  // _randomly_negate
            out.add(new RandAugment.Layer(op, true, mag, neg));
        }
        return out;
    }

    @Test
    void drawIsTimmsSequenceOnOurStream() {
        long seed = Check.freshSeed();
        Object[][] configs = {
            {"rand-m9-mstd0.5-inc1", Op.increasingSet(), 2, 9.0, 0.5, 10.0, 0.5},
            {"rand-m9-mstd0.5", Op.plainSet(), 2, 9.0, 0.5, 10.0, 0.5},
            {"rand-n3-m7-mstd101-inc1", Op.increasingSet(), 3, 7.0, 101.0, 10.0, 0.5},
            {"rand-m12-mmax15-mstd2-p1.0-inc1", Op.increasingSet(), 2, 12.0, 2.0, 15.0, 1.0},
            {"rand-m9-n1-p0.25", Op.plainSet(), 1, 9.0, 0.0, 10.0, 0.25},
        };
        for (Object[] c : configs) {
            RandAugment ra = new RandAugment(seed, (String) c[0]);
            @SuppressWarnings("unchecked")
            List<Op> ops = (List<Op>) c[1];
            assertEquals(ops, ra.ops(), (String) c[0]);
            for (int view = 0; view < 3; view++) {
                for (int i = 0; i < 500; i++) {
                    assertEquals(timmSteps(seed, view, i, ops, (int) c[2], (double) c[3], (double) c[4],
                            (double) c[5], (double) c[6]), ra.draw(view, i).layers(),
                            "seed=" + seed + " " + c[0] + " view " + view + " sample " + i);
                }
            }
        }
    }

    @Test
    void drawStatisticsAreDeits() {
        long seed = Check.freshSeed();
        RandAugment ra = new RandAugment(seed, "rand-m9-mstd0.5-inc1");
        int samples = 40_000, layers = 0, applied = 0, signed = 0, negated = 0;
        int[] count = new int[Op.values().length];
        double sum = 0, sumSq = 0;
        for (int i = 0; i < samples; i++) {
            RandAugment.Draw d = ra.draw(i % 7, i);
            assertEquals(2, d.layers().size());
            for (RandAugment.Layer l : d.layers()) {
                layers++;
                count[l.op().ordinal()]++;
                if (!l.applied()) continue;
                applied++;
                assertTrue(l.magnitude() >= 0 && l.magnitude() <= 10, "clipped: " + l);
                sum += l.magnitude();
                sumSq += l.magnitude() * l.magnitude();
                if (l.op().signed()) {
                    signed++;
                    if (l.negated()) negated++;
                } else {
                    assertFalse(l.negated(), "an unsigned op is never negated: " + l);
                }
            }
        }
        String s = "seed=" + seed + " ";
        for (Op op : Op.values()) {
            if (!Op.increasingSet().contains(op)) {
                assertEquals(0, count[op.ordinal()], s + op + " is not in inc1's set");
                continue;
            }
            assertEquals(layers / 15.0, count[op.ordinal()], 6 * Math.sqrt(layers / 15.0), s + op);
        }
        assertEquals(layers / 2.0, applied, 6 * Math.sqrt(layers / 4.0), s + "apply rate");
        assertEquals(signed / 2.0, negated, 6 * Math.sqrt(signed / 4.0), s + "negation rate");
        // min(9 + 0.5·Z, 10) = 9 + 0.5·min(Z, 2): E[min(Z, 2)] = −φ(2) + 2·Q(2), E[min(Z, 2)²] = Φ(2) − 2φ(2) + 4·Q(2).
        double phi2 = 0.05399096651, q2 = 0.02275013195;
        double zMean = -phi2 + 2 * q2, zVar = (1 - q2) - 2 * phi2 + 4 * q2 - zMean * zMean;
        double mean = sum / applied, std = Math.sqrt(sumSq / applied - mean * mean);
        assertEquals(9.0 + 0.5 * zMean, mean, 6 * 0.5 / Math.sqrt(applied), s + "magnitude mean");
        assertEquals(0.5 * Math.sqrt(zVar), std, 6 * 0.5 / Math.sqrt(2.0 * applied), s + "magnitude std, clipped");
        // A wide std clips: m9 ± 5 puts P(Z > 0.2) ≈ 0.421 at 10 and P(Z < −1.8) ≈ 0.036 at 0.
        RandAugment wide = new RandAugment(seed, "rand-m9-mstd5-p1.0");
        int n = 0, top = 0, bottom = 0;
        for (int i = 0; i < 20_000; i++) {
            for (RandAugment.Layer l : wide.draw(0, i).layers()) {
                n++;
                if (l.magnitude() == 10) top++;
                if (l.magnitude() == 0) bottom++;
                assertTrue(l.magnitude() >= 0 && l.magnitude() <= 10 && l.applied(), l.toString());
            }
        }
        assertEquals(0.4207 * n, top, 6 * Math.sqrt(n * 0.25), s + "clipped at 10");
        assertEquals(0.0359 * n, bottom, 6 * Math.sqrt(n * 0.04), s + "clipped at 0");
    }

    @Test
    void configStrings() {
        RandAugment deit = new RandAugment(0, "rand-m9-mstd0.5-inc1");
        assertEquals(9, deit.magnitude());
        assertEquals(2, deit.layers());
        assertEquals(0.5, deit.magnitudeStd());
        assertEquals(10, deit.magnitudeMax());
        assertEquals(0.5, deit.prob());
        assertEquals(Op.increasingSet(), deit.ops());
        RandAugment plain = new RandAugment(0, "rand");
        assertEquals(10, plain.magnitude());
        assertEquals(0, plain.magnitudeStd());
        assertEquals(Op.plainSet(), plain.ops());
        assertEquals(Op.plainSet(), new RandAugment(0, "rand-inc0").ops());
        RandAugment other = new RandAugment(0, "rand-n3-m5-mmax12-mstd200-p0.9");
        assertEquals(3, other.layers());
        assertEquals(5, other.magnitude());
        assertEquals(12, other.magnitudeMax());
        assertEquals(Double.POSITIVE_INFINITY, other.magnitudeStd());
        assertEquals(0.9, other.prob());
        String[][] bad = {
            {"", "must start with 'rand'"},
            {"augmix-m9", "must start with 'rand'"},
            {"rand-m9-foo1", "unknown section 'foo1'"},
            {"rand-m9-x", "section 'x' is not a key followed by a number"},
            {"rand-m9-", "section '' is not a key"},
            {"rand-m9-m8", "section 'm' is given twice"},
            {"rand-m9.5", "'9.5' is not a number"},
            {"rand-inc2", "inc must be 0 or 1"},
            {"rand-p1.5", "p must be in [0, 1]"},
            {"rand-n101", "layers n must be in [0, 100]"},
            {"rand-t1", "unknown section 't1'"},
            {"rand-mstdNaN", "is not a key followed by a number"},
        };
        for (String[] b : bad) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new RandAugment(0, b[0]),
                    b[0]);
            assertTrue(e.getMessage().contains(b[1]) && e.getMessage().contains("'" + b[0] + "'"), e.getMessage());
        }
        assertThrows(NullPointerException.class, () -> new RandAugment(0, null));
    }

    /** Normalised floats of 8-bit pixels, as a decoder makes them. */
    private static float[] normalised(int[] px, Normalization norm, int plane) {
        float[][] lut = norm.byteTables();
        float[] out = new float[px.length];
        for (int i = 0; i < px.length; i++) out[i] = lut[i / plane][px[i]];
        return out;
    }

    private static void assertSameFinite(float[] want, float[] got, int from, int to, String what) {
        for (int i = from; i < to; i++) {
            if (!Float.isFinite(got[i]) || !Float.isFinite(want[i]) || Float.floatToIntBits(want[i])
                    != Float.floatToIntBits(got[i])) {
                fail(what + ": float " + i + " is " + got[i] + ", expected " + want[i]);
            }
        }
    }

    /**
     * apply() on normalised floats: the layers of the draw, composed on the 8-bit pixels (each checked against
     * Pillow above), normalised back with the decoder's table; an image without an applied layer untouched; the
     * floats around the image untouched; grey and RGB.
     */
    @Test
    void applyComposesTheDrawOnDecodedPixels() {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        RandAugment ra = new RandAugment(seed, "rand-m9-mstd0.5-inc1");
        int untouched = 0, changed = 0;
        for (int channels : new int[] {1, 3}) {
            Normalization norm = channels == 1 ? Normalization.uniform(1, 0.2860f, 0.3530f) : Normalization.IMAGENET;
            int h = 19, w = 26, plane = h * w, offset = 3;
            int[] fill = RandAugment.fill(norm);
            for (int i = 0; i < 300; i++) {
                int[] px = image("x", channels, h, w, rng, 0, 255).px();
                float[] img = new float[offset + px.length + 2];
                img[0] = Float.NaN;  // outside the image: must stay as it is
                img[img.length - 1] = 7f;
                System.arraycopy(normalised(px, norm, plane), 0, img, offset, px.length);
                float[] before = img.clone();
                RandAugment.Draw d = ra.apply(img, offset, channels, h, w, norm, 4, i);
                assertEquals(ra.draw(4, i), d, "apply returns the draw");
                int[] want = px.clone();
                for (RandAugment.Layer l : d.layers()) {
                    if (l.applied()) want = RandAugment.apply(l.op(), l.argument(), want, channels, h, w, fill);
                }
                float[] expected = before.clone();
                System.arraycopy(normalised(want, norm, plane), 0, expected, offset, px.length);
                assertSameFinite(expected, img, offset, offset + px.length, "seed=" + seed + " c" + channels
                        + " sample " + i + " " + d);
                assertTrue(Float.isNaN(img[0]) && img[img.length - 1] == 7f, "floats outside the image kept");
                if (d.anyApplied()) changed++;
                else untouched++;
            }
        }
        // untouched is Binomial(600, 1/4) (two layers at p 0.5), mean 150, sd 10.6: ≤ 85 has chance 6e-11 (≤ 100: 6e-7).
        assertTrue(untouched > 85 && changed > 300, "seed=" + seed + ": " + untouched + " untouched, " + changed
                + " changed");
    }

    /** Off-grid floats (a resized crop's) are rounded to the nearest byte before the ops, clamped to [0, 255]. */
    @Test
    void floatsBetweenBytesAreRoundedToTheNearest() {
        Normalization norm = Normalization.uniform(1, 0.5f, 0.25f);
        RandAugment ra = new RandAugment(1, "rand-m9-n1-p1.0-inc1");
        int index = 0;
        while (ra.draw(0, index).layers().get(0).op() != Op.INVERT) index++;
        float[] p = {-0.4f, 0.49f, 0.51f, 100.3f, 254.6f, 300f, 127.5f};  // 127.5 → rint: 128 (half-even)
        int[] q = {0, 0, 1, 100, 255, 255, 128};
        float[] img = new float[p.length];
        for (int i = 0; i < p.length; i++) img[i] = (p[i] / 255f - 0.5f) / 0.25f;
        ra.apply(img, 0, 1, 1, p.length, norm, 0, index);
        float[][] lut = norm.byteTables();
        float[] want = new float[p.length];
        for (int i = 0; i < p.length; i++) want[i] = lut[0][255 - q[i]];
        assertSameFinite(want, img, 0, p.length, "inverted bytes");
    }

    @Test
    void drawsArePureFunctionsOfSeedViewAndIndex() throws Exception {
        long seed = Check.freshSeed();
        RandAugment a = new RandAugment(seed, "rand-m9-mstd0.5-inc1"), b = new RandAugment(seed,
                "rand-m9-mstd0.5-inc1");
        int differentIndex = 0, differentView = 0, differentSeed = 0;
        RandAugment other = new RandAugment(seed + 1, "rand-m9-mstd0.5-inc1");
        for (int i = 0; i < 200; i++) {
            assertEquals(a.draw(3, i), b.draw(3, i));
            if (!a.draw(3, i).equals(a.draw(3, i + 1))) differentIndex++;
            if (!a.draw(3, i).equals(a.draw(4, i))) differentView++;
            if (!a.draw(3, i).equals(other.draw(3, i))) differentSeed++;
        }
        assertTrue(differentIndex > 180 && differentView > 180 && differentSeed > 180,
                differentIndex + " " + differentView + " " + differentSeed);
        // Many threads at once give the single-threaded floats.
        Normalization norm = Normalization.IMAGENET;
        Random rng = new Random(seed);
        int c = 3, h = 24, w = 24, size = c * h * w, n = 64;
        float[] src = normalised(image("x", c, h, w, rng, 0, 255).px(), norm, h * w);
        float[] serial = new float[n * size];
        for (int i = 0; i < n; i++) {
            System.arraycopy(src, 0, serial, i * size, size);
            a.apply(serial, i * size, c, h, w, norm, 1, i);
        }
        float[] parallel = new float[n * size];
        ExecutorService pool = Executors.newFixedThreadPool(4);
        try {
            List<Future<?>> fs = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                int k = i;
                fs.add(pool.submit(() -> {
                    System.arraycopy(src, 0, parallel, k * size, size);
                    b.apply(parallel, k * size, c, h, w, norm, 1, k);
                }));
            }
            for (Future<?> f : fs) f.get();
        } finally {
            pool.shutdown();
        }
        assertSameFinite(serial, parallel, 0, serial.length, "seed=" + seed + " threads");
        assertNotEquals(a, other);
    }

    /**
     * Both loaders apply RandAugment after the resized crop and flip, keyed by the view: each image is the crop-only
     * augmentation's image with the draw of (view, index) applied, in memory and streamed alike, and with two FKD
     * views epoch 2 shows view 0 again.
     */
    @Test
    void loadersApplyItAfterTheCropAndFlipInMemoryAndStreamed() throws Exception {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        int n = 24, c = 3, h = 20, w = 20, size = c * h * w;
        Normalization norm = Normalization.IMAGENET;
        float[][] lut = norm.byteTables();
        float[] images = new float[n * size];
        int[] labels = new int[n];
        for (int k = 0; k < images.length; k++) images[k] = lut[(k / (h * w)) % c][rng.nextInt(256)];
        for (int i = 0; i < n; i++) labels[i] = i % 3;
        Dataset mem = new Dataset("rgb", images, labels, c, h, w, 3, norm);
        RandAugment ra = new RandAugment(seed, "rand-m9-mstd0.5-inc1");
        Augment crop = Augment.resizedCrop(seed, new RandomResizedCrop(seed, 0.2, 1, 0.75, 4 / 3.0), true).withViews(2);
        Augment aug = crop.withRandAugment(ra);
        assertTrue(aug.toString().contains(" + hflip + RandAugment rand-m9-mstd0.5-inc1, seed "), aug.toString());
        assertFalse(aug.isIdentity());
        List<BatchLoader.Batch> streamed = new ArrayList<>();
        List<float[]> streamedImages = new ArrayList<>();
        try (StreamLoader s = StreamLoader.builder(mem, 4).seed(7).epochs(3).workers(3).augment(aug).build()) {
            while (s.hasNext()) {
                BatchLoader.Batch b = s.next();
                streamed.add(b);
                streamedImages.add(b.images().clone());
            }
        }
        int changed = 0;
        float[] want = new float[size];
        try (BatchLoader b = BatchLoader.builder(mem, 4).seed(7).epochs(3).augment(aug).build()) {
            for (int k = 0; k < streamed.size(); k++) {
                BatchLoader.Batch m = b.next();
                int epoch = m.epoch();
                for (int i = 0; i < m.size(); i++) {
                    int idx = m.indices()[i];
                    crop.apply(mem, idx, epoch, want, 0);
                    float[] cropOnly = want.clone();
                    ra.apply(want, 0, c, h, w, norm, epoch % 2, idx);
                    if (!java.util.Arrays.equals(cropOnly, want)) changed++;
                    String what = "seed=" + seed + " epoch " + epoch + " image " + idx;
                    assertSameFinite(want, java.util.Arrays.copyOfRange(m.images(), i * size, (i + 1) * size), 0,
                            size, "in memory, " + what);
                    assertSameFinite(want, java.util.Arrays.copyOfRange(streamedImages.get(k), i * size,
                            (i + 1) * size), 0, size, "streamed, " + what);
                }
            }
            assertFalse(b.hasNext());
        }
        assertTrue(changed > 20, "RandAugment changed " + changed + " of " + 3 * n + " images");
    }

    @Test
    void badImagesAreRefused() {
        RandAugment ra = new RandAugment(0, "rand-m9-mstd0.5-inc1");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ra.apply(new float[32], 0, 2, 4, 4, Normalization.uniform(2, 0, 1), 0, 0));
        assertTrue(e.getMessage().contains("grey or RGB"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> ra.apply(new float[10], 0, 1, 4, 4, Normalization.uniform(1, 0, 1), 0, 0));
        assertTrue(e.getMessage().contains("does not fit in 10"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> ra.apply(new float[48], 0, 3, 4, 4, Normalization.uniform(1, 0, 1), 0, 0));
        assertTrue(e.getMessage().contains("channels"), e.getMessage());
    }
}
