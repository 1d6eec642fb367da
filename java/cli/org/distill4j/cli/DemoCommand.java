package org.distill4j.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.data.Dataset;
import org.distill4j.data.FashionMnist;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.train.Distillation;
import org.distill4j.train.Evaluator;
import org.distill4j.train.TrainOptions;
import org.distill4j.train.TrainingRun;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code ./distill4j demo}: what distillation buys, on Fashion-MNIST. A teacher (the one this build ships, a model
 * file, or one trained here); a transfer set (Hinton et al. 2015, section 2) of which only {@code --labeled} images
 * keep their labels; the same student (a) from scratch on the labeled images alone, for as many optimizer steps as
 * the others (each labeled image repeated in an epoch), (b) soft- and (c) hard-distilled on every training image,
 * the teacher's term on all of them and the labels' only on the labeled ones. Each student over {@code --seeds}
 * seeds (a new labeled subset and a new initialisation each); a table with mean ± std, the gain in points on each
 * seed, results.json and accuracy.png.
 */
@Command(name = "demo", mixinStandardHelpOptions = true,
        description = "Teacher -> transfer set -> students (scratch, soft, hard) on Fashion-MNIST; gain table, JSON, "
                + "chart.")
final class DemoCommand implements Callable<Integer> {
    @Option(names = "--quick", description = "10,000 training images, 2,000 test images, one seed: about a minute on "
            + "2 CPU cores")
    boolean quick;

    @Option(names = "--out", defaultValue = "demo-out", description = "output directory (default ${DEFAULT-VALUE})")
    Path out;

    @Option(names = "--device", defaultValue = "best",
            description = "cpu, cuda[:N], cuda-emu (the CUDA kernels emulated on the CPU: tests only, slow) or best "
                    + "(default ${DEFAULT-VALUE})")
    String device;

    @Option(names = "--data", description = "IDX directory (default " + FashionMnist.DEFAULT_DIR + ")")
    Path data;

    @Option(names = "--teacher", paramLabel = "FILE", description = "distil from this model file (a distill4j model "
            + "for 28x28 grey images and 10 classes) instead of the teacher this build ships")
    Path teacherFile;

    @Option(names = "--train-teacher", description = "train the teacher here (--teacher-epochs, --teacher-model) "
            + "instead of using the shipped one")
    boolean trainTeacher;

    @Option(names = "--teacher-epochs", description = "with --train-teacher: teacher epochs (default 3, quick 2)")
    Integer teacherEpochs;

    @Option(names = "--student-epochs", description = "epochs of each student over the training images (the scratch "
            + "student's epoch: its labeled images, each repeated to as many steps) (default 3)")
    Integer studentEpochs;

    @Option(names = "--train-limit", description = "training images used (default 20000, quick 10000)")
    Integer trainLimit;

    @Option(names = "--labeled", paramLabel = "N", description = "training images that keep their labels, stratified "
            + "by class; the teacher labels the rest (default 100; at least one per class; as many as "
            + "--train-limit: no transfer set)")
    Integer labeled;

    @Option(names = "--seeds", paramLabel = "K", description = "train each student with K seeds and print mean ± std "
            + "(default 3, quick 1)")
    Integer seeds;

    @Option(names = "--teacher-model", defaultValue = "mnist-teacher", completionCandidates = Presets.class,
            description = "with --train-teacher, the teacher preset: ${COMPLETION-CANDIDATES} (default "
                    + "${DEFAULT-VALUE})")
    String teacherModel;

    @Option(names = "--student-model", defaultValue = "mnist-student", completionCandidates = Presets.class,
            description = "student preset: ${COMPLETION-CANDIDATES} (default ${DEFAULT-VALUE})")
    String studentModel;

    @Mixin
    DistillationFlags loss;

    @Option(names = "--seed", defaultValue = "0", description = "first seed (default ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--resume", description = "continue an interrupted demo in --out (run it with the same flags): "
            + "each run resumes from its checkpoint there, a finished one is only evaluated")
    boolean resume;

    @Option(names = "--force", description = "replace the demo in --out: the files its runs wrote there are deleted "
            + "when training starts (the cached teacher logits and other files stay)")
    boolean force;

    private static final String TEACHER = "teacher";
    private static final String[] STUDENTS = {"student_scratch", "student_soft", "student_hard"};
    private static final Distillation[] MODES = {Distillation.NONE, Distillation.SOFT, Distillation.HARD};
    private static final int BATCH = 128;
    /** The soft students' temperature: 1 beat 2 and 4 within the demo's few hundred steps (README, the demo). */
    private static final double TAU = 1;

    /** Run directory names: seed k > 0 of a student gets a suffix; the first seed's keep the names of old demos. */
    private static String runName(String student, int k, long seed) {
        return k == 0 ? student : student + "-seed" + seed;
    }

    @Override
    public Integer call() throws Exception {
        long t0 = System.nanoTime();
        if (teacherFile != null && trainTeacher) {
            throw new IllegalArgumentException("--teacher and --train-teacher both choose the teacher: give one");
        }
        int te = teacherEpochs != null ? teacherEpochs : quick ? 2 : 3;
        int se = studentEpochs != null ? studentEpochs : 3;
        int limit = trainLimit != null ? trainLimit : quick ? 10000 : 20000;
        int n = labeled != null ? labeled : 100;
        int k = seeds != null ? seeds : quick ? 1 : 3;
        int testLimit = quick ? 2000 : 0;
        if (k < 1) throw new IllegalArgumentException("--seeds must be at least 1, got " + k);
        TrainOptions soft = loss.apply(new TrainOptions(), Distillation.SOFT, TAU);  // bad values: nothing written
        VitConfig student = VitConfig.preset(studentModel);
        if (n < student.classes()) {
            throw new IllegalArgumentException("--labeled " + n + " is below the " + student.classes() + " classes: "
                    + "the labeled images are stratified by class, and each class needs one");
        }
        if (!student.distilled()) throw new IllegalArgumentException(studentModel + " has no distillation token");
        ShippedTeacher.Provenance shipped = teacherFile == null && !trainTeacher ? ShippedTeacher.provenance() : null;
        boolean training = teacherFile == null && shipped == null;
        VitConfig teacherConfig = teacherFile != null ? Runs.configOf(Inputs.file(teacherFile, "--teacher"), teacherModel)
                : shipped != null ? VitConfig.preset(shipped.preset()) : VitConfig.preset(teacherModel);
        checkTeacher(teacherConfig, student);
        List<String> runs = new ArrayList<>();
        if (training) runs.add(TEACHER);
        for (int s = 0; s < k; s++) for (String name : STUDENTS) runs.add(runName(name, s, seed + s));
        OutputDirectory output = OutputDirectory.check(out, resume, force, runs);
        Path dataDir = data != null ? data : ensureDataset();
        FashionMnist.Split split = FashionMnist.load(dataDir);
        int images = Math.min(limit, split.train().size());
        new TrainOptions().withLabeled(n).checkLabeled(images);
        int scratchImages = n * (images / n);  // the scratch student's epoch: its labeled images, repeated
        if (scratchImages < BATCH) {
            throw new IllegalArgumentException("--labeled " + n + " of " + images + " training images: the scratch "
                    + "student's epoch (its labeled images, repeated " + images / n + "x) is " + scratchImages
                    + " images, less than one batch of " + BATCH + " (more --train-limit or fewer --labeled)");
        }
        // No augmentation for the students: the teacher's logits are computed once and reused by every distilled
        // student and seed (and all students see the same inputs).
        TrainOptions base = new TrainOptions().withBatch(BATCH).withLr(1e-3, 1e-5).withWarmupEpochs(0.3)
                .withAugment(false).withSeed(seed).withLimits(limit, testLimit);
        try (Backend backend = Backends.open(Device.parse(device))) {
            System.out.println("demo on " + backend.device() + ": student " + student + ", " + n + " of " + images
                    + " training images labeled, " + k + (k == 1 ? " seed" : " seeds") + ", alpha " + soft.alpha()
                    + ", tau " + soft.temperature());
            if (training && !trainTeacher) {
                System.out.println("this build ships no teacher (see the README): training one, " + te + " epochs "
                        + "(--teacher FILE uses a trained one)");
            }
            output.use(dir -> run(backend, dir, split, teacherConfig, shipped, student, base, te, se, n, k, t0));
        }
        return 0;
    }

    /** A teacher must see the students' images and predict their classes. */
    private static void checkTeacher(VitConfig teacher, VitConfig student) {
        if (teacher.classes() != student.classes() || teacher.imageSize() != student.imageSize()
                || teacher.channels() != student.channels()) {
            throw new IllegalArgumentException("the teacher (" + teacher + ") and the student (" + student + ") differ "
                    + "in classes, image size or channels: the teacher must label the student's images");
        }
    }

    /** The teacher, then every student and seed in {@code dir} (created); the table, results.json and the chart. */
    private Void run(Backend backend, Path dir, FashionMnist.Split split, VitConfig teacherConfig,
                     ShippedTeacher.Provenance shipped, VitConfig student, TrainOptions base, int te, int se,
                     int labeledCount, int k, long t0) throws IOException {
        List<TrainingRun.Result> chartRuns = new ArrayList<>();
        double earlier = 0;  // with --resume: the time the interrupted runs had already spent
        Map<String, Object> json = new LinkedHashMap<>();
        String device = backend.device().toString();
        Path teacherDir = dir.resolve(TEACHER);
        Path teacherPath;
        double teacherAccuracy;
        String teacherRow;
        if (teacherFile == null && shipped == null) {
            long c0 = System.nanoTime();
            TrainingRun.Result teacher;
            try (VisionTransformer t = new VisionTransformer(backend, teacherConfig, base.batch(), base.seed())) {
                teacher = Runs.train(t, TEACHER, null, split.train(), split.test(), base.withEpochs(te)
                        .withAugment(true), teacherDir, resumeFrom(teacherDir));
            }
            chartRuns.add(teacher);
            earlier += earlierSeconds(teacher, c0);
            json.put(TEACHER, RunOutputs.json(teacher, device));
            teacherPath = teacherDir.resolve("model.safetensors");
            teacherAccuracy = teacher.test().average();
            int epochs = teacher.epochs().size();
            teacherRow = "trained here, " + epochs + (epochs == 1 ? " epoch" : " epochs");
        } else {
            if (shipped != null) {
                teacherPath = teacherDir.resolve("model.safetensors");
                ShippedTeacher.extract(teacherPath, shipped);
                teacherRow = "shipped: " + shipped.describe();
            } else {
                teacherPath = teacherFile;
                teacherRow = "file " + teacherFile;
            }
            try (VisionTransformer t = new VisionTransformer(backend, teacherConfig, base.batch(), 0)) {
                ModelFile.load(teacherPath, t);
                Evaluator.Accuracy a = Evaluator.evaluate(t, split.test(), base.testLimit());
                teacherAccuracy = a.average();
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("name", TEACHER);
                m.put("model", teacherConfig.toString());
                m.put("parameters", teacherConfig.parameterCount());
                m.put("test_acc", a.average());
                m.put("test_images", a.images());
                m.put("file", teacherPath.toString());
                m.put("sha256", Runs.sha256(teacherPath));
                if (shipped != null) m.put("provenance", shipped);
                json.put(TEACHER, m);
            }
        }
        System.out.printf(Locale.ROOT, "teacher: %.2f %% test accuracy (%s)%n", 100 * teacherAccuracy, teacherRow);
        // The distilled students take se epochs over every image. The scratch one trains on the labeled images
        // alone, each repeated images/N times in an epoch: as many steps and test evaluations as the others.
        int images = Math.min(base.trainLimit(), split.train().size());
        Dataset pool = images < split.train().size() ? split.train().head(images) : split.train();
        int repeats = images / labeledCount;
        double[][] acc = new double[STUDENTS.length][k];
        try (VisionTransformer t = new VisionTransformer(backend, teacherConfig, base.batch(), 0)) {
            ModelFile.load(teacherPath, t);
            for (int s = 0; s < k; s++) {
                long runSeed = base.seed() + s;
                for (int m = 0; m < STUDENTS.length; m++) {
                    String name = runName(STUDENTS[m], s, runSeed);
                    TrainOptions o = loss.apply(base.withSeed(runSeed).withEpochs(se), MODES[m], TAU);
                    boolean transfer = labeledCount < images;
                    Dataset train = split.train();
                    if (transfer && MODES[m] == Distillation.NONE) {
                        train = pool.subset(repeat(o.withLabeled(labeledCount).labeledSubset(pool), repeats));
                    } else if (transfer) {
                        o = o.withLabeled(labeledCount);
                    }
                    var logits = Runs.teacherLogits(t, teacherPath, split.train(), o,
                            dir.resolve("teacher-logits.safetensors"), 0);
                    Path runDir = dir.resolve(name);
                    long c0 = System.nanoTime();
                    TrainingRun.Result r;
                    try (VisionTransformer model = new VisionTransformer(backend, student, o.batch(), o.seed())) {
                        r = Runs.train(model, name, logits, train, split.test(), o, runDir, resumeFrom(runDir));
                    }
                    if (s == 0) chartRuns.add(r);
                    earlier += earlierSeconds(r, c0);
                    Map<String, Object> runJson = RunOutputs.json(r, device);
                    if (transfer && MODES[m] == Distillation.NONE) {
                        runJson.put("labeled", labeledCount);
                        runJson.put("labeled_repeats", repeats);
                    }
                    json.put(name, runJson);
                    acc[m][s] = r.test().average();
                }
            }
        }
        double seconds = earlier + (System.nanoTime() - t0) / 1e9;
        json.put("device", device);
        json.put("seconds", seconds);
        json.put("labeled", labeledCount);
        json.put("train_images", images);
        json.put("seeds", k);
        TrainOptions distilled = loss.apply(base, Distillation.SOFT, TAU);
        json.put("alpha", distilled.alpha());
        json.put("tau", distilled.temperature());
        json.put("teacher_test_acc", teacherAccuracy);
        for (int m = 0; m < STUDENTS.length; m++) {
            Map<String, Object> st = new LinkedHashMap<>();
            st.put("test_acc_per_seed", acc[m]);
            st.put("test_acc_mean", mean(acc[m]));
            st.put("test_acc_std", std(acc[m]));
            json.put(STUDENTS[m] + "_summary", st);
        }
        for (int m = 1; m < STUDENTS.length; m++) {
            double[] gain = gain(acc[m], acc[0]);
            json.put("gain_" + MODES[m].name().toLowerCase(Locale.ROOT) + "_points", mean(gain));
            json.put("gain_" + MODES[m].name().toLowerCase(Locale.ROOT) + "_points_per_seed", gain);
        }
        RunOutputs.writeJson(dir.resolve("results.json"), json);
        // A teacher that was not trained here has no epochs: its accuracy is a flat line over the students'.
        Map<String, Double> flat = teacherFile == null && shipped == null ? Map.of()
                : Map.of(shipped != null ? "teacher (shipped)" : "teacher (file)", teacherAccuracy);
        boolean chart = RunOutputs.writeChart(dir.resolve("accuracy.png"), "Fashion-MNIST test accuracy per epoch ("
                + labeledCount + " labeled)", chartRuns, flat);
        printTable(acc, k, labeledCount, images, teacherAccuracy, device, seconds);
        System.out.println("wrote " + dir.resolve("results.json") + (chart ? " and " + dir.resolve("accuracy.png") : ""));
        return null;
    }

    /** {@code indices}, {@code times} times over (the loader shuffles them). */
    private static int[] repeat(int[] indices, int times) {
        int[] out = new int[indices.length * times];
        for (int r = 0; r < times; r++) System.arraycopy(indices, 0, out, r * indices.length, indices.length);
        return out;
    }

    /** Points gained over the scratch student, seed by seed. */
    static double[] gain(double[] students, double[] scratch) {
        double[] g = new double[students.length];
        for (int s = 0; s < g.length; s++) g[s] = 100 * (students[s] - scratch[s]);
        return g;
    }

    static double mean(double[] x) {
        double sum = 0;
        for (double v : x) sum += v;
        return sum / x.length;
    }

    /** Sample standard deviation (n − 1); 0 for one value. */
    static double std(double[] x) {
        if (x.length < 2) return 0;
        double m = mean(x), ss = 0;
        for (double v : x) ss += (v - m) * (v - m);
        return Math.sqrt(ss / (x.length - 1));
    }

    /** The part of a run's wall time spent before this process (its epochs before an interruption). */
    private static double earlierSeconds(TrainingRun.Result r, long callStart) {
        return Math.max(0, r.seconds() - (System.nanoTime() - callStart) / 1e9);
    }

    /** With --resume, the checkpoint a run left in its directory (null: start afresh). */
    private Path resumeFrom(Path runDir) {
        Path checkpoint = runDir.resolve("checkpoint.safetensors");
        return resume && Files.isRegularFile(checkpoint) ? checkpoint : null;
    }

    private static void printTable(double[][] acc, int k, int labeled, int images, double teacher, String device,
                                   double seconds) {
        String spread = k == 1 ? "" : " (mean ± std, " + k + " seeds)";
        System.out.printf(Locale.ROOT, "%n%-16s %-26s%n", "model", "test accuracy" + spread);
        System.out.printf(Locale.ROOT, "%-16s %8.2f %%%n", TEACHER, 100 * teacher);
        for (int m = 0; m < STUDENTS.length; m++) {
            System.out.printf(Locale.ROOT, "%-16s %8.2f %%%s%n", STUDENTS[m], 100 * mean(acc[m]),
                    k == 1 ? "" : String.format(Locale.ROOT, " ± %.2f", 100 * std(acc[m])));
        }
        for (int m = 1; m < STUDENTS.length; m++) {
            double[] g = gain(acc[m], acc[0]);
            StringBuilder perSeed = new StringBuilder();
            double least = Double.POSITIVE_INFINITY;
            for (double v : g) {
                perSeed.append(perSeed.length() == 0 ? "" : ", ").append(String.format(Locale.ROOT, "%+.1f", v));
                least = Math.min(least, v);
            }
            System.out.printf(Locale.ROOT, "%s distillation: %+.1f points over the same student without the teacher "
                    + "(%d of %d images labeled%s)%n", MODES[m].name().toLowerCase(Locale.ROOT), mean(g), labeled,
                    images, k == 1 ? "" : "; per seed " + perSeed + (least > 0 ? ", a gain on every seed"
                    : ", NOT a gain on every seed"));
        }
        System.out.printf(Locale.ROOT, "device %s, %.0f s in all%n", device, seconds);
    }

    /** The Debian dataset directory; installs the package when it is missing and this process may (root). */
    private static Path ensureDataset() throws IOException, InterruptedException {
        Path dir = FashionMnist.defaultDir();
        if (FashionMnist.isPresent(dir)) return dir;
        boolean root = "root".equals(System.getProperty("user.name"));
        if (root) {
            System.out.println("Fashion-MNIST is missing: apt-get install -y dataset-fashion-mnist");
            Process p = new ProcessBuilder("apt-get", "install", "-y", "-q", "dataset-fashion-mnist").inheritIO().start();
            if (p.waitFor() == 0 && FashionMnist.isPresent(dir)) return dir;
        }
        throw new IOException("Fashion-MNIST not found in " + dir + ": install the Debian package dataset-fashion-mnist "
                + "(sudo apt-get install dataset-fashion-mnist) or pass --data DIR with the four IDX files");
    }
}
