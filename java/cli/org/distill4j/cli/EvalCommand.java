package org.distill4j.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.train.Evaluator;
import org.distill4j.train.TrainingRun;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code ./distill4j eval MODEL}: test accuracy of a model file. */
@Command(name = "eval", mixinStandardHelpOptions = true, description = "Test accuracy of a model file (each head and their average).")
final class EvalCommand implements Callable<Integer> {
    @Parameters(index = "0", description = "model or checkpoint file (safetensors)")
    Path file;

    @Option(names = "--model", completionCandidates = Presets.class,
            description = "preset, for a file that records no config (timm): ${COMPLETION-CANDIDATES}")
    String model;

    @Mixin
    DataFlags data;

    @Option(names = "--device", defaultValue = "best",
            description = "cpu, cuda[:N], cuda-emu (the CUDA kernels emulated on the CPU: tests only, slow) or best "
                    + "(default ${DEFAULT-VALUE})")
    String device;

    @Option(names = "--batch", defaultValue = "256", description = "batch size (default ${DEFAULT-VALUE})")
    int batch;

    @Option(names = "--test-limit", defaultValue = "0", description = "use the first N test images (0: all)")
    int testLimit;

    @Mixin
    ModelFileFlags modelFlags;

    @Override
    public Integer call() throws Exception {
        if (testLimit < 0) throw new IllegalArgumentException("--test-limit must be >= 0, got " + testLimit);
        VitConfig config = Runs.configOf(file, model);
        DataSets.layout(data.request()); // a missing or unrecognised directory, before the model is read
        try (Backend backend = Backends.open(Device.parse(device));
             VisionTransformer m = modelFlags.load(backend, file, config, batch)) {
            // After the model file's own checks (its size, its tensors), before any image is decoded.
            DataSets.Loaded loaded = DataSets.load(data.request(), config, false, System.out);
            DataSets.checkShape(config, loaded);
            if (loaded.test().classes() != config.classes()) {
                throw new IllegalArgumentException(file + " predicts " + config.classes() + " classes; the data "
                        + loaded.description() + " has " + loaded.test().classes());
            }
            var test = loaded.test();
            Evaluator.Accuracy a = Evaluator.evaluate(m, test, testLimit, data.workers,
                    data.skipBadImages ? System.out : null);
            System.out.println(file + " (" + config + "): test accuracy " + TrainingRun.format(a) + " on " + a.images()
                    + " images");
        }
        return 0;
    }
}
