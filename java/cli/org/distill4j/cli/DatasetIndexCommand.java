package org.distill4j.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.distill4j.data.ImageSource;
import org.distill4j.data.ImageSources;
import org.distill4j.data.SampleList;
import org.distill4j.nn.VitConfig;
import org.distill4j.train.SoftLabels;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code ./distill4j dataset-index}: the training set's sample list, for teacher logits computed elsewhere. */
@Command(name = "dataset-index", mixinStandardHelpOptions = true, description = "Write the training images' sample "
        + "list (index, label, file or record) and print its SHA-256: rows of teacher logits computed elsewhere follow "
        + "it (distill --teacher-logits).")
final class DatasetIndexCommand implements Callable<Integer> {
    @Mixin
    DataFlags data;

    @Option(names = "--model", defaultValue = "mnist-student", completionCandidates = Presets.class,
            description = "the student preset the logits are for (its image size and channels are checked against "
                    + "the data, as distill does): ${COMPLETION-CANDIDATES} (default ${DEFAULT-VALUE})")
    String model;

    @Option(names = "--train-limit", defaultValue = "0", description = "the first N training images, as distill's "
            + "--train-limit (0: all)")
    int trainLimit;

    @Option(names = "--out", required = true, paramLabel = "FILE", description = "the sample list to write (a new "
            + "file, or an existing one with --force)")
    Path out;

    @Option(names = "--force", description = "replace --out if it exists")
    boolean force;

    @Override
    public Integer call() throws Exception {
        if (trainLimit < 0) throw new IllegalArgumentException("--train-limit must be >= 0, got " + trainLimit);
        if (Files.exists(out) && !force) {
            throw new IllegalArgumentException(out + " exists: give another --out, or --force to replace it");
        }
        if (Files.isDirectory(out)) throw new IllegalArgumentException(out + " is a directory; --out names a file");
        Path parent = out.toAbsolutePath().getParent();
        if (parent != null && !Files.isDirectory(parent)) {
            throw new IllegalArgumentException("the folder of --out, " + parent + ", does not exist");
        }
        VitConfig config = VitConfig.preset(model);
        DataSets.Loaded loaded = DataSets.load(data.request(), config, true, System.out);
        DataSets.checkShape(config, loaded);
        ImageSource train = loaded.train();
        if (trainLimit > 0 && trainLimit < train.size()) train = ImageSources.head(train, trainLimit);
        SampleList list = SampleList.of(train);
        Path tmp = Files.createTempFile(parent != null ? parent : Path.of("."), ".dataset-index", ".tmp");
        try {
            list.write(tmp);
            Files.move(tmp, out, java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                    java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        } finally {
            Files.deleteIfExists(tmp);
        }
        System.out.println("wrote " + out + ": " + list.size() + " training images of " + train.name() + ", "
                + list.classes() + " classes");
        System.out.println("sample list sha256 " + list.digest());
        System.out.println("logits for them: a safetensors file with \"logits\" [" + list.size() + ", " + list.classes()
                + "] (float32, row i for the list's image i) and the metadata " + SoftLabels.SAMPLES_KEY + " = that "
                + "sha256; then distill --teacher-logits FILE with the same --data and --train-limit");
        return 0;
    }
}
