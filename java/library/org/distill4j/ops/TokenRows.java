package org.distill4j.ops;

import java.util.Arrays;
import org.distill4j.Tensor;
import org.distill4j.backend.Backend;
import org.distill4j.natives.Distill4jNative;

/**
 * The prefix tokens of a ViT/DeiT sequence (class, then distillation) gathered for the heads
 * ({@code d4j_token_rows_*}): rows[p, b] = tokens[b, p] for p &lt; prefix.
 *
 * <p>Shapes: tokens [B, T, D]; rows [prefix, B, D] (row p is head p's input batch). The backward writes the whole
 * of dTokens: dRows at the prefix rows, 0 elsewhere (it starts the backward pass through the blocks).
 *
 * <p>PyTorch equivalence: {@code rows = tokens[:, :prefix].transpose(0, 1)}. Stateless.
 */
public final class TokenRows {
    private TokenRows() {}

    /** The rows' shape for tokens [B, T, D]: [prefix, B, D]. */
    public static long[] rowsShape(Tensor tokens, long prefix) {
        check("tokens", tokens, null, null);
        checkPrefix(tokens, prefix);
        return new long[] {prefix, tokens.size(0), tokens.size(2)};
    }

    /**
     * Writes rows[p, b] = tokens[b, p], p &lt; prefix.
     *
     * @param tokens [B, T, D]
     * @param prefix 1 (class) or 2 (class + distillation); at most T
     * @param rows   output [prefix, B, D], overwritten
     */
    public static void forward(Tensor tokens, long prefix, Tensor rows) {
        long[] shape = rowsShape(tokens, prefix);
        check("rows", rows, shape, tokens);
        Backend be = tokens.backend();
        be.call("token_rows forward",
                () -> Distill4jNative.d4j_token_rows_forward(be.kernels(), be.stream(), tokens.data(), tokens.size(0),
                tokens.size(1), tokens.size(2), prefix, rows.data()));
    }

    /**
     * Writes dTokens: dRows[p, b] at [b, p], 0 at every other row.
     *
     * @param dRows   [prefix, B, D]
     * @param prefix  as in the forward
     * @param dTokens output [B, T, D], overwritten whole
     */
    public static void backward(Tensor dRows, long prefix, Tensor dTokens) {
        long[] shape = rowsShape(dTokens, prefix);
        check("dRows", dRows, shape, dTokens);
        Backend be = dTokens.backend();
        be.call("token_rows backward",
                () -> Distill4jNative.d4j_token_rows_backward(be.kernels(), be.stream(), dRows.data(), dTokens.size(0),
                dTokens.size(1), dTokens.size(2), prefix, dTokens.data()));
    }

    private static void checkPrefix(Tensor tokens, long prefix) {
        if (prefix < 1 || prefix > tokens.size(1)) {
            throw new IllegalArgumentException("token_rows: prefix must be in [1, T = " + tokens.size(1) + "], got "
                    + prefix);
        }
    }

    private static void check(String name, Tensor t, long[] shape, Tensor other) {
        if (t == null) throw new IllegalArgumentException("token_rows: " + name + " is required");
        if (t.isClosed()) throw new IllegalStateException("token_rows: " + name + " tensor is closed");
        if (shape == null) {
            if (t.rank() != 3 || t.numel() == 0) {
                throw new IllegalArgumentException("token_rows: " + name + " must be a non-empty [B, T, D], got "
                        + Arrays.toString(t.shape()));
            }
            return;
        }
        if (!Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException("token_rows: " + name + " must have shape " + Arrays.toString(shape)
                    + ", got " + Arrays.toString(t.shape()));
        }
        if (t.backend() != other.backend()) {
            throw new IllegalArgumentException("token_rows: " + name + " is on " + t.backend().name()
                    + ", the tokens on " + other.backend().name() + ": copy it over first");
        }
    }
}
