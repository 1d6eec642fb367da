package org.distill4j.train;

import com.google.gson.Gson;
import com.google.gson.reflect.TypeToken;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.distill4j.Tensor;
import org.distill4j.io.NonFiniteValuesException;
import org.distill4j.io.Safetensors;
import org.distill4j.io.SafetensorsFormatException;
import org.distill4j.io.SafetensorsReader;
import org.distill4j.io.TensorData;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.Parameter;
import org.distill4j.nn.VisionTransformer;

/**
 * A training checkpoint, one safetensors file: the student's parameters under timm's names (so the file is also a
 * model file), AdamW's moments as {@code optimizer.m.<name>} and {@code optimizer.v.<name>}, and in the metadata
 * the config, the training settings, which images kept their labels (a transfer set's count and seed, or its list's
 * digest), the step, the epoch and the per-epoch history. The RNG state is (seed, epoch):
 * the loader's shuffle and augmentation of an epoch depend on nothing else, so resuming at an epoch boundary is
 * exact.
 */
public final class Checkpoint {
    // NaN: the distillation-head accuracy of a model without one (metadata only, read back by Gson itself).
    private static final Gson GSON = new com.google.gson.GsonBuilder().serializeSpecialFloatingPointValues().create();

    private Checkpoint() {}

    /**
     * What a checkpoint restores beside the tensors; {@code settings} is {@link #settings(TrainOptions)} of the run
     * that wrote it (null in checkpoints of distill4j 0.1.0 before it was recorded), {@code labeled} its
     * {@link TrainOptions#labeledDescription()} ("all" in checkpoints written before transfer sets existed).
     */
    public record State(int epoch, List<TrainingRun.Epoch> history, String settings, String labeled) {}

    /**
     * The training settings a resumed run must share with the run that wrote the checkpoint: everything that shapes
     * the schedule, the loss or the data order ({@code options} less the test-set limit, which only changes evaluation,
     * the non-finite steps a run may skip, a safety bound a resumed run may loosen or tighten, and whether steps
     * replay a CUDA graph, which computes the same bits).
     */
    public static String settings(TrainOptions options) {
        return options.withSkipNonFinite(0).withCudaGraph(false) + ", training images "
                + (options.trainLimit() == 0 ? "all" : options.trainLimit());
    }

    /** Writes the checkpoint atomically (a crash leaves the previous one intact). */
    public static void save(Path file, Trainer trainer, TrainOptions options, int epoch, List<TrainingRun.Epoch> history)
            throws IOException {
        VisionTransformer model = trainer.student();
        Map<String, TensorData> tensors = ModelFile.entries(model);
        List<Parameter> params = model.parameters();
        for (int i = 0; i < params.size(); i++) {
            Parameter p = params.get(i);
            tensors.put("optimizer.m." + p.name(), new TensorData(p.shape(), trainer.firstMoments().get(i).toArray()));
            tensors.put("optimizer.v." + p.name(), new TensorData(p.shape(), trainer.secondMoments().get(i).toArray()));
        }
        Map<String, String> meta = ModelFile.metadata(model.config());
        meta.put("distill4j.kind", "checkpoint");
        meta.put("distill4j.settings", settings(options));
        meta.put("distill4j.labeled", options.labeledDescription());
        meta.put("distill4j.step", Long.toString(trainer.steps()));
        meta.put("distill4j.epoch", Integer.toString(epoch));
        meta.put("distill4j.history", GSON.toJson(history));
        Safetensors.write(file, tensors, meta);
    }

    /** {@link #load(Path, Trainer, ModelFile.NonFinite)} refusing NaN and infinite values. */
    public static State load(Path file, Trainer trainer) throws IOException {
        return load(file, trainer, ModelFile.NonFinite.REFUSE);
    }

    /**
     * Loads parameters, moments and the step into {@code trainer} (whose model must have the checkpoint's config).
     * The header is checked against the model before any value is read; then each tensor is copied straight into
     * the model's or the optimizer's memory. When it throws after that (NaN or infinite values, a file truncated
     * meanwhile) the trainer's state has been partly overwritten.
     *
     * @param nonFinite whether NaN or infinite parameters or moments are refused (the default) or loaded
     * @throws SafetensorsFormatException when the file is not a checkpoint of this config, naming the difference
     * @throws NonFiniteValuesException when values are NaN or infinite and {@code nonFinite} refuses them
     */
    public static State load(Path file, Trainer trainer, ModelFile.NonFinite nonFinite) throws IOException {
        Objects.requireNonNull(nonFinite, "nonFinite");
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            VisionTransformer model = trainer.student();
            Map<String, String> meta = reader.header().metadata();
            if (!"checkpoint".equals(meta.get("distill4j.kind"))) {
                throw new SafetensorsFormatException(file, "not a distill4j checkpoint (no optimizer state): a model "
                        + "file can start a run (--init) but not resume one");
            }
            ModelFile.checkConfig(file, meta, model.config());
            Map<String, long[]> expected = new LinkedHashMap<>();
            for (Parameter p : model.parameters()) {
                expected.put(p.name(), p.shape());
                expected.put("optimizer.m." + p.name(), p.shape());
                expected.put("optimizer.v." + p.name(), p.shape());
            }
            ModelFile.checkTensors(file, reader.header(), expected);
            long step;
            int epoch;
            List<TrainingRun.Epoch> history;
            try { // the metadata first: a damaged checkpoint is refused before the trainer is touched
                step = Long.parseLong(meta.get("distill4j.step"));
                epoch = Integer.parseInt(meta.get("distill4j.epoch"));
                history = GSON.fromJson(meta.get("distill4j.history"),
                        new TypeToken<List<TrainingRun.Epoch>>() {}.getType());
                if (step < 0 || epoch < 0) {
                    throw new IllegalArgumentException("negative step " + step + " or epoch " + epoch);
                }
            } catch (RuntimeException e) {
                throw new SafetensorsFormatException(file, "damaged checkpoint metadata (step, epoch, history): "
                        + Safetensors.shorten(String.valueOf(e.getMessage())));
            }
            List<NonFiniteValuesException.Count> bad = new ArrayList<>();
            List<Parameter> params = model.parameters();
            for (int i = 0; i < params.size(); i++) {
                Parameter p = params.get(i);
                copy(reader, p.name(), p.value(), bad);
                copy(reader, "optimizer.m." + p.name(), trainer.firstMoments().get(i), bad);
                copy(reader, "optimizer.v." + p.name(), trainer.secondMoments().get(i), bad);
            }
            if (!bad.isEmpty() && nonFinite == ModelFile.NonFinite.REFUSE) {
                throw new NonFiniteValuesException(file, bad);
            }
            trainer.restore(step);
            return new State(epoch, history == null ? List.of() : history, meta.get("distill4j.settings"),
                    meta.getOrDefault("distill4j.labeled", "all"));
        }
    }

    private static void copy(SafetensorsReader reader, String name, Tensor t, List<NonFiniteValuesException.Count> bad)
            throws IOException {
        long n = reader.copyTo(name, t);
        if (n > 0) bad.add(new NonFiniteValuesException.Count(name, n, t.numel()));
    }
}
