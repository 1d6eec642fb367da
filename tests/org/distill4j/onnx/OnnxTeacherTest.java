package org.distill4j.onnx;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.backend.CpuBackend;
import org.distill4j.data.Dataset;
import org.distill4j.data.ImageSource;
import org.distill4j.data.Normalization;
import org.distill4j.data.Resize;
import org.distill4j.data.Synthetic;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.Check;
import org.distill4j.testing.OnnxFiles;
import org.distill4j.train.Distillation;
import org.distill4j.train.TrainOptions;
import org.distill4j.train.TrainingRun;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An ONNX teacher (a linear classifier written byte by byte, run by ONNX Runtime) against its logits computed here in
 * float64 from the batch it was given: re-normalised, resized, dynamic and fixed batch axes; inside a training run,
 * on the batch the student sees (mixed, erased); and every misfit refused with a clear message.
 */
class OnnxTeacherTest {
    private static final VitConfig STUDENT = VitConfig.of(16, 4, 1, 4, 64, 1, 2, 2, true);
    private static final int BATCH = 16;
    private static final PrintStream QUIET = new PrintStream(OutputStream.nullOutputStream());
    private static final Normalization TEACHER = new Normalization(new float[] {0.3f}, new float[] {0.2f});

    static {
        System.setProperty("distill4j.progress", "off");
    }

    @TempDir
    Path dir;

    private record Linear(Path file, float[] w, float[] b, int c, int h, int wd) {
        /**
         * Logits of one image already in the teacher's input space ([c, h, w] floats), in float64, and for each the
         * float32 error bound: a K-term dot product summed in float32 is within (K + 1)·u·(|b| + Σ|w·x|) of the exact
         * value (Higham, Accuracy and Stability, §3.1; u = 2⁻²⁴), and the input's own float32 rounding (undo the
         * normalisation, redo it: three operations) adds 3u·Σ|w·x|.
         */
        double[][] of(double[] x) {
            double[] out = new double[b.length], tol = new double[b.length];
            double u = Math.ulp(1f) / 2;
            for (int k = 0; k < b.length; k++) {
                double acc = b[k], mag = Math.abs(b[k]);
                for (int j = 0; j < x.length; j++) {
                    acc += (double) w[k * x.length + j] * x[j];
                    mag += Math.abs((double) w[k * x.length + j] * x[j]);
                }
                out[k] = acc;
                tol[k] = (x.length + 4) * u * mag;
            }
            return new double[][] {out, tol};
        }
    }

    private Linear linear(String name, long batch, int c, int h, int w, int classes, long seed) throws IOException {
        Random rng = new Random(seed);
        float[] weight = Check.normal(rng, classes * c * h * w, 0.3), bias = Check.normal(rng, classes, 1);
        Path file = dir.resolve(name);
        OnnxFiles.linear(file, batch, c, h, w, weight, bias);
        return new Linear(file, weight, bias, c, h, w);
    }

    /** The teacher's input for image {@code i} of a [B, c, h, w] batch normalised as {@code data}, per the contract. */
    private static double[] teacherInput(float[] images, int i, ImageSource data, int th, int tw) {
        int c = data.channels(), h = data.height(), w = data.width(), size = c * h * w;
        float[] px = new float[size];
        for (int ch = 0; ch < c; ch++) {
            for (int k = 0; k < h * w; k++) {
                px[ch * h * w + k] = images[i * size + ch * h * w + k] * data.normalization().std()[ch]
                        + data.normalization().mean()[ch];
            }
        }
        float[] sized = th == h && tw == w ? px : Resize.resize(px, c, h, w, th, tw);
        double[] x = new double[sized.length];
        for (int k = 0; k < x.length; k++) x[k] = (sized[k] - 0.3) / 0.2;
        return x;
    }

    private static void assertLogits(Linear m, float[] images, float[] got, ImageSource data, String what) {
        int classes = m.b().length, n = got.length / classes;
        for (int i = 0; i < n; i++) {
            double[][] want = m.of(teacherInput(images, i, data, m.h(), m.wd()));
            for (int k = 0; k < classes; k++) {
                double err = Math.abs(got[i * classes + k] - want[0][k]);  // NaN fails the comparison below
                assertTrue(err <= want[1][k], what + ": image " + i + " class " + k + ": " + got[i * classes + k]
                        + " vs " + want[0][k] + " (bound " + want[1][k] + ")");
            }
        }
    }

    private static float[] batchOf(Dataset d, int[] idx) {
        float[] out = new float[idx.length * d.imageSize()];
        for (int i = 0; i < idx.length; i++) d.copyImage(idx[i], out, i * d.imageSize());
        return out;
    }

    @Test
    void logitsAreTheModelsOnTheRenormalisedAndResizedBatch() throws IOException {
        long seed = Check.freshSeed();
        Dataset data = Synthetic.dataset(seed, 40, 5, 16, 16);
        int[] idx = {3, 17, 0, 39, 8, 8};
        float[] images = batchOf(data, idx);
        // Dynamic batch at the data's size; a fixed batch of 1 (run image by image); a fixed batch of 6; and a
        // teacher of another resolution (8×8: resized), another (20×12: up one way, down the other).
        Linear[] models = {linear("dyn.onnx", 0, 1, 16, 16, 5, seed), linear("one.onnx", 1, 1, 16, 16, 5, seed + 1),
            linear("six.onnx", 6, 1, 16, 16, 5, seed + 2), linear("small.onnx", 0, 1, 8, 8, 5, seed + 3),
            linear("odd.onnx", 0, 1, 20, 12, 5, seed + 4)};
        for (Linear m : models) {
            try (OnnxTeacher t = OnnxTeacher.open(m.file(), data, TEACHER)) {
                assertEquals(5, t.classes());
                assertTrue(Arrays.equals(new int[] {1, m.h(), m.wd()}, t.inputShape()), m.file().toString());
                float[] out = new float[idx.length * 5];
                Arrays.fill(out, Float.NaN);
                t.logits(images, idx, 0, out);
                assertLogits(m, images, out, data, "seed=" + seed + " " + m.file().getFileName());
                assertTrue(t.describe().contains("run on every batch"), t.describe());
            }
        }
    }

    @Test
    void greyImagesAreCopiedIntoTheThreeChannelsOfAnRgbTeacher() throws IOException {
        long seed = Check.freshSeed();
        Dataset grey = Synthetic.dataset(seed, 12, 4, 16, 16);
        int[] idx = {0, 5, 11};
        float[] images = batchOf(grey, idx);
        int plane = 16 * 16;
        for (Normalization norm : new Normalization[] {null, Normalization.IMAGENET}) {
            Linear m = linear("rgb.onnx", 0, 3, 16, 16, 4, seed);
            try (OnnxTeacher t = OnnxTeacher.open(m.file(), grey, norm)) {
                assertTrue(Arrays.equals(new int[] {3, 16, 16}, t.inputShape()));
                float[] out = new float[idx.length * 4];
                t.logits(images, idx, 0, out);
                for (int i = 0; i < idx.length; i++) {
                    // The pixel p (the data's normalisation undone) in each channel c, normalised as the teacher's
                    // channel c wants; without a teacher normalisation, the data's own in every channel.
                    double[] x = new double[3 * plane];
                    for (int c = 0; c < 3; c++) {
                        for (int k = 0; k < plane; k++) {
                            double p = images[i * plane + k] * (double) grey.normalization().std()[0]
                                    + grey.normalization().mean()[0];
                            double mean = norm == null ? grey.normalization().mean()[0] : norm.mean()[c];
                            double std = norm == null ? grey.normalization().std()[0] : norm.std()[c];
                            x[c * plane + k] = (p - mean) / std;
                        }
                    }
                    double[][] want = m.of(x);
                    for (int k = 0; k < 4; k++) {
                        assertTrue(Math.abs(out[i * 4 + k] - want[0][k]) <= want[1][k], "seed=" + seed + " " + norm
                                + " image " + i + " class " + k + ": " + out[i * 4 + k] + " vs " + want[0][k]);
                    }
                }
            }
        }
    }

    /** Records what the run handed the teacher, and checks each batch's logits on the spot. */
    private static final class Recording implements TrainingRun.TeacherLogits {
        final OnnxTeacher inner;
        final Linear model;
        final Dataset data;
        final List<float[]> batches = new ArrayList<>();
        final List<int[]> indices = new ArrayList<>();

        Recording(OnnxTeacher inner, Linear model, Dataset data) {
            this.inner = inner;
            this.model = model;
            this.data = data;
        }

        @Override
        public VisionTransformer model() {
            return inner.model();
        }

        @Override
        public void checkFor(ImageSource train, TrainOptions options) {
            inner.checkFor(train, options);
        }

        @Override
        public void logits(float[] images, int[] idx, int epoch, float[] out) {
            inner.logits(images, idx, epoch, out);
            assertLogits(model, images, out, data, "in the run");
            batches.add(Arrays.copyOf(images, idx.length * data.imageSize()));
            indices.add(idx.clone());
        }

        @Override
        public String describe() {
            return inner.describe();
        }
    }

    @Test
    void inARunTheTeacherSeesTheBatchAsTheStudentDoesMixedIncluded() throws IOException {
        long seed = Check.freshSeed();
        Dataset train = Synthetic.dataset(seed, 64, 4, 16, 16), test = Synthetic.dataset(seed + 1, 32, 4, 16, 16);
        Linear m = linear("t.onnx", 0, 1, 12, 12, 4, seed);
        TrainOptions plain = new TrainOptions().withEpochs(1).withBatch(BATCH).withAugment(false).withSeed(5)
                .withDistillation(Distillation.SOFT, 0.5, 2.0);
        try (Backend be = CpuBackend.open(); OnnxTeacher t = OnnxTeacher.open(m.file(), train, TEACHER)) {
            // Mixup alone (λ strictly inside (0, 1): every image changes), so that only a teacher called after the
            // mixing sees a changed batch; then Mixup/CutMix with random erasing, DeiT's recipe.
            TrainOptions[] runs = {plain, plain.withMixup(0.8, 0, 1.0, 0.5),
                plain.withMixup(0.8, 1.0, 1.0, 0.5).withRandomErasing(0.5)};
            for (TrainOptions o : runs) {
                boolean mixed = o != plain;
                Recording rec = new Recording(t, m, train);
                try (VisionTransformer s = new VisionTransformer(be, STUDENT, BATCH, 3)) {
                    TrainingRun.Result r = TrainingRun.builder(s, train, test).options(o).log(QUIET).teacher(rec)
                            .run();
                    assertTrue(Double.isFinite(r.epochs().get(0).trainLoss()));
                }
                assertEquals(64 / BATCH, rec.batches.size(), "one teacher call per step");
                // Without mixing the teacher's batch is the data's images; with it, no batch is.
                int same = 0;
                for (int k = 0; k < rec.batches.size(); k++) {
                    if (Arrays.equals(rec.batches.get(k), batchOf(train, rec.indices.get(k)))) same++;
                }
                assertEquals(mixed ? 0 : rec.batches.size(), same, "seed=" + seed + " " + o);
            }
        }
    }

    /**
     * The same teacher driving a run on the CUDA kernels (emulated on the CPU): it is handed the same batches as on
     * the CPU backend, its logits are checked on each, and the run's loss agrees with the CPU run's — 4 AdamW steps
     * from the same start, kernels that differ in summation order only, so within 1 %; logits that did not reach the
     * student's loss would move it by far more.
     */
    @Test
    void theEmulatedCudaBackendTrainsFromItAsTheCpuBackendDoes() throws IOException {
        long seed = Check.freshSeed();
        Dataset train = Synthetic.dataset(seed, 64, 4, 16, 16), test = Synthetic.dataset(seed + 1, 32, 4, 16, 16);
        Linear m = linear("t.onnx", 0, 1, 12, 12, 4, seed);
        TrainOptions o = new TrainOptions().withEpochs(1).withBatch(BATCH).withSeed(5)
                .withDistillation(Distillation.SOFT, 0.5, 2.0);
        double[] loss = new double[2];
        List<List<float[]>> seen = new ArrayList<>();
        Device[] devices = {Device.cpu(), Device.cudaEmu()};
        for (int d = 0; d < 2; d++) {
            try (Backend be = Backends.open(devices[d]); OnnxTeacher t = OnnxTeacher.open(m.file(), train, TEACHER);
                 VisionTransformer s = new VisionTransformer(be, STUDENT, BATCH, 3)) {
                Recording rec = new Recording(t, m, train);
                loss[d] = TrainingRun.builder(s, train, test).options(o).log(QUIET).teacher(rec).run().epochs().get(0)
                        .trainLoss();
                seen.add(rec.batches);
            }
        }
        assertEquals(seen.get(0).size(), seen.get(1).size());
        for (int k = 0; k < seen.get(0).size(); k++) {
            assertArrayEquals(seen.get(0).get(k), seen.get(1).get(k), "batch " + k);
        }
        assertTrue(Math.abs(loss[1] - loss[0]) <= 0.01 * Math.abs(loss[0]),
                "seed=" + seed + ": cuda-emu loss " + loss[1] + ", cpu " + loss[0]);
    }

    @Test
    void misfitsAreRefusedNamingThem() throws IOException {
        long seed = Check.freshSeed();
        Dataset grey = Synthetic.dataset(seed, 32, 4, 16, 16);
        Path junk = Files.write(dir.resolve("junk.onnx"), "not a model".getBytes());
        IOException io = assertThrows(IOException.class, () -> OnnxTeacher.open(junk, grey, null));
        assertTrue(io.getMessage().contains("junk.onnx is not an ONNX model ONNX Runtime can load"), io.getMessage());
        io = assertThrows(IOException.class, () -> OnnxTeacher.open(dir.resolve("none.onnx"), grey, null));
        assertTrue(io.getMessage().contains("no such file"), io.getMessage());

        // An RGB image is not made grey for a grey teacher (the other way round is the test below).
        float[] px = Check.normal(new java.util.Random(seed), 8 * 3 * 16 * 16, 1);
        Dataset rgbData = new Dataset("rgb", px, new int[8], 3, 16, 16, 4, 0f, 1f);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> OnnxTeacher.open(linear("g.onnx", 0, 1, 16, 16, 4, seed).file(), rgbData, null));
        assertTrue(e.getMessage().contains("takes images of 1 channel(s); the data rgb has 3 (an RGB image is not "
                + "made grey"), e.getMessage());

        TrainOptions o = new TrainOptions().withBatch(BATCH);
        try (OnnxTeacher five = OnnxTeacher.open(linear("five.onnx", 0, 1, 16, 16, 5, seed).file(), grey, null)) {
            e = assertThrows(IllegalArgumentException.class, () -> five.checkFor(grey, o));
            assertTrue(e.getMessage().contains("predicts 5 classes; the training set"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class,
                    () -> five.checkFor(Synthetic.dataset(seed, 32, 5, 8, 8), o));
            assertTrue(e.getMessage().contains("was opened for 1×16×16 images"), e.getMessage());
        }
        try (OnnxTeacher seven = OnnxTeacher.open(linear("seven.onnx", 7, 1, 16, 16, 4, seed).file(), grey, null)) {
            e = assertThrows(IllegalArgumentException.class, () -> seven.checkFor(grey, o));
            assertTrue(e.getMessage().contains("takes batches of exactly 7 images; this run's batch is 16"),
                    e.getMessage());
        }
        e = assertThrows(IllegalArgumentException.class, () -> OnnxTeacher.open(
                linear("m.onnx", 0, 1, 16, 16, 4, seed).file(), grey, Normalization.CIFAR10));
        assertTrue(e.getMessage().contains("mean/std have 3 channel(s), its input 1"), e.getMessage());
    }

    @Test
    void withoutOnnxRuntimeTheMessageNamesTheArtifact() throws Exception {
        assertTrue(OnnxRuntime.available());
        // The library's classes alone, without ONNX Runtime's jar: what a user who did not add it has.
        URL library = OnnxRuntime.class.getProtectionDomain().getCodeSource().getLocation();
        try (URLClassLoader bare = new URLClassLoader(new URL[] {library}, ClassLoader.getPlatformClassLoader())) {
            Class<?> c = bare.loadClass(OnnxRuntime.class.getName());
            assertEquals(false, c.getMethod("available").invoke(null));
            InvocationTargetException e = assertThrows(InvocationTargetException.class,
                    () -> c.getMethod("require").invoke(null));
            IllegalStateException cause = assertInstanceOf(IllegalStateException.class, e.getCause());
            assertTrue(cause.getMessage().contains("add com.microsoft.onnxruntime:onnxruntime:1.23.2"),
                    cause.getMessage());
            assertFalse(cause.getMessage().contains("ClassNotFound"), cause.getMessage());
        }
    }
}
