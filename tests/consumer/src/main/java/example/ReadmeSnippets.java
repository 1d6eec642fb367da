package example;

import org.distill4j.*;
import org.distill4j.backend.*;
import org.distill4j.data.*;
import org.distill4j.inference.*;
import org.distill4j.nn.*;
import org.distill4j.ops.*;
import org.distill4j.train.*;

/**
 * The README's Java snippets, each between "readme:begin" and "readme:end" exactly as the README shows it (imports
 * aside, which are here at the top, and lines marked readme:hidden, which hand results to ConsumerMain): this
 * project compiles them against the platform artifact, ConsumerMain runs the fast ones, and ReadmeSnippetsTest (in
 * the main project) fails when the README and this file differ. The parameters are the variables a reader of the
 * README has in hand.
 */
final class ReadmeSnippets {
    private ReadmeSnippets() {}

    /** Compiled, not run by CI: it trains for minutes and needs a teacher trained by the CLI. */
    static void distill() throws java.io.IOException {
        // readme:begin distill
        FashionMnist.Split data = FashionMnist.load();                       // /usr/share/datasets/fashion-mnist
        TrainOptions options = new TrainOptions().withEpochs(10).withBatch(128).withAugment(false)
                .withDistillation(Distillation.SOFT, 0.5, 4.0);              // (1-α)·CE + α·T²·KL on the dist head
        try (Backend backend = Backends.open(org.distill4j.Device.best());
             VisionTransformer teacher = new VisionTransformer(backend, VitConfig.preset("mnist-teacher"), 128, 0);
             VisionTransformer student = new VisionTransformer(backend, VitConfig.preset("mnist-student"), 128, 1)) {
            // written by `./distill4j train --model mnist-teacher --out teacher-run`
            ModelFile.load(java.nio.file.Path.of("teacher-run/model.safetensors"), teacher);  // timm names, strict
            SoftLabels soft = SoftLabels.compute(teacher, data.train(), "mnist-teacher");  // teacher logits, once
            TrainingRun.Result r = TrainingRun.builder(student, data.train(), data.test())
                    .name("student").teacher(soft).options(options)
                    .checkpoint(java.nio.file.Path.of("student.ckpt.safetensors"))   // after every epoch; optional
                    .run();
            System.out.println(TrainingRun.format(r.test()));                 // average of both heads (DeiT)
            ModelFile.save(java.nio.file.Path.of("student.safetensors"), student);
        }
        // readme:end
    }

    /** Compiled, not run by CI: it needs a trained model file. */
    static int[] predict(float[] images, int n) throws java.io.IOException, InterruptedException {
        int[][] out = new int[1][];  // readme:hidden
        // readme:begin predict
        try (Predictor predictor = Predictor.open(java.nio.file.Path.of("student.safetensors"), Device.best(),
                4, 32)) {                                            // 4 replicas of 32-image batches
            int[] classes = predictor.classes(images, n);           // from any thread: waits for a free replica
            out[0] = classes;  // readme:hidden
        }
        // readme:end
        return out[0];
    }

    /** Run by ConsumerMain on random logits: the loss, then the gradient [batch·classes]. */
    static float[] fusedKl(float[] studentLogits, float[] teacherLogits, int batch, int classes) {
        float[][] out = new float[2][];
        // readme:begin fused-kl
        Device device = Device.best();                          // cuda:0 if it works here, else cpu; the choice logged
        KlDiv kd = KlDiv.builder().temperature(4f)              // soft labels at T = 4, loss scaled by T² (Hinton)
                .reduction(Reduction.BATCHMEAN).build();        // batchmean (default) | sum | mean | none
        try (Backend backend = Backends.open(device);
             Tensor student = Tensor.of(backend, studentLogits, batch, classes);
             Tensor teacher = Tensor.of(backend, teacherLogits, batch, classes);
             KlDiv.Result r = kd.compute(student, teacher)) {   // loss and d loss / d student in one kernel pass
            float loss = r.lossValue();
            float[] grad = r.grad().toArray();
            out[0] = new float[] {loss};  // readme:hidden
            out[1] = grad;  // readme:hidden
        }
        // readme:end
        return concat(out[0], out[1]);
    }

    /** Run by ConsumerMain with zeroed gradients: DeiT-Ti's patch embedding, forward and backward. */
    static void patchEmbed(Backend backend, Tensor images, Tensor weight, Tensor bias, Tensor pos, Tensor cls,
                           Tensor dist, Tensor tokens, Tensor dTokens, Tensor dWeight, Tensor dBias, Tensor dPos,
                           Tensor dCls, Tensor dDist) {
        // readme:begin patch-embed
        try (PatchEmbed embed = PatchEmbed.builder().batch(32).channels(3).image(224, 224).patch(16).dim(192)
                .distilled(true).build(backend)) {
            embed.forward(images, weight, bias, pos, cls, dist, tokens);          // tokens [B, 2 + 196, 192]
            embed.backward(images, weight, dTokens, dWeight, dBias, dPos, dCls, dDist, null);  // grads accumulate (+=)
        }
        // readme:end
    }

    private static float[] concat(float[] a, float[] b) {
        float[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
