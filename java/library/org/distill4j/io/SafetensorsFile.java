package org.distill4j.io;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/** The contents of a safetensors file read as float: tensors in the header's order, and the metadata. */
public record SafetensorsFile(Map<String, TensorData> tensors, Map<String, String> metadata) {
    public SafetensorsFile {
        tensors = Collections.unmodifiableMap(new LinkedHashMap<>(tensors));
        metadata = Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
    }

    /** Name to shape: the {@code actual} argument of {@link Safetensors#checkNames}. */
    public Map<String, long[]> shapes() {
        return Safetensors.shapes(tensors);
    }
}
