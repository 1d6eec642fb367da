package org.distill4j.train;

import java.util.Locale;

/** What the distillation head learns from (DeiT's {@code --distillation-type}). */
public enum Distillation {
    /** No teacher: the class head learns the labels (and the distillation head too, when there is one). */
    NONE,
    /** The distillation head matches the teacher's softened distribution: T²·KL(softmax(t/T) ‖ softmax(s/T)). */
    SOFT,
    /** The distillation head learns the teacher's top-1 class by cross-entropy (DeiT's hard distillation). */
    HARD;

    /** {@code none}, {@code soft} or {@code hard} (any case). */
    public static Distillation parse(String s) {
        try {
            return valueOf(s.trim().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("unknown distillation '" + s + "': expected none, soft or hard");
        }
    }

    @Override
    public String toString() {
        return name().toLowerCase(Locale.ROOT);
    }
}
