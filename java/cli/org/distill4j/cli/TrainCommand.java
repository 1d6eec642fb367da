package org.distill4j.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.train.TrainOptions;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code ./distill4j train}: trains any model (a teacher, or a student without a teacher) on labels. */
@Command(name = "train", mixinStandardHelpOptions = true,
        description = "Train a ViT/DeiT on labels (e.g. a teacher); writes model, checkpoint, results.json, accuracy.png.")
final class TrainCommand implements Callable<Integer> {
    @Mixin
    TrainingFlags flags;

    @Option(names = "--model", defaultValue = "mnist-teacher", completionCandidates = Presets.class,
            description = "preset: ${COMPLETION-CANDIDATES} (default ${DEFAULT-VALUE})")
    String model;

    @Option(names = "--init", description = "start from the parameters of this model file (safetensors, timm names)")
    Path init;

    @Option(names = "--resume", description = "resume from this checkpoint (exactly where it stopped)")
    Path resume;

    @Override
    public Integer call() throws Exception {
        OutputDirectory out = flags.output(resume != null);
        VitConfig config = VitConfig.preset(model);
        if (init != null) Inputs.file(init, "--init");
        if (resume != null) Inputs.file(resume, "--resume");
        TrainOptions options = flags.options();
        DataSets.Loaded data = flags.load(config);
        if (init == null) config = DataSets.withDataClasses(config, data, "--model", System.out);
        TrainingFlags.checkLabeled(options, data.train());
        VitConfig shape = config;
        try (Backend backend = Backends.open(Device.parse(flags.device));
             VisionTransformer m = new VisionTransformer(backend, shape, options.batch(), options.seed(),
                     flags.precision())) {
            if (init != null) ModelFile.load(init, m);
            out.use(dir -> {
                var r = Runs.train(m, model, null, data.train(), data.test(), options, dir, resume, flags.data);
                // Beside the model, once it exists: a run that fails leaves no file that makes --out look used.
                if (data.classNames() != null) data.writeClassIndex(dir);
                return r;
            });
        }
        return 0;
    }
}
