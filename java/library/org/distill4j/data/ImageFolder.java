package org.distill4j.data;

import com.google.gson.GsonBuilder;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Images in torchvision's {@code ImageFolder} layout, {@code root/<class>/<image>}, decoded on demand.
 *
 * <p><b>Classes and order</b> as torchvision's {@code find_classes} and {@code make_dataset}: the class folders
 * sorted by name (Java's {@code String} order, which is Python's for names without characters outside the BMP) are
 * classes 0, 1, …; each class folder is walked recursively, following links, directories in the order of their path
 * strings and files in name order within each. Files are kept by extension, case-insensitively: {@code .jpg}, {@code .jpeg}, {@code .png};
 * others are skipped and counted ({@link #skippedFiles()}). Unlike torchvision, hidden names (starting with '.')
 * are skipped, folders and files alike: a {@code .ipynb_checkpoints} or {@code .DS_Store} is not a class or an image.
 * A class folder without images and a root without class folders are errors naming the folder (torchvision's
 * {@code allow_empty=False}).
 *
 * <p><b>Memory.</b> Only the relative paths and labels are held; {@link #copyImage} decodes the file each time
 * ({@link ImageDecoder}, any thread), resizes the shorter side to {@code floor(size / cropPct)} and takes the centre
 * {@code size}×{@code size} ({@link Resize}, timm's eval transform), then normalises per channel.
 */
public final class ImageFolder implements ImageSource {
    private static final List<String> EXTENSIONS = List.of(".jpg", ".jpeg", ".png");

    private final Path root;
    private final String name;
    private final List<String> classes;
    private final String[] files;  // relative to root
    private final int[] labels;
    private final int skipped;
    private final int size;
    private final int channels;
    private final double cropPct;
    private final Normalization normalization;

    private ImageFolder(Path root, String name, List<String> classes, String[] files, int[] labels, int skipped,
            int size, int channels, double cropPct, Normalization normalization) {
        this.root = root;
        this.name = name;
        this.classes = classes;
        this.files = files;
        this.labels = labels;
        this.skipped = skipped;
        this.size = size;
        this.channels = channels;
        this.cropPct = cropPct;
        this.normalization = normalization;
    }

    /** A train and a validation folder with the same classes. */
    public record Split(ImageFolder train, ImageFolder val) {}

    /**
     * Opens {@code root} for a model of {@code size}×{@code size} images of {@code channels} (1 or 3) channels,
     * normalised by {@code normalization}, with the shorter side resized straight to {@code size} (cropPct 1).
     */
    public static ImageFolder open(Path root, int size, int channels, Normalization normalization)
            throws DatasetException {
        return open(root, size, channels, normalization, 1.0);
    }

    /**
     * As {@link #open(Path, int, int, Normalization)}, resizing the shorter side to {@code floor(size / cropPct)}
     * before the centre crop (timm's eval uses 0.875 for 224×224).
     *
     * @throws DatasetException naming the folder: missing, no class folders, a class folder without images
     */
    public static ImageFolder open(Path root, int size, int channels, Normalization normalization, double cropPct)
            throws DatasetException {
        if (size <= 0 || channels != 1 && channels != 3) {
            throw new IllegalArgumentException("image folders give 1 or 3 channels of a positive size, got " + channels
                    + "×" + size);
        }
        if (!(cropPct > 0 && cropPct <= 1)) throw new IllegalArgumentException("cropPct must be in (0, 1], got " + cropPct);
        normalization.checkChannels(channels, "the model");
        if (!Files.isDirectory(root)) throw new DatasetException(root, "not a directory (an image folder root)");
        List<String> classes = new ArrayList<>();
        for (Path p : sortedChildren(root)) {
            if (Files.isDirectory(p) && !hidden(p)) classes.add(p.getFileName().toString());
        }
        if (classes.isEmpty()) {
            throw new DatasetException(root, "no class folders (an image folder is root/<class>/<image>.jpg|png)");
        }
        List<String> files = new ArrayList<>();
        List<Integer> labels = new ArrayList<>();
        int[] skipped = {0};
        for (int c = 0; c < classes.size(); c++) {
            Path dir = root.resolve(classes.get(c));
            int before = files.size();
            walk(root, dir, files, skipped);
            if (files.size() == before) {
                throw new DatasetException(dir, "class '" + classes.get(c) + "' has no JPEG or PNG images ("
                        + String.join(", ", EXTENSIONS) + "); add images or remove the folder");
            }
            for (int i = before; i < files.size(); i++) labels.add(c);
        }
        int[] lab = labels.stream().mapToInt(Integer::intValue).toArray();
        String name = root.getFileName() == null ? root.toString() : root.getFileName().toString();
        return new ImageFolder(root, name, List.copyOf(classes), files.toArray(String[]::new), lab, skipped[0], size,
                channels, cropPct, normalization);
    }

    /**
     * Opens {@code train} and {@code val} and checks they have the same class folders (a class index must mean the
     * same class in both).
     */
    public static Split openSplit(Path train, Path val, int size, int channels, Normalization normalization,
            double cropPct) throws DatasetException {
        ImageFolder t = open(train, size, channels, normalization, cropPct);
        ImageFolder v = open(val, size, channels, normalization, cropPct);
        if (!t.classes.equals(v.classes)) {
            List<String> onlyTrain = new ArrayList<>(t.classes);
            onlyTrain.removeAll(v.classes);
            List<String> onlyVal = new ArrayList<>(v.classes);
            onlyVal.removeAll(t.classes);
            throw new DatasetException(train + " and " + val + " have different class folders (only in train: "
                    + onlyTrain + ", only in val: " + onlyVal + ")");
        }
        return new Split(t, v);
    }

    private static void walk(Path root, Path top, List<String> files, int[] skipped) throws DatasetException {
        // torchvision: for dirpath in sorted(os.walk(top)): for name in sorted(filenames): directories in the order
        // of their path strings ("a" < "a b" < "a/x"), not depth-first; files by name within each.
        List<Path> dirs = new ArrayList<>();
        List<Path> pending = new ArrayList<>(List.of(top));
        while (!pending.isEmpty()) {
            Path d = pending.remove(pending.size() - 1);
            dirs.add(d);
            for (Path p : sortedChildren(d)) {
                if (!hidden(p) && Files.isDirectory(p)) pending.add(p);
            }
        }
        dirs.sort((a, b) -> a.toString().compareTo(b.toString()));
        for (Path d : dirs) {
            for (Path p : sortedChildren(d)) {
                if (hidden(p) || Files.isDirectory(p)) continue;
                if (Files.isRegularFile(p) && image(p)) {
                    files.add(root.relativize(p).toString());
                } else {
                    skipped[0]++;
                }
            }
        }
    }

    private static List<Path> sortedChildren(Path dir) throws DatasetException {
        List<Path> out = new ArrayList<>();
        try (DirectoryStream<Path> s = Files.newDirectoryStream(dir)) {
            for (Path p : s) out.add(p);
        } catch (IOException e) {
            throw new DatasetException(dir, "cannot be listed: " + e.getMessage(), e);
        }
        out.sort((a, b) -> a.getFileName().toString().compareTo(b.getFileName().toString()));
        return out;
    }

    private static boolean hidden(Path p) {
        return p.getFileName().toString().startsWith(".");
    }

    private static boolean image(Path p) {
        String n = p.getFileName().toString().toLowerCase(Locale.ROOT);
        for (String e : EXTENSIONS) {
            if (n.endsWith(e)) return true;
        }
        return false;
    }

    /**
     * Writes the class index map as JSON, {@code {"classes": [...], "class_to_idx": {name: index}}} (torchvision's
     * {@code classes} and {@code class_to_idx}), e.g. {@code class_index.json} in a run's output directory.
     */
    public void writeClassIndex(Path file) throws IOException {
        writeClassIndex(file, root, classes);
    }

    /** Writes {@code classes} (class i is the i-th) of the data in {@code root} as {@link #writeClassIndex(Path)}. */
    public static void writeClassIndex(Path file, Path root, List<String> classes) throws IOException {
        Map<String, Object> json = new LinkedHashMap<>();
        json.put("root", root.toAbsolutePath().toString());
        json.put("classes", classes);
        Map<String, Integer> idx = new LinkedHashMap<>();
        for (int i = 0; i < classes.size(); i++) idx.put(classes.get(i), i);
        json.put("class_to_idx", idx);
        Files.writeString(file, new GsonBuilder().setPrettyPrinting().disableHtmlEscaping().create().toJson(json) + "\n",
                StandardCharsets.UTF_8);
    }

    @Override
    public void copyImage(int index, float[] dst, int offset) throws IOException {
        Path file = file(index);
        ImageDecoder.Image im = ImageDecoder.decode(file, channels);
        int scaled = (int) Math.floor(size / cropPct);
        float[] px = Resize.shorterSideThenCenterCrop(im.pixels(), channels, im.height(), im.width(), scaled, size);
        normalise(px, dst, offset);
    }

    /** Crops the image as decoded (any size), then resizes the box to the model's size: torchvision's order. */
    @Override
    public void copyImageCropped(int index, CropChoice choice, float[] dst, int offset) throws IOException {
        ImageDecoder.Image im = ImageDecoder.decode(file(index), channels);
        float[] px = new float[channels * size * size];
        RandomResizedCrop.cropAndResize(im.pixels(), 0, channels, im.height(), im.width(),
                choice.box(im.height(), im.width()), px, 0, size, size);
        normalise(px, dst, offset);
    }

    private void normalise(float[] px, float[] dst, int offset) {
        int plane = size * size;
        for (int c = 0; c < channels; c++) {
            for (int i = 0; i < plane; i++) dst[offset + c * plane + i] = normalization.apply(c, px[c * plane + i]);
        }
    }

    /** The image's path relative to the root ({@code class/file.jpg}). */
    @Override
    public String sampleName(int index) {
        return files[index];
    }

    /** The file of image {@code index}. */
    public Path file(int index) {
        return root.resolve(files[index]);
    }

    /** Class names; class i is the i-th. */
    public List<String> classNames() {
        return classes;
    }

    /** Files under the class folders that were not taken as images (unknown extension, not a regular file). */
    public int skippedFiles() {
        return skipped;
    }

    public Path root() {
        return root;
    }

    @Override
    public Normalization normalization() {
        return normalization;
    }

    @Override
    public int size() {
        return files.length;
    }

    @Override
    public int channels() {
        return channels;
    }

    @Override
    public int height() {
        return size;
    }

    @Override
    public int width() {
        return size;
    }

    @Override
    public int classes() {
        return classes.size();
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
    public String toString() {
        return name + ": " + files.length + " images in " + classes.size() + " classes, read as " + channels + "×"
                + size + "×" + size;
    }
}
