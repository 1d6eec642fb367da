package org.distill4j.onnx;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Locale;
import org.distill4j.io.AtomicFile;

/**
 * An ONNX model written byte by byte: protobuf's wire format with onnx.proto's field numbers, float32 and int64
 * tensors, integer and float attributes only. Enough for the graphs we export ({@link OnnxExport}'s ViT, a CNN
 * teacher trained with libtorch, the tests' linear teachers) without PyTorch's exporter or the onnx package.
 *
 * <pre>
 *   new OnnxGraph("cnn").input("input", 0, 1, 28, 28)
 *       .initializer("w", new long[] {32, 1, 3, 3}, w)
 *       .node("Conv", new String[] {"input", "w", "b"}, "c1", OnnxGraph.ints("pads", 1, 1, 1, 1))
 *       ...
 *       .output("logits", 0, 10).write(file, "producer", 13);
 * </pre>
 */
public final class OnnxGraph {
    /** A node attribute: one integer, a list of them, or one float ({@code isFloat}, in {@code real}). */
    public record Attribute(String name, long[] values, boolean list, float real, boolean isFloat) {}

    private final Proto graph = new Proto();
    private int nodes;

    /** An empty graph named {@code name}. */
    public OnnxGraph(String name) {
        graph.string(2, name);
    }

    /** An INT attribute. */
    public static Attribute integer(String name, long value) {
        return new Attribute(name, new long[] {value}, false, 0f, false);
    }

    /** An INTS attribute. */
    public static Attribute ints(String name, long... values) {
        return new Attribute(name, values.clone(), true, 0f, false);
    }

    /** A FLOAT attribute. */
    public static Attribute real(String name, float value) {
        return new Attribute(name, new long[0], false, value, true);
    }

    /** Appends node {@code op} (the ONNX operator's name) reading {@code inputs}, writing {@code output}. */
    public OnnxGraph node(String op, String[] inputs, String output, Attribute... attributes) {
        Proto n = new Proto();
        for (String in : inputs) n.string(1, in);
        n.string(2, output).string(3, op.toLowerCase(Locale.ROOT) + "_" + nodes++).string(4, op);
        for (Attribute a : attributes) {
            Proto p = new Proto().string(1, a.name());
            if (a.isFloat()) {
                p.fixed32(2, Float.floatToRawIntBits(a.real())).varint(20, 1);  // FLOAT
            } else if (a.list()) {
                for (long v : a.values()) p.varint(8, v);
                p.varint(20, 7);  // AttributeType INTS
            } else {
                p.varint(3, a.values()[0]).varint(20, 2);  // INT
            }
            n.message(5, p);
        }
        graph.message(1, n);
        return this;
    }

    /** A float32 constant (weights), row-major in {@code dims}; no dims: a scalar. */
    public OnnxGraph initializer(String name, long[] dims, float[] values) {
        ByteBuffer raw = ByteBuffer.allocate(4 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : values) raw.putFloat(v);
        return tensor(name, dims, values.length, 1, raw);  // data_type FLOAT
    }

    /** An int64 constant (shapes, indices), as {@link #initializer(String, long[], float[])}. */
    public OnnxGraph initializer(String name, long[] dims, long[] values) {
        ByteBuffer raw = ByteBuffer.allocate(8 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        for (long v : values) raw.putLong(v);
        return tensor(name, dims, values.length, 7, raw);  // data_type INT64
    }

    private OnnxGraph tensor(String name, long[] dims, int count, int dataType, ByteBuffer raw) {
        long n = 1;
        for (long d : dims) n *= d;
        if (n != count) throw new IllegalArgumentException(name + ": " + count + " values for " + n + " elements");
        Proto t = new Proto();
        for (long d : dims) t.varint(1, d);
        graph.message(5, t.varint(2, dataType).string(8, name).bytes(9, raw.array()));
        return this;
    }

    /** A float32 graph input: the first axis is {@code batch}, or dynamic ("N") when {@code batch} ≤ 0. */
    public OnnxGraph input(String name, long batch, long... dims) {
        graph.message(11, valueInfo(name, batch, dims));
        return this;
    }

    /** A float32 graph output, as {@link #input}. */
    public OnnxGraph output(String name, long batch, long... dims) {
        graph.message(12, valueInfo(name, batch, dims));
        return this;
    }

    /** Writes the model (IR version 8, the default operator set at {@code opset}). */
    public void write(Path file, String producer, int opset) throws IOException {
        Proto model = new Proto().varint(1, 8).string(2, producer).message(7, graph)
                .message(8, new Proto().string(1, "").varint(2, opset));
        AtomicFile.write(file, model.bytes());  // a failed write leaves no half-written model
    }

    private static Proto valueInfo(String name, long batch, long... dims) {
        Proto shape = new Proto().message(1, batch > 0 ? new Proto().varint(1, batch) : new Proto().string(2, "N"));
        for (long d : dims) shape.message(1, new Proto().varint(1, d));
        Proto tensorType = new Proto().varint(1, 1).message(2, shape);  // elem_type FLOAT
        return new Proto().string(1, name).message(2, new Proto().message(1, tensorType));
    }

    /** A protobuf message being written: varint (0), length-delimited (2) and 32-bit (5) fields. */
    private static final class Proto {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();

        private void raw(long v) {
            while ((v & ~0x7fL) != 0) {
                out.write((int) (v & 0x7f) | 0x80);
                v >>>= 7;
            }
            out.write((int) v);
        }

        Proto varint(int field, long value) {
            raw((long) field << 3);
            raw(value);
            return this;
        }

        Proto fixed32(int field, int bits) {
            raw((long) field << 3 | 5);
            for (int i = 0; i < 4; i++) out.write(bits >>> (8 * i) & 0xff);  // little-endian
            return this;
        }

        Proto bytes(int field, byte[] b) {
            raw((long) field << 3 | 2);
            raw(b.length);
            out.writeBytes(b);
            return this;
        }

        Proto string(int field, String s) {
            return bytes(field, s.getBytes(StandardCharsets.UTF_8));
        }

        Proto message(int field, Proto m) {
            return bytes(field, m.bytes());
        }

        byte[] bytes() {
            return out.toByteArray();
        }
    }
}
