package org.distill4j.data;

/**
 * What a training loop takes batches from: {@link BatchLoader} (an in-memory {@link Dataset}) or {@link StreamLoader}
 * (any {@link ImageSource}, decoded on worker threads). Both give the same batches for the same data, seed and
 * augmentation.
 */
public interface BatchSource extends AutoCloseable {
    /** Whether another batch will come. */
    boolean hasNext();

    /** The next batch; the previous one returns to the pool and must not be used any more. */
    BatchLoader.Batch next();

    /** Total time the consumer has spent waiting for batches. */
    long waitNanos();

    @Override
    void close();
}
