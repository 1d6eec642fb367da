package org.distill4j.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code ./distill4j <command>}: the command-line entry point. */
@Command(name = "distill4j", mixinStandardHelpOptions = true, versionProvider = Version.class,
        description = "Train and distill Vision Transformers with fused CUDA and CPU kernels.",
        subcommands = {InfoCommand.class, SelftestCommand.class, BenchCommand.class, TrainCommand.class,
                DistillCommand.class, EvalCommand.class, ExportOnnxCommand.class, DemoCommand.class, DatasetIndexCommand.class, CommandLine.HelpCommand.class})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    /** Runs the command line and exits with its status. */
    public static void main(String[] args) {
        // One line per log record (Device.best() logs its choice in one line).
        if (System.getProperty("java.util.logging.SimpleFormatter.format") == null) {
            System.setProperty("java.util.logging.SimpleFormatter.format", "%5$s%6$s%n");
        }
        int status;
        try {
            status = commandLine().execute(args);
        } catch (OutOfMemoryError | LinkageError e) {
            // Errors pass picocli's handler; these two are the user's environment, not a bug of the command.
            System.err.println("distill4j: " + Messages.of(e));
            if (Boolean.getBoolean("distill4j.stacktrace")) e.printStackTrace();
            status = 2;
        }
        System.exit(status);
    }

    /**
     * The command line with distill4j's error handling: an exception becomes one line on stderr
     * ({@code distill4j: <message>}, a sentence without Java class names: {@link Messages}; the stack trace only with
     * {@code -Ddistill4j.stacktrace=true}) and exit status 2.
     */
    public static CommandLine commandLine() {
        CommandLine cli = new CommandLine(new Main());
        // Every command lists -V: each prints the version, not only the top level.
        for (CommandLine sub : cli.getSubcommands().values()) {
            sub.getCommandSpec().versionProvider(cli.getCommandSpec().versionProvider());
        }
        cli.setExecutionExceptionHandler((e, cmd, parsed) -> {
            cmd.getErr().println("distill4j: " + Messages.of(e));
            if (Boolean.getBoolean("distill4j.stacktrace")) e.printStackTrace(cmd.getErr());
            return 2;
        });
        return cli;
    }

    @Override
    public void run() {
        spec.commandLine().usage(System.out);
    }
}
