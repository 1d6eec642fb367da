package org.distill4j.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

/** The CPU kernels' thread count as Java sees it: the native decision (native/cpu/threads.cpp), through the backend. */
class CpuBackendThreadsTest {
    @Test
    void threadsFollowOmpNumThreadsElseTheCpusTheJvmSees() {
        // The JDK folds the affinity mask and the cgroup quota (rounded up) into availableProcessors as the native
        // decision does; OMP_NUM_THREADS, when set, overrides both there.
        String omp = System.getenv("OMP_NUM_THREADS");
        int expected = omp != null && omp.split(",")[0].strip().matches("[1-9][0-9]*")
                ? Integer.parseInt(omp.split(",")[0].strip()) : Runtime.getRuntime().availableProcessors();
        try (CpuBackend cpu = CpuBackend.open()) {
            assertEquals(expected, cpu.threads());
        }
        try (CpuBackend emu = CpuBackend.openCudaEmulator()) {
            assertEquals(1, emu.threads(), "the emulated CUDA kernels have no thread count of ours");
        }
    }
}
