package org.distill4j.backend;

import java.util.concurrent.atomic.AtomicLong;
import org.distill4j.Device;
import org.distill4j.natives.Distill4jNative;

/** What every backend shares: its device, the kernel library handle, and the count of live allocations. */
abstract class NativeBackend implements Backend {
    private final Device device;
    private Distill4jNative.d4j_backend kernels;
    // Atomic: tensors are closed by whichever thread holds them (or a cleaner), not only the backend's user.
    private final AtomicLong live = new AtomicLong();

    NativeBackend(Device device) {
        this.device = device;
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
    public final long liveAllocations() {
        return live.get();
    }

    @Override
    public final void close() {
        if (kernels == null) return;
        long open = live.get();
        if (open > 0) {
            System.getLogger("org.distill4j").log(System.Logger.Level.WARNING, "closing " + name() + " with " + open
                    + " allocation" + (open == 1 ? "" : "s") + " not freed (tensors or models left open): their "
                    + "memory is lost; close them first");
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
