package org.distill4j.backend;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.distill4j.natives.Distill4jNative;

/**
 * Finds the kernel libraries (libdistill4j_cpu.so, _cuda, _cudaemu) beside the JNI library, extracting them from
 * the natives jar through JavaCPP's cache, and opens them through the dispatch library.
 */
final class NativeLibraries {
    private static final int ERR_LEN = 1024;

    private NativeLibraries() {}

    /** Opens implementation {@code name} (cpu, cuda, cudaemu) for {@code device}, or throws naming the reason. */
    static Distill4jNative.d4j_backend open(String name, int device) {
        Loader.load(Distill4jNative.class);
        String file = "lib" + "distill4j_" + name + ".so";
        File path;
        try {
            path = Loader.cacheResource(Distill4jNative.class, Loader.getPlatform() + "/" + file);
        } catch (IOException e) {
            throw new BackendUnavailableException("cannot extract " + file + ": " + e.getMessage());
        }
        if (path == null) {
            throw new BackendUnavailableException(file + " is not part of this distill4j build for "
                    + Loader.getPlatform() + (name.equals("cudaemu") ? " (the CUDA emulator is built for tests only:"
                    + " run from a source build)" : name.equals("cuda") ? " (it was built without nvcc)" : ""));
        }
        try (BytePointer err = new BytePointer(ERR_LEN)) {
            Distill4jNative.d4j_backend handle = Distill4jNative.d4j_backend_open(path.getAbsolutePath(), device, err,
                    ERR_LEN);
            if (handle == null || handle.isNull()) throw new BackendUnavailableException(cString(err));
            return handle;
        }
    }

    /** Null when the shared library {@code soname} can be loaded here, else the loader's message. */
    static String probe(String soname) {
        Loader.load(Distill4jNative.class);
        try (BytePointer err = new BytePointer(ERR_LEN)) {
            return Distill4jNative.d4j_probe_library(soname, err, ERR_LEN) == 0 ? null : cString(err);
        }
    }

    /** The NUL-terminated text in {@code buffer} (getString() would read the whole capacity). */
    static String cString(BytePointer buffer) {
        byte[] bytes = new byte[(int) BytePointer.strlen(buffer)];
        buffer.get(bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }
}
