package org.distill4j.testing;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * ONNX files written here byte by byte (protobuf's wire format and onnx.proto's field numbers), so the tests need
 * neither PyTorch nor the onnx package: a linear classifier {@code logits = Flatten(x) · Wᵀ + b}, the smallest
 * model a teacher can be, whose output the tests compute on their own in float64.
 */
public final class OnnxFiles {
    private OnnxFiles() {}

    /**
     * Writes {@code Gemm(Flatten(input), W, b, transB=1)}: input [batch, c, h, w] ({@code batch} ≤ 0: a dynamic
     * axis named "N"), W [classes, c·h·w] row-major, b [classes].
     */
    public static void linear(Path file, long batch, int c, int h, int w, float[] weight, float[] bias)
            throws IOException {
        int classes = bias.length;
        if (weight.length != classes * c * h * w) throw new IllegalArgumentException("W must be classes × c·h·w");
        Proto graph = new Proto()
                .message(1, node("Flatten", new String[] {"input"}, "flat", new Proto().string(1, "axis").varint(3, 1)
                        .varint(20, 2)))
                .message(1, node("Gemm", new String[] {"flat", "W", "b"}, "logits", new Proto().string(1, "transB")
                        .varint(3, 1).varint(20, 2)))
                .string(2, "linear")
                .message(5, tensor("W", new long[] {classes, (long) c * h * w}, weight))
                .message(5, tensor("b", new long[] {classes}, bias))
                .message(11, valueInfo("input", batch, c, h, w))
                .message(12, valueInfo("logits", batch, classes));
        Proto model = new Proto().varint(1, 8).string(2, "distill4j-tests").message(7, graph)
                .message(8, new Proto().string(1, "").varint(2, 13));
        Files.write(file, model.bytes());
    }

    private static Proto node(String op, String[] inputs, String output, Proto attribute) {
        Proto n = new Proto();
        for (String in : inputs) n.string(1, in);
        return n.string(2, output).string(3, op.toLowerCase()).string(4, op).message(5, attribute);
    }

    private static Proto tensor(String name, long[] dims, float[] values) {
        Proto t = new Proto();
        for (long d : dims) t.varint(1, d);
        ByteBuffer raw = ByteBuffer.allocate(4 * values.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : values) raw.putFloat(v);
        return t.varint(2, 1).string(8, name).bytes(9, raw.array());
    }

    /** A float tensor's type: the first dimension dynamic ("N") when {@code batch} ≤ 0. */
    private static Proto valueInfo(String name, long batch, long... dims) {
        Proto shape = new Proto().message(1, batch > 0 ? new Proto().varint(1, batch) : new Proto().string(2, "N"));
        for (long d : dims) shape.message(1, new Proto().varint(1, d));
        Proto tensorType = new Proto().varint(1, 1).message(2, shape);
        return new Proto().string(1, name).message(2, new Proto().message(1, tensorType));
    }

    /** A protobuf message being written: varint (wire type 0) and length-delimited (wire type 2) fields. */
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
