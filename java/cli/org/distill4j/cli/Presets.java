package org.distill4j.cli;

import java.util.Iterator;
import org.distill4j.nn.VitConfig;

/** The ViT preset names, for picocli's option help ({@code ${COMPLETION-CANDIDATES}}) and shell completion. */
final class Presets implements Iterable<String> {
    @Override
    public Iterator<String> iterator() {
        return VitConfig.presetNames().iterator();
    }
}
