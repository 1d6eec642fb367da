package org.distill4j.testing;

import java.util.Map;
import java.util.TreeMap;
import java.util.function.IntSupplier;
import org.bytedeco.javacpp.Pointer;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.backend.CpuBackend;
import org.distill4j.natives.Distill4jNative;

/**
 * The CPU backend, counting what it is asked for: the bytes allocated, and the kernel calls by op name plus
 * {@code "zero"} for memsets. Tests read and reset the two fields between the steps they measure.
 */
public final class CountingBackend implements Backend {
    private final CpuBackend cpu = CpuBackend.open();
    /** Bytes allocated since the last reset. */
    public long allocatedBytes;
    /** Calls since the last reset, by op name ("zero" for memsets). */
    public final Map<String, Integer> counts = new TreeMap<>();

    @Override
    public Device device() {
        return cpu.device();
    }

    @Override
    public boolean isHostMemory() {
        return true;
    }

    @Override
    public long availableBytes() {
        return cpu.availableBytes();
    }

    @Override
    public Pointer allocate(long bytes) {
        allocatedBytes += bytes;
        return cpu.allocate(bytes);
    }

    @Override
    public void free(Pointer memory) {
        cpu.free(memory);
    }

    @Override
    public void copyFromHost(Pointer hostSource, Pointer destination, long bytes) {
        cpu.copyFromHost(hostSource, destination, bytes);
    }

    @Override
    public void copyToHost(Pointer source, Pointer hostDestination, long bytes) {
        cpu.copyToHost(source, hostDestination, bytes);
    }

    @Override
    public void copy(Pointer source, Pointer destination, long bytes) {
        cpu.copy(source, destination, bytes);
    }

    @Override
    public void zero(Pointer destination, long bytes) {
        counts.merge("zero", 1, Integer::sum);
        cpu.zero(destination, bytes);
    }

    @Override
    public Pointer stream() {
        return cpu.stream();
    }

    @Override
    public void synchronize() {
        cpu.synchronize();
    }

    @Override
    public Distill4jNative.d4j_backend kernels() {
        return cpu.kernels();
    }

    @Override
    public void call(String what, IntSupplier kernelCall) {
        counts.merge(what, 1, Integer::sum);
        cpu.call(what, kernelCall);
    }

    @Override
    public long liveAllocations() {
        return cpu.liveAllocations();
    }

    @Override
    public void close() {
        cpu.close();
    }
}
