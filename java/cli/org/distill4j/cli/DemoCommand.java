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
import org.distill4j.data.FashionMnist;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.train.Distillation;
import org.distill4j.train.TrainOptions;
import org.distill4j.train.TrainingRun;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code ./distill4j demo}: the whole workflow on Fashion-MNIST with one budget per student: a teacher, a student from
 * scratch, and the same student distilled (soft and hard) from the teacher's stored logits; a table, results.json and
 * accuracy.png. {@code --quick} uses a subset and fewer epochs (a smoke run, not an experiment).
 */
@Command(name = "demo", mixinStandardHelpOptions = true,
        description = "Teacher -> soft labels -> students (scratch, soft, hard) on Fashion-MNIST; table, JSON and chart.")
final class DemoCommand implements Callable<Integer> {
    @Option(names = "--quick", description = "a subset and fewer epochs: about 2 minutes on 2 CPU cores")
    boolean quick;

    @Option(names = "--out", defaultValue = "demo-out", description = "output directory (default ${DEFAULT-VALUE})")
    Path out;

    @Option(names = "--device", defaultValue = "best",
            description = "cpu, cuda[:N], cuda-emu (the CUDA kernels emulated on the CPU: tests only, slow) or best "
                    + "(default ${DEFAULT-VALUE})")
    String device;

    @Option(names = "--data", description = "IDX directory (default " + FashionMnist.DEFAULT_DIR + ")")
    Path data;

    @Option(names = "--teacher-epochs", description = "teacher epochs (default 3, quick 2)")
    Integer teacherEpochs;

    @Option(names = "--student-epochs", description = "epochs of each student (default 3, quick 2)")
    Integer studentEpochs;

    @Option(names = "--train-limit", description = "training images used (default 30000, quick 6000)")
    Integer trainLimit;

    @Option(names = "--teacher-model", defaultValue = "mnist-teacher", completionCandidates = Presets.class,
            description = "teacher preset: ${COMPLETION-CANDIDATES} (default ${DEFAULT-VALUE})")
    String teacherModel;

    @Option(names = "--student-model", defaultValue = "mnist-student", completionCandidates = Presets.class,
            description = "student preset: ${COMPLETION-CANDIDATES} (default ${DEFAULT-VALUE})")
    String studentModel;

    @Option(names = "--seed", defaultValue = "0", description = "seed (default ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--resume", description = "continue an interrupted demo in --out (run it with the same flags): "
            + "each run resumes from its checkpoint there, a finished one is only evaluated")
    boolean resume;

    @Option(names = "--force", description = "replace the demo in --out: the files its runs wrote there are deleted "
            + "when training starts (the cached teacher logits and other files stay)")
    boolean force;

    /** The runs, each in its subdirectory of --out. */
    private static final List<String> RUNS = List.of("teacher", "student_scratch", "student_soft", "student_hard");

    @Override
    public Integer call() throws Exception {
        long t0 = System.nanoTime();
        OutputDirectory output = OutputDirectory.check(out, resume, force, RUNS);
        Path dataDir = data != null ? data : ensureDataset();
        FashionMnist.Split split = FashionMnist.load(dataDir);
        int te = teacherEpochs != null ? teacherEpochs : quick ? 2 : 3;
        int se = studentEpochs != null ? studentEpochs : quick ? 2 : 3;
        int limit = trainLimit != null ? trainLimit : quick ? 6000 : 30000;
        int testLimit = quick ? 2000 : 0;
        VitConfig teacherConfig = VitConfig.preset(teacherModel), student = VitConfig.preset(studentModel);
        if (!student.distilled()) throw new IllegalArgumentException(studentModel + " has no distillation token");
        // The teacher trains with augmentation (crop, flip); the students without, so the teacher's logits are
        // computed once and reused by both distilled students (and all three students see the same inputs).
        TrainOptions base = new TrainOptions().withBatch(128).withLr(1e-3, 1e-5).withWarmupEpochs(0.3)
                .withAugment(false).withSeed(seed).withLimits(limit, testLimit);
        try (Backend backend = Backends.open(Device.parse(device))) {
            System.out.println("demo on " + backend.device() + ": teacher " + teacherConfig + ", student " + student
                    + ", " + limit + " training images");
            output.use(dir -> run(backend, dir, split, teacherConfig, student, base, te, se, t0));
        }
        return 0;
    }

    /** The four runs in {@code dir} (created), then the table, results.json and the chart. */
    private Void run(Backend backend, Path dir, FashionMnist.Split split, VitConfig teacherConfig, VitConfig student,
                     TrainOptions base, int te, int se, long t0) throws IOException {
        List<TrainingRun.Result> runs = new ArrayList<>();
        double earlier = 0;  // with --resume: the time the interrupted runs had already spent
        Map<String, Object> json = new LinkedHashMap<>();
        String device = backend.device().toString();
        Path teacherDir = dir.resolve(RUNS.get(0));
        long c0 = System.nanoTime();
        TrainOptions teacherOptions = base.withEpochs(te).withAugment(true);
        TrainingRun.Result teacher;
        try (VisionTransformer t = new VisionTransformer(backend, teacherConfig, base.batch(), base.seed())) {
            teacher = Runs.train(t, RUNS.get(0), null, split.train(), split.test(), teacherOptions, teacherDir,
                    resumeFrom(teacherDir));
        }
        runs.add(teacher);
        earlier += earlierSeconds(teacher, c0);
        json.put("teacher", RunOutputs.json(teacher, device));
        Path teacherFile = teacherDir.resolve("model.safetensors");
        TrainOptions students = base.withEpochs(se);
        Distillation[] modes = {Distillation.NONE, Distillation.SOFT, Distillation.HARD};
        try (VisionTransformer t = new VisionTransformer(backend, teacherConfig, base.batch(), 0)) {
            ModelFile.load(teacherFile, t);
            for (int k = 0; k < modes.length; k++) {
                String name = RUNS.get(k + 1);
                TrainOptions o = students.withDistillation(modes[k], 0.5, 4.0);
                var logits = Runs.teacherLogits(t, teacherFile, split.train(), o,
                        dir.resolve("teacher-logits.safetensors"), 0);
                Path runDir = dir.resolve(name);
                c0 = System.nanoTime();
                TrainingRun.Result r;
                try (VisionTransformer m = new VisionTransformer(backend, student, o.batch(), o.seed())) {
                    r = Runs.train(m, name, logits, split.train(), split.test(), o, runDir, resumeFrom(runDir));
                }
                runs.add(r);
                earlier += earlierSeconds(r, c0);
                json.put(name, RunOutputs.json(r, device));
            }
        }
        double seconds = earlier + (System.nanoTime() - t0) / 1e9;
        json.put("device", device);
        json.put("seconds", seconds);
        RunOutputs.writeJson(dir.resolve("results.json"), json);
        boolean chart = RunOutputs.writeChart(dir.resolve("accuracy.png"), "Fashion-MNIST test accuracy per epoch",
                runs);
        printTable(runs, device, seconds);
        System.out.println("wrote " + dir.resolve("results.json") + (chart ? " and " + dir.resolve("accuracy.png") : ""));
        return null;
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

    private static void printTable(List<TrainingRun.Result> runs, String device, double seconds) {
        System.out.printf(Locale.ROOT, "%n%-16s %10s %7s %10s %9s%n", "model", "params", "epochs", "test acc", "seconds");
        for (TrainingRun.Result r : runs) {
            System.out.printf(Locale.ROOT, "%-16s %10d %7d %9.2f%% %9.0f%n", r.name(), r.parameters(), r.epochs().size(),
                    100 * r.test().average(), r.seconds());
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
