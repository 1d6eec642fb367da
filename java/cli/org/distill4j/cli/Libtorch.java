package org.distill4j.cli;

/**
 * Whether libtorch (the {@code org.bytedeco:pytorch} preset), the reference of {@code bench} and of
 * {@code selftest --op vit}, can be used in this process. Its classes may be on the classpath without its natives
 * (the GPU check's bundle carries no libtorch): loading them then throws an {@link Error}, which picocli would not
 * turn into a one-line message, so it is caught here.
 */
final class Libtorch {
    private Libtorch() {}

    /** Null when libtorch loads, else why not (one line). */
    static String unavailableReason() {
        try {
            Class.forName("org.bytedeco.pytorch.global.torch");
            return null;
        } catch (ClassNotFoundException e) {
            return "org.bytedeco:pytorch is not on the classpath";
        } catch (LinkageError e) {
            return "org.bytedeco:pytorch is on the classpath but libtorch cannot be loaded (" + e + ")";
        }
    }
}
