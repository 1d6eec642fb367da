package org.distill4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;
import org.junit.jupiter.api.Test;

class AugmentTest {
    /** Image i has pixel (y, x) = 1000·i + 10·y + x + 1: every value says where it came from; 0 is padding. */
    private static Dataset coded(int n, int h, int w) {
        float[] images = new float[n * h * w];
        int[] labels = new int[n];
        for (int i = 0; i < n; i++) {
            for (int y = 0; y < h; y++) {
                for (int x = 0; x < w; x++) {
                    images[(i * h + y) * w + x] = 1000 * i + 10 * y + x + 1;
                }
            }
        }
        return new Dataset("coded", images, labels, 1, h, w, 1, 0f, 1f);
    }

    @Test
    void sameSeedEpochIndexGivesSameResult() {
        Dataset d = Synthetic.dataset(3, 64, 10, 28, 28);
        int[] order = BatchLoader.order(d.size(), 5, 0, true);
        float[] a = new float[32 * d.imageSize()];
        float[] b = new float[32 * d.imageSize()];
        new Augment(42, 4, true).apply(d, order, 16, 32, 3, a);
        new Augment(42, 4, true).apply(d, order, 16, 32, 3, b);
        assertArrayEquals(a, b);
        // Per sample: the same (epoch, index) gives the same image wherever it sits in a batch.
        float[] one = new float[d.imageSize()];
        new Augment(42, 4, true).apply(d, order[20], 3, one, 0);
        assertArrayEquals(one, Arrays.copyOfRange(a, 4 * d.imageSize(), 5 * d.imageSize()));
        // Another epoch or seed draws other crops.
        float[] c = new float[32 * d.imageSize()];
        new Augment(42, 4, true).apply(d, order, 16, 32, 4, c);
        assertFalse(Arrays.equals(a, c));
        new Augment(43, 4, true).apply(d, order, 16, 32, 3, c);
        assertFalse(Arrays.equals(a, c));
    }

    @Test
    void cropShiftsWithinPadAndFillsWithBlack() {
        int h = 8, w = 10, pad = 2;
        Dataset d = coded(200, h, w);
        Augment aug = new Augment(7, pad, false);
        float[] out = new float[h * w];
        Set<String> offsets = new HashSet<>();
        for (int i = 0; i < d.size(); i++) {
            Augment.Params p = aug.params(1, i);
            assertTrue(Math.abs(p.dy()) <= pad && Math.abs(p.dx()) <= pad, p.toString());
            assertFalse(p.flipped());
            offsets.add(p.dy() + "," + p.dx());
            aug.apply(d, i, 1, out, 0);
            for (int y = 0; y < h; y++) {
                for (int x = 0; x < w; x++) {
                    int sy = y + p.dy(), sx = x + p.dx();
                    float expected = sy < 0 || sy >= h || sx < 0 || sx >= w ? 0f : 1000 * i + 10 * sy + sx + 1;
                    assertEquals(expected, out[y * w + x], "image " + i + " " + p + " at " + y + "," + x);
                }
            }
        }
        assertEquals(25, offsets.size(), "every offset in [-2, 2]² occurs: " + offsets);
    }

    @Test
    void paddingUsesTheNormalisedBlack() {
        byte[] white = new byte[4 * 4];
        Arrays.fill(white, (byte) 255);
        Dataset d = Dataset.fromPixels(white, new int[] {0}, 1, 1, 4, 4, 1, 0.2860f, 0.3530f);
        Augment aug = new Augment(1, 1, false);
        int epoch = 0;
        while (aug.params(epoch, 0).dy() != 1) {
            epoch++;
        }
        float[] out = new float[16];
        aug.apply(d, 0, epoch, out, 0);
        assertEquals(d.black(), out[12], 1e-6f, "last row comes from outside the image: black, not 0");
        assertEquals((1 - 0.2860f) / 0.3530f, out[0], 1e-5f);
    }

    @Test
    void flipsActuallyFlip() {
        int h = 5, w = 7;
        Dataset d = coded(100, h, w);
        Augment aug = new Augment(9, 0, true);
        float[] out = new float[h * w];
        int flipped = 0;
        for (int i = 0; i < d.size(); i++) {
            aug.apply(d, i, 0, out, 0);
            boolean f = aug.params(0, i).flipped();
            flipped += f ? 1 : 0;
            for (int y = 0; y < h; y++) {
                for (int x = 0; x < w; x++) {
                    int sx = f ? w - 1 - x : x;
                    assertEquals(1000 * i + 10 * y + sx + 1, out[y * w + x]);
                }
            }
        }
        assertTrue(flipped > 30 && flipped < 70, "about half flipped: " + flipped);
    }

    @Test
    void multiChannelImagesCropEveryPlaneAlike() {
        int c = 3, h = 6, w = 6, size = c * h * w;
        float[] images = new float[size];
        for (int k = 0; k < size; k++) {
            images[k] = k + 1;
        }
        Dataset d = new Dataset("rgb", images, new int[] {0}, c, h, w, 1, 0f, 1f);
        Augment aug = new Augment(5, 2, true);
        float[] out = new float[size];
        aug.apply(d, 0, 0, out, 0);
        // Plane k's valid values are plane 0's plus k·h·w.
        for (int k = 1; k < c; k++) {
            for (int j = 0; j < h * w; j++) {
                float v0 = out[j];
                float vk = out[k * h * w + j];
                assertEquals(v0 == 0 ? 0 : v0 + k * h * w, vk, "plane " + k + " pixel " + j);
            }
        }
    }

    @Test
    void noneIsACopyAndShapeIsChecked() {
        Dataset d = coded(4, 3, 3);
        float[] out = new float[4 * 9];
        Augment.none().apply(d, new int[] {3, 2, 1, 0}, 0, 4, 0, out);
        assertEquals(3001, out[0]);
        assertEquals(1, out[27]);
        assertThrows(IllegalArgumentException.class,
                () -> Augment.none().apply(d, new int[] {0, 1}, 0, 2, 0, new float[9]));
        assertThrows(IllegalArgumentException.class, () -> new Augment(0, 3, false).apply(d, 0, 0, out, 0));
        assertThrows(IllegalArgumentException.class, () -> new Augment(0, -1, false));
    }

    @Test
    void fixedViewsRepeatEveryKEpochs() {
        Dataset d = Synthetic.dataset(3, 40, 10, 12, 12);
        for (Augment base : new Augment[] {new Augment(42, 3, true),
            Augment.resizedCrop(42, RandomResizedCrop.standard(7), true)}) {
            Augment views = base.withViews(3);
            assertEquals(3, views.views());
            assertEquals(1, views.view(4));
            int size = d.imageSize(), differ = 0;
            for (int i = 0; i < d.size(); i++) {
                float[] e0 = new float[size], e3 = new float[size], e1 = new float[size], plain = new float[size];
                views.apply(d, i, 0, e0, 0);
                views.apply(d, i, 3, e3, 0);
                views.apply(d, i, 1, e1, 0);
                base.apply(d, i, 1, plain, 0);
                assertArrayEquals(e0, e3, "epoch 3 shows view 0 again, image " + i);
                assertArrayEquals(plain, e1, "view 1 is the unlimited augmentation's epoch 1");
                if (!Arrays.equals(e0, e1)) differ++;
            }
            assertTrue(differ > 30, base + ": views 0 and 1 differ for " + differ + " of 40 images");
        }
        assertThrows(IllegalArgumentException.class, () -> new Augment(1, 2, true).withViews(-1));
    }
}
