package org.distill4j.onnx;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;
import java.io.IOException;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import org.distill4j.data.ImageSource;
import org.distill4j.data.Normalization;
import org.distill4j.data.Resize;
import org.distill4j.train.TrainOptions;
import org.distill4j.train.TrainingRun;

/**
 * A teacher in an ONNX file (a CNN trained in PyTorch and exported, say), run by ONNX Runtime on every training
 * batch as the student sees it: augmented, erased and mixed, as DeiT's teacher sees the mixed image. No gradients.
 *
 * <p>The model takes one float tensor [N, C, H, W] (N and H, W may be dynamic; a dynamic H, W takes the data's size)
 * and gives [N, classes]. Each batch is brought to the teacher's own input, as timm does for a teacher of another
 * resolution: the student's normalisation undone, grey images copied into three channels for an RGB teacher (as
 * Pillow's {@code convert("RGB")}), resized to H×W with Pillow's antialiased bilinear filter ({@link Resize#resize})
 * when the sizes differ, and normalised with the teacher's mean and std. The logits are handed to the student's loss
 * through host memory (the CPU build of ONNX Runtime).
 *
 * <p>Needs the optional dependency {@value OnnxRuntime#ARTIFACT}: call {@link OnnxRuntime#require()} first for a
 * message naming it. Not thread-safe: one training run uses it. Close it to free the session.
 */
public final class OnnxTeacher implements TrainingRun.TeacherLogits, AutoCloseable {
    private final Path file;
    private final OrtEnvironment env;
    private final OrtSession session;
    private final String input;
    private final long fixedBatch;           // -1 when the batch dimension is dynamic
    private final int channels, height, width, classes;
    private final int dataChannels, dataHeight, dataWidth;
    private final Normalization data, teacher;
    private float[] scratch = new float[0];  // the batch in the teacher's input, kept between batches
    private final float[] pixels;            // one image in pixel space, the teacher's channels at the data's size

    private OnnxTeacher(Path file, OrtEnvironment env, OrtSession session, String input, long fixedBatch,
            int channels, int height, int width, int classes, ImageSource source, Normalization teacher) {
        this.file = file;
        this.env = env;
        this.session = session;
        this.input = input;
        this.fixedBatch = fixedBatch;
        this.channels = channels;
        this.height = height;
        this.width = width;
        this.classes = classes;
        this.dataChannels = source.channels();
        this.dataHeight = source.height();
        this.dataWidth = source.width();
        this.data = source.normalization();
        this.teacher = teacher;
        this.pixels = new float[channels * dataHeight * dataWidth];
    }

    /**
     * Opens {@code file} for batches of {@code train}'s images (their channels, size and normalisation).
     *
     * @param normalization the teacher's mean and std per channel; null: the data's own (no re-normalisation)
     * @throws IOException naming the file when it cannot be read or is not an ONNX model ONNX Runtime can run
     * @throws IllegalArgumentException when its input or output is not what a classifier of these images takes
     */
    public static OnnxTeacher open(Path file, ImageSource train, Normalization normalization) throws IOException {
        OnnxRuntime.require();
        if (!Files.isRegularFile(file)) throw new IOException(file + ": no such file");
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        OrtSession session;
        try {
            session = env.createSession(file.toString(), new OrtSession.SessionOptions());
        } catch (OrtException e) {
            throw new IOException(file + " is not an ONNX model ONNX Runtime can load: " + firstLine(e), e);
        }
        try {
            if (session.getNumInputs() != 1 || session.getNumOutputs() < 1) {
                throw new IllegalArgumentException(file + " has " + session.getNumInputs() + " inputs and "
                        + session.getNumOutputs() + " outputs; a teacher takes one image tensor and gives logits");
            }
            Map.Entry<String, NodeInfo> in = session.getInputInfo().entrySet().iterator().next();
            long[] is = floatShape(file, "input", in.getValue(), 4);
            long[] os = floatShape(file, "output", session.getOutputInfo().values().iterator().next(), 2);
            int c = train.channels(), tc = is[1] == -1 ? c : (int) is[1];
            if (tc != c && !(c == 1 && tc == 3)) {
                throw new IllegalArgumentException(file + " takes images of " + is[1] + " channel(s); the data "
                        + train.name() + " has " + c + (c == 3 ? " (an RGB image is not made grey for a teacher)"
                        : ""));
            }
            if (os[1] <= 0) throw new IllegalArgumentException(file + ": its output's class count is not fixed");
            if (is[0] != -1 && os[0] != -1 && is[0] != os[0]) {
                throw new IllegalArgumentException(file + ": input batch " + is[0] + ", output batch " + os[0]);
            }
            int h = is[2] > 0 ? (int) is[2] : train.height(), w = is[3] > 0 ? (int) is[3] : train.width();
            if (normalization != null && normalization.mean().length != tc) {
                throw new IllegalArgumentException("the teacher's mean/std have " + normalization.mean().length
                        + " channel(s), its input " + tc);
            }
            Normalization own = train.normalization();
            if (normalization == null && tc != c) {  // grey data for an RGB teacher: the data's statistics, thrice
                float[] m = new float[tc], sd = new float[tc];
                Arrays.fill(m, own.mean()[0]);
                Arrays.fill(sd, own.std()[0]);
                own = new Normalization(m, sd);
            }
            return new OnnxTeacher(file, env, session, in.getKey(), is[0], tc, h, w, (int) os[1], train,
                    normalization != null ? normalization : own);
        } catch (OrtException | RuntimeException e) {
            closeQuietly(session);
            if (e instanceof RuntimeException r) throw r;
            throw new IOException(file + ": " + firstLine(e), e);
        }
    }

    private static long[] floatShape(Path file, String what, NodeInfo node, int rank) {
        if (!(node.getInfo() instanceof TensorInfo t) || t.type != OnnxJavaType.FLOAT || t.getShape().length != rank) {
            throw new IllegalArgumentException(file + ": its " + what + " '" + node.getName() + "' is " + node.getInfo()
                    + "; a teacher's " + what + " is a float tensor of rank " + rank
                    + (rank == 4 ? " [N, C, H, W]" : " [N, classes]"));
        }
        return t.getShape();
    }

    private static String firstLine(Exception e) {
        String m = String.valueOf(e.getMessage());
        int nl = m.indexOf('\n');
        return nl < 0 ? m : m.substring(0, nl);
    }

    private static void closeQuietly(OrtSession s) {
        try {
            s.close();
        } catch (OrtException ignored) {
            // closing after a failed open: the first error is the one to report
        }
    }

    /** Classes the model predicts. */
    public int classes() {
        return classes;
    }

    /** The model's input as used: {C, H, W}. */
    public int[] inputShape() {
        return new int[] {channels, height, width};
    }

    @Override
    public org.distill4j.nn.VisionTransformer model() {
        return null;
    }

    @Override
    public void checkFor(ImageSource train, TrainOptions options) {
        if (train.channels() != dataChannels || train.height() != dataHeight || train.width() != dataWidth) {
            throw new IllegalArgumentException("the ONNX teacher " + file + " was opened for " + dataChannels + "×"
                    + dataHeight + "×" + dataWidth + " images; the training set " + train.name() + " has "
                    + train.channels() + "×" + train.height() + "×" + train.width());
        }
        if (train.classes() != classes) {
            throw new IllegalArgumentException("the ONNX teacher " + file + " predicts " + classes + " classes; the "
                    + "training set " + train.name() + " has " + train.classes());
        }
        if (fixedBatch != -1 && fixedBatch != 1 && fixedBatch != options.batch()) {
            throw new IllegalArgumentException("the ONNX teacher " + file + " takes batches of exactly " + fixedBatch
                    + " images; this run's batch is " + options.batch() + " (export it with a dynamic batch axis)");
        }
    }

    /** Runs the model on the batch {@code images} ([B, C, h, w] of the data, normalised as the data). */
    @Override
    public void logits(float[] images, int[] indices, int epoch, float[] out) {
        int b = indices.length, plane = height * width, size = channels * plane;
        int dataSize = dataChannels * dataHeight * dataWidth;
        if (images.length < (long) b * dataSize || out.length != b * classes) {
            throw new IllegalArgumentException("a batch of " + b + " needs " + b * dataSize + " image floats and "
                    + b * classes + " logits, got " + images.length + " and " + out.length);
        }
        if (scratch.length != b * size) scratch = new float[b * size];
        boolean resize = height != dataHeight || width != dataWidth;
        int dataPlane = dataHeight * dataWidth;
        float[] px = pixels;
        for (int i = 0; i < b; i++) {
            // Undo the data's normalisation (grey copied into every channel of an RGB teacher), resize in pixel
            // space, normalise as the teacher expects.
            for (int c = 0; c < channels; c++) {
                int dc = dataChannels == channels ? c : 0;
                float m = data.mean()[dc], s = data.std()[dc];
                int from = i * dataSize + dc * dataPlane, to = c * dataPlane;
                for (int k = 0; k < dataPlane; k++) px[to + k] = images[from + k] * s + m;
            }
            float[] sized = resize ? Resize.resize(px, channels, dataHeight, dataWidth, height, width) : px;
            for (int c = 0; c < channels; c++) {
                for (int k = 0; k < plane; k++) scratch[i * size + c * plane + k] = teacher.apply(c, sized[c * plane + k]);
            }
        }
        int per = fixedBatch == 1 ? 1 : b;
        try {
            for (int start = 0; start < b; start += per) {
                FloatBuffer in = FloatBuffer.wrap(scratch, start * size, per * size).slice();
                try (OnnxTensor t = OnnxTensor.createTensor(env, in, new long[] {per, channels, height, width});
                     OrtSession.Result r = session.run(Map.of(input, t))) {
                    OnnxValue v = r.get(0);
                    if (!(v instanceof OnnxTensor o)) throw new IllegalStateException(file + " gave no tensor");
                    FloatBuffer got = o.getFloatBuffer();
                    if (got.remaining() != per * classes) {
                        throw new IllegalStateException(file + " gave " + got.remaining() + " logits for " + per
                                + " images of " + classes + " classes");
                    }
                    got.get(out, start * classes, per * classes);
                }
            }
        } catch (OrtException e) {
            throw new IllegalStateException("the ONNX teacher " + file + " failed on a batch: " + firstLine(e), e);
        }
    }

    @Override
    public String describe() {
        return "ONNX teacher " + file + " (input " + channels + "×" + height + "×" + width + ", mean "
                + Arrays.toString(teacher.mean()) + ", std " + Arrays.toString(teacher.std())
                + ") run on every batch";
    }

    @Override
    public void close() {
        closeQuietly(session);
    }
}
