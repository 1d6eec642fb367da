package org.distill4j.backend;

import org.distill4j.Device;

/** Opens the backend of a {@link Device}. */
public final class Backends {
    private Backends() {}

    /**
     * Opens {@code device}'s backend.
     *
     * @throws BackendUnavailableException naming the missing piece (driver, runtime library, device, kernel
     *     library) when the device cannot work here
     */
    public static Backend open(Device device) {
        switch (device.kind()) {
            case CPU: return CpuBackend.open();
            case CUDA_EMU: return CpuBackend.openCudaEmulator(device.index());
            case CUDA: return CudaBackend.open(device.index());
            default: throw new AssertionError(device);
        }
    }

    /** Null when CUDA device {@code index} can be used here, otherwise the reason it cannot. */
    public static String cudaUnavailableReason(int index) {
        try {
            return CudaBackend.unavailableReason(index);
        } catch (RuntimeException | LinkageError e) {
            return e.toString();
        }
    }
}
