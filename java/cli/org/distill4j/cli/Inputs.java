package org.distill4j.cli;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** Checks of the files a command reads, before any work: one sentence naming the option and what is wrong. */
final class Inputs {
    private Inputs() {}

    /**
     * Returns {@code file} when it is a readable regular file.
     *
     * @param option how the user gave it ("--teacher", "the model file"), the start of the message
     */
    static Path file(Path file, String option) throws IOException {
        if (Files.isDirectory(file)) throw new IOException(option + " " + file + " is a directory, not a file");
        if (!Files.exists(file)) throw new IOException(option + " " + file + ": no such file");
        if (!Files.isRegularFile(file)) throw new IOException(option + " " + file + " is not a regular file");
        if (!Files.isReadable(file)) throw new IOException(option + " " + file + " is not readable");
        return file;
    }
}
