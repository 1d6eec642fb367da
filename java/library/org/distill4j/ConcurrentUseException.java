package org.distill4j;

/**
 * A second thread used a model, trainer or other single-threaded object while another thread was using it. Such
 * objects own device buffers that each call overwrites (a model's activations, a trainer's loss buffers), so two
 * threads at once would read each other's results: the second one is refused instead.
 */
public final class ConcurrentUseException extends IllegalStateException {
    private static final long serialVersionUID = 1L;

    /** With the message naming the object and both threads. */
    public ConcurrentUseException(String message) {
        super(message);
    }
}
