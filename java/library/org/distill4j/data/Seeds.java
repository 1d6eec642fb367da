package org.distill4j.data;

/**
 * Derives independent seeds from (seed, epoch, index) so that any sample's randomness can be recomputed without
 * replaying history — the property exact resume needs.
 *
 * <p>{@code seed ^ epoch} would be the obvious key but collides (seed 0 epoch 1 = seed 1 epoch 0) and gives
 * neighbouring seeds to {@link java.util.SplittableRandom}; each component is therefore passed through the
 * SplitMix64 finaliser (Steele, Lea, Flood 2014; the mixer SplittableRandom itself uses), chained so that the
 * order of the components matters.
 */
final class Seeds {
    private Seeds() {}

    /** SplitMix64's finaliser: a bijection on 64-bit values with good avalanche. */
    static long mix64(long z) {
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }

    /** A seed for (seed, a). */
    static long of(long seed, long a) {
        return mix64(mix64(seed + 0x9e3779b97f4a7c15L) ^ a);
    }

    /** A seed for (seed, a, b). */
    static long of(long seed, long a, long b) {
        return mix64((of(seed, a) + 0x9e3779b97f4a7c15L) ^ b);
    }

    /** A seed for (seed, a, b, c). */
    static long of(long seed, long a, long b, long c) {
        return mix64((of(seed, a, b) + 0x9e3779b97f4a7c15L) ^ c);
    }
}
