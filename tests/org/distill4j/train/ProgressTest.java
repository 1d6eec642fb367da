package org.distill4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class ProgressTest {
    @Test
    void plainModePrintsEveryNStepsAndAFinalLine() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        PrintStream out = new PrintStream(bytes, true, StandardCharsets.UTF_8);
        try (Progress p = Progress.plain("epoch 1/2", 10, 4, out)) {
            for (int i = 0; i < 10; i++) {
                p.step(32, i < 5 ? 1.0 : 0.5, i < 5 ? 0.5 : 1.0);
            }
            assertEquals(0.75, p.meanLoss(), 1e-12);
            assertEquals(0.75, p.meanAccuracy(), 1e-12);
            assertEquals(10, p.steps());
            assertTrue(p.imagesPerSecond() > 0);
        }
        String[] lines = bytes.toString(StandardCharsets.UTF_8).split("\n");
        assertEquals(3, lines.length, String.join("|", lines)); // steps 4, 8, and the end
        assertTrue(lines[0].startsWith("epoch 1/2: 4/10 (40.0%) loss 1.0000 acc 50.00% "), lines[0]);
        assertTrue(lines[2].startsWith("epoch 1/2: 10/10 (100.0%) loss 0.7500 acc 75.00% "), lines[2]);
        assertTrue(lines[2].contains("img/s") && lines[2].contains("ETA 0:00:00"), lines[2]);
    }

    @Test
    void weightsByBatchSizeAndRefusesStepsAfterClose() {
        Progress p = Progress.silent("eval", 2);
        p.step(30, 1.0, 1.0);
        p.step(10, 0.0, 0.0); // a smaller last batch counts for less
        assertEquals(0.75, p.meanAccuracy(), 1e-12);
        p.close();
        assertThrows(IllegalStateException.class, () -> p.step(1, 0, 0));
        p.close();
    }

    /** A transfer set's steps: accuracy over the labeled images they counted, whatever the batch sizes. */
    @Test
    void accuracyOverCountedImagesOnly() {
        Progress p = Progress.silent("transfer", 3);
        p.step(32, 1.0, 0, 0);  // a batch without a labeled image leaves the accuracy alone
        assertTrue(Double.isNaN(p.meanAccuracy()), "nothing counted yet");
        p.step(32, 1.0, 3, 4);
        p.step(16, 1.0, 1, 4);
        assertEquals(0.5, p.meanAccuracy(), 1e-12);
        assertEquals(1.0, p.meanLoss(), 1e-12);
        p.close();
    }

    @Test
    void barModeRunsWithoutATerminal() {
        String old = System.getProperty("distill4j.progress");
        System.setProperty("distill4j.progress", "bar");
        try (Progress p = Progress.start("bar", 3)) {
            p.step(8, 0.1, 0.9);
            p.step(8, 0.1, 0.9);
            p.step(8, 0.1, 0.9);
            assertEquals(0.9, p.meanAccuracy(), 1e-12);
        } finally {
            if (old == null) {
                System.clearProperty("distill4j.progress");
            } else {
                System.setProperty("distill4j.progress", old);
            }
        }
    }
}
