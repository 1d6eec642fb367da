package org.distill4j.onnx;

/**
 * Whether ONNX Runtime, an optional dependency of the library, is on the classpath. Kept apart from
 * {@link OnnxTeacher}, whose code names ONNX Runtime's classes: this one can be loaded without them.
 */
public final class OnnxRuntime {
    /** The artifact to add, with the version distill4j is tested with. */
    public static final String ARTIFACT = "com.microsoft.onnxruntime:onnxruntime:1.23.2";

    private OnnxRuntime() {}

    /** Whether ONNX Runtime's Java API can be loaded. */
    public static boolean available() {
        try {
            Class.forName("ai.onnxruntime.OrtEnvironment", false, OnnxRuntime.class.getClassLoader());
            return true;
        } catch (ClassNotFoundException | LinkageError e) {
            return false;
        }
    }

    /** Throws an {@link IllegalStateException} naming the artifact to add when ONNX Runtime is missing. */
    public static void require() {
        if (!available()) {
            throw new IllegalStateException("ONNX teachers need ONNX Runtime, an optional dependency of distill4j: add "
                    + ARTIFACT + " (or onnxruntime_gpu for CUDA) to the classpath");
        }
    }
}
