package org.distill4j.data;

import java.awt.color.ColorSpace;
import java.awt.image.BufferedImage;
import java.awt.image.ColorModel;
import java.awt.image.IndexColorModel;
import java.awt.image.Raster;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import javax.imageio.ImageIO;
import javax.imageio.ImageReader;
import javax.imageio.stream.ImageInputStream;

/**
 * Decodes a JPEG or PNG file into planar floats in [0, 1], with the JDK's ImageIO.
 *
 * <p><b>Conversions</b> (those of Pillow's {@code Image.convert("RGB")}, which torchvision's loader applies):
 * <ul>
 * <li>the stored samples are read as they are (no colour management: an embedded ICC profile or PNG gamma is
 *     ignored, as Pillow ignores it), each divided by its maximum, 2^bits − 1: 255 for 8-bit, 65535 for
 *     <b>16-bit PNG</b> (kept at 16-bit precision; Pillow would clip it to 8 bits), 1, 3 or 15 for 1/2/4-bit grey;
 * <li><b>grey</b> (and grey + alpha) to RGB copies the grey value into the three channels;
 * <li><b>alpha</b> is dropped: the colour channels are taken as stored, not composited over a background;
 * <li>palette PNGs are expanded through their palette;
 * <li>RGB to one channel, for a grey model, is Pillow's {@code convert("L")}: L = (299 R + 587 G + 114 B)/1000.
 * </ul>
 *
 * <p><b>Errors</b> are {@link BadImageException}s naming the file, never a partly black image: a format ImageIO does
 * not recognise, a decoder exception, and any decoder <em>warning</em> (ImageIO's JPEG reader reports a truncated
 * file as a warning and fills the missing rows with grey). CMYK and YCCK JPEGs get a message saying how to convert
 * them: older JDKs cannot decode them, and recent ones decode CMYK without converting it to RGB.
 *
 * <p><b>Libraries</b>: PNG files are read by the JDK's ImageIO. JPEG files are read by OpenCV's {@code imdecode}
 * (libjpeg-turbo, {@link Library#OPENCV}) when {@code org.bytedeco:opencv}, an optional dependency, is on the
 * classpath — about 2× faster than ImageIO (bench/RESULTS.md, DecodeBench) with the same pixels — and by ImageIO
 * otherwise. The two differ on corrupt data only: libjpeg-turbo decodes what it can recover from with a warning
 * ("Corrupt JPEG data"), as Pillow does, where ImageIO's path refuses; both refuse truncated files. CMYK/YCCK,
 * 12-bit, lossless and arithmetic-coded JPEGs always go through ImageIO and its messages.
 */
public final class ImageDecoder {
    private ImageDecoder() {}

    /** A decoded image: {@code channels} (1 grey or 3 RGB) planes of {@code height × width} values in [0, 1]. */
    public record Image(float[] pixels, int channels, int height, int width) {}

    /** What decodes JPEG files. */
    public enum Library {
        /** The JDK's ImageIO (IJG libjpeg 6b): always there. */
        IMAGEIO,
        /** OpenCV's imdecode (libjpeg-turbo), when {@code org.bytedeco:opencv} is on the classpath. */
        OPENCV;

        /** OPENCV when it loads, else IMAGEIO. */
        public static Library best() {
            return OpenCvJpeg.available() ? OPENCV : IMAGEIO;
        }

        /** Whether this library can be used here. */
        public boolean available() {
            return this == IMAGEIO || OpenCvJpeg.available();
        }

        /** How logs name it. */
        public String describe() {
            return this == IMAGEIO ? "JDK ImageIO" : "OpenCV (libjpeg-turbo)";
        }
    }

    /** The artifact that brings {@link Library#OPENCV}, for messages. */
    public static final String OPENCV_ARTIFACT = OpenCvJpeg.ARTIFACT;

    /** Decodes {@code file} with {@link Library#best()}; 1 channel for grey sources and 3 for colour ones. */
    public static Image decode(Path file) throws DatasetException {
        return decode(file, Library.best());
    }

    /**
     * Decodes {@code file}, JPEG files with {@code library}.
     *
     * @throws IllegalStateException when {@code library} is OPENCV and OpenCV is not on the classpath
     */
    public static Image decode(Path file, Library library) throws DatasetException {
        if (library == Library.OPENCV) {
            if (!OpenCvJpeg.available()) {
                throw new IllegalStateException("OpenCV is not on the classpath: add " + OpenCvJpeg.ARTIFACT);
            }
            if (!Files.isRegularFile(file)) throw new BadImageException(file, "no such file");
            Image im = OpenCvJpeg.decode(file);
            if (im != null) return im;
        }
        return toPlanar(file, read(file));
    }

    /** Decodes {@code file} to exactly {@code channels} (1 or 3) channels, converting as documented above. */
    public static Image decode(Path file, int channels) throws DatasetException {
        return convert(decode(file), channels);
    }

    /** As {@link #decode(Path, int)}, JPEG files with {@code library}. */
    public static Image decode(Path file, int channels, Library library) throws DatasetException {
        return convert(decode(file, library), channels);
    }

    /** Converts grey to RGB (replicate) or RGB to grey (Pillow's L); the identity when the counts match. */
    public static Image convert(Image im, int channels) {
        if (channels != 1 && channels != 3) {
            throw new IllegalArgumentException("images decode to 1 or 3 channels, not " + channels);
        }
        if (im.channels() == channels) return im;
        int plane = im.height() * im.width();
        float[] p = im.pixels();
        float[] out = new float[channels * plane];
        if (channels == 3) {
            for (int c = 0; c < 3; c++) System.arraycopy(p, 0, out, c * plane, plane);
        } else {
            for (int i = 0; i < plane; i++) {
                out[i] = (float) ((299.0 * p[i] + 587.0 * p[plane + i] + 114.0 * p[2 * plane + i]) / 1000.0);
            }
        }
        return new Image(out, channels, im.height(), im.width());
    }

    private static BufferedImage read(Path file) throws DatasetException {
        if (!Files.isRegularFile(file)) throw new BadImageException(file, "no such file");
        List<String> warnings = new ArrayList<>();
        try (ImageInputStream in = ImageIO.createImageInputStream(file.toFile())) {
            if (in == null) throw new BadImageException(file, "cannot be opened");
            Iterator<ImageReader> readers = ImageIO.getImageReaders(in);
            if (!readers.hasNext()) {
                throw new BadImageException(file, "not a JPEG or PNG image ImageIO recognises (corrupt header?)");
            }
            ImageReader reader = readers.next();
            try {
                reader.setInput(in, true, true);
                reader.addIIOReadWarningListener((source, warning) -> warnings.add(warning));
                BufferedImage img;
                try {
                    img = reader.read(0);
                } catch (IOException | RuntimeException e) {
                    throw failure(file, reader, e);
                }
                if (!warnings.isEmpty()) {
                    throw new BadImageException(file, "corrupt or truncated (" + reader.getFormatName() + " decoder: "
                            + String.join("; ", warnings) + ")");
                }
                return img;
            } finally {
                reader.dispose();
            }
        } catch (BadImageException e) {
            throw e;
        } catch (IOException e) {
            throw new BadImageException(file, "cannot be read: " + e.getMessage(), e);
        }
    }

    private static BadImageException failure(Path file, ImageReader reader, Exception e) {
        String format = readerFormat(reader);
        String msg = String.valueOf(e.getMessage());
        if (format.equalsIgnoreCase("jpeg") && msg.contains("Unsupported Image Type")) {
            return new BadImageException(file, "a CMYK or YCCK JPEG, which ImageIO cannot decode; convert it to RGB "
                    + "(e.g. `convert in.jpg -colorspace sRGB out.jpg`)", e);
        }
        String why = e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName(); // EOFException has none
        return new BadImageException(file, "corrupt or truncated " + format + " (" + why + ")", e);
    }

    private static String readerFormat(ImageReader reader) {
        try {
            return reader.getFormatName();
        } catch (IOException e) {
            return "image";
        }
    }

    private static Image toPlanar(Path file, BufferedImage img) throws BadImageException {
        int h = img.getHeight(), w = img.getWidth(), plane = h * w;
        ColorModel cm = img.getColorModel();
        Raster r = img.getRaster();
        if (cm instanceof IndexColorModel icm) {
            float[] out = new float[3 * plane];
            int[] px = r.getSamples(0, 0, w, h, 0, (int[]) null);
            for (int i = 0; i < plane; i++) {
                out[i] = icm.getRed(px[i]) / 255f;
                out[plane + i] = icm.getGreen(px[i]) / 255f;
                out[2 * plane + i] = icm.getBlue(px[i]) / 255f;
            }
            return new Image(out, 3, h, w);
        }
        int colors = cm.getNumColorComponents();
        int space = cm.getColorSpace().getType();
        if (colors == 1 && space == ColorSpace.TYPE_GRAY || colors == 3 && space == ColorSpace.TYPE_RGB) {
            float[] out = new float[colors * plane];
            int[] buf = new int[plane];
            for (int c = 0; c < colors; c++) {
                double max = (1L << cm.getComponentSize(c)) - 1;
                r.getSamples(0, 0, w, h, c, buf); // bands 0..colors−1 are the colours, alpha (if any) comes after
                for (int i = 0; i < plane; i++) out[c * plane + i] = (float) (buf[i] / max);
            }
            return new Image(out, colors, h, w);
        }
        if (space == ColorSpace.TYPE_CMYK) {
            // Recent JDKs decode CMYK JPEGs, but turning ink into RGB needs the file's profile (and Adobe's inverted
            // convention): refuse rather than guess colours.
            throw new BadImageException(file, "a CMYK image; its colours are not converted here, convert it to RGB "
                    + "(e.g. `convert in.jpg -colorspace sRGB out.jpg`)");
        }
        throw new BadImageException(file, "unsupported colour space (" + colors + " colour components, colour space "
                + "type " + space + "); convert it to RGB");
    }
}
