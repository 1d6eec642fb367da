package org.distill4j.cli;

import static org.distill4j.cli.CliTest.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Random;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.reference.Errors;
import org.distill4j.testing.Check;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code export-onnx}: the file ONNX Runtime runs is the model file's model; a taken --out is one line. */
class ExportOnnxCliTest {
    @TempDir
    Path dir;

    static {
        System.setProperty("distill4j.progress", "off");
    }

    @Test
    void theOnnxFileComputesTheModelFilesPrediction() throws Exception {
        long seed = Check.freshSeed();
        Random rng = new Random(seed);
        VitConfig config = VitConfig.preset("mnist-tiny");
        int batch = 2, size = config.channels() * config.imageSize() * config.imageSize();
        Path model = dir.resolve("model.safetensors"), onnx = dir.resolve("model.onnx");
        float[] images = Check.normal(rng, batch * size, 1.0), want;
        try (Backend cpu = CpuBackend.open(); VisionTransformer m = new VisionTransformer(cpu, config, batch, seed)) {
            ModelFile.save(model, m);
            want = m.predict(images);
        }
        CliTest.Run r = run("export-onnx", model.toString(), "--out", onnx.toString());
        assertEquals(0, r.status(), r.err());
        float[][] got;
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        try (OrtSession.SessionOptions options = new OrtSession.SessionOptions();
             OrtSession session = env.createSession(onnx.toString(), options);
             OnnxTensor in = OnnxTensor.createTensor(env, FloatBuffer.wrap(images),
                     new long[] {batch, config.channels(), config.imageSize(), config.imageSize()});
             OrtSession.Result res = session.run(Map.of("images", in))) {
            got = (float[][]) res.get(0).getValue();
        }
        float[] flat = new float[want.length];
        for (int i = 0; i < batch; i++) System.arraycopy(got[i], 0, flat, i * config.classes(), config.classes());
        // Two float32 computations of one model, each within 1e-4 of float64 (OnnxExportTest, VisionTransformerTest).
        double err = Errors.relative(flat, want);
        assertTrue(err <= 2e-4, "seed=" + seed + ": ONNX Runtime vs predict, rel err " + err);

        // A taken --out is refused before the model is read, and left as it was.
        byte[] before = Files.readAllBytes(onnx);
        CliTest.assertOneLineOnly(run("export-onnx", model.toString(), "--out", onnx.toString()),
                onnx + " exists; remove it or choose another --out");
        assertTrue(java.util.Arrays.equals(before, Files.readAllBytes(onnx)), "the existing file untouched");
        Path other = dir.resolve("other.onnx");
        CliTest.assertOneLineOnly(run("export-onnx", dir.resolve("missing.safetensors").toString(), "--out",
                other.toString()), "missing.safetensors");
        assertTrue(Files.notExists(other), "nothing written for a missing model file");
    }
}
