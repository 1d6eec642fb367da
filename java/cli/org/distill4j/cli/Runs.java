package org.distill4j.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import org.distill4j.backend.Backend;
import org.distill4j.data.Augment;
import org.distill4j.data.Dataset;
import org.distill4j.data.ImageSource;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.train.Distillation;
import org.distill4j.train.SoftLabels;
import org.distill4j.train.TrainOptions;
import org.distill4j.train.TrainingRun;

/** What train, distill and demo share: one training run with its files, and the teacher's logits. */
final class Runs {
    private Runs() {}

    /**
     * Trains {@code model} (allocated for {@code options.batch()}, initialised by the caller) in {@code dir}:
     * dir/checkpoint.safetensors after every epoch, dir/model.safetensors (timm names) at the end, dir/results.json
     * and dir/accuracy.png (a chart that cannot be drawn here is a warning).
     */
    static TrainingRun.Result train(VisionTransformer model, String name, TrainingRun.TeacherLogits teacher,
                                    ImageSource train, ImageSource test, TrainOptions options, Path dir, Path resume)
            throws IOException {
        return train(model, name, teacher, train, test, options, dir, resume, null);
    }

    /** As above, decoding streamed data as {@code data} says (--workers, --skip-bad-images); null: the defaults. */
    static TrainingRun.Result train(VisionTransformer model, String name, TrainingRun.TeacherLogits teacher,
                                    ImageSource train, ImageSource test, TrainOptions options, Path dir, Path resume,
                                    DataFlags data) throws IOException {
        TrainingRun.Builder run = TrainingRun.builder(model, train, test).name(name).options(options)
                .checkpoint(dir.resolve("checkpoint.safetensors"));
        if (data != null) run.workers(data.workers);
        if (data != null && data.skipBadImages) run.skipBadImages(System.out);
        if (teacher != null) run.teacher(teacher);
        if (resume != null) run.resumeFrom(resume);
        TrainingRun.Result r;
        try {
            r = run.run();
        } catch (IllegalStateException e) {
            if (!(e.getCause() instanceof org.distill4j.data.BadImageException)) throw e;
            throw new IllegalStateException(e.getMessage() + " (--skip-bad-images leaves such files out)", e);
        }
        ModelFile.save(dir.resolve("model.safetensors"), model);
        String device = model.backend().device().toString();
        RunOutputs.writeJson(dir.resolve("results.json"), RunOutputs.json(r, device));
        RunOutputs.writeChart(dir.resolve("accuracy.png"), name + ": test accuracy", java.util.List.of(r));
        System.out.println(name + ": test accuracy " + TrainingRun.format(r.test()) + " after " + r.epochs().size()
                + (r.epochs().size() == 1 ? " epoch, " : " epochs, ") + String.format(java.util.Locale.ROOT, "%.0f s",
                r.seconds()) + "; wrote " + dir.resolve("model.safetensors"));
        return r;
    }

    /** The config saved in a model file, or {@code fallback} (a preset name) for a file without one. */
    static VitConfig configOf(Path file, String fallback) throws IOException {
        VitConfig c = ModelFile.config(Inputs.file(file, "model file"));
        if (c != null) return c;
        if (fallback == null) {
            throw new IOException(file + " records no distill4j config (a timm file?): name its shape with --model");
        }
        return VitConfig.preset(fallback);
    }

    /**
     * The teacher's logits for a distillation run: without augmentation, computed once over the training set and
     * cached in {@code cache} (reused when it matches the teacher file and dataset); with augmentation, random
     * erasing or Mixup/CutMix, the teacher model runs on every batch ({@code teacherModel}, allocated by the caller).
     */
    static TrainingRun.TeacherLogits teacherLogits(VisionTransformer teacherModel, Path teacherFile,
                                                   ImageSource source, TrainOptions options, Path cache, int topk)
            throws IOException {
        if (options.distillation() == Distillation.NONE) return null;
        boolean views = options.augment() && options.augmentViews() > 0;
        // Erased or mixed images, and augmented ones without fixed views, are new every epoch: no cache can hold
        // the teacher's view of them.
        if (options.mixup() != null || options.randomErasing() != null || options.augment() && !views) {
            return SoftLabels.live(teacherModel, teacherFile.toString());
        }
        if (!(source instanceof Dataset train)) {
            // The cache is tied to the images by a digest of every value: a streamed set would be decoded whole.
            System.out.println("teacher logits: the teacher runs on every batch (streamed data has no soft-label cache)");
            return SoftLabels.live(teacherModel, teacherFile.toString());
        }
        Dataset data = options.trainLimit() > 0 && options.trainLimit() < train.size()
                ? train.head(options.trainLimit()) : train;
        String teacherKey = sha256(teacherFile);
        if (views) return viewLogits(teacherModel, teacherFile, teacherKey, data, options, cache, topk);
        SoftLabels cached = SoftLabels.load(cache, teacherKey, data);
        if (cached != null) {
            System.out.println("teacher logits: reusing " + cache);
            return cached;
        }
        long t0 = System.nanoTime();
        SoftLabels computed = SoftLabels.compute(teacherModel, data, teacherFile.toString());
        double seconds = (System.nanoTime() - t0) / 1e9;
        System.out.printf(java.util.Locale.ROOT, "teacher logits: computed once for %d images in %.1f s (one teacher "
                + "forward per image instead of one per image and epoch: %d epochs)%n", data.size(), seconds,
                options.epochs());
        if (topk > 0) { // the top-k form exists only as the file: it must be written
            computed.save(cache, teacherKey, topk);
            return SoftLabels.load(cache, teacherKey, data);
        }
        return cached(computed, cache, teacherKey);
    }

    /** Writes {@code computed} to {@code file} when it can; a cache is an optimisation: the run has them in memory. */
    private static SoftLabels cached(SoftLabels computed, Path file, String teacherKey) {
        try {
            computed.save(file, teacherKey, 0);
            System.out.println("teacher logits: cached in " + file);
        } catch (IOException e) {
            System.err.println("warning: teacher logits not cached (" + Messages.of(e) + "); training goes on");
        }
        return computed;
    }

    /** FKD: the teacher's logits of every fixed view, from {@code cache}'s views file or computed once and cached. */
    private static SoftLabels viewLogits(VisionTransformer teacherModel, Path teacherFile, String teacherKey,
            Dataset data, TrainOptions options, Path cache, int topk) throws IOException {
        Path file = cache.resolveSibling("teacher-logits-views.safetensors");
        Augment augment = options.augmentation();
        SoftLabels cached = SoftLabels.loadViews(file, teacherKey, data, augment);
        if (cached != null) {
            System.out.println("teacher logits: reusing " + file + " (" + augment.views() + " views per image)");
            return cached;
        }
        long t0 = System.nanoTime();
        SoftLabels computed = SoftLabels.computeViews(teacherModel, data, augment, teacherFile.toString());
        System.out.printf(java.util.Locale.ROOT, "teacher logits: %d views of %d images computed once in %.1f s "
                + "(%d teacher passes instead of one per epoch: %d epochs)%n", augment.views(), data.size(),
                (System.nanoTime() - t0) / 1e9, augment.views(), options.epochs());
        if (topk > 0) { // as above: train on what the file holds
            computed.save(file, teacherKey, topk);
            return SoftLabels.loadViews(file, teacherKey, data, augment);
        }
        return cached(computed, file, teacherKey);
    }

    static String sha256(Path file) throws IOException {
        try {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            try (var in = new java.security.DigestInputStream(Files.newInputStream(file), md)) {
                in.transferTo(java.io.OutputStream.nullOutputStream());
            }
            return HexFormat.of().formatHex(md.digest());
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
