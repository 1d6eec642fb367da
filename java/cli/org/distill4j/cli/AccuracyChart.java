package org.distill4j.cli;

import java.awt.BasicStroke;
import java.awt.Color;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.distill4j.io.AtomicFile;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.BitmapEncoder.BitmapFormat;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.Styler.LegendLayout;
import org.knowm.xchart.style.Styler.LegendPosition;
import org.knowm.xchart.style.markers.SeriesMarkers;

/**
 * A PNG line chart of test accuracy per epoch, one line per model (teacher, student from scratch, distilled
 * student), drawn with XChart.
 *
 * <p>Runs headless: {@code java.awt.headless} is set to true before AWT loads unless the user set it, so it works on
 * servers and CI without a display. It still needs a font and Java's font libraries; without them {@link #write}
 * throws an {@link IOException} saying so. The file is written atomically ({@link AtomicFile}), so a reader (a
 * browser refreshing the chart during training) never sees a half-written PNG.
 */
public final class AccuracyChart {
    public static final int DEFAULT_WIDTH = 800;
    public static final int DEFAULT_HEIGHT = 500;

    static {
        if (System.getProperty("java.awt.headless") == null) {
            System.setProperty("java.awt.headless", "true");
        }
    }

    private AccuracyChart() {}

    /**
     * Writes the chart to {@code png} at {@value #DEFAULT_WIDTH}×{@value #DEFAULT_HEIGHT}.
     *
     * @param seriesPerEpoch per model, its test accuracy after epochs 1, 2, … as fractions in [0, 1] (plotted as %);
     *     the map's iteration order is the legend's order (use a LinkedHashMap)
     */
    public static void write(Path png, String title, Map<String, double[]> seriesPerEpoch) throws IOException {
        write(png, title, seriesPerEpoch, DEFAULT_WIDTH, DEFAULT_HEIGHT);
    }

    /**
     * As {@link #write(Path, String, Map)}, with the image size in pixels.
     *
     * @throws IOException when the file cannot be written, or when Java cannot draw text on this machine (no font
     *     library such as libfreetype/libharfbuzz, or no font: slim container images), with what is missing
     */
    public static void write(Path png, String title, Map<String, double[]> seriesPerEpoch, int width, int height)
            throws IOException {
        XYChart chart = chart(title, seriesPerEpoch, width, height);
        byte[] bytes;
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            BitmapEncoder.saveBitmap(chart, out, BitmapFormat.PNG);
            bytes = out.toByteArray();
        } catch (OutOfMemoryError | StackOverflowError e) {
            throw e;
        } catch (RuntimeException | Error e) {
            // Java2D's font setup fails with errors, not exceptions: UnsatisfiedLinkError (libfontmanager.so cannot
            // load libfreetype/libharfbuzz), an Error "Fontconfig head is null" (no font), NoClassDefFoundError on
            // every later try. None of them is a reason to stop a caller that was only drawing a chart.
            throw new IOException("Java cannot draw text on this machine (" + reason(e) + "); install a font and its "
                    + "libraries (Debian: fontconfig fonts-dejavu-core libfreetype6 libharfbuzz0b)", e);
        }
        Files.createDirectories(png.toAbsolutePath().getParent());
        AtomicFile.write(png, bytes);
    }

    /**
     * What went wrong, without Java's wrapping: a second try after a failed font setup is a NoClassDefFoundError
     * whose message is {@code Exception java.lang.UnsatisfiedLinkError: <the first failure> [in thread "main"]}.
     */
    private static String reason(Throwable e) {
        Throwable root = e;
        while (root.getCause() != null && root.getCause() != root) root = root.getCause();
        String m = root.getMessage();
        if (m == null || m.isBlank()) return "no usable font";
        return m.replaceFirst("^Exception (?:[\\w$]+\\.)+[\\w$]+: ", "").replaceFirst(" \\[in thread \"[^\"]*\"\\]$", "");
    }

    /** The chart itself, for callers who want another format or to display it. */
    public static XYChart chart(String title, Map<String, double[]> seriesPerEpoch, int width, int height) {
        if (seriesPerEpoch.isEmpty()) {
            throw new IllegalArgumentException("no series to plot");
        }
        if (width < 100 || height < 100) {
            throw new IllegalArgumentException("chart size " + width + "×" + height + " is too small (min 100×100)");
        }
        XYChart chart = new XYChartBuilder().width(width).height(height).title(title).xAxisTitle("epoch")
                .yAxisTitle("test accuracy (%)").build();
        // Below the plot: inside, the legend hid the end of whichever line ran through its corner.
        chart.getStyler().setLegendPosition(LegendPosition.OutsideS);
        chart.getStyler().setLegendLayout(LegendLayout.Horizontal);
        chart.getStyler().setChartBackgroundColor(Color.WHITE);
        chart.getStyler().setPlotGridLinesVisible(true);
        chart.getStyler().setDecimalPattern("#0.##");
        chart.getStyler().setXAxisDecimalPattern("#0");
        chart.getStyler().setAntiAlias(true);
        int maxEpochs = 0;
        for (Map.Entry<String, double[]> e : seriesPerEpoch.entrySet()) {
            double[] acc = e.getValue();
            if (acc == null || acc.length == 0) {
                throw new IllegalArgumentException("series '" + e.getKey() + "' has no values");
            }
            double[] x = new double[acc.length];
            double[] y = new double[acc.length];
            for (int i = 0; i < acc.length; i++) {
                if (!(acc[i] >= 0 && acc[i] <= 1)) {
                    throw new IllegalArgumentException("series '" + e.getKey() + "' epoch " + (i + 1) + ": accuracy "
                            + acc[i] + " is not a fraction in [0, 1]");
                }
                x[i] = i + 1;
                y[i] = 100 * acc[i];
            }
            maxEpochs = Math.max(maxEpochs, acc.length);
            XYSeries s = chart.addSeries(e.getKey(), x, y);
            s.setMarker(SeriesMarkers.CIRCLE);
            s.setLineStyle(new BasicStroke(2f));
        }
        chart.getStyler().setXAxisMin(1.0);
        chart.getStyler().setXAxisMax((double) Math.max(2, maxEpochs));
        return chart;
    }
}
