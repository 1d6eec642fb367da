package org.distill4j.cli;

import java.util.concurrent.Callable;
import org.bytedeco.javacpp.Loader;
import org.distill4j.Device;
import org.distill4j.backend.Backend;
import org.distill4j.backend.Backends;
import picocli.CommandLine.Command;

/** {@code ./distill4j info}: versions, and which backends work here and why not. */
@Command(name = "info", mixinStandardHelpOptions = true, description = "Versions, and which backends work here (and why not).")
final class InfoCommand implements Callable<Integer> {
    @Override
    public Integer call() {
        System.out.println("distill4j " + Version.distill4j());
        System.out.println("java      " + System.getProperty("java.version") + " (" + System.getProperty("java.vm.name") + ")");
        System.out.println("javacpp   " + Loader.class.getPackage().getImplementationVersion() + ", platform "
                + Loader.getPlatform());
        System.out.println("natives   need glibc >= " + Version.nativesGlibc() + " (libstdc++ linked in)");
        System.out.println("cores     " + Runtime.getRuntime().availableProcessors());
        System.out.println("backends:");
        for (Device d : new Device[] {Device.cpu(), Device.cudaEmu(), Device.cuda(0)}) {
            System.out.printf("  %-9s %s%n", d, probe(d));
        }
        System.out.printf("  %-9s %s%n", "libtorch", libtorch());
        return 0;
    }

    private static String probe(Device d) {
        try (Backend b = Backends.open(d)) {
            int n = d.kind() == Device.Kind.CPU && b instanceof org.distill4j.backend.CpuBackend cpu
                    ? cpu.threads() : 0;
            String threads = n == 0 ? "" : ", " + n + (n == 1 ? " thread" : " threads");
            return "ok" + threads
                    + (d.kind() == Device.Kind.CUDA_EMU ? " (CUDA kernels emulated on the CPU: tests only)" : "");
        } catch (RuntimeException | LinkageError e) {
            return "unavailable: " + e.getMessage();
        }
    }

    private static String libtorch() {
        String why = Libtorch.unavailableReason();
        return why == null ? "ok (the reference of bench and selftest --op vit)" : "unavailable: " + why;
    }
}
