package org.distill4j.testing;

import static java.nio.charset.StandardCharsets.UTF_8;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Map;

/**
 * Safetensors files written by hand, from the format's definition (not by our writer): any dtype, any metadata, and
 * data that may be sparse, so a test can hold a "16 GB" file that takes no disk and no time to write.
 */
public final class SafetensorsFiles {
    private SafetensorsFiles() {}

    /**
     * The header of tensors {@code shapes} (in order, all of {@code dtype} of {@code bytesPerElement} bytes, laid out
     * one after the other) and {@code metadata} (none when null).
     */
    public static JsonObject header(Map<String, String> metadata, Map<String, long[]> shapes, String dtype,
                                    int bytesPerElement) {
        JsonObject h = new JsonObject();
        if (metadata != null) {
            JsonObject m = new JsonObject();
            metadata.forEach(m::addProperty);
            h.add("__metadata__", m);
        }
        long offset = 0;
        for (Map.Entry<String, long[]> e : shapes.entrySet()) {
            long n = bytesPerElement;
            JsonArray shape = new JsonArray();
            for (long d : e.getValue()) {
                shape.add(d);
                n = Math.multiplyExact(n, d);
            }
            JsonObject t = new JsonObject();
            t.addProperty("dtype", dtype);
            t.add("shape", shape);
            JsonArray offsets = new JsonArray();
            offsets.add(offset);
            offsets.add(offset + n);
            t.add("data_offsets", offsets);
            h.add(e.getKey(), t);
            offset += n;
        }
        return h;
    }

    /** The data length a header lays out: the largest end offset. */
    public static long dataLength(JsonObject header) {
        long end = 0;
        for (String k : header.keySet()) {
            if (!k.equals("__metadata__")) {
                end = Math.max(end, header.getAsJsonObject(k).getAsJsonArray("data_offsets").get(1).getAsLong());
            }
        }
        return end;
    }

    /** Writes {@code header} and then {@code data}, or, when data is null, {@code dataLength} zero bytes as a hole. */
    public static Path write(Path file, String header, byte[] data, long dataLength) throws IOException {
        byte[] json = header.getBytes(UTF_8);
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(0);
            f.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(json.length).array());
            f.write(json);
            if (data != null) {
                f.write(data);
            } else {
                f.setLength(8L + json.length + dataLength); // sparse: no disk, no time
            }
        }
        return file;
    }

    /** A file of {@code shapes} as F32 zeros in a hole (sparse), with {@code metadata} (none when null). */
    public static Path sparse(Path file, Map<String, String> metadata, Map<String, long[]> shapes) throws IOException {
        JsonObject h = header(metadata, shapes, "F32", 4);
        return write(file, h.toString(), null, dataLength(h));
    }
}
