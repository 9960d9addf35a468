using System.Reflection;
using Carso.Data;
using Carso.IO;
using Carso.Runtime;

namespace Carso.Tests.Runtime;

/// <summary>The script harness's pure parts: parsing, --help text, and how exceptions end a script.</summary>
public class CommandLineTests
{
    [Fact]
    public void ParsesTheCommonOptions()
    {
        var line = CommandLine.Parse(["--smoke", "--out", "x/y", "--seed", "-3", "--device", "cpu", "--verbose"]);
        Assert.Equal(new CommandLine(true, "x/y", -3, "cpu", true, false, []), line with { ExtraArgs = [] });
        Assert.Empty(line.ExtraArgs);
        Assert.True(CommandLine.Parse(["-h"]).Help);
        Assert.Equal(["--batch-sizes", "8"], CommandLine.Parse(["--batch-sizes", "8", "--smoke"], allowExtraArgs: true).ExtraArgs);
    }

    [Theory]
    [InlineData(new[] { "--seed", "abc" }, "--seed needs an integer, got 'abc'")]
    [InlineData(new[] { "--seed" }, "--seed needs a value")]
    [InlineData(new[] { "--out", "--smoke" }, "--out needs a value: --out DIR")]
    [InlineData(new[] { "--frobnicate" }, "unknown option '--frobnicate'; the options are --smoke | --out DIR")]
    public void BadCommandLinesAreUsageErrorsNamingTheOption(string[] args, string message)
    {
        var e = Assert.Throws<UsageException>(() => CommandLine.Parse(args));
        Assert.StartsWith(message, e.Message);
    }

    record Inner(double Eps = 0.1, int[]? Steps = null);
    record Sample(string Name = "fashion-mnist", int Points = 10, Inner? Attack = null, string? Folder = null);

    [Fact]
    public void HelpListsPurposeOptionsAndEverySettingWithItsDefault()
    {
        var settings = new Sample(Attack: new Inner(Steps: [1, 2]));
        Assert.Equal(["Name = \"fashion-mnist\"", "Points = 10", "Attack.Eps = 0.1", "Attack.Steps = [1,2]", "Folder = null"],
            CommandLine.SettingLines(settings));
        var help = CommandLine.HelpText("demo", "does a thing.", settings);
        Assert.StartsWith("demo: does a thing.", help);
        foreach (var option in new[] { "--smoke", "--out DIR", "--seed N", "--device D", "auto|cpu|cuda[:N]", "--verbose", "--help", "results/demo/" })
            Assert.Contains(option, help);
        Assert.Contains("  Attack.Steps = [1,2]", help);
        Assert.Contains("exit codes: 0", help);
    }

    [Fact]
    public void UsageErrorsExit2UserErrorsExit1BugsExit70WithTheirTrace()
    {
        var usage = ScriptErrors.Classify("demo", new UsageException("--seed needs an integer, got 'x'"), verbose: false);
        Assert.Equal(new ScriptFailure(2, "demo: --seed needs an integer, got 'x' (options: dotnet run scripts/demo.cs -- --help)", false), usage);

        // Wrapped by a static constructor and reflection: the cause is what is reported.
        var wrapped = new TargetInvocationException(new TypeInitializationException("T", new DatasetException("/d/t10k: truncated")));
        Assert.Equal(new ScriptFailure(1, "demo: /d/t10k: truncated", false), ScriptErrors.Classify("demo", wrapped, verbose: false));
        Assert.True(ScriptErrors.Classify("demo", wrapped, verbose: true).StackTrace);

        Exception[] userErrors =
        [
            new SettingsException("Training.Epochs", "must be >= 1, got 0"),
            new InvalidDataException("a.json: not valid"),
            new FileNotFoundException("no such file", "a.bin"),
            new DirectoryNotFoundException("no folder"),
            new ResumeMismatchException("/r", "/r holds a run with other settings:\n  saved: a\n  current: b\n"),
            new CheckpointMismatchException("m.safetensors", ["fc.weight"], [], [], []),
            new AggregateException(new TransferMismatch()),
        ];
        foreach (var e in userErrors)
        {
            var failure = ScriptErrors.Classify("demo", e, verbose: false);
            Assert.Equal(1, failure.ExitCode);
            Assert.False(failure.StackTrace);
            Assert.DoesNotContain('\n', failure.Line);
        }
        Assert.Equal("demo: Settings.Training.Epochs: must be >= 1, got 0", ScriptErrors.Classify("demo", userErrors[0], false).Line);
        Assert.Equal("demo: /r holds a run with other settings: saved: a current: b", ScriptErrors.Classify("demo", userErrors[4], false).Line);

        var bug = ScriptErrors.Classify("demo", new InvalidOperationException("sequence contains no elements"), verbose: false);
        Assert.Equal(ScriptErrors.BugExitCode, bug.ExitCode);
        Assert.True(bug.StackTrace);
        Assert.Contains("a bug", bug.Line);
        Assert.Contains("InvalidOperationException: sequence contains no elements", bug.Line);
    }

    /// <summary>Another engineer's exception, marked as the user's to fix.</summary>
    sealed class TransferMismatch() : Exception("transfer.bin was made for other points"), IUserError;
}
