package org.distill4j.io;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A validated safetensors header: the tensors in the header's order, the optional {@code __metadata__}, and
 * where the data buffer starts in the file.
 */
public record SafetensorsHeader(Map<String, TensorInfo> tensors, Map<String, String> metadata, long dataStart) {
    public SafetensorsHeader {
        tensors = Collections.unmodifiableMap(new LinkedHashMap<>(tensors));
        metadata = Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
    }

    /** Name to shape, in the header's order: the {@code actual} argument of {@link Safetensors#checkNames}. */
    public Map<String, long[]> shapes() {
        Map<String, long[]> m = new LinkedHashMap<>();
        tensors.forEach((name, t) -> m.put(name, t.shape()));
        return m;
    }
}
