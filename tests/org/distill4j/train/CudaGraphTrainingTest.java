package org.distill4j.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.distill4j.Device;
import org.distill4j.Precision;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.testing.Check;
import org.distill4j.testing.ModelParameters;
import org.junit.jupiter.api.Test;

/**
 * {@link TrainOptions#withCudaGraph}: a run whose steps replay CUDA graphs computes the same bits as the same run
 * launched op by op: every step's loss, accuracy and skip, then the parameters and AdamW's moments. The steps mix
 * every kind the trainer has a graph for (labels, a transfer set's mask, Mixup targets; the teacher model or its
 * logits from a file), so each kind is run uncaptured once, captured at its second step and replayed after, with
 * other kinds' graphs replayed in between. On the emulated CUDA backend (which records and replays as a card does
 * and refuses what CUDA refuses inside a capture), and on a card when there is one.
 */
class CudaGraphTrainingTest {
    private static final int B = 8, C = 5;
    private static final VitConfig STUDENT = VitConfig.of(16, 4, 1, C, 64, 1, 2, 2, true);

    private enum Kind { LABELS, MASKED, MIXED, FILE_TEACHER }

    private record Batch(Kind kind, float[] images, int[] labels, boolean[] labeled, float[] targets, float[] logits) {}

    private static List<Batch> batches(Random rng, Distillation mode, Kind... kinds) {
        List<Batch> out = new ArrayList<>();
        for (Kind k : kinds) {
            int[] labels = new int[B];
            for (int i = 0; i < B; i++) labels[i] = rng.nextInt(C);
            boolean[] labeled = null;
            float[] targets = null;
            if (k == Kind.MASKED) {
                labeled = new boolean[B];
                for (int i = 0; i < B; i++) labeled[i] = rng.nextBoolean();
            }
            if (k == Kind.MIXED) {
                targets = new float[B * C];
                for (int i = 0; i < B; i++) {
                    double lam = rng.nextDouble();
                    targets[i * C + labels[i]] += (float) lam;
                    targets[i * C + rng.nextInt(C)] += (float) (1 - lam);
                }
            }
            float[] logits = k == Kind.FILE_TEACHER || (mode != Distillation.NONE && k != Kind.LABELS)
                    ? Check.normal(rng, B * C, 2) : null;
            out.add(new Batch(k, Check.normal(rng, B * 16 * 16, 1), labels, labeled, targets, logits));
        }
        return out;
    }

    /** Each step's result and the final parameters and moments of one run. */
    private static List<Object> run(Backend be, TrainOptions o, Precision precision, List<Batch> batches, long seed) {
        List<Object> out = new ArrayList<>();
        boolean teacherModel = o.distillation() != Distillation.NONE
                && batches.stream().anyMatch(b -> b.logits() == null);
        try (VisionTransformer student = new VisionTransformer(be, STUDENT, B, seed, precision);
             VisionTransformer teacher = teacherModel
                     ? new VisionTransformer(be, STUDENT.withDistilled(false), B, seed + 1) : null;
             Trainer trainer = new Trainer(student, teacher, o, 50)) {
            for (Batch b : batches) {
                try {
                    out.add(b.targets() != null
                            ? trainer.stepMixed(b.images(), b.labels(), b.targets(), b.logits())
                            : trainer.step(b.images(), b.labels(), b.labeled(), b.logits()));
                } catch (NonFiniteException e) {
                    out.add("non-finite at step " + e.getMessage());
                }
            }
            out.add(ModelParameters.of(student));
            for (List<org.distill4j.Tensor> moments : List.of(trainer.firstMoments(), trainer.secondMoments())) {
                for (org.distill4j.Tensor m : moments) out.add(m.toArray());
            }
            out.add(trainer.steps());
            out.add(trainer.skippedSteps());
        }
        return out;
    }

    /** The graphed run's results, after checking them against the uncaptured run's. */
    private static List<Object> sameRuns(Backend be, TrainOptions o, Precision precision, List<Batch> batches,
            String what) {
        long seed = Check.freshSeed();
        List<Object> eager = run(be, o, precision, batches, seed);
        List<Object> graphed = run(be, o.withCudaGraph(true), precision, batches, seed);
        String w = what + " on " + be.device() + " (seed " + seed + ")";
        assertEquals(eager.size(), graphed.size(), w);
        for (int i = 0; i < eager.size(); i++) {
            Object a = eager.get(i), b = graphed.get(i);
            if (a instanceof float[] fa) {
                assertArrayEquals(fa, (float[]) b, w + ": array " + i);
            } else {
                assertEquals(a, b, w + ": item " + i);
            }
        }
        // Not vacuous: the run trained (parameters moved, finite losses where the data was finite).
        assertTrue(((Long) eager.get(eager.size() - 2)) > 0, w);
        return graphed;
    }

    private static TrainOptions options() {
        return new TrainOptions().withEpochs(1).withBatch(B).withLr(3e-3, 1e-4).withWarmupEpochs(0)
                .withLabelSmoothing(0.1).withAugment(false);
    }

    private static void everyKind(Backend be) {
        Random rng = new Random(Check.freshSeed());
        Kind[] labels = {Kind.LABELS, Kind.MASKED, Kind.LABELS, Kind.MIXED, Kind.MASKED, Kind.LABELS, Kind.MIXED,
            Kind.MIXED, Kind.MASKED};
        sameRuns(be, options(), Precision.FP32, batches(rng, Distillation.NONE, labels), "labels, mask, Mixup");
        Kind[] teachers = {Kind.LABELS, Kind.FILE_TEACHER, Kind.LABELS, Kind.FILE_TEACHER, Kind.LABELS,
            Kind.FILE_TEACHER};
        for (Distillation mode : new Distillation[] {Distillation.SOFT, Distillation.HARD}) {
            sameRuns(be, options().withDistillation(mode, 0.4, 2.0), Precision.FP32,
                    batches(rng, mode, teachers), mode + " distillation, teacher model and logits from a file");
        }
    }

    @Test
    void graphedStepsAreTheUncapturedStepsOnTheEmulator() {
        try (Backend be = Backends.open(Device.cudaEmu())) {
            everyKind(be);
        }
    }

    @Test
    void graphedStepsAreTheUncapturedStepsOnAGpu() {
        try (Backend be = Check.cudaOrSkip()) {
            everyKind(be);
            mixedPrecisionAndSkippedSteps(be);
        }
    }

    @Test
    void mixedPrecisionAndSkippedStepsOnTheEmulator() {
        try (Backend be = Backends.open(Device.cudaEmu())) {
            mixedPrecisionAndSkippedSteps(be);
        }
    }

    /** bf16 and tf32 steps; a NaN batch replayed from a graph is skipped as an uncaptured one is. */
    private static void mixedPrecisionAndSkippedSteps(Backend be) {
        Random rng = new Random(Check.freshSeed());
        TrainOptions soft = options().withDistillation(Distillation.SOFT, 0.5, 3.0);
        for (Precision p : new Precision[] {Precision.BF16, Precision.TF32}) {
            sameRuns(be, soft, p, batches(rng, Distillation.SOFT, Kind.FILE_TEACHER, Kind.FILE_TEACHER,
                    Kind.FILE_TEACHER), p + " soft distillation");
        }
        List<Batch> withNan = batches(rng, Distillation.NONE, Kind.LABELS, Kind.LABELS, Kind.LABELS, Kind.LABELS,
                Kind.LABELS);
        withNan.get(2).images()[5] = Float.NaN;  // the first replayed step (the second was captured)
        withNan.get(3).images()[0] = Float.NaN;
        List<Object> r = sameRuns(be, options().withSkipNonFinite(2), Precision.FP32, withNan,
                "non-finite batches skipped");
        assertEquals(3L, r.get(r.size() - 2), "three steps applied");
        assertEquals(2L, r.get(r.size() - 1), "two skipped");
        assertTrue(((Trainer.StepResult) r.get(2)).skipped() && ((Trainer.StepResult) r.get(3)).skipped()
                && !((Trainer.StepResult) r.get(4)).skipped(), r.toString());
    }

    @Test
    void theCpuBackendRefusesGraphs() {
        try (Backend be = Backends.open(Device.cpu());
             VisionTransformer student = new VisionTransformer(be, STUDENT, B, 1)) {
            long live = be.liveAllocations();
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> new Trainer(student, null, options().withCudaGraph(true), 10));
            assertTrue(e.getMessage().contains("CUDA graphs need a backend that captures them (cuda, cuda-emu); the "
                    + "student is on cpu"), e.getMessage());
            assertEquals(live, be.liveAllocations(), "the refused trainer left nothing allocated");
        }
    }
}
