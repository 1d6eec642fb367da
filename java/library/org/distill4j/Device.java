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
    /** Devices the CUDA emulator has (native/cuda/emu/cuda_emu.h): two, so device bugs can show in tests. */
    private static final int EMULATED_DEVICES = 2;

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
     * Emulated CUDA device {@code index} (0 or 1): the emulator has two devices, a current device per thread and
     * memory tagged with its device, so that a kernel launched with the wrong device current fails as it would on
     * a card (tests only).
     */
    public static Device cudaEmu(int index) {
        if (index < 0 || index >= EMULATED_DEVICES) {
            throw new IllegalArgumentException("emulated CUDA device index must be 0 or 1 (the emulator has "
                    + EMULATED_DEVICES + " devices), got " + index);
        }
        return index == 0 ? CUDA_EMU : new Device(Kind.CUDA_EMU, index);
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

    /** Parses {@code cpu}, {@code cuda}, {@code cuda:N}, {@code cuda-emu}, {@code cuda-emu:N} or {@code best}. */
    public static Device parse(String text) {
        String s = Objects.requireNonNull(text, "device").trim().toLowerCase(Locale.ROOT);
        switch (s) {
            case "cpu": return cpu();
            case "cuda": return cuda(0);
            case "cuda-emu": return cudaEmu();
            case "best": return best();
            default:
                try {
                    if (s.startsWith("cuda:")) return cuda(Integer.parseInt(s.substring(5)));
                    if (s.startsWith("cuda-emu:")) return cudaEmu(Integer.parseInt(s.substring(9)));
                } catch (NumberFormatException e) {
                    // fall through to the error below
                }
                throw new IllegalArgumentException("unknown device '" + text + "': expected cpu, cuda, cuda:N, cuda-emu or best");
        }
    }

    /** The kind of device. */
    public Kind kind() {
        return kind;
    }

    /** The device number (0 for cpu; 0 or 1 for cuda-emu). */
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

    /** {@code cpu}, {@code cuda:N}, {@code cuda-emu} or {@code cuda-emu:1}. */
    @Override
    public String toString() {
        return kind == Kind.CUDA || (kind == Kind.CUDA_EMU && index != 0) ? kind.label() + ":" + index : kind.label();
    }
}
