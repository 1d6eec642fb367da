package org.distill4j.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.onnx.OnnxExport;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code ./distill4j export-onnx MODEL --out FILE}: a model file as an ONNX model. */
@Command(name = "export-onnx", mixinStandardHelpOptions = true,
        description = "Write a model file as an ONNX model (opset 17, float32, free batch; the two heads averaged).")
final class ExportOnnxCommand implements Callable<Integer> {
    @Parameters(index = "0", description = "model or checkpoint file (safetensors)")
    Path file;

    @Option(names = "--model", completionCandidates = Presets.class,
            description = "preset, for a file that records no config (timm): ${COMPLETION-CANDIDATES}")
    String model;

    @Option(names = "--out", required = true, description = "the ONNX file to write (an existing file is refused)")
    Path out;

    @Mixin
    ModelFileFlags modelFlags;

    @Override
    public Integer call() throws Exception {
        // Before reading the model: a typo must not cost a load, nor overwrite what is there.
        if (Files.exists(out)) throw new IllegalArgumentException(out + " exists; remove it or choose another --out");
        VitConfig config = Runs.configOf(file, model);
        try (Backend cpu = CpuBackend.open(); VisionTransformer m = modelFlags.load(cpu, file, config, 1)) {
            OnnxExport.write(m, out);
        }
        System.out.println(out + ": " + config + " as ONNX (input images [N, " + config.channels() + ", "
                + config.imageSize() + ", " + config.imageSize() + "], output logits [N, " + config.classes() + "])");
        return 0;
    }
}
