package org.distill4j.inference;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;
import org.distill4j.Device;
import org.distill4j.Precision;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import org.distill4j.nn.ModelFile;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;

/**
 * A trained model file served to many threads. A {@link VisionTransformer} belongs to one thread at a time; a
 * predictor holds {@code replicas} of them, each on a backend of its own (its own CUDA stream), and lends one to each
 * call: up to {@code replicas} calls run at once, the others wait for a replica to come back. Each replica runs
 * batches of a fixed size, so a call of {@code n} images returns the model's {@link VisionTransformer#predict} of
 * ⌈n / batch⌉ consecutive batches, the last padded with zero images whose outputs are dropped, bit for bit whichever
 * replica ran it. Every op of the ViT works per image or per row, so an image's logits do not depend on the other
 * images; they may differ in the last bits with its position in a batch, where a GEMM may sum in another order.
 *
 * <p>Memory: each replica holds the model's weights and its buffers for {@code batch} images, training buffers
 * included ({@link VisionTransformer#bytesNeeded}). On the CPU one replica already uses every core (OpenMP); more
 * replicas there only let calls queue inside the kernels rather than here.
 */
public final class Predictor implements AutoCloseable {
    private record Replica(Backend backend, VisionTransformer model) {}

    private final VitConfig config;
    private final int batch;
    private final List<Replica> replicas;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition returned = lock.newCondition();
    private final ArrayDeque<Replica> idle = new ArrayDeque<>();  // guarded by lock
    private boolean closed;  // guarded by lock
    private boolean freed;  // guarded by lock

    private Predictor(VitConfig config, int batch, List<Replica> replicas) {
        this.config = config;
        this.batch = batch;
        this.replicas = List.copyOf(replicas);
        idle.addAll(replicas);
    }

    /** {@link #open(Path, Device, int, int, Precision)} in fp32. */
    public static Predictor open(Path modelFile, Device device, int replicas, int batch) throws IOException {
        return open(modelFile, device, replicas, batch, Precision.FP32);
    }

    /**
     * Opens {@code replicas} backends of {@code device}, and on each a model of {@code modelFile}'s configuration
     * for {@code batch} images in {@code precision}, loaded from the file (NaN and infinite weights refused).
     *
     * @throws IllegalArgumentException when {@code replicas} or {@code batch} is below 1, or {@code precision} is
     *     one the device cannot run
     * @throws IOException when the file cannot be read or is not a distill4j model file
     */
    public static Predictor open(Path modelFile, Device device, int replicas, int batch, Precision precision)
            throws IOException {
        if (modelFile == null || device == null || precision == null) {
            throw new IllegalArgumentException("modelFile, device and precision must be given");
        }
        if (replicas < 1) throw new IllegalArgumentException("replicas must be >= 1, got " + replicas);
        if (batch < 1) throw new IllegalArgumentException("batch must be >= 1, got " + batch);
        VitConfig config = ModelFile.config(modelFile);
        long floats = (long) batch * config.channels() * config.imageSize() * config.imageSize();
        if (floats > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("a batch of " + batch + " images of " + config + " is " + floats
                    + " floats, more than one Java array holds");
        }
        List<Replica> made = new ArrayList<>();
        try {
            for (int i = 0; i < replicas; i++) {
                Backend backend = Backends.open(device);
                VisionTransformer model = null;
                try {
                    model = new VisionTransformer(backend, config, batch, 0, precision);
                    ModelFile.load(modelFile, model);
                } catch (RuntimeException | IOException | Error e) {
                    if (model != null) model.close();
                    backend.close();
                    throw e;
                }
                made.add(new Replica(backend, model));
            }
        } catch (RuntimeException | IOException | Error e) {
            for (Replica r : made) free(r);
            throw e;
        }
        return new Predictor(config, batch, made);
    }

    /** The model's configuration, read from the file. */
    public VitConfig config() {
        return config;
    }

    /** Images per batch of each replica. */
    public int batch() {
        return batch;
    }

    /** How many calls can run at once. */
    public int replicas() {
        return replicas.size();
    }

    /** Floats per image: channels × image size². */
    public int imageFloats() {
        return config.channels() * config.imageSize() * config.imageSize();
    }

    /**
     * DeiT's prediction for {@code n} images: the average of the class and distillation heads' logits (the class
     * head alone for a model without a distillation token). Safe to call from many threads; waits for a free
     * replica.
     *
     * @param images {@code n} images [n, C, H, W], row-major, normalised as in training; NaN and infinities refused
     * @return [n, classes] logits, row-major
     * @throws IllegalArgumentException on {@code n} below 1, too few floats, or a non-finite value (named)
     * @throws IllegalStateException once the predictor is closed
     * @throws InterruptedException when interrupted while waiting for a replica
     */
    public float[] logits(float[] images, int n) throws InterruptedException {
        int size = imageFloats();
        checkImages(images, n, size);
        int classes = config.classes();
        if ((long) n * classes > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException(n + " images of " + classes + " logits each do not fit one Java array");
        }
        float[] out = new float[n * classes];
        Replica r = borrow();
        try {
            float[] chunk = new float[batch * size];  // fits: checked by open
            for (int first = 0; first < n; first += batch) {
                int count = Math.min(batch, n - first);
                System.arraycopy(images, first * size, chunk, 0, count * size);
                if (count < batch) Arrays.fill(chunk, count * size, chunk.length, 0f);
                float[] got = r.model.predict(chunk);
                System.arraycopy(got, 0, out, first * classes, count * classes);
            }
        } finally {
            giveBack(r);
        }
        return out;
    }

    /**
     * The predicted class of each of {@code n} images: the index of the largest of its {@link #logits} (the first
     * on ties; a NaN logit is never the largest).
     */
    public int[] classes(float[] images, int n) throws InterruptedException {
        float[] logits = logits(images, n);
        int classes = config.classes();
        int[] out = new int[n];
        for (int i = 0; i < n; i++) {
            int best = 0;
            float max = Float.NEGATIVE_INFINITY;
            for (int c = 0; c < classes; c++) {
                float v = logits[i * classes + c];
                if (v > max) {
                    max = v;
                    best = c;
                }
            }
            out[i] = best;
        }
        return out;
    }

    /**
     * Refuses new calls (and wakes the ones waiting for a replica, which then throw), waits for the calls running to
     * finish, then frees every replica. Closing twice is harmless.
     */
    @Override
    public void close() {
        lock.lock();
        try {
            closed = true;
            returned.signalAll();
            // A running call is inside native code on its replica's buffers: they may be freed only after it.
            while (idle.size() < replicas.size()) returned.awaitUninterruptibly();
            if (freed) return;
            freed = true;
        } finally {
            lock.unlock();
        }
        for (Replica r : replicas) free(r);
    }

    private Replica borrow() throws InterruptedException {
        lock.lockInterruptibly();
        try {
            while (!closed && idle.isEmpty()) returned.await();
            if (closed) throw new IllegalStateException("the predictor of " + config.name() + " is closed");
            return idle.pop();
        } finally {
            lock.unlock();
        }
    }

    private void giveBack(Replica r) {
        lock.lock();
        try {
            idle.push(r);
            returned.signalAll();
        } finally {
            lock.unlock();
        }
    }

    private static void free(Replica r) {
        try {
            r.model.close();
        } finally {
            r.backend.close();
        }
    }

    private static void checkImages(float[] images, int n, int size) {
        if (images == null) throw new IllegalArgumentException("images must be given");
        if (n < 1) throw new IllegalArgumentException("n must be >= 1, got " + n);
        long need = (long) n * size;
        if (images.length < need) {
            throw new IllegalArgumentException(n + " images of " + size + " floats need " + need + ", got "
                    + images.length);
        }
        for (long i = 0; i < need; i++) {
            float v = images[(int) i];
            if (!Float.isFinite(v)) {
                throw new IllegalArgumentException("image " + i / size + " holds " + v + " at element " + i % size);
            }
        }
    }

    @Override
    public String toString() {
        return "Predictor[" + config + ", " + replicas.size() + " replicas of batch " + batch + "]";
    }
}
