package org.distill4j.testing;

import java.awt.image.BufferedImage;
import java.awt.image.DataBuffer;
import java.awt.image.Raster;
import java.awt.image.WritableRaster;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import javax.imageio.IIOImage;
import javax.imageio.ImageIO;
import javax.imageio.ImageWriteParam;
import javax.imageio.ImageWriter;
import javax.imageio.stream.MemoryCacheImageOutputStream;

/** JPEG files the tests write with the JDK's encoder. */
public final class ImageFiles {
    private ImageFiles() {}

    /** Writes {@code img} as a JPEG of {@code quality} (0..1), progressive or baseline; creates the folder. */
    public static Path jpeg(Path file, BufferedImage img, float quality, boolean progressive) throws IOException {
        Files.createDirectories(file.toAbsolutePath().getParent());
        ImageWriter writer = ImageIO.getImageWritersByFormatName("jpeg").next();
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (MemoryCacheImageOutputStream out = new MemoryCacheImageOutputStream(bytes)) {
            writer.setOutput(out);
            ImageWriteParam p = writer.getDefaultWriteParam();
            p.setCompressionMode(ImageWriteParam.MODE_EXPLICIT);
            p.setCompressionQuality(quality);
            if (progressive) p.setProgressiveMode(ImageWriteParam.MODE_DEFAULT);
            writer.write(null, new IIOImage(img, null, null), p);
        } finally {
            writer.dispose();
        }
        return Files.write(file, bytes.toByteArray());
    }

    /** An 8×8 four-component JPEG written from a raster (the JPEG writer's raster path): ImageIO reads it as CMYK. */
    public static Path cmykJpeg(Path file) throws IOException {
        WritableRaster r = Raster.createInterleavedRaster(DataBuffer.TYPE_BYTE, 8, 8, 4, null);
        for (int y = 0; y < 8; y++) for (int x = 0; x < 8; x++) r.setPixel(x, y, new int[] {x * 30, y * 30, 50, 10});
        Files.createDirectories(file.toAbsolutePath().getParent());
        ImageWriter writer = ImageIO.getImageWritersByFormatName("jpeg").next();
        try (MemoryCacheImageOutputStream out = new MemoryCacheImageOutputStream(Files.newOutputStream(file))) {
            writer.setOutput(out);
            writer.write(null, new IIOImage(r, null, null), writer.getDefaultWriteParam());
        } finally {
            writer.dispose();
        }
        return file;
    }
}
