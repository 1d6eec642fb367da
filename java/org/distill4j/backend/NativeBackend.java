package org.distill4j.backend;

import org.distill4j.Device;
import org.distill4j.natives.Distill4jNative;

/** What every backend shares: its device, the kernel library handle, and the count of live allocations. */
abstract class NativeBackend implements Backend {
    private final Device device;
    private Distill4jNative.d4j_backend kernels;
    private long live;

    NativeBackend(Device device) {
        this.device = device;
    }

    /** Opens kernel library {@code name} (cpu, cuda, cudaemu) for this backend's device. */
    final void openKernels(String name) {
        this.kernels = NativeLibraries.open(name, device.index());
    }

    /** Counts one allocation made by a subclass. */
    final void allocated() {
        live++;
    }

    /** Counts one allocation freed by a subclass. */
    final void freed() {
        live--;
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
        return live;
    }

    @Override
    public final void close() {
        if (kernels == null) return;
        releaseResources();
        Distill4jNative.d4j_backend_close(kernels);
        kernels = null;
    }

    @Override
    public String toString() {
        return getClass().getSimpleName() + "[" + device + "]";
    }
}
