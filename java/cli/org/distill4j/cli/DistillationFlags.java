package org.distill4j.cli;

import org.distill4j.train.Distillation;
import org.distill4j.train.TrainOptions;
import picocli.CommandLine.Option;

/**
 * The distillation loss's weight and temperature, shared by {@code distill} and {@code demo} (picocli mixin). The
 * temperature's default is the command's: {@code distill} keeps Hinton's 4 (the full experiment's), {@code demo}
 * takes 1, which learned faster in its few hundred steps (README, the demo).
 */
final class DistillationFlags {
    @Option(names = "--alpha", defaultValue = "0.5",
            description = "weight of the distillation term (default ${DEFAULT-VALUE})")
    double alpha;

    @Option(names = "--tau", description = "soft distillation temperature (default: distill 4, demo 1)")
    Double tau;

    /** {@code options} distilling in {@code mode} (refuses an alpha outside [0, 1] or a temperature <= 0). */
    TrainOptions apply(TrainOptions options, Distillation mode, double defaultTau) {
        // Checked here, before anything is written (the run itself refuses it too, later).
        if (mode != Distillation.NONE && options.labeled() > 0 && options.mixup() != null) {
            throw new IllegalArgumentException("--mixup/--cutmix cannot mix a transfer set (--labeled): an unlabeled "
                    + "image has no label to mix");
        }
        return options.withDistillation(mode, alpha, tau != null ? tau : defaultTau);
    }
}
