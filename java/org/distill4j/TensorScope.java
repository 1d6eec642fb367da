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
 *     Tensor a = scope.track(Tensor.empty(backend, 4, 8));
 *     Tensor b = scope.track(Tensor.of(backend, values, 8));
 *     ...
 * }   // b, then a, are closed here
 * }</pre>
 *
 * A tensor that must outlive the scope is {@linkplain #release(Tensor) released} from it. Not thread-safe.
 */
public final class TensorScope implements AutoCloseable {
    private final Deque<Tensor> tensors = new ArrayDeque<>();

    /** Closes {@code tensor} when this scope closes; returns it. */
    public Tensor track(Tensor tensor) {
        tensors.push(Objects.requireNonNull(tensor, "tensor"));
        return tensor;
    }

    /** Keeps {@code tensor} open past this scope (the caller owns it again); returns it. */
    public Tensor release(Tensor tensor) {
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
            } catch (RuntimeException e) {
                if (first == null) first = e;
                else first.addSuppressed(e);
            }
        }
        if (first != null) throw first;
    }
}
