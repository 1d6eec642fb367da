package org.distill4j.backend;

import java.util.Objects;
import org.bytedeco.javacpp.Pointer;

/**
 * A CUDA graph: the kernel calls, copies and zeroing that some code queues on a backend's stream, recorded once
 * ({@link #capture}) and replayed with one launch ({@link #replay}). A ViT training step is a few hundred small
 * launches; replayed as a graph it costs the host one call, and the device runs the launches back to back.
 *
 * <p>What a replay does is exactly what the captured code queued, with the arguments it passed then: the same
 * buffers (their addresses), the same sizes and scalars. To run it on new data, write the new inputs into the same
 * tensors before {@link #replay} (uploads are not part of a graph). The tensors a graph uses must stay open as long as
 * it is replayed: close the graph first.
 *
 * <p>During the capture nothing runs, so the captured code must not need a result: a wait for the device
 * ({@link Backend#synchronize}), a copy to or from the host, an allocation of device memory or a host write into a
 * tensor throws (CUDA refuses them too), the capture is abandoned and the exception propagates. Capture mode is
 * CUDA's thread-local one: other threads, and other backends, carry on while a thread captures.
 *
 * <p>cuda and cuda-emu ({@link Backend#capturesGraphs}); the emulator records and replays as a card does, and
 * refuses what CUDA refuses. Used from one thread at a time, as its backend.
 */
public final class CudaGraph implements AutoCloseable {
    private final NativeBackend backend;
    private Pointer graph;

    private CudaGraph(NativeBackend backend, Pointer graph) {
        this.backend = backend;
        this.graph = graph;
    }

    /**
     * Runs {@code work} with {@code backend}'s stream under capture and returns the graph of what it queued.
     *
     * @throws UnsupportedOperationException when the backend has no graphs (cpu)
     * @throws IllegalStateException when the captured work waited for the device, copied to or from the host or
     *     otherwise broke the capture; nothing is left capturing
     */
    public static CudaGraph capture(Backend backend, Runnable work) {
        Objects.requireNonNull(backend, "backend");
        Objects.requireNonNull(work, "work");
        if (!(backend instanceof NativeBackend nb) || !backend.capturesGraphs()) {
            throw new UnsupportedOperationException(backend.device() + " cannot capture CUDA graphs (only cuda and "
                    + "cuda-emu can)");
        }
        if (nb.capturing()) throw new IllegalStateException(backend.name() + " is already capturing a graph");
        nb.beginCapture();
        boolean ran = false;
        try {
            work.run();
            ran = true;
        } finally {
            if (!ran) abandon(nb);
        }
        return new CudaGraph(nb, nb.endCapture());
    }

    /** Ends a capture whose work threw, dropping whatever it recorded; the work's exception is what the caller sees. */
    private static void abandon(NativeBackend backend) {
        try {
            Pointer partial = backend.endCapture();
            if (partial != null && !partial.isNull()) backend.destroyGraph(partial);
        } catch (RuntimeException brokenCapture) {
            // Expected when the work's failure was a call CUDA refused during the capture: no graph to free.
        }
    }

    /** The backend the graph runs on. */
    public Backend backend() {
        return backend;
    }

    /** Queues the whole recorded work on the backend's stream (one launch; returns without waiting). */
    public void replay() {
        if (graph == null) throw new IllegalStateException("the CUDA graph is closed");
        backend.launchGraph(graph);
    }

    /** Frees the graph (not the tensors it uses). Closing twice is harmless. */
    @Override
    public void close() {
        if (graph == null) return;
        Pointer g = graph;
        graph = null;
        backend.destroyGraph(g);
    }
}
