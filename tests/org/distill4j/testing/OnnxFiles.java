package org.distill4j.testing;

import java.io.IOException;
import java.nio.file.Path;
import org.distill4j.onnx.OnnxGraph;

/**
 * ONNX files the tests write themselves ({@link OnnxGraph}: protobuf by hand), so they need neither PyTorch nor the
 * onnx package: a linear classifier {@code logits = Flatten(x) · Wᵀ + b}, the smallest model a teacher can be,
 * whose output the tests compute on their own in float64.
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
        new OnnxGraph("linear")
                .input("input", batch, c, h, w)
                .initializer("W", new long[] {classes, (long) c * h * w}, weight)
                .initializer("b", new long[] {classes}, bias)
                .node("Flatten", new String[] {"input"}, "flat", OnnxGraph.integer("axis", 1))
                .node("Gemm", new String[] {"flat", "W", "b"}, "logits", OnnxGraph.integer("transB", 1))
                .output("logits", batch, classes)
                .write(file, "distill4j-tests", 13);
    }
}
