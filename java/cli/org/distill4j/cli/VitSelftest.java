package org.distill4j.cli;

import java.util.Locale;
import java.util.Random;
import org.distill4j.backend.Backend;
import org.distill4j.nn.VisionTransformer;
import org.distill4j.nn.VitConfig;
import org.distill4j.reference.VitCheck;

/**
 * {@code selftest --op vit}: whole models (distilled and not) with fresh random parameters, forward and every
 * parameter gradient against libtorch float64 (a functional timm ViT, {@link VitCheck}).
 */
final class VitSelftest {
    private static final double TOL = 1e-4;

    private VitSelftest() {}

    static int cases(Backend be, Backend cpu, Random rng, boolean small) {
        VitConfig[] configs = small
                ? new VitConfig[] {VitConfig.of(28, 7, 1, 10, 64, 1, 2, 2, true)}
                : new VitConfig[] {VitConfig.of(28, 7, 1, 10, 64, 2, 2, 4, true),
                        VitConfig.of(28, 7, 1, 10, 64, 2, 2, 4, false), VitConfig.of(32, 8, 3, 7, 128, 2, 2, 4, true)};
        int failures = 0;
        for (VitConfig config : configs) {
            int batch = small ? 2 : 3;
            try (VisionTransformer model = new VisionTransformer(be, config, batch, rng.nextLong())) {
                VitCheck.Result r = VitCheck.run(model, rng);
                boolean ok = r.worst() <= TOL;
                failures += ok ? 0 : 1;
                System.out.printf(Locale.ROOT, "  %-4s vit %s B=%d: %d outputs and gradients, max_rel_err=%.2e (%s)%n",
                        ok ? "ok" : "FAIL", config, batch, r.errors().size(), r.worst(), r.worstName());
            }
        }
        return failures;
    }
}
