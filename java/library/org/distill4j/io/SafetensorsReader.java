package org.distill4j.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Objects;
import org.distill4j.MemoryLimitException;
import org.distill4j.Tensor;

/**
 * A safetensors file opened once, its header validated ({@link Safetensors#readHeader}'s checks), whose tensors are
 * then read one at a time straight into their destination: a {@link Tensor} (host or device memory) or one float
 * array. F16 and BF16 are converted exactly, F64 rounded to nearest, through one 1 MB buffer: reading a tensor
 * never holds more of it on the Java heap than that, whatever its size.
 *
 * <p>Each read counts the values that are NaN or infinite (an F64 beyond the float range becomes infinite), so a
 * caller can refuse them without a second pass. Not thread-safe.
 */
public final class SafetensorsReader implements AutoCloseable {
    private static final int CHUNK_BYTES = 1 << 20; // a multiple of every dtype size: chunks end on elements

    private final Path file;
    private final FileChannel channel;
    private final SafetensorsHeader header;
    private final ByteBuffer chunk = ByteBuffer.allocate(CHUNK_BYTES).order(ByteOrder.LITTLE_ENDIAN);
    private final float[] values = new float[CHUNK_BYTES / 2]; // the elements of a chunk of 2-byte values

    private SafetensorsReader(Path file, FileChannel channel, SafetensorsHeader header) {
        this.file = file;
        this.channel = channel;
        this.header = header;
    }

    /**
     * Opens {@code file} and validates its header; reads no data.
     *
     * @throws SafetensorsFormatException if the header is not valid safetensors
     */
    public static SafetensorsReader open(Path file) throws IOException {
        Objects.requireNonNull(file, "file");
        FileChannel ch = FileChannel.open(file, StandardOpenOption.READ);
        try {
            return new SafetensorsReader(file, ch, Safetensors.readHeader(ch, file));
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    /** The file read. */
    public Path file() {
        return file;
    }

    /** The validated header. */
    public SafetensorsHeader header() {
        return header;
    }

    /**
     * Copies tensor {@code name} into {@code destination}, which must have as many elements (its shape may differ);
     * returns how many of the values are NaN or infinite (they are copied all the same).
     *
     * @throws IllegalArgumentException if the file has no such tensor or the element counts differ
     * @throws UnsupportedDtypeException if its dtype is not a float one
     */
    public long copyTo(String name, Tensor destination) throws IOException {
        TensorInfo t = floatTensor(name);
        if (t.numel() != destination.numel()) {
            throw new IllegalArgumentException(file + ": tensor " + Safetensors.quote(name) + " "
                    + Arrays.toString(t.shape()) + " has " + t.numel() + " elements, the destination "
                    + destination.numel());
        }
        return read(t, (offset, count) -> destination.copyFrom(offset, values, 0, count));
    }

    /**
     * Tensor {@code name} as a new float array, refused before anything is allocated when it would not fit the free
     * Java heap.
     *
     * @throws IllegalArgumentException if the file has no such tensor
     * @throws UnsupportedDtypeException if its dtype is not a float one
     * @throws MemoryLimitException if the array would not fit a Java array or the free heap
     */
    public float[] readFloats(String name) throws IOException {
        TensorInfo t = floatTensor(name);
        if (t.numel() > Safetensors.MAX_ARRAY) {
            throw new MemoryLimitException(file + ": tensor " + Safetensors.quote(name) + " has " + t.numel()
                    + " elements, more than a Java array holds", Math.min(t.numel(), Long.MAX_VALUE / 4) * 4,
                    (long) Safetensors.MAX_ARRAY * Float.BYTES);
        }
        Safetensors.checkHeap(file, t.numel() * Float.BYTES, "tensor " + Safetensors.quote(name) + " as a float array");
        float[] out = new float[(int) t.numel()];
        read(t, (offset, count) -> System.arraycopy(values, 0, out, (int) offset, count));
        return out;
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }

    private TensorInfo floatTensor(String name) throws UnsupportedDtypeException {
        TensorInfo t = header.tensors().get(Objects.requireNonNull(name, "name"));
        if (t == null) throw new IllegalArgumentException(file + " has no tensor " + Safetensors.quote(name));
        if (!t.dtype().readsAsFloat()) throw new UnsupportedDtypeException(file, name, t.dtype());
        return t;
    }

    /** Where a chunk goes: {@code values[0, count)} are the tensor's elements {@code [offset, offset + count)}. */
    private interface Sink {
        void accept(long offset, int count);
    }

    /** Streams tensor {@code t} through {@link #values}, chunk by chunk; returns its count of non-finite values. */
    private long read(TensorInfo t, Sink sink) throws IOException {
        SafetensorsDtype dtype = t.dtype();
        int size = dtype.bytes();
        long numel = t.numel(), position = header.dataStart() + t.begin(), nonFinite = 0;
        for (long done = 0; done < numel; ) {
            int count = (int) Math.min(numel - done, Math.min(CHUNK_BYTES / size, values.length));
            chunk.clear().limit(count * size);
            Safetensors.readFully(channel, file, chunk, position + done * size);
            chunk.flip();
            switch (dtype) {
                case F32 -> chunk.asFloatBuffer().get(values, 0, count);
                case F64 -> {
                    for (int i = 0; i < count; i++) values[i] = (float) chunk.getDouble();
                }
                case F16 -> {
                    for (int i = 0; i < count; i++) values[i] = Safetensors.f16ToFloat(chunk.getShort());
                }
                case BF16 -> {
                    for (int i = 0; i < count; i++) values[i] = Safetensors.bf16ToFloat(chunk.getShort());
                }
                default -> throw new AssertionError(dtype); // floatTensor() refused it
            }
            for (int i = 0; i < count; i++) {
                if (!Float.isFinite(values[i])) nonFinite++;
            }
            sink.accept(done, count);
            done += count;
        }
        return nonFinite;
    }
}
