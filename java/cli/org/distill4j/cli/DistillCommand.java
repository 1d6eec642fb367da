package org.distill4j.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.data.ImageSource;
import org.distill4j.data.ImageSources;
import org.distill4j.data.Normalization;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.onnx.OnnxRuntime;
import org.distill4j.onnx.OnnxTeacher;
import org.distill4j.ops.Reduction;
import org.distill4j.train.Distillation;
import org.distill4j.train.SoftLabels;
import org.distill4j.train.TrainOptions;
import org.distill4j.train.TrainingRun;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code ./distill4j distill --teacher FILE}: trains a student with a distillation token from a teacher. */
@Command(name = "distill", mixinStandardHelpOptions = true,
        description = "Train a DeiT student from a teacher model file (soft or hard distillation on its distillation token).")
final class DistillCommand implements Callable<Integer> {
    @Mixin
    TrainingFlags flags;

    @Mixin
    ModelFileFlags teacherFlags;

    @Option(names = "--teacher", description = "teacher model file: a distill4j or timm safetensors file, or an ONNX "
            + "classifier (.onnx: input [N, C, H, W], output [N, classes], run by ONNX Runtime on every batch); or "
            + "--teacher-logits")
    Path teacher;

    @Option(names = "--teacher-mean", split = ",", paramLabel = "M", description = "an ONNX teacher's input "
            + "normalisation mean per channel (default: the data's own; 0.485,0.456,0.406 for ImageNet models)")
    float[] teacherMean;

    @Option(names = "--teacher-std", split = ",", paramLabel = "S", description = "an ONNX teacher's std per channel, "
            + "with --teacher-mean")
    float[] teacherStd;

    @Option(names = "--teacher-logits", paramLabel = "FILE", description = "the teacher's logits computed elsewhere "
            + "(safetensors: logits [N, classes] or top-k, metadata distill4j.samples = the sha256 dataset-index "
            + "printed for this --data and --train-limit), instead of --teacher; needs --no-augment")
    Path teacherLogits;

    @Option(names = "--teacher-model", completionCandidates = Presets.class,
            description = "the teacher's preset, for a file that records none (timm): ${COMPLETION-CANDIDATES}")
    String teacherModel;

    @Option(names = "--model", defaultValue = "mnist-student", completionCandidates = Presets.class,
            description = "student preset: ${COMPLETION-CANDIDATES} (default ${DEFAULT-VALUE})")
    String model;

    @Option(names = "--distillation", defaultValue = "soft", description = "soft, hard or none (default ${DEFAULT-VALUE})")
    String distillation;

    @Mixin
    DistillationFlags loss;

    /** Hinton et al.'s temperature, the full experiment's. */
    private static final double TAU = 4;

    @Option(names = "--kl-reduction", defaultValue = "batchmean", description = "soft loss over the batch: batchmean "
            + "(KL per image) or mean (divided by batch x classes, as DeiT's code) (default ${DEFAULT-VALUE})")
    String klReduction;

    @Option(names = "--soft-label-topk", defaultValue = "0",
            description = "store only the top-k teacher classes in the soft-label cache (0: all)")
    int topk;

    @Option(names = "--resume", description = "resume from this checkpoint")
    Path resume;

    @Override
    public Integer call() throws Exception {
        OutputDirectory out = flags.output(resume != null);
        VitConfig student = VitConfig.preset(model);
        if (resume != null) Inputs.file(resume, "--resume");
        if ((teacher == null) == (teacherLogits == null)) {
            throw new IllegalArgumentException("give the teacher as --teacher FILE (a model) or --teacher-logits FILE "
                    + "(its logits, computed elsewhere): one of them");
        }
        // A missing teacher is the first thing to say, before any other option's value.
        if (teacher != null) Inputs.file(teacher, "--teacher");
        else Inputs.file(teacherLogits, "--teacher-logits");
        TrainOptions options = loss.apply(flags.options(), Distillation.parse(distillation), TAU)
                .withSoftReduction(Reduction.parse(klReduction));
        if (teacherLogits != null) return fromLogits(student, options, out);
        if ((teacherMean != null || teacherStd != null) && !isOnnx(teacher)) {
            throw new IllegalArgumentException("--teacher-mean/--teacher-std describe an ONNX teacher's input; "
                    + teacher + " is not an .onnx file");
        }
        if (isOnnx(teacher)) return fromOnnx(student, options, out);
        VitConfig teacherConfig = Runs.configOf(Inputs.file(teacher, "--teacher"), teacherModel);
        DataSets.Loaded data = flags.load(student);
        DataSets.checkShape(teacherConfig, data);
        student = DataSets.withDataClasses(student, data, "--model", System.out);
        VitConfig studentConfig = student;
        // Before the teacher labels any image (the soft-label cache is written ahead of the run's own checks).
        if (teacherConfig.classes() != data.train().classes()) {
            // The student's head already follows the data (withDataClasses): one count to compare.
            throw new IllegalArgumentException("the teacher predicts " + teacherConfig.classes() + " classes, the "
                    + "student " + student.classes() + " (the classes of the training set " + data.train().name()
                    + ")");
        }
        TrainingFlags.checkLabeled(options, data.train());
        try (Backend backend = Backends.open(Device.parse(flags.device));
             VisionTransformer t = teacherFlags.load(backend, teacher, teacherConfig, options.batch());
             VisionTransformer s = new VisionTransformer(backend, studentConfig, options.batch(), options.seed(),
                     flags.precision())) {
            out.use(dir -> {
                var logits = Runs.teacherLogits(t, teacher, data.train(), options,
                        dir.resolve("teacher-logits.safetensors"), topk);
                var r = Runs.train(s, model + "-" + distillation, logits, data.train(), data.test(), options, dir,
                        resume, flags.data);
                if (data.classNames() != null) data.writeClassIndex(dir); // beside the model, as train does
                return r;
            });
        }
        return 0;
    }

    /** Distils from stored logits: checked against the training set's sample list before anything is written. */
    private int fromLogits(VitConfig student, TrainOptions options, OutputDirectory out) throws Exception {
        if (teacherModel != null) throw new IllegalArgumentException("--teacher-model names a teacher file's shape: "
                + "not with --teacher-logits");
        if (options.augment() || options.mixup() != null || options.randomErasing() != null) {
            throw new IllegalArgumentException("--teacher-logits hold the teacher's view of the unaugmented images: "
                    + "train with --no-augment, and without --mixup, --cutmix and --reprob");
        }
        DataSets.Loaded data = flags.load(student);
        VitConfig studentConfig = DataSets.withDataClasses(student, data, "--model", System.out);
        TrainingFlags.checkLabeled(options, data.train());
        ImageSource train = trainingSet(data, options);
        SoftLabels logits = options.distillation() == Distillation.NONE ? null
                : SoftLabels.external(teacherLogits, train);
        if (logits != null) {
            logits.checkFor(train, options);
            System.out.println("teacher logits: " + logits.describe() + " (" + logits.images() + " images, sample list "
                    + "checked)");
        }
        return train(studentConfig, data, options, out, logits);
    }

    /** The images a run over {@code data} trains on: the training set after --train-limit. */
    private static ImageSource trainingSet(DataSets.Loaded data, TrainOptions options) {
        ImageSource train = data.train();
        int limit = options.trainLimit();
        return limit > 0 && limit < train.size() ? ImageSources.head(train, limit) : train;
    }

    /** Trains the student from logits that need no distill4j teacher model (stored, or an ONNX model's). */
    private int train(VitConfig studentConfig, DataSets.Loaded data, TrainOptions options, OutputDirectory out,
            TrainingRun.TeacherLogits logits) throws Exception {
        try (Backend backend = Backends.open(Device.parse(flags.device));
             VisionTransformer s = new VisionTransformer(backend, studentConfig, options.batch(), options.seed(),
                     flags.precision())) {
            out.use(dir -> {
                var r = Runs.train(s, model + "-" + distillation, logits, data.train(), data.test(), options, dir,
                        resume, flags.data);
                if (data.classNames() != null) data.writeClassIndex(dir);
                return r;
            });
        }
        return 0;
    }

    private static boolean isOnnx(Path file) {
        return file.getFileName().toString().toLowerCase(java.util.Locale.ROOT).endsWith(".onnx");
    }

    /** Distils from an ONNX model run by ONNX Runtime on every batch, opened and checked before anything is written. */
    private int fromOnnx(VitConfig student, TrainOptions options, OutputDirectory out) throws Exception {
        OnnxRuntime.require();
        if (teacherModel != null) throw new IllegalArgumentException("--teacher-model names a safetensors teacher's "
                + "shape; an ONNX file carries its own");
        if ((teacherMean == null) != (teacherStd == null)) {
            throw new IllegalArgumentException("--teacher-mean and --teacher-std go together");
        }
        if (options.distillation() == Distillation.NONE) {
            throw new IllegalArgumentException("--distillation none uses no teacher");
        }
        DataSets.Loaded data = flags.load(student);
        VitConfig studentConfig = DataSets.withDataClasses(student, data, "--model", System.out);
        TrainingFlags.checkLabeled(options, data.train());
        Normalization norm = null;
        if (teacherMean != null) {
            if (teacherMean.length != teacherStd.length) {
                throw new IllegalArgumentException("--teacher-mean has " + teacherMean.length + " values, --teacher-std "
                        + teacherStd.length);
            }
            norm = new Normalization(teacherMean, teacherStd);
        }
        try (OnnxTeacher onnx = OnnxTeacher.open(teacher, data.train(), norm)) {
            onnx.checkFor(trainingSet(data, options), options);
            System.out.println("teacher: " + onnx.describe());
            return train(studentConfig, data, options, out, onnx);
        }
    }
}
