package org.distill4j.train;

import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Objects;
import org.distill4j.backend.Backend;
import org.distill4j.data.Augment;
import org.distill4j.data.BatchLoader;
import org.distill4j.data.BatchSource;
import org.distill4j.data.Dataset;
import org.distill4j.data.ImageSource;
import org.distill4j.data.ImageSources;
import org.distill4j.data.Mixup;
import org.distill4j.data.RandomErasing;
import org.distill4j.data.StreamLoader;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;

/**
 * A whole training run: epochs of {@link Trainer} steps over a background {@link BatchLoader} (an in-memory
 * {@link Dataset}) or {@link StreamLoader} (any other {@link ImageSource}, decoded on worker threads), a progress bar,
 * evaluation on the test set after every epoch, a checkpoint after every epoch (model, optimizer moments, step,
 * epoch; written atomically) from which a later run resumes exactly, and the final model. Random erasing and
 * Mixup/CutMix ({@link TrainOptions#withRandomErasing}, {@link TrainOptions#withMixup}) are applied here, to each
 * batch the loader hands over, before the step.
 *
 * <p>A transfer set ({@link TrainOptions#withLabeled}): with a distillation mode every training image is visited and
 * only the labeled ones carry a cross-entropy term (the weighting is {@link Trainer}'s); without one the run trains
 * on the labeled images alone. The teacher's logits cover every image either way.
 *
 * <p>Exact resume: an epoch's shuffle and augmentation depend only on (seed, epoch, index), the CPU kernels are
 * deterministic, and the checkpoint holds every other piece of state; a run resumed from epoch k's checkpoint
 * produces the same parameters as one that never stopped.
 */
public final class TrainingRun {
    private TrainingRun() {}

    /**
     * What one epoch gave. The training loss and accuracy are over the steps applied; {@code skippedSteps} counts
     * those skipped for a non-finite loss or gradient norm ({@link TrainOptions#withSkipNonFinite}; 0 in a
     * checkpoint written before it existed).
     */
    public record Epoch(int epoch, double trainLoss, double trainAccuracy, Evaluator.Accuracy test, double seconds,
                        double imagesPerSecond, long skippedSteps) {}

    /**
     * The run's outcome: per-epoch results, the final test accuracy, the wall time (a resumed run's includes the
     * epochs before the interruption), where the teacher's logits came from, the images an epoch visits, how many of
     * them kept their labels and which ({@link TrainOptions#labeledDescription()}: "all" without a transfer set).
     * An epoch's training accuracy counts the labeled images only (NaN when an epoch held none).
     */
    public record Result(String name, VitConfig config, long parameters, List<Epoch> epochs, Evaluator.Accuracy test,
                         double seconds, String teacherSource, int trainImages, int labeled, String labeledSubset) {}

    /** Where the teacher's logits come from during a distillation run. */
    public interface TeacherLogits {
        /** The teacher model run on each batch (null when the logits are stored). */
        VisionTransformer model();

        /**
         * Throws {@link IllegalArgumentException} when these logits cannot serve a run over {@code train} with
         * {@code options} (other images, another class count, stored logits with augmentation). Called before the
         * first step.
         */
        void checkFor(ImageSource train, TrainOptions options);

        /**
         * Writes the teacher's logits of a batch of {@code epoch} into {@code out} [B·classes] when {@link #model()}
         * is null: stored ones of images {@code indices} (or of the epoch's view of them, {@link
         * SoftLabels#computeViews}), or, for a teacher run outside distill4j's models (an ONNX file), computed from
         * {@code images}, the batch as the student sees it (augmented, erased and mixed). A teacher with a model
         * is run by the trainer and never asked.
         */
        default void logits(float[] images, int[] indices, int epoch, float[] out) {
            throw new UnsupportedOperationException("this teacher's model runs on the batch in the trainer");
        }

        /** How the run reports it, e.g. "teacher model, every batch" or "soft labels from FILE". */
        String describe();
    }

    /**
     * A run that trains {@code student} on {@code train} and evaluates it on {@code test} after every epoch; set
     * what else it needs on the builder, then {@link Builder#run}.
     */
    public static Builder builder(VisionTransformer student, Dataset train, Dataset test) {
        return new Builder(student, train, test);
    }

    /**
     * A run over streamed data ({@link org.distill4j.data.Cifar}, {@link org.distill4j.data.ImageFolder}, or any
     * {@link ImageSource}): batches are decoded on {@link Builder#workers} threads ahead of the step, the memory held
     * is the loader's queue, and the batches are those an in-memory {@link Dataset} of the same images would give.
     */
    public static Builder builder(VisionTransformer student, ImageSource train, ImageSource test) {
        return new Builder(student, train, test);
    }

    /** What a run needs beyond the model and the data; every setting has a default but the teacher. */
    public static final class Builder {
        private final VisionTransformer student;
        private final ImageSource train, test;
        private String name = "run";
        private int workers = 2;
        private PrintStream badImages;
        private TeacherLogits teacher;
        private TrainOptions options = new TrainOptions();
        private Path checkpoint, resume;
        private PrintStream log = System.out;
        private int stopAfter = Integer.MAX_VALUE;

        private Builder(VisionTransformer student, ImageSource train, ImageSource test) {
            this.student = Objects.requireNonNull(student, "student");
            this.train = Objects.requireNonNull(train, "train");
            this.test = Objects.requireNonNull(test, "test");
        }

        /** Decoding threads for streamed data (default 2); no effect on an in-memory {@link Dataset}. */
        public Builder workers(int workers) {
            if (workers < 1) throw new IllegalArgumentException("workers must be >= 1, got " + workers);
            this.workers = workers;
            return this;
        }

        /** Streamed data: skip undecodable images, logging each once to {@code log} (default: stop the run). */
        public Builder skipBadImages(PrintStream log) {
            this.badImages = Objects.requireNonNull(log, "log");
            return this;
        }

        /** How the logs and the result call the run (default "run"). */
        public Builder name(String name) {
            this.name = Objects.requireNonNull(name, "name");
            return this;
        }

        /**
         * The teacher's logits ({@link SoftLabels#compute}, {@link SoftLabels#live}); required when the options
         * distill, refused when they do not.
         */
        public Builder teacher(TeacherLogits teacher) {
            this.teacher = Objects.requireNonNull(teacher, "teacher");
            return this;
        }

        /**
         * Hyper-parameters (default {@code new TrainOptions()}); their batch size must be the one the student was
         * allocated for.
         */
        public Builder options(TrainOptions options) {
            this.options = Objects.requireNonNull(options, "options");
            return this;
        }

        /** Where to write the checkpoint after every epoch (atomically); none by default. */
        public Builder checkpoint(Path file) {
            this.checkpoint = Objects.requireNonNull(file, "checkpoint");
            return this;
        }

        /** A checkpoint of an earlier run with the same settings to continue from. */
        public Builder resumeFrom(Path file) {
            this.resume = Objects.requireNonNull(file, "resume");
            return this;
        }

        /** Where a line per epoch goes (default System.out; the progress bar goes to the terminal). */
        public Builder log(PrintStream log) {
            this.log = Objects.requireNonNull(log, "log");
            return this;
        }

        /**
         * Stops after epoch {@code epoch} (the schedule stays that of {@code options.epochs()}): a run cut short on
         * purpose, to be resumed from its checkpoint.
         */
        public Builder stopAfter(int epoch) {
            if (epoch < 1) throw new IllegalArgumentException("stopAfter counts epochs from 1, got " + epoch);
            this.stopAfter = epoch;
            return this;
        }

        /** Trains, evaluates, writes the checkpoints, and returns the results. */
        public Result run() {
            return TrainingRun.run(this);
        }
    }

    private static Result run(Builder run) {
        String name = run.name;
        VisionTransformer student = run.student;
        TeacherLogits teacher = run.teacher;
        ImageSource train = run.train, test = run.test;
        TrainOptions options = run.options;
        Path checkpoint = run.checkpoint, resume = run.resume;
        PrintStream log = run.log;
        int stopAfter = run.stopAfter;
        if (options.distillation() != Distillation.NONE && teacher == null) {
            throw new IllegalArgumentException(options.distillation() + " distillation needs a teacher (builder's "
                    + "teacher(...))");
        }
        if (options.distillation() == Distillation.NONE && teacher != null) {
            throw new IllegalArgumentException("a teacher was given but the options do not distill "
                    + "(TrainOptions.withDistillation)");
        }
        if (train.classes() != student.config().classes()) {
            throw new IllegalArgumentException("the training set has " + train.classes() + " classes, the model "
                    + student.config().classes());
        }
        int b = student.batch();
        if (options.batch() != b) {
            throw new IllegalArgumentException("the options ask for batches of " + options.batch() + " but the student "
                    + "was allocated for " + b + ": allocate it with that batch size or use withBatch(" + b + ")");
        }
        ImageSource trainSet = options.trainLimit() > 0 && options.trainLimit() < train.size()
                ? ImageSources.head(train, options.trainLimit()) : train;
        int[] labeledIndices = options.labeledSubset(trainSet);
        boolean[] labeled = null;  // per image of trainSet, for the steps' masks; null: all labeled
        int labeledCount = trainSet.size();
        String transfer = null;
        if (labeledIndices != null) {
            labeledCount = labeledIndices.length;
            if (options.distillation() == Distillation.NONE) { // without a teacher, unlabeled images teach nothing
                transfer = "training on the " + labeledCount + " labeled images alone of " + trainSet.size() + " ("
                        + options.labeledDescription() + ")";
                trainSet = ImageSources.subset(trainSet, labeledIndices);
            } else {
                labeled = new boolean[trainSet.size()];
                for (int i : labeledIndices) labeled[i] = true;
                transfer = "transfer set of " + trainSet.size() + " images, " + labeledCount + " of them labeled ("
                        + options.labeledDescription() + "); the teacher's term covers every image";
            }
        }
        Mixup mixup = options.mixup();
        RandomErasing erasing = options.randomErasing();
        if (mixup != null && labeled != null) {
            throw new IllegalArgumentException("Mixup/CutMix cannot mix a transfer set: an unlabeled image has no "
                    + "label to mix (train with every image labeled, or without Mixup/CutMix)");
        }
        if (teacher != null) teacher.checkFor(trainSet, options);
        if (trainSet.size() < b) {
            throw new IllegalArgumentException((labeledIndices != null && labeled == null ? "only " + trainSet.size()
                    + " images are labeled and trained on without a teacher" : "the training set has " + trainSet.size()
                    + " images") + ", fewer than one batch of " + b);
        }
        int stepsPerEpoch = trainSet.size() / b;
        long total = (long) stepsPerEpoch * options.epochs();
        long t0 = System.nanoTime();
        List<Epoch> epochs = new ArrayList<>();
        VisionTransformer teacherModel = teacher == null ? null : teacher.model();
        try (Trainer trainer = new Trainer(student, teacherModel, options, total)) {
            int startEpoch = 0;
            double earlierSeconds = 0;  // a resumed run's wall time counts the epochs before the interruption
            if (resume != null) {
                Checkpoint.State state = Checkpoint.load(resume, trainer);
                if (!state.labeled().equals(options.labeledDescription())) {
                    throw new IllegalArgumentException("cannot resume from " + resume + ": its labeled images were "
                            + state.labeled() + "; this run asks for " + options.labeledDescription()
                            + " (resume with the same labeled images and seed)");
                }
                String now = Checkpoint.settings(options);
                if (state.settings() != null && !state.settings().equals(now)) {
                    throw new IllegalArgumentException("cannot resume from " + resume + ": it was written with "
                            + state.settings() + "; this run has " + now + " (resume with the same settings)");
                }
                startEpoch = state.epoch();
                epochs.addAll(state.history());
                for (Epoch e : state.history()) earlierSeconds += e.seconds();
                log.println(name + ": resumed from " + resume + " at epoch " + startEpoch + ", step " + trainer.steps());
            }
            // What a user falls back on when a step fails: the newest checkpoint on disk.
            String lastGood = resume != null ? "the checkpoint it resumed from is intact: " + resume
                    : "no checkpoint was written yet";
            Augment augment = options.augmentation();
            float[] teacherLogits = teacher != null && teacherModel == null
                    ? new float[b * student.config().classes()] : null;
            boolean[] mask = labeled == null ? null : new boolean[b];
            float[] mixed = mixup == null ? null : new float[b * student.config().classes()];
            int channels = student.config().channels(), side = student.config().imageSize();
            if (transfer != null) log.println(name + ": " + transfer);
            if (startEpoch < options.epochs()) {
                try (BatchSource loader = loader(run, trainSet, b, augment, startEpoch)) {
                    for (int epoch = startEpoch; epoch < Math.min(options.epochs(), stopAfter); epoch++) {
                        long e0 = System.nanoTime();
                        double lossSum = 0;
                        long correct = 0, scored = 0, seen = 0, skippedSteps = 0;
                        try (Progress progress = Progress.start(name + " epoch " + (epoch + 1) + "/" + options.epochs(),
                                stepsPerEpoch)) {
                            for (int s = 0; s < stepsPerEpoch; s++) {
                                BatchLoader.Batch batch = loader.next();
                                if (erasing != null) { // per sample, as timm's transform: (seed, epoch, index)
                                    int size = channels * side * side;
                                    for (int i = 0; i < b; i++) {
                                        erasing.apply(batch.images(), i * size, channels, side, side, epoch,
                                                batch.indices()[i]);
                                    }
                                }
                                if (mask != null) {
                                    for (int i = 0; i < b; i++) mask[i] = labeled[batch.indices()[i]];
                                }
                                if (mixup != null) {
                                    // A pure function of (seed, epoch, step): a resumed run mixes alike.
                                    Mixup.Params p = mixup.params(epoch, s, side, side);
                                    Mixup.apply(batch.images(), 0, b, channels, side, side, p);
                                    Mixup.targets(batch.labels(), student.config().classes(), p, mixed);
                                }
                                // After mixing: a teacher that runs on the batch sees what the student sees.
                                if (teacherLogits != null) {
                                    teacher.logits(batch.images(), batch.indices(), epoch, teacherLogits);
                                }
                                Trainer.StepResult r;
                                try {
                                    if (mixup != null) {
                                        r = trainer.stepMixed(batch.images(), batch.labels(), mixed, teacherLogits);
                                    } else {
                                        r = trainer.step(batch.images(), batch.labels(), mask, teacherLogits);
                                    }
                                } catch (NonFiniteException e) {
                                    throw e.withContext(name + ", epoch " + (epoch + 1) + ", ", "; " + lastGood
                                            + " (a lower learning rate or clipping may help; check the data)");
                                }
                                if (r.skipped()) {
                                    skippedSteps++;
                                    progress.skipped();
                                    continue;
                                }
                                lossSum += r.loss() * batch.size();
                                correct += r.correct();
                                scored += r.labeled();
                                seen += batch.size();
                                progress.step(batch.size(), r.loss(), r.correct(), r.labeled());
                            }
                        }
                        double trainSeconds = (System.nanoTime() - e0) / 1e9;
                        Evaluator.Accuracy acc = Evaluator.evaluate(student, test, options.testLimit(), run.workers, run.badImages);
                        double trainAcc = scored == 0 ? Double.NaN : (double) correct / scored;
                        Epoch e = new Epoch(epoch + 1, lossSum / seen, trainAcc, acc, (System.nanoTime() - e0) / 1e9,
                                seen / trainSeconds, skippedSteps);
                        epochs.add(e);
                        log.printf(Locale.ROOT, "%s epoch %d/%d: train loss %.4f acc %.2f%%, test %s, %.0f images/s%s%n",
                                name, epoch + 1, options.epochs(), e.trainLoss(), 100 * e.trainAccuracy(), format(acc),
                                e.imagesPerSecond(), skippedSteps == 0 ? ""
                                        : ", " + skippedSteps + " of " + stepsPerEpoch + " steps skipped (not finite)");
                        if (checkpoint != null) {
                            Checkpoint.save(checkpoint, trainer, options, epoch + 1, epochs);
                            lastGood = "the checkpoint of epoch " + (epoch + 1) + " is intact: " + checkpoint;
                        }
                    }
                }
            }
            Evaluator.Accuracy last = epochs.isEmpty() ? Evaluator.evaluate(student, test, options.testLimit(), run.workers, run.badImages)
                    : epochs.get(epochs.size() - 1).test();
            return new Result(name, student.config(), student.config().parameterCount(), List.copyOf(epochs), last,
                    earlierSeconds + (System.nanoTime() - t0) / 1e9, teacher == null ? "none" : teacher.describe(),
                    trainSet.size(), labeledCount, options.labeledDescription());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The same batches either way: BatchLoader's order and augmentation are StreamLoader's. */
    private static BatchSource loader(Builder run, ImageSource trainSet, int b, Augment augment, int startEpoch) {
        TrainOptions options = run.options;
        int epochs = options.epochs() - startEpoch;
        if (trainSet instanceof Dataset d) {
            return BatchLoader.builder(d, b).seed(options.seed()).shuffle(true).dropLast(true).augment(augment)
                    .start(startEpoch, 0).epochs(epochs).build();
        }
        StreamLoader.Builder s = StreamLoader.builder(trainSet, b).seed(options.seed()).shuffle(true).dropLast(true)
                .augment(augment).start(startEpoch, 0).epochs(epochs).workers(run.workers);
        if (run.badImages != null) s.skipBadImages(run.badImages);
        return s.build();
    }

    /** "92.31% (cls 92.10%, dist 92.25%)" or "92.31%". */
    public static String format(Evaluator.Accuracy a) {
        if (Double.isNaN(a.distHead())) return String.format(Locale.ROOT, "%.2f%%", 100 * a.average());
        return String.format(Locale.ROOT, "%.2f%% (cls %.2f%%, dist %.2f%%)", 100 * a.average(),
                100 * a.classHead(), 100 * a.distHead());
    }
}
