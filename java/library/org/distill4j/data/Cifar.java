package org.distill4j.data;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;

/**
 * CIFAR-10 and CIFAR-100 in their binary distribution (https://www.cs.toronto.edu/~kriz/cifar.html, "Binary
 * version"): fixed-size records of label byte(s) then 3072 pixel bytes, the 1024 red values of the 32×32 image row
 * by row, then green, then blue — already the [C, H, W] layout. CIFAR-10 records have one label byte
 * ({@code data_batch_1.bin} … {@code data_batch_5.bin}, {@code test_batch.bin}); CIFAR-100 records have the coarse
 * then the fine label ({@code train.bin}, {@code test.bin}); the fine label (100 classes) is the one used.
 *
 * <p><b>Memory.</b> Only the labels are held (one int per image, read once at {@link #open}); each
 * {@link #copyImage} is one positional read of 3072 bytes ({@link FileChannel#read(ByteBuffer, long)}, which is
 * safe from several threads), served by the OS page cache after the first epoch. The 150 MB of a training set are
 * therefore never copied onto the Java heap, and the same code path as a streamed image folder is exercised.
 *
 * <p>Class names come from {@code batches.meta.txt} (CIFAR-10) or {@code fine_label_names.txt} (CIFAR-100) when
 * present, one per line; otherwise they are the class indices.
 */
public final class Cifar implements ImageSource, AutoCloseable {
    /** Pixels per image: 3 × 32 × 32. */
    public static final int IMAGE_BYTES = 3 * 32 * 32;

    /** The two variants and their file names. */
    public enum Kind {
        CIFAR10("cifar-10", 1, 10, List.of("data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                "data_batch_4.bin", "data_batch_5.bin"), List.of("test_batch.bin"), "batches.meta.txt",
                Normalization.CIFAR10),
        CIFAR100("cifar-100", 2, 100, List.of("train.bin"), List.of("test.bin"), "fine_label_names.txt",
                Normalization.CIFAR100);

        final String label;
        final int labelBytes;
        final int classes;
        final List<String> train;
        final List<String> test;
        final String names;
        final Normalization normalization;

        Kind(String label, int labelBytes, int classes, List<String> train, List<String> test, String names,
                Normalization normalization) {
            this.label = label;
            this.labelBytes = labelBytes;
            this.classes = classes;
            this.train = train;
            this.test = test;
            this.names = names;
            this.normalization = normalization;
        }

        /** Bytes per record: the label byte(s) and 3072 pixels. */
        public int recordBytes() {
            return labelBytes + IMAGE_BYTES;
        }

        public int classes() {
            return classes;
        }

        /** The training files, in the order their records are numbered. */
        public List<String> trainFiles() {
            return train;
        }

        /** The test files. */
        public List<String> testFiles() {
            return test;
        }

        /** The usual per-channel statistics of this dataset. */
        public Normalization normalization() {
            return normalization;
        }
    }

    private final Kind kind;
    private final String name;
    private final Path[] files;
    private final FileChannel[] channels;
    private final long[] firstIndex;  // global index of each file's first record, plus n at the end
    private final int[] labels;
    private final float[][] lut;
    private final Normalization normalization;
    private final List<String> classNames;

    private Cifar(Kind kind, String name, Path[] files, FileChannel[] channels, long[] firstIndex, int[] labels,
            Normalization normalization, List<String> classNames) {
        this.kind = kind;
        this.name = name;
        this.files = files;
        this.channels = channels;
        this.firstIndex = firstIndex;
        this.labels = labels;
        this.normalization = normalization;
        this.lut = normalization.byteTables();
        this.classNames = classNames;
    }

    /**
     * The variant whose files {@code dir} holds (CIFAR-10 if it has {@code test_batch.bin}, CIFAR-100 if it has
     * {@code test.bin} and {@code train.bin}), or null.
     */
    public static Kind detect(Path dir) {
        if (Files.isRegularFile(dir.resolve("test_batch.bin")) || Files.isRegularFile(dir.resolve("data_batch_1.bin"))) {
            return Kind.CIFAR10;
        }
        if (Files.isRegularFile(dir.resolve("train.bin")) && Files.isRegularFile(dir.resolve("test.bin"))) {
            return Kind.CIFAR100;
        }
        return null;
    }

    /** Opens the training or test split in {@code dir} with the variant's usual normalisation. */
    public static Cifar open(Path dir, boolean train) throws DatasetException {
        Kind kind = detect(dir);
        if (kind == null) {
            throw new DatasetException(dir, "not a CIFAR binary directory (expected data_batch_1..5.bin and "
                    + "test_batch.bin for CIFAR-10, or train.bin and test.bin for CIFAR-100)");
        }
        return open(dir, kind, train, kind.normalization);
    }

    /**
     * Opens the training ({@code train}) or test split of {@code kind} in {@code dir}, normalised by
     * {@code normalization} (3 channels). Reads every label once and checks each file's size and labels.
     *
     * @throws DatasetException naming the file: missing, not a whole number of records, empty, a label out of range
     */
    public static Cifar open(Path dir, Kind kind, boolean train, Normalization normalization) throws DatasetException {
        normalization.checkChannels(3, kind.label);
        List<String> names = train ? kind.train : kind.test;
        int rec = kind.recordBytes();
        Path[] files = new Path[names.size()];
        FileChannel[] channels = new FileChannel[names.size()];
        long[] first = new long[names.size() + 1];
        List<int[]> parts = new ArrayList<>();
        boolean ok = false;
        try {
            for (int f = 0; f < files.length; f++) {
                Path file = dir.resolve(names.get(f));
                files[f] = file;
                try {
                    channels[f] = FileChannel.open(file, StandardOpenOption.READ);
                } catch (NoSuchFileException e) {
                    throw new DatasetException(file, "missing (a " + kind.label + " binary directory holds "
                            + String.join(", ", kind.train) + " and " + String.join(", ", kind.test) + ")");
                } catch (IOException e) {
                    throw new DatasetException(file, "cannot be opened: " + e.getMessage(), e);
                }
                long size;
                try {
                    size = channels[f].size();
                } catch (IOException e) {
                    throw new DatasetException(file, "cannot be read: " + e.getMessage(), e);
                }
                if (size == 0 || size % rec != 0) {
                    throw new DatasetException(file, size + " bytes is not a whole, non-zero number of " + rec
                            + "-byte " + kind.label + " records (truncated, or another variant's file?)");
                }
                if (first[f] + size / rec > Integer.MAX_VALUE - 8) {
                    throw new DatasetException(file, "too many records");
                }
                parts.add(readLabels(file, kind, size / rec));
                first[f + 1] = first[f] + size / rec;
            }
            int n = (int) first[files.length];
            int[] labels = new int[n];
            for (int f = 0; f < files.length; f++) {
                System.arraycopy(parts.get(f), 0, labels, (int) first[f], parts.get(f).length);
            }
            Cifar c = new Cifar(kind, kind.label + "/" + (train ? "train" : "test"), files, channels, first, labels,
                    normalization, classNames(dir.resolve(kind.names), kind.classes));
            ok = true;
            return c;
        } finally {
            if (!ok) closeAll(channels);
        }
    }

    private static int[] readLabels(Path file, Kind kind, long records) throws DatasetException {
        int rec = kind.recordBytes();
        int[] labels = new int[(int) records];
        byte[] buf = new byte[rec * 256];
        try (InputStream in = Files.newInputStream(file)) {
            int done = 0;
            while (done < records) {
                int want = (int) Math.min(256, records - done) * rec;
                int got = in.readNBytes(buf, 0, want);
                if (got != want) throw new DatasetException(file, "ended early, in record " + (done + got / rec));
                for (int r = 0; r < want / rec; r++, done++) {
                    int label = buf[r * rec + kind.labelBytes - 1] & 0xff; // CIFAR-100: the fine label, second byte
                    if (label >= kind.classes) {
                        throw new DatasetException(file, "record " + done + " has label " + label + ", outside 0.."
                                + (kind.classes - 1) + " of " + kind.label);
                    }
                    labels[done] = label;
                }
            }
        } catch (DatasetException e) {
            throw e;
        } catch (IOException e) {
            throw new DatasetException(file, "cannot be read: " + e.getMessage(), e);
        }
        return labels;
    }

    private static List<String> classNames(Path file, int classes) throws DatasetException {
        List<String> names = new ArrayList<>();
        if (Files.isRegularFile(file)) {
            try {
                for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                    if (!line.isBlank()) names.add(line.strip());
                }
            } catch (IOException e) {
                throw new DatasetException(file, "cannot be read: " + e.getMessage(), e);
            }
            if (names.size() != classes) {
                throw new DatasetException(file, names.size() + " class names, expected " + classes);
            }
            return List.copyOf(names);
        }
        for (int i = 0; i < classes; i++) names.add(Integer.toString(i));
        return List.copyOf(names);
    }

    @Override
    public void copyImage(int index, float[] dst, int offset) throws IOException {
        byte[] px = pixels(index);
        for (int c = 0, i = 0; c < 3; c++) {
            float[] t = lut[c];
            for (int k = 0; k < 1024; k++, i++) dst[offset + i] = t[px[i] & 0xff];
        }
    }

    /** {@code file:record}, e.g. {@code data_batch_2.bin:17} (records from 0). */
    @Override
    public String sampleName(int index) {
        int f = fileOf(index);
        return files[f].getFileName() + ":" + (index - firstIndex[f]);
    }

    private int fileOf(int index) {
        if (index < 0 || index >= labels.length) {
            throw new IndexOutOfBoundsException("image " + index + " of " + labels.length);
        }
        int f = 0;
        while (index >= firstIndex[f + 1]) f++;
        return f;
    }

    /** The raw pixels of image {@code index}: 3072 bytes, R plane, G plane, B plane. */
    public byte[] pixels(int index) throws IOException {
        int f = fileOf(index);
        long pos = (index - firstIndex[f]) * kind.recordBytes() + kind.labelBytes;
        ByteBuffer buf = ByteBuffer.allocate(IMAGE_BYTES);
        while (buf.hasRemaining()) {
            if (channels[f].read(buf, pos + buf.position()) < 0) {
                throw new DatasetException(files[f], "ended early, in record " + (index - firstIndex[f])
                        + " (the file shrank after it was opened)");
            }
        }
        return buf.array();
    }

    public Kind kind() {
        return kind;
    }

    /** Class names, index by index. */
    public List<String> classNames() {
        return classNames;
    }

    @Override
    public Normalization normalization() {
        return normalization;
    }

    @Override
    public int size() {
        return labels.length;
    }

    @Override
    public int channels() {
        return 3;
    }

    @Override
    public int height() {
        return 32;
    }

    @Override
    public int width() {
        return 32;
    }

    @Override
    public int classes() {
        return kind.classes;
    }

    @Override
    public int label(int index) {
        return labels[index];
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public void close() {
        closeAll(channels);
    }

    private static void closeAll(FileChannel[] channels) {
        for (FileChannel ch : channels) {
            if (ch == null) continue;
            try {
                ch.close();
            } catch (IOException e) {
                // read-only: nothing to lose
            }
        }
    }

    @Override
    public String toString() {
        return name + ": " + labels.length + " images 3×32×32, " + kind.classes + " classes";
    }
}
