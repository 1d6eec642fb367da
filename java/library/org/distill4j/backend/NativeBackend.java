package org.distill4j.backend;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.IntSupplier;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;
import org.distill4j.Bf16Tensor;
import org.distill4j.Device;
import org.distill4j.IntTensor;
import org.distill4j.Tensor;
import org.distill4j.ThreadConfinement;
import org.distill4j.natives.Distill4jNative;

/** What every backend shares: its device, the kernel library handle, and the count of live allocations. */
abstract class NativeBackend implements Backend {
    private final Device device;
    private Distill4jNative.d4j_backend kernels;
    // Atomic: tensors are closed by whichever thread holds them (or a cleaner), not only the backend's user.
    private final AtomicLong live = new AtomicLong();
    private final Set<Tensor> tensors = ConcurrentHashMap.newKeySet();  // open tensors, freed by close()
    private final Set<IntTensor> intTensors = ConcurrentHashMap.newKeySet();
    private final Set<Bf16Tensor> bf16Tensors = ConcurrentHashMap.newKeySet();
    // Kernel calls and close(): the kernel libraries keep per-backend state (stream, workspaces, cuBLAS handle).
    private final ThreadConfinement confinement;
    private volatile boolean capturing;  // between beginCapture and endCapture (CudaGraph)

    NativeBackend(Device device) {
        this.device = device;
        this.confinement = new ThreadConfinement(name());
    }

    /** Opens kernel library {@code name} (cpu, cuda, cudaemu) for this backend's device. */
    final void openKernels(String name) {
        this.kernels = NativeLibraries.open(name, device.index());
    }

    /** Counts one allocation made by a subclass. */
    final void allocated() {
        live.incrementAndGet();
    }

    /** Counts one allocation freed by a subclass. */
    final void freed() {
        live.decrementAndGet();
    }

    /** Releases what the subclass holds beside the kernel handle (a stream); called once, by {@link #close()}. */
    abstract void releaseResources();

    @Override
    public final Device device() {
        return device;
    }

    @Override
    public final Distill4jNative.d4j_backend kernels() {
        if (kernels == null) throw new IllegalStateException("backend " + device + " is closed");
        return kernels;
    }

    @Override
    public final void call(String what, IntSupplier kernelCall) {
        confinement.enter();
        int status;
        try {
            status = kernelCall.getAsInt();
        } finally {
            confinement.exit();
        }
        check(status, what);
    }

    @Override
    public final boolean capturesGraphs() {
        return Distill4jNative.d4j_backend_has_streams(kernels()) == 1;
    }

    @Override
    public final boolean capturing() {
        return capturing;
    }

    /**
     * Throws when this backend is capturing a graph: {@code what} (a wait for the device, a copy to or from the host)
     * cannot be part of one. CUDA refuses it too ({@code cudaErrorStreamCaptureUnsupported}); saying so here names
     * the Java call instead.
     */
    final void checkNotCapturing(String what) {
        if (capturing) {
            throw new IllegalStateException(what + " on " + device + " while its stream is being captured into a CUDA "
                    + "graph: captured work cannot wait for the device or copy to or from the host (do that before "
                    + "or after the capture)");
        }
    }

    /** Starts capturing this backend's stream ({@link CudaGraph}). */
    final void beginCapture() {
        call("graph_begin", () -> Distill4jNative.d4j_graph_begin(kernels(), stream()));
        capturing = true;
    }

    /** Ends the capture: the instantiated graph, or an exception when the captured work broke it. */
    final Pointer endCapture() {
        capturing = false;
        try (PointerPointer<Pointer> graph = new PointerPointer<>(1)) {
            call("graph_end", () -> Distill4jNative.d4j_graph_end(kernels(), stream(), graph));
            return graph.get(0);
        }
    }

    /** Replays {@code graph} on this backend's stream. */
    final void launchGraph(Pointer graph) {
        call("graph_launch", () -> Distill4jNative.d4j_graph_launch(kernels(), stream(), graph));
    }

    /** Frees {@code graph}. */
    final void destroyGraph(Pointer graph) {
        call("graph_destroy", () -> Distill4jNative.d4j_graph_destroy(kernels(), graph));
    }

    @Override
    public final void adopt(Tensor tensor) {
        tensors.add(tensor);
    }

    @Override
    public final void disown(Tensor tensor) {
        tensors.remove(tensor);
    }

    @Override
    public final void adopt(IntTensor tensor) {
        intTensors.add(tensor);
    }

    @Override
    public final void disown(IntTensor tensor) {
        intTensors.remove(tensor);
    }

    @Override
    public final void adopt(Bf16Tensor tensor) {
        bf16Tensors.add(tensor);
    }

    @Override
    public final void disown(Bf16Tensor tensor) {
        bf16Tensors.remove(tensor);
    }

    @Override
    public final long liveAllocations() {
        return live.get();
    }

    @Override
    public final void close() {
        if (kernels == null) return;
        confinement.enter();  // not while another thread's kernel runs on what close() frees
        try {
            closeConfined();
        } finally {
            confinement.exit();
        }
    }

    private void closeConfined() {
        List<Tensor> open = new ArrayList<>(tensors);
        List<IntTensor> openInt = new ArrayList<>(intTensors);
        List<Bf16Tensor> openBf16 = new ArrayList<>(bf16Tensors);
        int count = open.size() + openInt.size() + openBf16.size();
        if (count > 0) {
            StringBuilder sites = new StringBuilder();
            int listed = 0;
            for (Tensor t : open) {
                String site = t.allocationSite();
                if (site != null && listed++ < 10) sites.append("\n  ").append(t).append(" allocated at ").append(site);
            }
            for (IntTensor t : openInt) {
                String site = t.allocationSite();
                if (site != null && listed++ < 10) sites.append("\n  ").append(t).append(" allocated at ").append(site);
            }
            for (Bf16Tensor t : openBf16) {
                String site = t.allocationSite();
                if (site != null && listed++ < 10) sites.append("\n  ").append(t).append(" allocated at ").append(site);
            }
            for (Tensor t : open) t.close();
            for (IntTensor t : openInt) t.close();
            for (Bf16Tensor t : openBf16) t.close();
            System.getLogger("org.distill4j").log(System.Logger.Level.WARNING, "closing " + name() + ": freed "
                    + count + " tensor" + (count == 1 ? "" : "s") + " left open (close tensors and models "
                    + "when done; -Ddistill4j.debug.allocations=true lists where they were allocated)" + sites);
        }
        releaseResources();
        Distill4jNative.d4j_backend_close(kernels);
        kernels = null;
    }

    @Override
    public String toString() {
        return getClass().getSimpleName() + "[" + device + "]";
    }
}
