package org.distill4j.cli;

import static org.distill4j.cli.CliTest.assertOneLineOnly;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** --data layout detection, --train-dir/--val-dir, CIFAR and image folders through train/eval, their errors. */
class DataCliTest {
    @TempDir
    Path dir;

    static {
        System.setProperty("distill4j.progress", "off");
    }

    /** root/{train,val}/{classes}/i.png: 28×28 grey, per-class brightness, {@code perClass} images per class. */
    private Path imageFolders(String name, List<String> classes, int perClass) throws IOException {
        return imageFolders(dir, name, classes, perClass);
    }

    /** As above, under {@code dir}. */
    static Path imageFolders(Path dir, String name, List<String> classes, int perClass) throws IOException {
        Path root = dir.resolve(name);
        for (String split : List.of("train", "val")) {
            for (int c = 0; c < classes.size(); c++) {
                Path d = Files.createDirectories(root.resolve(split).resolve(classes.get(c)));
                for (int i = 0; i < perClass; i++) {
                    BufferedImage img = new BufferedImage(28, 28, BufferedImage.TYPE_BYTE_GRAY);
                    for (int y = 0; y < 28; y++) {
                        for (int x = 0; x < 28; x++) img.getRaster().setSample(x, y, 0, (c * 80 + x + y + i) & 0xff);
                    }
                    ImageIO.write(img, "png", d.resolve(i + ".png").toFile());
                }
            }
        }
        return root;
    }

    private Path cifar10(int perBatch) throws IOException {
        Path d = Files.createDirectories(dir.resolve("cifar10"));
        byte[] rec = new byte[perBatch * 3073];
        for (int r = 0; r < perBatch; r++) {
            rec[r * 3073] = (byte) (r % 10);
            for (int k = 0; k < 3072; k++) rec[r * 3073 + 1 + k] = (byte) (r * 7 + k);
        }
        for (int f = 1; f <= 5; f++) Files.write(d.resolve("data_batch_" + f + ".bin"), rec);
        Files.write(d.resolve("test_batch.bin"), rec);
        return d;
    }

    private static String[] train(Path out, String... more) {
        String[] base = {"train", "--out", out.toString(), "--device", "cpu", "--epochs", "1", "--batch", "8",
                "--no-augment"};
        String[] all = java.util.Arrays.copyOf(base, base.length + more.length);
        System.arraycopy(more, 0, all, base.length, more.length);
        return all;
    }

    @Test
    void imageFolderRootTrainsAndWritesTheClassIndex() throws IOException {
        Path root = imageFolders("folders", List.of("dog", "cat", "ant"), 8);
        Path out = dir.resolve("run");
        CliTest.Run r = CliTest.run(train(out, "--model", "mnist-tiny", "--data", root.toString()));
        assertEquals(0, r.status(), r.err());
        JsonObject o = JsonParser.parseString(Files.readString(out.resolve("class_index.json"))).getAsJsonObject();
        assertEquals("[\"ant\",\"cat\",\"dog\"]", o.get("classes").toString());
        assertTrue(Files.exists(out.resolve("model.safetensors")));
        // The same folders named one by one; then the model it wrote evaluates on them.
        Path out2 = dir.resolve("run2");
        assertEquals(0, CliTest.run(train(out2, "--model", "mnist-tiny", "--train-dir", root.resolve("train")
                .toString(), "--val-dir", root.resolve("val").toString(), "--workers", "3")).status());
        assertEquals(0, CliTest.run("eval", out.resolve("model.safetensors").toString(), "--data", root.toString(),
                "--device", "cpu").status());
    }

    @Test
    void cifarTrainsWithItsPresetAndRefusesAGreyModel() throws IOException {
        Path data = cifar10(4);
        assertOneLineOnly(CliTest.run(train(dir.resolve("no"), "--model", "mnist-tiny", "--data", data.toString())),
                "model mnist-tiny takes 28×28 images of 1 channel(s); " + data + " holds 32×32 of 3");
        assertFalse(Files.exists(dir.resolve("no")));
        Path out = dir.resolve("cifar-run");
        CliTest.Run r = CliTest.run(train(out, "--model", "cifar-student", "--data", data.toString()));
        assertEquals(0, r.status(), r.err());
        JsonObject o = JsonParser.parseString(Files.readString(out.resolve("class_index.json"))).getAsJsonObject();
        assertEquals(10, o.getAsJsonArray("classes").size());
    }

    @Test
    void cifar100GivesAPresetItsHundredClasses() throws IOException {
        Path d = Files.createDirectories(dir.resolve("cifar100"));
        byte[] rec = new byte[16 * 3074];
        for (int r = 0; r < 16; r++) {
            rec[r * 3074] = (byte) (r % 20);
            rec[r * 3074 + 1] = (byte) (r * 6 + 3); // fine labels up to 93
        }
        Files.write(d.resolve("train.bin"), rec);
        Files.write(d.resolve("test.bin"), rec);
        Path out = dir.resolve("c100");
        CliTest.Run r = CliTest.run(train(out, "--model", "cifar-student", "--data", d.toString()));
        assertEquals(0, r.status(), r.err());
        JsonObject o = JsonParser.parseString(Files.readString(out.resolve("class_index.json"))).getAsJsonObject();
        assertEquals(100, o.getAsJsonArray("classes").size());
        assertEquals(100, org.distill4j.nn.ModelFile.config(out.resolve("model.safetensors")).classes());
    }

    @Test
    void layoutErrorsAreOneLine() throws IOException {
        Path empty = Files.createDirectories(dir.resolve("empty"));
        assertOneLineOnly(CliTest.run(train(dir.resolve("o"), "--data", empty.toString())),
                empty + ": no dataset layout recognised");
        Files.createDirectories(empty.resolve("cifar-10-batches-bin"));
        assertOneLineOnly(CliTest.run(train(dir.resolve("o"), "--data", empty.toString())),
                "(did you mean " + empty.resolve("cifar-10-batches-bin") + "?)");
        Files.delete(empty.resolve("cifar-10-batches-bin"));
        Files.createDirectories(empty.resolve("train"));
        assertOneLineOnly(CliTest.run(train(dir.resolve("o"), "--data", empty.toString())), "has train/ but no val/");
        assertOneLineOnly(CliTest.run(train(dir.resolve("o"), "--train-dir", empty.toString())), "--val-dir");
        assertOneLineOnly(CliTest.run(train(dir.resolve("o"), "--data", empty.toString(), "--train-dir",
                empty.toString(), "--val-dir", empty.toString())), "give one");
        Path root = imageFolders("f", List.of("a", "b"), 8);
        Files.createDirectories(root.resolve("val/c"));
        assertOneLineOnly(CliTest.run(train(dir.resolve("o"), "--model", "mnist-tiny", "--data", root.toString())),
                root.resolve("val/c") + ": class 'c' has no JPEG or PNG images");
        assertFalse(Files.exists(dir.resolve("o")));
    }

    @Test
    void aCorruptImageStopsTheRunNamingItUnlessSkipped() throws IOException {
        Path root = imageFolders("bad", List.of("a", "b"), 8);
        Path bad = Files.write(root.resolve("train/b/3.png"), new byte[] {(byte) 0x89, 'P', 'N', 'G', 1, 2, 3});
        CliTest.Run failed = CliTest.run(train(dir.resolve("o"), "--model", "mnist-tiny", "--data", root.toString()));
        assertOneLineOnly(failed, bad.toString());
        assertTrue(failed.err().contains("--skip-bad-images"), failed.err());
        assertFalse(Files.exists(dir.resolve("o")));
        CliTest.Run r = CliTest.run(train(dir.resolve("o"), "--model", "mnist-tiny", "--data", root.toString(),
                "--skip-bad-images"));
        assertEquals(0, r.status(), r.err());
    }
}
