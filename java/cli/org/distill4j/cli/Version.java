package org.distill4j.cli;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Properties;
import picocli.CommandLine;

/** The versions Maven wrote into {@code org/distill4j/version.properties}. */
public final class Version implements CommandLine.IVersionProvider {
    /** distill4j's version, e.g. 0.1.0. */
    public static String distill4j() {
        return property("version");
    }

    /** The oldest glibc the natives load on, e.g. 2.18 (pom.xml d4j.glibc.min; tests/check-natives.sh checks it). */
    public static String nativesGlibc() {
        return property("natives.glibc");
    }

    private static String property(String key) {
        try (InputStream in = Version.class.getResourceAsStream("/org/distill4j/version.properties")) {
            if (in == null) return "unknown";
            Properties p = new Properties();
            p.load(in);
            return p.getProperty(key, "unknown");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    public String[] getVersion() {
        return new String[] {"distill4j " + distill4j()};
    }
}
