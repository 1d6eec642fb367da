package org.distill4j.data;

import java.util.NoSuchElementException;
import java.util.SplittableRandom;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * Produces training batches on a background thread while the consumer (the training step) works on the previous
 * one.
 *
 * <p><b>Order.</b> Epoch {@code e} visits the dataset in a permutation drawn from
 * {@code new SplittableRandom(mix(seed, e))}, starting from the identity each epoch: epoch e's order depends only
 * on (seed, e), never on the epochs before it, so a run resumed at epoch e sees the same batches as an uninterrupted
 * one. Augmentation is likewise a function of (seed, epoch, index) ({@link Augment}). Without shuffling (evaluation)
 * the order is 0..n−1.
 *
 * <p><b>Buffers.</b> A fixed pool of {@link Batch}es (two by default) is allocated once and recycled: the producer
 * fills a free batch while the consumer holds another. The batch returned by {@link #next()} stays valid until the
 * following {@code next()} or {@link #close()}; copy out what must live longer. When filling a batch takes less
 * time than a training step, {@code next()} returns without waiting ({@link #waitNanos()} measures any wait).
 *
 * <p><b>Shapes.</b> images {@code [B, C, H, W]} floats, labels as {@code int[]} class indices (int32, the format
 * the cross-entropy kernel takes), and the dataset indices of the samples (for per-sample state such as cached
 * teacher logits). With {@code dropLast} (the default) every batch is full; otherwise the last
 * batch of an epoch has {@link Batch#size()} &lt; B and the array tails past it are left as they were.
 *
 * <p><b>Errors.</b> An exception in the producer ends it and is rethrown by the consumer's next {@code next()},
 * wrapped in an {@link IllegalStateException} naming the epoch and batch, with the original as its cause.
 *
 * <pre>{@code
 * try (BatchLoader loader = BatchLoader.builder(train, 128).seed(7).augment(new Augment(7, 2, true))
 *         .epochs(10).build()) {
 *     while (loader.hasNext()) {
 *         BatchLoader.Batch b = loader.next();
 *         step(b.images(), b.labels(), b.size());
 *     }
 * }
 * }</pre>
 */
public final class BatchLoader implements BatchSource {
    /** A hook run on each filled batch in the producer thread (after augmentation), e.g. extra augmentation. */
    @FunctionalInterface
    public interface BatchTransform {
        void apply(Batch batch) throws Exception;
    }

    /** One batch; the arrays are preallocated and reused by the loader. */
    public static final class Batch {
        private final float[] images;
        private final int[] labels;
        private final int[] indices;
        private int size;
        private int epoch;
        private int index;

        Batch(int batchSize, int imageSize) {
            images = new float[batchSize * imageSize];
            labels = new int[batchSize];
            indices = new int[batchSize];
        }

        /** Images, {@code [B, C, H, W]}; the first {@code size()} are valid. */
        public float[] images() {
            return images;
        }

        /** Class indices; the first {@code size()} are valid. */
        public int[] labels() {
            return labels;
        }

        /** Dataset index of each sample. */
        public int[] indices() {
            return indices;
        }

        /** Number of valid samples: the batch size, or fewer in a kept last partial batch. */
        public int size() {
            return size;
        }

        /** The epoch this batch belongs to. */
        public int epoch() {
            return epoch;
        }

        /** Position of this batch in its epoch, 0..batchesPerEpoch−1. */
        public int index() {
            return index;
        }

        void set(int size, int epoch, int index) {
            this.size = size;
            this.epoch = epoch;
            this.index = index;
        }

        @Override
        public String toString() {
            return "batch " + index + " of epoch " + epoch + " (" + size + " samples)";
        }
    }

    /** Options of a {@link BatchLoader}. */
    public static final class Builder {
        private final Dataset data;
        private final int batchSize;
        private long seed;
        private boolean shuffle = true;
        private boolean dropLast = true;
        private Augment augment = Augment.none();
        private BatchTransform transform;
        private int startEpoch;
        private int startBatch;
        private int epochs = Integer.MAX_VALUE;
        private int buffers = 2;

        private Builder(Dataset data, int batchSize) {
            this.data = data;
            this.batchSize = batchSize;
        }

        /** Seed of the per-epoch permutations (default 0). */
        public Builder seed(long seed) {
            this.seed = seed;
            return this;
        }

        /** Shuffle each epoch (default true); false gives 0..n−1 in order, for evaluation. */
        public Builder shuffle(boolean shuffle) {
            this.shuffle = shuffle;
            return this;
        }

        /** Drop the last partial batch of each epoch (default true); false keeps it, smaller. */
        public Builder dropLast(boolean dropLast) {
            this.dropLast = dropLast;
            return this;
        }

        /** Augmentation applied to each image (default none). */
        public Builder augment(Augment augment) {
            this.augment = augment;
            return this;
        }

        /** A hook run on each batch in the producer thread. */
        public Builder transform(BatchTransform transform) {
            this.transform = transform;
            return this;
        }

        /** Start at batch {@code batch} of epoch {@code epoch} (resume); default (0, 0). */
        public Builder start(int epoch, int batch) {
            this.startEpoch = epoch;
            this.startBatch = batch;
            return this;
        }

        /** Produce epochs startEpoch .. startEpoch+count−1, then end; default: unbounded. */
        public Builder epochs(int count) {
            this.epochs = count;
            return this;
        }

        /** Number of batch buffers (default 2, double buffering); more absorbs jitter in the producer. */
        public Builder buffers(int buffers) {
            this.buffers = buffers;
            return this;
        }

        /** Allocates the buffers and starts the producer thread. */
        public BatchLoader build() {
            return new BatchLoader(this);
        }
    }

    /** Options for {@code data} in batches of {@code batchSize}. */
    public static Builder builder(Dataset data, int batchSize) {
        return new Builder(data, batchSize);
    }

    private static final Batch END = new Batch(0, 0);

    private final Dataset data;
    private final int batchSize;
    private final long seed;
    private final boolean shuffle;
    private final Augment augment;
    private final BatchTransform transform;
    private final int startEpoch;
    private final int startBatch;
    private final int endEpoch;
    private final int batchesPerEpoch;
    private final long total;
    private final BlockingQueue<Batch> free;
    private final BlockingQueue<Batch> ready;
    private final Thread thread;
    private volatile Throwable failure;
    private volatile String failedAt;
    private volatile boolean closed;
    private Batch held;
    private long consumed;
    private long waitNanos;

    private BatchLoader(Builder b) {
        this.data = b.data;
        if (b.batchSize <= 0) {
            throw new IllegalArgumentException("batch size must be positive, got " + b.batchSize);
        }
        if (b.buffers < 2) {
            throw new IllegalArgumentException("need at least 2 buffers (one held by the consumer, one filling), got "
                    + b.buffers);
        }
        if (b.startEpoch < 0 || b.epochs < 0) {
            throw new IllegalArgumentException("start epoch and epoch count must be >= 0, got " + b.startEpoch + ", "
                    + b.epochs);
        }
        this.batchSize = b.batchSize;
        this.seed = b.seed;
        this.shuffle = b.shuffle;
        this.augment = b.augment;
        this.transform = b.transform;
        this.batchesPerEpoch = b.dropLast ? data.size() / batchSize : (data.size() + batchSize - 1) / batchSize;
        if (batchesPerEpoch == 0) {
            throw new IllegalArgumentException(data + " has fewer than one batch of " + batchSize
                    + (b.dropLast ? " (dropLast)" : ""));
        }
        if (b.startBatch < 0 || b.startBatch >= batchesPerEpoch) {
            throw new IllegalArgumentException("start batch " + b.startBatch + " is outside 0.." + (batchesPerEpoch - 1));
        }
        if (b.augment.pad() >= data.height() || b.augment.pad() >= data.width()) {
            throw new IllegalArgumentException("augmentation pad " + b.augment.pad() + " must be smaller than the image ("
                    + data.height() + "×" + data.width() + ")");
        }
        this.startEpoch = b.startEpoch;
        this.startBatch = b.startBatch;
        this.endEpoch = (int) Math.min(Integer.MAX_VALUE, (long) b.startEpoch + b.epochs);
        this.total = b.epochs == Integer.MAX_VALUE ? Long.MAX_VALUE
                : Math.max(0, (long) b.epochs * batchesPerEpoch - startBatch);
        this.free = new ArrayBlockingQueue<>(b.buffers);
        this.ready = new ArrayBlockingQueue<>(b.buffers + 1);
        for (int i = 0; i < b.buffers; i++) {
            free.add(new Batch(batchSize, data.imageSize()));
        }
        this.thread = new Thread(this::produce, "distill4j-batch-loader");
        thread.setDaemon(true);
        thread.start();
    }

    /** Batches per epoch: ⌊n/B⌋ with dropLast, ⌈n/B⌉ without. */
    public int batchesPerEpoch() {
        return batchesPerEpoch;
    }

    /** The batch size B. */
    public int batchSize() {
        return batchSize;
    }

    /** The dataset this loader reads. */
    public Dataset dataset() {
        return data;
    }

    /** Visiting order of epoch {@code epoch}: a permutation of 0..n−1 that depends only on (seed, epoch). */
    public int[] order(int epoch) {
        return order(data.size(), seed, epoch, shuffle);
    }

    /** The permutation {@link BatchLoader} uses for (n, seed, epoch): Fisher–Yates from the identity. */
    public static int[] order(int n, long seed, int epoch, boolean shuffle) {
        int[] order = new int[n];
        for (int i = 0; i < n; i++) {
            order[i] = i;
        }
        if (shuffle) {
            SplittableRandom rng = new SplittableRandom(Seeds.of(seed, epoch));
            for (int i = n - 1; i > 0; i--) {
                int j = rng.nextInt(i + 1);
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        }
        return order;
    }

    /** Whether another batch will come (false once all requested epochs are consumed). */
    @Override
    public boolean hasNext() {
        return !closed && consumed < total;
    }

    /**
     * The next batch, waiting for the producer if needed. The previous batch returns to the pool and must not be
     * used any more.
     *
     * @throws NoSuchElementException after the last requested epoch
     * @throws IllegalStateException if the producer failed (cause: its exception), the loader is closed, or the
     *     waiting thread was interrupted (its interrupt flag is then set again)
     */
    @Override
    public Batch next() {
        if (closed) {
            throw new IllegalStateException("batch loader is closed");
        }
        if (consumed >= total) {
            throw new NoSuchElementException("all " + total + " batches consumed");
        }
        release();
        Batch b = ready.poll();
        if (b == null) {
            long t0 = System.nanoTime();
            try {
                b = ready.take();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while waiting for a batch", e);
            }
            waitNanos += System.nanoTime() - t0;
        }
        if (b == END) {
            ready.offer(END); // keep answering the same way
            Throwable f = failure;
            if (f != null) {
                throw new IllegalStateException("batch loader thread failed at " + failedAt + ": " + f, f);
            }
            throw new IllegalStateException("batch loader stopped early");
        }
        held = b;
        consumed++;
        return b;
    }

    /** Total time the consumer has spent waiting in {@link #next()} for the producer. */
    @Override
    public long waitNanos() {
        return waitNanos;
    }

    /** Stops the producer thread (waits for it up to 10 s) and drops the buffers. Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        thread.interrupt();
        try {
            thread.join(TimeUnit.SECONDS.toMillis(10));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        held = null;
        free.clear();
        ready.clear();
    }

    /** The producer thread (tests check it ends). */
    Thread thread() {
        return thread;
    }

    private void release() {
        if (held != null) {
            free.add(held); // never blocks: the pool has room for every batch
            held = null;
        }
    }

    private void produce() {
        int epoch = startEpoch;
        int batch = startBatch;
        try {
            for (; epoch < endEpoch; epoch++, batch = 0) {
                int[] order = order(epoch);
                for (; batch < batchesPerEpoch; batch++) {
                    Batch b = free.take();
                    fill(b, order, epoch, batch);
                    if (transform != null) {
                        transform.apply(b);
                    }
                    ready.put(b);
                }
            }
        } catch (InterruptedException e) {
            return; // close(): exit quietly
        } catch (Throwable t) {
            failedAt = "epoch " + epoch + " batch " + batch;
            failure = t;
        }
        ready.offer(END);
    }

    private void fill(Batch b, int[] order, int epoch, int batch) {
        int from = batch * batchSize;
        int count = Math.min(batchSize, data.size() - from);
        augment.apply(data, order, from, count, epoch, b.images);
        for (int i = 0; i < count; i++) {
            int idx = order[from + i];
            int label = data.label(idx);
            b.indices[i] = idx;
            b.labels[i] = label;
        }
        b.size = count;
        b.epoch = epoch;
        b.index = batch;
    }
}
