package org.distill4j.data;

import java.io.IOException;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.Set;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Batches of an {@link ImageSource} decoded on {@code workers} threads and prefetched ahead of the training step:
 * the streaming counterpart of {@link BatchLoader}, with the same order, augmentation and {@link BatchLoader.Batch}.
 *
 * <p><b>Memory</b> is bounded by the queue, not by the dataset: {@code prefetch + 1} batch buffers are allocated
 * once (the consumer holds one while up to {@code prefetch} are filled or waiting), plus one image of scratch per
 * worker; a worker takes a free buffer before it claims the next batch, so no image is decoded further ahead.
 *
 * <p><b>Determinism.</b> Each worker fills whole batches; batch {@code s} of the stream is epoch
 * {@code start + s / batchesPerEpoch}'s slice of {@link BatchLoader#order}, every image is a pure function of its
 * index ({@link ImageSource#copyImage}) and its augmentation of (seed, epoch, index) ({@link Augment}), and the
 * consumer receives batches in sequence order whichever worker finished first. The batches are therefore the same
 * bits for any worker count, and the same as {@link BatchLoader}'s on an in-memory {@link Dataset}.
 *
 * <p><b>Bad images.</b> A {@link BadImageException} stops the stream (rethrown by {@link #next()}, naming the file)
 * unless {@link Builder#skipBadImages} is set: then the file is logged once, counted ({@link #badImages()}), and
 * its place in the batch is taken by the next good image of the epoch's order (with that image's label), which keeps
 * the batch full and the choice deterministic.
 */
public final class StreamLoader implements BatchSource {
    /** Options of a {@link StreamLoader}. */
    public static final class Builder {
        private final ImageSource source;
        private final int batchSize;
        private long seed;
        private boolean shuffle = true;
        private boolean dropLast = true;
        private Augment augment = Augment.none();
        private BatchLoader.BatchTransform transform;
        private int startEpoch;
        private int startBatch;
        private int epochs = Integer.MAX_VALUE;
        private int workers = 1;
        private int prefetch = 2;
        private PrintStream badImageLog;

        private Builder(ImageSource source, int batchSize) {
            this.source = source;
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

        /** Drop the last partial batch of each epoch (default true). */
        public Builder dropLast(boolean dropLast) {
            this.dropLast = dropLast;
            return this;
        }

        /** Augmentation applied to each decoded image (default none). */
        public Builder augment(Augment augment) {
            this.augment = augment;
            return this;
        }

        /** A hook run on each filled batch in the worker that filled it (it must not depend on the thread). */
        public Builder transform(BatchLoader.BatchTransform transform) {
            this.transform = transform;
            return this;
        }

        /** Start at batch {@code batch} of epoch {@code epoch} (resume); default (0, 0). */
        public Builder start(int epoch, int batch) {
            this.startEpoch = epoch;
            this.startBatch = batch;
            return this;
        }

        /** Produce this many epochs, then end; default unbounded. */
        public Builder epochs(int count) {
            this.epochs = count;
            return this;
        }

        /** Decoding threads (default 1). */
        public Builder workers(int workers) {
            this.workers = workers;
            return this;
        }

        /** Batches decoded ahead of the one the consumer holds (default 2): the queue that bounds memory. */
        public Builder prefetch(int prefetch) {
            this.prefetch = prefetch;
            return this;
        }

        /** Skip undecodable images, logging each once to {@code log}, instead of stopping (default: stop). */
        public Builder skipBadImages(PrintStream log) {
            this.badImageLog = log;
            return this;
        }

        public StreamLoader build() {
            return new StreamLoader(this);
        }
    }

    /** Options for {@code source} in batches of {@code batchSize}. */
    public static Builder builder(ImageSource source, int batchSize) {
        return new Builder(source, batchSize);
    }

    private final ImageSource source;
    private final int batchSize;
    private final long seed;
    private final boolean shuffle;
    private final Augment augment;
    private final BatchLoader.BatchTransform transform;
    private final int startEpoch;
    private final int startBatch;
    private final int batchesPerEpoch;
    private final long total;
    private final PrintStream badImageLog;
    private final BlockingQueue<BatchLoader.Batch> free;
    private final BatchLoader.Batch[] slots;     // batch s waits in slots[s % slots.length]
    private final long[] slotSeq;
    private final AtomicLong claimed = new AtomicLong();
    private final Object lock = new Object();
    private final List<Thread> threads = new ArrayList<>();
    private final Set<Integer> bad = ConcurrentHashMap.newKeySet();
    private final int[][] orders = new int[2][];  // the two most recent epochs' orders (workers straddle one boundary)
    private final int[] orderEpochs = {-1, -1};
    private long failedSeq = Long.MAX_VALUE;      // guarded by lock
    private Throwable failure;                    // guarded by lock
    private volatile boolean closed;
    private BatchLoader.Batch held;
    private long consumed;
    private long waitNanos;

    private StreamLoader(Builder b) {
        this.source = b.source;
        if (b.batchSize <= 0) throw new IllegalArgumentException("batch size must be positive, got " + b.batchSize);
        if (b.workers < 1) throw new IllegalArgumentException("workers must be >= 1, got " + b.workers);
        if (b.prefetch < 1) throw new IllegalArgumentException("prefetch must be >= 1, got " + b.prefetch);
        if (b.startEpoch < 0 || b.epochs < 0) {
            throw new IllegalArgumentException("start epoch and epoch count must be >= 0, got " + b.startEpoch + ", "
                    + b.epochs);
        }
        this.batchSize = b.batchSize;
        this.seed = b.seed;
        this.shuffle = b.shuffle;
        this.augment = b.augment;
        this.transform = b.transform;
        this.badImageLog = b.badImageLog;
        int n = source.size();
        this.batchesPerEpoch = b.dropLast ? n / batchSize : (n + batchSize - 1) / batchSize;
        if (batchesPerEpoch == 0) {
            throw new IllegalArgumentException(source.name() + " (" + n + " images) has fewer than one batch of "
                    + batchSize + (b.dropLast ? " (dropLast)" : ""));
        }
        if (b.startBatch < 0 || b.startBatch >= batchesPerEpoch) {
            throw new IllegalArgumentException("start batch " + b.startBatch + " is outside 0.." + (batchesPerEpoch - 1));
        }
        if (augment.pad() >= source.height() || augment.pad() >= source.width()) {
            throw new IllegalArgumentException("augmentation pad " + augment.pad() + " must be smaller than the image ("
                    + source.height() + "×" + source.width() + ")");
        }
        this.startEpoch = b.startEpoch;
        this.startBatch = b.startBatch;
        this.total = b.epochs == Integer.MAX_VALUE ? Long.MAX_VALUE
                : Math.max(0, (long) b.epochs * batchesPerEpoch - startBatch);
        int buffers = b.prefetch + 1;
        this.free = new ArrayBlockingQueue<>(buffers);
        for (int i = 0; i < buffers; i++) free.add(new BatchLoader.Batch(batchSize, source.imageSize()));
        this.slots = new BatchLoader.Batch[buffers];
        this.slotSeq = new long[buffers];
        for (int w = 0; w < b.workers; w++) {
            Thread t = new Thread(this::work, "distill4j-stream-" + w);
            t.setDaemon(true);
            threads.add(t);
        }
        threads.forEach(Thread::start);
    }

    /** Batches per epoch: ⌊n/B⌋ with dropLast, ⌈n/B⌉ without. */
    public int batchesPerEpoch() {
        return batchesPerEpoch;
    }

    public int batchSize() {
        return batchSize;
    }

    public ImageSource source() {
        return source;
    }

    /** Whether another batch will come. */
    @Override
    public boolean hasNext() {
        return !closed && consumed < total;
    }

    /**
     * The next batch in sequence, waiting for the workers if needed; the previous one returns to the pool.
     *
     * @throws NoSuchElementException after the last requested epoch
     * @throws IllegalStateException when a worker failed at or before this batch (cause: its exception, e.g. a
     *     {@link BadImageException} naming the file), the loader is closed, or the thread was interrupted
     */
    @Override
    public BatchLoader.Batch next() {
        if (closed) throw new IllegalStateException("stream loader is closed");
        if (consumed >= total) throw new NoSuchElementException("all " + total + " batches consumed");
        if (held != null) {
            free.add(held); // never blocks: the pool has room for every buffer
            held = null;
        }
        long s = consumed;
        int slot = (int) (s % slots.length);
        BatchLoader.Batch b;
        long t0 = System.nanoTime();
        boolean waited = false;
        synchronized (lock) {
            while (slots[slot] == null || slotSeq[slot] != s) {
                if (failure != null && failedSeq <= s) {
                    // The cause's own sentence (it names the file), not its class: this reaches command lines.
                    String why = failure.getMessage() != null ? failure.getMessage() : failure.toString();
                    throw new IllegalStateException("stream loader failed at " + where(failedSeq) + ": " + why,
                            failure);
                }
                waited = true;
                try {
                    lock.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IllegalStateException("interrupted while waiting for a batch", e);
                }
            }
            b = slots[slot];
            slots[slot] = null;
        }
        if (waited) waitNanos += System.nanoTime() - t0;
        held = b;
        consumed++;
        return b;
    }

    /** Total time the consumer spent waiting for the workers in {@link #next()}. */
    @Override
    public long waitNanos() {
        return waitNanos;
    }

    /** Distinct images skipped as undecodable so far ({@link Builder#skipBadImages}). */
    public int badImages() {
        return bad.size();
    }

    /** Floats held in batch buffers: (prefetch + 1) × batch × image size; the bound on decoded data in memory. */
    public long bufferFloats() {
        return (long) slots.length * batchSize * source.imageSize();
    }

    /** Stops the workers (waits up to 10 s each) and drops the buffers. Idempotent. */
    @Override
    public void close() {
        if (closed) return;
        closed = true;
        threads.forEach(Thread::interrupt);
        for (Thread t : threads) {
            try {
                t.join(TimeUnit.SECONDS.toMillis(10));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        held = null;
        free.clear();
        synchronized (lock) {
            java.util.Arrays.fill(slots, null);
        }
    }

    /** The worker threads (tests check they end). */
    List<Thread> threads() {
        return threads;
    }

    private String where(long s) {
        long g = startBatch + s;
        return "epoch " + (startEpoch + g / batchesPerEpoch) + " batch " + g % batchesPerEpoch;
    }

    private void work() {
        float[] scratch = new float[source.imageSize()];
        while (!closed) {
            BatchLoader.Batch b;
            try {
                b = free.take();
            } catch (InterruptedException e) {
                return;
            }
            long s = claimed.getAndIncrement();
            synchronized (lock) {
                if (s >= total || failure != null) { // nothing left, or a batch before failed: stop claiming
                    free.add(b);
                    return;
                }
            }
            long g = startBatch + s;
            int epoch = (int) (startEpoch + g / batchesPerEpoch);
            int batch = (int) (g % batchesPerEpoch);
            try {
                fill(b, order(epoch), epoch, batch, scratch);
                if (transform != null) transform.apply(b);
            } catch (InterruptedException e) {
                return;
            } catch (Throwable t) {
                if (closed) return;
                synchronized (lock) {
                    if (s < failedSeq) {
                        failedSeq = s;
                        failure = t;
                    }
                    lock.notifyAll();
                }
                return;
            }
            synchronized (lock) {
                int slot = (int) (s % slots.length);
                slots[slot] = b;
                slotSeq[slot] = s;
                lock.notifyAll();
            }
        }
    }

    private int[] order(int epoch) {
        synchronized (orders) {
            for (int i = 0; i < 2; i++) {
                if (orderEpochs[i] == epoch) return orders[i];
            }
            // Workers are at most prefetch + 1 batches apart; keep the newest two epochs and replace the older.
            int victim = orderEpochs[0] < orderEpochs[1] ? 0 : 1;
            orders[victim] = BatchLoader.order(source.size(), seed, epoch, shuffle);
            orderEpochs[victim] = epoch;
            return orders[victim];
        }
    }

    private void fill(BatchLoader.Batch b, int[] order, int epoch, int batch, float[] scratch) throws Exception {
        int n = source.size();
        int from = batch * batchSize;
        int count = Math.min(batchSize, n - from);
        int size = source.imageSize();
        int c = source.channels();
        RandomResizedCrop crop = augment.resizedCrop();
        float[] fill = new float[c];
        for (int k = 0; k < c; k++) fill[k] = source.black(k);
        for (int i = 0; i < count; i++) {
            if (Thread.interrupted()) throw new InterruptedException();
            int idx = -1;
            for (int k = 0; k < n; k++) {
                int cand = order[(from + i + k) % n];
                if (bad.contains(cand)) continue;
                float[] dst = augment.isIdentity() || crop != null ? b.images() : scratch;
                int off = augment.isIdentity() || crop != null ? i * size : 0;
                try {
                    if (crop != null) {
                        // The box is keyed by this source's index (cand), whatever the source does underneath.
                        int view = augment.view(epoch);
                        source.copyImageCropped(cand, (h, w) -> crop.box(view, cand, h, w), dst, off);
                    } else {
                        source.copyImage(cand, dst, off);
                    }
                } catch (BadImageException e) {
                    if (badImageLog == null) throw e;
                    if (bad.add(cand)) badImageLog.println("skipping a bad image: " + e.getMessage());
                    continue;
                }
                idx = cand;
                break;
            }
            if (idx < 0) throw new IOException(source.name() + ": every image failed to decode");
            if (crop != null) {
                augment.flip(b.images(), i * size, c, source.height(), source.width(), idx, epoch);
            } else if (!augment.isIdentity()) {
                augment.apply(scratch, 0, c, source.height(), source.width(), fill, idx, epoch, b.images(), i * size);
            }
            augment.randAugment(b.images(), i * size, c, source.height(), source.width(), source.normalization(), idx,
                    epoch);
            int label = source.label(idx);
            b.indices()[i] = idx;
            b.labels()[i] = label;
        }
        b.set(count, epoch, batch);
    }

    /**
     * Reads all of {@code source} into an in-memory {@link Dataset} (for the trainers that take one), decoding on
     * {@code workers} threads: {@code size × imageSize × 4} bytes of heap. Any bad image is an error.
     */
    public static Dataset materialize(ImageSource source, int workers) throws IOException {
        return materialize(source, workers, source.size(), null);
    }

    /**
     * Reads the first {@code count} images of {@code source} into an in-memory {@link Dataset} on {@code workers}
     * threads. With {@code badImageLog} non-null, undecodable images are logged there and left out (the dataset is
     * then smaller and its indices shift past them); otherwise the first one is thrown.
     */
    public static Dataset materialize(ImageSource source, int workers, int count, PrintStream badImageLog)
            throws IOException {
        int size = source.imageSize();
        if (count < 0 || count > source.size()) {
            throw new IllegalArgumentException("count " + count + " of " + source.size() + " images");
        }
        if (workers < 1) throw new IllegalArgumentException("workers must be >= 1, got " + workers);
        if ((long) count * size > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException(source.name() + ": " + count + " images of " + size + " floats do not "
                    + "fit one Java array; stream it instead");
        }
        float[] images = new float[count * size];
        boolean[] ok = new boolean[count];
        BadImageException[] errors = new BadImageException[count];
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(workers);
        try {
            List<java.util.concurrent.Future<?>> parts = new ArrayList<>();
            int chunk = Math.max(1, Math.min(256, count / (4 * workers) + 1));
            for (int from = 0; from < count; from += chunk) {
                int lo = from, hi = Math.min(count, from + chunk);
                parts.add(pool.submit(() -> {
                    for (int i = lo; i < hi; i++) {
                        try {
                            source.copyImage(i, images, i * size);
                            ok[i] = true;
                        } catch (BadImageException e) {
                            errors[i] = e;
                        }
                    }
                    return null;
                }));
            }
            for (java.util.concurrent.Future<?> f : parts) {
                try {
                    f.get();
                } catch (java.util.concurrent.ExecutionException e) {
                    if (e.getCause() instanceof IOException io) throw io;
                    throw new IllegalStateException("decoding " + source.name() + ": " + e.getCause(), e.getCause());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted while decoding " + source.name(), e);
                }
            }
        } finally {
            pool.shutdownNow();
        }
        int good = 0;
        for (int i = 0; i < count; i++) {
            if (ok[i]) {
                good++;
            } else if (badImageLog == null) {
                throw errors[i];
            } else {
                badImageLog.println("skipping a bad image: " + errors[i].getMessage());
            }
        }
        int[] labels = new int[good];
        float[] kept = good == count ? images : new float[good * size];
        for (int i = 0, k = 0; i < count; i++) {
            if (!ok[i]) continue;
            if (kept != images) System.arraycopy(images, i * size, kept, k * size, size);
            labels[k++] = source.label(i);
        }
        return new Dataset(source.name(), kept, labels, source.channels(), source.height(), source.width(),
                source.classes(), source.normalization());
    }
}
