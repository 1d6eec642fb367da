package org.distill4j.cli;

import com.google.gson.GsonBuilder;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.distill4j.io.AtomicFile;
import org.distill4j.train.Evaluator;
import org.distill4j.train.TrainingRun;

/** Results files of the training commands: results.json and accuracy.png, both written atomically. */
final class RunOutputs {
    private RunOutputs() {}

    /** The JSON object of one run. */
    static Map<String, Object> json(TrainingRun.Result r, String device) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("name", r.name());
        m.put("model", r.config().toString());
        m.put("parameters", r.parameters());
        m.put("epochs", r.epochs().size());
        m.put("test_acc", r.test().average());
        m.put("test_acc_cls_head", r.test().classHead());
        if (!Double.isNaN(r.test().distHead())) m.put("test_acc_dist_head", r.test().distHead());
        m.put("seconds", r.seconds());
        m.put("device", device);
        m.put("teacher", r.teacherSource());
        m.put("train_images", r.trainImages());
        m.put("labeled", r.labeled());
        m.put("labeled_subset", r.labeledSubset());
        List<Map<String, Object>> per = new java.util.ArrayList<>();
        for (TrainingRun.Epoch e : r.epochs()) {
            Map<String, Object> x = new LinkedHashMap<>();
            x.put("epoch", e.epoch());
            x.put("train_loss", e.trainLoss());
            x.put("train_acc", e.trainAccuracy());
            x.put("test_acc", e.test().average());
            x.put("seconds", e.seconds());
            x.put("images_per_second", e.imagesPerSecond());
            x.put("skipped_steps", e.skippedSteps());
            per.add(x);
        }
        m.put("history", per);
        return m;
    }

    /** Writes {@code value} as pretty JSON, atomically. */
    static void writeJson(Path file, Object value) throws IOException {
        String text = new GsonBuilder().setPrettyPrinting().serializeSpecialFloatingPointValues().create().toJson(value);
        AtomicFile.write(file, (text + "\n").getBytes(StandardCharsets.UTF_8));
    }

    /**
     * Test accuracy per epoch of each run, one line each. A chart is never worth a run: when it cannot be drawn
     * (a machine without fonts or font libraries, a full disk) this prints a warning naming what is missing and
     * returns false.
     */
    static boolean writeChart(Path png, String title, List<TrainingRun.Result> runs) {
        return writeChart(png, title, runs, Map.of());
    }

    /**
     * As {@link #writeChart(Path, String, List)}, with each of {@code flat} (name → accuracy, a fraction) drawn first
     * as a flat line over the runs' epochs: a model that was evaluated here but not trained, such as a shipped teacher.
     */
    static boolean writeChart(Path png, String title, List<TrainingRun.Result> runs, Map<String, Double> flat) {
        Map<String, double[]> trained = new LinkedHashMap<>();
        int epochs = 0;
        for (TrainingRun.Result r : runs) {
            double[] acc = r.epochs().stream().map(TrainingRun.Epoch::test).mapToDouble(Evaluator.Accuracy::average)
                    .toArray();
            if (acc.length > 0) trained.put(r.name(), acc);
            epochs = Math.max(epochs, acc.length);
        }
        if (trained.isEmpty()) return false;
        Map<String, double[]> series = new LinkedHashMap<>();
        for (Map.Entry<String, Double> f : flat.entrySet()) {
            double[] line = new double[epochs];
            java.util.Arrays.fill(line, f.getValue());
            series.put(f.getKey(), line);
        }
        series.putAll(trained);
        try {
            AccuracyChart.write(png, title, series);
            return true;
        } catch (IOException e) {
            System.err.println("warning: " + png + " not written: " + Messages.of(e));
            return false;
        }
    }
}
