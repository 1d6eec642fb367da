package org.distill4j.onnx;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.Random;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.reference.Errors;
import org.distill4j.reference.TorchVit;
import org.distill4j.reference.VitCheck;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The exported ViT, run by ONNX Runtime, against libtorch's float64 ViT on the same fresh random parameters and
 * images, held to the bound our own model is (VisionTransformerTest: 1e-4 normwise relative), and against our
 * model's {@code predict}.
 */
class OnnxExportTest {
    private static final double TOL = 1e-4;

    @TempDir
    Path dir;

    private static float[][] runOnnx(Path file, float[] images, long... shape) throws Exception {
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        try (OrtSession.SessionOptions options = new OrtSession.SessionOptions();
             OrtSession session = env.createSession(file.toString(), options);
             OnnxTensor in = OnnxTensor.createTensor(env, FloatBuffer.wrap(images), shape);
             OrtSession.Result r = session.run(Map.of("images", in))) {
            return (float[][]) r.get(0).getValue();
        }
    }

    private static float[] flat(float[][] rows) {
        int c = rows[0].length;
        float[] out = new float[rows.length * c];
        for (int i = 0; i < rows.length; i++) System.arraycopy(rows[i], 0, out, i * c, c);
        return out;
    }

    @Test
    void theExportedModelComputesWhatTheModelDoes() throws Exception {
        // Distilled grey (two heads averaged), plain RGB with odd classes, head dims 32 and 64.
        for (VitConfig config : new VitConfig[] {VitConfig.of(28, 7, 1, 10, 64, 2, 2, 4, true),
                                                 VitConfig.of(32, 8, 3, 7, 64, 1, 1, 2, false)}) {
            long seed = Check.freshSeed();
            Random rng = new Random(seed);
            int batch = 3, size = config.channels() * config.imageSize() * config.imageSize(), c = config.classes();
            try (Backend cpu = CpuBackend.open(); VisionTransformer m = new VisionTransformer(cpu, config, batch, 0)) {
                Map<String, float[]> values = VitCheck.randomize(m, rng);
                float[] images = Check.normal(rng, batch * size, 1.0);
                Path file = dir.resolve("model-" + config.classes() + ".onnx");
                OnnxExport.write(m, file);

                double[] want = new double[batch * c];
                try (TorchVit torch = new TorchVit(config, batch, values, VisionTransformer.parameterShapes(config),
                        true)) {
                    TorchVit.Result r = torch.run(images, new float[batch * c], config.distilled() ? new float[batch * c]
                            : null);
                    for (int i = 0; i < want.length; i++) {
                        want[i] = config.distilled() ? 0.5 * (r.logits()[i] + r.distLogits()[i]) : r.logits()[i];
                    }
                }
                String what = "seed=" + seed + " " + config;
                float[] onnx = flat(runOnnx(file, images, batch, config.channels(), config.imageSize(),
                        config.imageSize()));
                double err = Errors.relative(onnx, want);
                System.out.println(what + ": ONNX Runtime vs float64, rel err " + err);
                assertTrue(err <= TOL, what + ": ONNX Runtime vs float64, rel err " + err);
                float[] ours = m.predict(images);
                assertTrue(Errors.relative(ours, want) <= TOL, what + ": ours vs float64");
                // The batch is free: one image alone gives its row of the batch of three (ONNX Runtime's own sums).
                float[][] one = runOnnx(file, Arrays.copyOfRange(images, size, 2 * size), 1, config.channels(),
                        config.imageSize(), config.imageSize());
                assertEquals(1, one.length);
                double errOne = Errors.relative(one[0], Arrays.copyOfRange(want, c, 2 * c));
                assertTrue(errOne <= TOL, what + ": one image, rel err " + errOne);
            }
        }
    }

    @Test
    void aFailedWriteLeavesTheOldFile() throws Exception {
        VitConfig config = VitConfig.of(8, 4, 1, 3, 32, 1, 1, 1, true);
        Path file = dir.resolve("model.onnx");
        Files.writeString(file, "old");
        try (Backend cpu = CpuBackend.open(); VisionTransformer m = new VisionTransformer(cpu, config, 1, 0)) {
            m.close();  // reading its parameters now fails
            assertThrows(IllegalStateException.class, () -> OnnxExport.write(m, file));
        }
        assertEquals("old", Files.readString(file));
        try (var files = Files.list(dir)) {
            assertArrayEquals(new Object[] {file}, files.toArray(), "no temporary file left");
        }
        assertThrows(IllegalArgumentException.class, () -> OnnxExport.write(null, dir.resolve("never.onnx")));
        assertFalse(Files.exists(dir.resolve("never.onnx")));
    }
}
