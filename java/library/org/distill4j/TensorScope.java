package org.distill4j;

import java.util.ArrayDeque;
import java.util.Deque;
import java.util.Objects;

/**
 * Closes the tensors handed to it, newest first, when it is closed: a scope for temporaries, so that a method
 * making several tensors frees them all on every path without nesting try blocks.
 *
 * <pre>{@code
 * try (TensorScope scope = new TensorScope()) {
 *     Tensor a = scope.empty(backend, 4, 8);
 *     Tensor b = scope.of(backend, values, 8);
 *     Tensor c = scope.track(someOpThatReturnsATensor());
 *     ...
 * }   // c, b, then a, are closed here
 * }</pre>
 *
 * A tensor that must outlive the scope is {@linkplain #release(AutoCloseable) released} from it. Not thread-safe.
 */
public final class TensorScope implements AutoCloseable {
    private final Deque<AutoCloseable> tensors = new ArrayDeque<>();

    /** Closes {@code tensor} (or an op's result that owns tensors) when this scope closes; returns it. */
    public <T extends AutoCloseable> T track(T tensor) {
        tensors.push(Objects.requireNonNull(tensor, "tensor"));
        return tensor;
    }

    /** {@link Tensor#empty}, closed with this scope. */
    public Tensor empty(org.distill4j.backend.Backend backend, long... shape) {
        return track(Tensor.empty(backend, shape));
    }

    /** {@link Tensor#of}, closed with this scope. */
    public Tensor of(org.distill4j.backend.Backend backend, float[] values, long... shape) {
        return track(Tensor.of(backend, values, shape));
    }

    /** Keeps {@code tensor} open past this scope (the caller owns it again); returns it. */
    public <T extends AutoCloseable> T release(T tensor) {
        if (!tensors.remove(tensor)) throw new IllegalArgumentException(tensor + " is not tracked by this scope");
        return tensor;
    }

    /** Closes every tracked tensor, newest first; a failure to close one does not stop the others. */
    @Override
    public void close() {
        RuntimeException first = null;
        while (!tensors.isEmpty()) {
            try {
                tensors.pop().close();
            } catch (Exception e) {
                RuntimeException r = e instanceof RuntimeException re ? re : new IllegalStateException(e);
                if (first == null) first = r;
                else first.addSuppressed(r);
            }
        }
        if (first != null) throw first;
    }
}
