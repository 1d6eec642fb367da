package org.distill4j.onnx;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import java.nio.FloatBuffer;
import java.nio.file.Path;
import java.util.Map;
import java.util.Random;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AbstractTensor;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The ONNX writer the CNN-teacher experiment exports with: a graph using every operator and attribute kind it writes
 * (Conv with pads, Relu, MaxPool with strides, Flatten, Gemm with transB), run by ONNX Runtime, against the same
 * network in libtorch float64 on fresh random weights and inputs.
 */
class OnnxGraphTest {
    @TempDir
    Path dir;

    @Test
    @SuppressWarnings("try")
    void aConvNetWrittenHereRunsInOnnxRuntimeAsLibtorchComputesIt() throws Exception {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        int n = 5, c = 2, h = 6, w = 6, oc = 3, classes = 4, flat = oc * (h / 2) * (w / 2);
        float[] x = Check.normal(rng, n * c * h * w, 1), cw = Check.normal(rng, oc * c * 9, 0.5);
        float[] cb = Check.normal(rng, oc, 0.5), gw = Check.normal(rng, classes * flat, 0.3);
        float[] gb = Check.normal(rng, classes, 0.3);
        Path file = dir.resolve("net.onnx");
        new OnnxGraph("net").input("input", 0, c, h, w)
                .initializer("cw", new long[] {oc, c, 3, 3}, cw).initializer("cb", new long[] {oc}, cb)
                .node("Conv", new String[] {"input", "cw", "cb"}, "conv", OnnxGraph.ints("kernel_shape", 3, 3),
                        OnnxGraph.ints("pads", 1, 1, 1, 1))
                .node("Relu", new String[] {"conv"}, "relu")
                .node("MaxPool", new String[] {"relu"}, "pool", OnnxGraph.ints("kernel_shape", 2, 2),
                        OnnxGraph.ints("strides", 2, 2))
                .node("Flatten", new String[] {"pool"}, "flat", OnnxGraph.integer("axis", 1))
                .initializer("gw", new long[] {classes, flat}, gw).initializer("gb", new long[] {classes}, gb)
                .node("Gemm", new String[] {"flat", "gw", "gb"}, "logits", OnnxGraph.integer("transB", 1))
                .output("logits", 0, classes)
                .write(file, "distill4j-tests", 13);

        float[][] got;
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        try (OrtSession.SessionOptions options = new OrtSession.SessionOptions();
             OrtSession session = env.createSession(file.toString(), options);
             OnnxTensor in = OnnxTensor.createTensor(env, FloatBuffer.wrap(x), new long[] {n, c, h, w});
             OrtSession.Result r = session.run(Map.of("input", in))) {
            got = (float[][]) r.get(0).getValue();
        }
        double[] want = new double[n * classes];
        try (PointerScope ignored = new PointerScope()) {
            Tensor t = torch.conv2d(f64(x, n, c, h, w), f64(cw, oc, c, 3, 3), new TensorOptional(f64(cb, oc)),
                    new long[] {1, 1}, new long[] {1, 1}, new long[] {1, 1}, 1);
            t = torch.max_pool2d(torch.relu(t), new long[] {2, 2}, new long[] {2, 2}, new long[] {0, 0},
                    new long[] {1, 1}, false);
            t = torch.linear(t.flatten(1, -1), f64(gw, classes, flat), new TensorOptional(f64(gb, classes)));
            t.contiguous().data_ptr_double().get(want);
        }
        assertEquals(n, got.length);
        double max = 0;
        for (double v : want) max = Math.max(max, Math.abs(v));
        // float32 against float64: each output is two layers of dot products of at most 18 and 27 terms, so the
        // relative error is a few 1e-6 of the largest magnitude; a wrong pad, stride or transpose moves it by O(1).
        for (int i = 0; i < n; i++) {
            assertEquals(classes, got[i].length);
            for (int k = 0; k < classes; k++) {
                double err = Math.abs(got[i][k] - want[i * classes + k]);
                assertTrue(err <= 1e-5 * max, "seed=" + seed + " image " + i + " class " + k + ": " + got[i][k]
                        + " vs " + want[i * classes + k]);
            }
        }
        assertTrue(max > 0.1, "seed=" + seed + ": logits too small to tell (" + max + ")");
    }

    @Test
    void initializersMustHoldTheirShapesElements() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new OnnxGraph("g").initializer("w", new long[] {2, 3}, new float[5]));
        assertEquals("w: 5 values for 6 elements", e.getMessage());
        assertArrayEquals(new long[] {1, 2}, OnnxGraph.ints("pads", 1, 2).values());
    }

    private static Tensor f64(float[] v, long... shape) {
        return AbstractTensor.create(v, shape).to(ScalarType.Double);
    }
}
