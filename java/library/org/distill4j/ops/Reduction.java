package org.distill4j.ops;

import java.util.Locale;

/** How a loss over a batch is reduced, with PyTorch's meaning ({@code torch.nn.functional.kl_div}). */
public enum Reduction {
    /** One loss per row: a tensor of shape [B]. */
    NONE(0),
    /** Sum over all terms divided by the batch size B: the KL divergence's definition. The default. */
    BATCHMEAN(1),
    /** Sum over all B·C terms. */
    SUM(2),
    /** Sum divided by B·C, PyTorch's {@code mean}: not the KL divergence, kept for compatibility. */
    MEAN(3);

    private final int code;

    Reduction(int code) {
        this.code = code;
    }

    /** The value of {@code enum d4j_reduction} in native/include/distill4j_impl.h. */
    public int nativeCode() {
        return code;
    }

    /** PyTorch's spelling: {@code none}, {@code batchmean}, {@code sum}, {@code mean}. */
    public String torchName() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** Parses PyTorch's spelling, case-insensitively. */
    public static Reduction parse(String name) {
        for (Reduction r : values()) {
            if (r.torchName().equalsIgnoreCase(name)) return r;
        }
        throw new IllegalArgumentException("unknown reduction '" + name + "': expected none, batchmean, sum or mean");
    }
}
