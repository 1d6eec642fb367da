package org.distill4j.data;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.opencv.global.opencv_core;
import org.bytedeco.opencv.global.opencv_imgcodecs;
import org.bytedeco.opencv.opencv_core.Mat;

/**
 * JPEG decoding by OpenCV's {@code imdecode} (libjpeg-turbo), the JavaCPP preset {@code org.bytedeco:opencv}: an
 * optional dependency of the library, used by {@link ImageDecoder} when it is on the classpath. Only this class
 * names OpenCV's classes, and only after {@link #available} said they load.
 *
 * <p>It takes 8-bit Huffman-coded JPEGs (baseline, extended, progressive) of 1 or 3 components; anything else (PNG,
 * CMYK/YCCK, 12-bit, lossless, arithmetic coding) goes to ImageIO, so errors
 * and conversions stay those {@link ImageDecoder} documents. libjpeg-turbo's default decoding (the integer IDCT and
 * fancy upsampling, as IJG libjpeg 6b behind ImageIO) gives the same pixels as ImageIO: a test compares them.
 *
 * <p>Strictness: the file is decoded from memory, where libjpeg-turbo's "premature end of JPEG file" is an error
 * ({@code imread} from a path would fill the missing rows with grey instead), so truncated files fail. Corrupt data
 * that libjpeg-turbo recovers from with a warning ("Corrupt JPEG data: ...") decodes, as in Pillow; ImageIO's path
 * refuses it.
 */
final class OpenCvJpeg {
    /** The artifact to add, with the version distill4j is tested with. */
    static final String ARTIFACT = "org.bytedeco:opencv:4.13.0-1.5.13 (and its linux-x86_64 natives)";

    private static final boolean AVAILABLE = load();

    private OpenCvJpeg() {}

    private static boolean load() {
        try {
            // Initialising the class loads OpenCV's natives (JavaCPP's Loader): a missing jar and a missing
            // platform jar both end here.
            Class.forName("org.bytedeco.opencv.global.opencv_imgcodecs", true, OpenCvJpeg.class.getClassLoader());
            return true;
        } catch (ClassNotFoundException | LinkageError e) {
            return false;
        }
    }

    /** Whether OpenCV's classes and natives load. */
    static boolean available() {
        return AVAILABLE;
    }

    /**
     * Decodes {@code file} when it is an 8-bit JPEG of 1 or 3 components; null for anything else (the caller reads
     * it with ImageIO). Thread-safe: each call has its own native buffers.
     */
    static ImageDecoder.Image decode(Path file) throws DatasetException {
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (IOException e) {
            throw new BadImageException(file, "cannot be read: " + e.getMessage(), e);
        }
        if (!isPlainJpeg(bytes)) return null;
        try (PointerScope ignored = new PointerScope()) {
            Mat encoded = new Mat(1, bytes.length, opencv_core.CV_8U, new BytePointer(bytes));
            Mat m = opencv_imgcodecs.imdecode(encoded, opencv_imgcodecs.IMREAD_UNCHANGED);
            if (m.empty()) {
                throw new BadImageException(file, "corrupt or truncated JPEG (libjpeg-turbo could not decode it)");
            }
            int h = m.rows(), w = m.cols(), channels = m.channels(), plane = h * w;
            if (m.depth() != opencv_core.CV_8U || channels != 1 && channels != 3 || !m.isContinuous()) {
                return null;  // not what the header promised: let ImageIO say what it is
            }
            byte[] px = new byte[plane * channels];
            m.data().get(px);
            float[] out = new float[plane * channels];
            // OpenCV interleaves BGR; ours is planar RGB. The same division as ImageIO's path (by 255 in double,
            // then rounded to float), so the two give the same bits.
            for (int c = 0; c < channels; c++) {
                int src = channels == 3 ? 2 - c : 0;
                for (int i = 0; i < plane; i++) out[c * plane + i] = (float) ((px[i * channels + src] & 0xff) / 255.0);
            }
            return new ImageDecoder.Image(out, channels, h, w);
        }
    }

    /**
     * Whether {@code b} starts a JPEG whose first frame header (SOF) says 8 bits and 1 or 3 components. Walks the
     * marker segments up to the SOF; a file too short or malformed to tell answers false (ImageIO reports it).
     */
    static boolean isPlainJpeg(byte[] b) {
        if (b.length < 4 || (b[0] & 0xff) != 0xff || (b[1] & 0xff) != 0xd8) return false;
        int i = 2;
        while (i + 4 <= b.length) {
            if ((b[i] & 0xff) != 0xff) return false;
            int marker = b[i + 1] & 0xff;
            if (marker == 0xff) {  // fill byte before a marker
                i++;
                continue;
            }
            int length = (b[i + 2] & 0xff) << 8 | b[i + 3] & 0xff;
            if (marker == 0xc0 || marker == 0xc1 || marker == 0xc2) {  // baseline, extended, progressive Huffman
                if (i + 10 > b.length) return false;
                int precision = b[i + 4] & 0xff, components = b[i + 9] & 0xff;
                return precision == 8 && (components == 1 || components == 3);
            }
            // Any other frame (lossless, arithmetic coding: ImageIO's errors) and a scan or the end before a frame.
            if (marker >= 0xc3 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc) return false;
            if (marker == 0xda || marker == 0xd9 || length < 2) return false;  // scan or end before any frame
            i += 2 + length;
        }
        return false;
    }
}
