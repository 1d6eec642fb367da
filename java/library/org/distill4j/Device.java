package org.distill4j;

import java.util.Locale;
import java.util.Objects;
import org.distill4j.backend.Backends;

/**
 * Where tensors live and kernels run: the CPU, a CUDA GPU, or the CUDA kernels emulated on the CPU (tests).
 *
 * <p>A device is only a name; {@link org.distill4j.backend.Backends#open(Device)} opens it and throws, naming the
 * missing piece, when it cannot work here. There is no silent fallback: {@link #best()} picks CUDA device 0 when
 * it works and the CPU otherwise, and logs that choice and its reason (one log record).
 */
public final class Device {
    /** The kinds of device. */
    public enum Kind {
        /** C++/OpenMP kernels on host memory. */
        CPU("cpu"),
        /** CUDA kernels on device memory. */
        CUDA("cuda"),
        /** The CUDA kernels compiled for the CPU through the project's emulation header (tests, selftest). */
        CUDA_EMU("cuda-emu");

        private final String label;

        Kind(String label) {
            this.label = label;
        }

        /** The name used on the command line: cpu, cuda, cuda-emu. */
        public String label() {
            return label;
        }
    }

    private static final System.Logger LOG = System.getLogger("org.distill4j");
    private static final Device CPU = new Device(Kind.CPU, 0);
    private static final Device CUDA_EMU = new Device(Kind.CUDA_EMU, 0);

    private final Kind kind;
    private final int index;

    private Device(Kind kind, int index) {
        this.kind = kind;
        this.index = index;
    }

    /** The CPU backend. */
    public static Device cpu() {
        return CPU;
    }

    /** CUDA device {@code index} (0-based, as CUDA numbers them). */
    public static Device cuda(int index) {
        if (index < 0) throw new IllegalArgumentException("CUDA device index must be >= 0, got " + index);
        return new Device(Kind.CUDA, index);
    }

    /** The CUDA kernels run on the CPU by the emulator: slow, for tests only. */
    public static Device cudaEmu() {
        return CUDA_EMU;
    }

    /**
     * CUDA device 0 when it can be used here, otherwise the CPU; the choice and the reason are logged as one record
     * (INFO, logger {@code org.distill4j}; java.util.logging's default format prints a record on two lines, the CLI
     * sets a one-line format).
     */
    public static Device best() {
        String why = Backends.cudaUnavailableReason(0);
        Device chosen = why == null ? cuda(0) : cpu();
        LOG.log(System.Logger.Level.INFO, why == null ? "distill4j: device cuda:0"
                : "distill4j: device cpu (cuda unavailable: " + why + ")");
        return chosen;
    }

    /** Parses {@code cpu}, {@code cuda}, {@code cuda:N}, {@code cuda-emu} or {@code best}. */
    public static Device parse(String text) {
        String s = Objects.requireNonNull(text, "device").trim().toLowerCase(Locale.ROOT);
        switch (s) {
            case "cpu": return cpu();
            case "cuda": return cuda(0);
            case "cuda-emu": return cudaEmu();
            case "best": return best();
            default:
                if (s.startsWith("cuda:")) {
                    try {
                        return cuda(Integer.parseInt(s.substring(5)));
                    } catch (NumberFormatException e) {
                        // fall through to the error below
                    }
                }
                throw new IllegalArgumentException("unknown device '" + text + "': expected cpu, cuda, cuda:N, cuda-emu or best");
        }
    }

    /** The kind of device. */
    public Kind kind() {
        return kind;
    }

    /** The device number (0 for cpu and cuda-emu). */
    public int index() {
        return index;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Device && ((Device) o).kind == kind && ((Device) o).index == index;
    }

    @Override
    public int hashCode() {
        return kind.hashCode() * 31 + index;
    }

    /** {@code cpu}, {@code cuda:N} or {@code cuda-emu}. */
    @Override
    public String toString() {
        return kind == Kind.CUDA ? "cuda:" + index : kind.label();
    }
}
