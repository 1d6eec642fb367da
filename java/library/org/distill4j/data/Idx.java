package org.distill4j.data;

import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.zip.GZIPInputStream;
import java.util.zip.ZipException;

/**
 * Reader for the IDX files of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS").
 *
 * <p>An IDX file is a big-endian header — two zero bytes, a type byte (0x08 = unsigned byte), the number of
 * dimensions — then one 32-bit size per dimension, then the data in row-major order. Only the two shapes these
 * datasets use are read: images {@code 0x00000803} (n × rows × cols) and labels {@code 0x00000801} (n). A file may
 * be gzip-compressed (as distributed) or plain; the first two bytes decide (gzip starts with 0x1f 0x8b, IDX with
 * 0x00 0x00), not the file name.
 *
 * <p>Every defect is a {@link DatasetException} naming the file: missing file, wrong magic (with a hint when it is
 * the other kind of IDX file), truncated data, trailing bytes, label/image count mismatch, labels out of range.
 */
public final class Idx {
    /** Magic number of an unsigned-byte, three-dimensional IDX file (images). */
    public static final int IMAGES_MAGIC = 0x00000803;
    /** Magic number of an unsigned-byte, one-dimensional IDX file (labels). */
    public static final int LABELS_MAGIC = 0x00000801;

    private Idx() {}

    /** Images of an IDX file: {@code count} images of {@code rows × cols} unsigned bytes, row-major. */
    public record Images(int count, int rows, int cols, byte[] pixels) {
        /** The pixel at (image, row, col) as 0..255. */
        public int pixel(int image, int row, int col) {
            return pixels[(image * rows + row) * cols + col] & 0xff;
        }
    }

    /** Reads an images file ({@code 0x00000803}, n × rows × cols unsigned bytes). */
    public static Images readImages(Path file) throws DatasetException {
        try (DataInputStream in = open(file)) {
            int magic = readHeaderInt(in, file, "magic number");
            checkMagic(file, magic, IMAGES_MAGIC, "images");
            int n = readDim(in, file, "image count");
            int rows = readDim(in, file, "row count");
            int cols = readDim(in, file, "column count");
            long size = (long) n * rows * cols;
            if (size > Integer.MAX_VALUE - 16) {
                throw new DatasetException(file, n + " × " + rows + " × " + cols + " pixels exceed the 2^31 bytes "
                        + "one Java array can hold");
            }
            byte[] pixels = readBody(in, file, (int) size, n + " images of " + rows + "×" + cols);
            return new Images(n, rows, cols, pixels);
        } catch (DatasetException e) {
            throw e;
        } catch (IOException e) {
            throw new DatasetException(file, "cannot read: " + e, e);
        }
    }

    /** Reads a labels file ({@code 0x00000801}, n unsigned bytes); each label is 0..255. */
    public static int[] readLabels(Path file) throws DatasetException {
        try (DataInputStream in = open(file)) {
            int magic = readHeaderInt(in, file, "magic number");
            checkMagic(file, magic, LABELS_MAGIC, "labels");
            int n = readDim(in, file, "label count");
            byte[] raw = readBody(in, file, n, n + " labels");
            int[] labels = new int[n];
            for (int i = 0; i < n; i++) {
                labels[i] = raw[i] & 0xff;
            }
            return labels;
        } catch (DatasetException e) {
            throw e;
        } catch (IOException e) {
            throw new DatasetException(file, "cannot read: " + e, e);
        }
    }

    /**
     * Reads an images file and its labels file into a {@link Dataset} normalised as {@code (p/255 − mean)/std}.
     * The two files must hold the same number of items and every label must lie in {@code 0..classes−1}.
     */
    public static Dataset read(Path images, Path labels, int classes, float mean, float std) throws DatasetException {
        Images im = readImages(images);
        int[] lab = readLabels(labels);
        if (im.count() != lab.length) {
            throw new DatasetException("label/image count mismatch: " + images + " holds " + im.count()
                    + " images but " + labels + " holds " + lab.length + " labels");
        }
        for (int i = 0; i < lab.length; i++) {
            if (lab[i] >= classes) {
                throw new DatasetException(labels, "label " + lab[i] + " at index " + i + " is outside 0.."
                        + (classes - 1));
            }
        }
        return Dataset.fromPixels(String.valueOf(images.getFileName()), im.pixels(), lab, im.count(), 1, im.rows(),
                im.cols(), classes, mean, std);
    }

    private static DataInputStream open(Path file) throws DatasetException {
        InputStream raw;
        try {
            raw = new BufferedInputStream(Files.newInputStream(file), 1 << 16);
        } catch (NoSuchFileException e) {
            throw new DatasetException(file, "file not found", e);
        } catch (AccessDeniedException e) {
            throw new DatasetException(file, "permission denied", e);
        } catch (IOException e) {
            if (Files.isDirectory(file)) {
                throw new DatasetException(file, "is a directory, not an IDX file", e);
            }
            throw new DatasetException(file, "cannot open: " + e, e);
        }
        try {
            raw.mark(2);
            int b0 = raw.read();
            int b1 = raw.read();
            raw.reset();
            if (b0 == 0x1f && b1 == 0x8b) {
                raw = new GZIPInputStream(raw, 1 << 16);
            }
            return new DataInputStream(raw);
        } catch (IOException e) {
            closeQuietly(raw);
            throw new DatasetException(file, "not a valid gzip stream: " + e.getMessage(), e);
        }
    }

    private static int readHeaderInt(DataInputStream in, Path file, String what) throws DatasetException {
        try {
            return in.readInt();
        } catch (EOFException e) {
            throw new DatasetException(file, "truncated header: file ends before the " + what, e);
        } catch (IOException e) {
            throw streamError(file, e);
        }
    }

    private static int readDim(DataInputStream in, Path file, String what) throws DatasetException {
        int d = readHeaderInt(in, file, what);
        if (d < 0) {
            throw new DatasetException(file, "negative " + what + " " + d + " in the header (corrupt file?)");
        }
        return d;
    }

    private static void checkMagic(Path file, int magic, int expected, String kind) throws DatasetException {
        if (magic == expected) {
            return;
        }
        String hint;
        if (magic == IMAGES_MAGIC || magic == LABELS_MAGIC) {
            hint = " — this is an IDX " + (magic == IMAGES_MAGIC ? "images" : "labels") + " file; were the images "
                    + "and labels paths swapped?";
        } else if ((magic >>> 16) == 0 && ((magic >>> 8) & 0xff) != 0x08) {
            hint = " — IDX data type 0x" + String.format("%02x", (magic >>> 8) & 0xff)
                    + " is not unsigned byte (0x08)";
        } else if ((magic >>> 16) == 0) {
            hint = " — an IDX file with " + (magic & 0xff) + " dimensions";
        } else {
            hint = " — not an IDX file";
        }
        throw new DatasetException(file, String.format("wrong magic number 0x%08x for an IDX %s file, expected 0x%08x%s",
                magic, kind, expected, hint));
    }

    private static byte[] readBody(DataInputStream in, Path file, int size, String what) throws DatasetException {
        byte[] data = new byte[size];
        int got;
        try {
            got = in.readNBytes(data, 0, size);
        } catch (IOException e) {
            throw streamError(file, e);
        }
        if (got < size) {
            throw new DatasetException(file, "truncated: the header announces " + what + " (" + size + " bytes) but "
                    + "the file holds only " + got);
        }
        try {
            if (in.read() != -1) {
                throw new DatasetException(file, "unexpected bytes after the " + what + " the header announces "
                        + "(corrupt header or concatenated files?)");
            }
        } catch (DatasetException e) {
            throw e;
        } catch (IOException e) {
            throw streamError(file, e);
        }
        return data;
    }

    /** A failure inside the (gzip) stream: usually a truncated or corrupt compressed file. */
    private static DatasetException streamError(Path file, IOException e) {
        if (e instanceof EOFException) {
            return new DatasetException(file, "truncated: the gzip stream ends early (" + e.getMessage() + ")", e);
        }
        if (e instanceof ZipException) {
            return new DatasetException(file, "corrupt gzip data (" + e.getMessage() + ")", e);
        }
        return new DatasetException(file, "cannot read: " + e, e);
    }

    private static void closeQuietly(InputStream in) {
        try {
            in.close();
        } catch (IOException ignored) {
            // Already failing with a better message.
        }
    }
}
