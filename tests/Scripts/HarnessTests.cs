using System.Diagnostics;
using System.Text.RegularExpressions;
using Carso.Data;
using Carso.Runtime;

namespace Carso.Tests.Scripts;

/// <summary>
/// The script harness as a user meets it: the script process is run with a bad command line, a bad file or
/// --help, and what it prints and its exit code are checked. Bad input: one line on stderr, no stack trace,
/// exit code 2 (command line) or 1 (file). datasets.cs is the cheap script; train-classifier.cs resumes a checkpoint.
/// </summary>
[Collection(ScriptCollections.Training)]
public class HarnessTests
{
    static string Root => Paths.RepoRoot() ?? throw new InvalidOperationException("tests must run inside the repository");

    sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string[] StderrLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        public override string ToString() => $"exit code {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
    }

    /// <summary>`dotnet run scripts/NAME -- ARGS` from the repository root (the -- keeps dotnet run from taking
    /// --help or --device itself), with extra environment variables.</summary>
    static Result Run(string script, IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = Root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "run", Path.Combine("scripts", script), "--" }.Concat(args)) info.ArgumentList.Add(arg);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) info.Environment[name] = value;
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(ScriptSmokeTests.Timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"{script} timed out after {ScriptSmokeTests.Timeout.TotalMinutes} minutes\n{stdout.Result}\n{stderr.Result}");
        }
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>No runtime crash report and no stack trace anywhere in the output.</summary>
    static void AssertNoStackTrace(Result result)
    {
        var all = result.Stdout + result.Stderr;
        Assert.DoesNotContain("Unhandled exception", all);
        Assert.False(Regex.IsMatch(all, @"^\s+at \S+\(", RegexOptions.Multiline), $"a stack trace was printed:\n{result}");
    }

    /// <summary>Exactly one line on stderr, from the script, containing every fragment.</summary>
    static void AssertOneErrorLine(Result result, string script, int exitCode, params string[] fragments)
    {
        Assert.True(result.ExitCode == exitCode, $"expected exit code {exitCode}:\n{result}");
        var line = Assert.Single(result.StderrLines);
        Assert.StartsWith($"{script}: ", line);
        foreach (var fragment in fragments) Assert.Contains(fragment, line);
        AssertNoStackTrace(result);
    }

    [Theory]
    [InlineData(new[] { "--seed", "abc" }, new[] { "--seed", "integer", "'abc'" })]
    [InlineData(new[] { "--device", "tpu" }, new[] { "--device", "'tpu'", "auto, cpu, cuda or cuda:N" })]
    [InlineData(new[] { "--frobnicate" }, new[] { "unknown option '--frobnicate'", "--smoke | --out DIR | --seed N" })]
    [InlineData(new[] { "--seed", "1", "--out" }, new[] { "--out needs a value", "DIR" })]
    public void ABadCommandLineIsOneLineOnStderrAndExitCode2(string[] args, string[] fragments)
    {
        var result = Run("datasets.cs", null, args);
        AssertOneErrorLine(result, "datasets", 2, fragments);
        Assert.DoesNotContain("output: ", result.Stdout); // it stopped before doing anything
    }

    [Fact]
    public void HelpPrintsThePurposeTheOptionsAndTheSettingsWithTheirDefaults()
    {
        var result = Run("datasets.cs", null, "--help");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("", result.Stderr.Trim());
        Assert.StartsWith("datasets: Loads a dataset", result.Stdout);
        foreach (var option in new[] { "--smoke", "--out DIR", "--seed N", "auto|cpu|cuda[:N]", "--verbose", "--help" })
            Assert.Contains(option, result.Stdout);
        foreach (var setting in new[] { "Dataset = \"fashion-mnist\"", "SamplesPerClass = 10", "Seed = 0", "Folder = null" })
            Assert.Contains("  " + setting, result.Stdout);
        Assert.DoesNotContain("output: ", result.Stdout); // --help runs nothing
        AssertNoStackTrace(result);
    }

    /// <summary>A Fashion-MNIST folder of tiny raw IDX files whose test images are cut short.</summary>
    static Dictionary<string, string> TruncatedFashionMnist(TempFolder dir, out string truncatedFile)
    {
        TestFiles.WriteIdxFolder(dir.Path, trainCount: 1000, testCount: 300, gzip: false);
        truncatedFile = dir.File("t10k-images-idx3-ubyte");
        var bytes = File.ReadAllBytes(truncatedFile);
        File.WriteAllBytes(truncatedFile, bytes[..(bytes.Length / 2)]);
        return new() { [FashionMnist.EnvironmentVariable] = dir.Path };
    }

    [Fact]
    public void ATruncatedDatasetIsOneLineNamingTheFileAndExitCode1()
    {
        using var data = new TempFolder();
        using var output = new TempFolder();
        var environment = TruncatedFashionMnist(data, out var truncated);
        var result = Run("datasets.cs", environment, "--smoke", "--out", output.File("datasets"));
        AssertOneErrorLine(result, "datasets", 1, truncated, "truncated");
    }

    [Fact]
    public void VerboseAddsTheStackTraceToAUserError()
    {
        using var data = new TempFolder();
        using var output = new TempFolder();
        var environment = TruncatedFashionMnist(data, out var truncated);
        var result = Run("datasets.cs", environment, "--smoke", "--verbose", "--out", output.File("datasets"));
        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.StartsWith($"datasets: {truncated}", result.StderrLines[0]);
        Assert.Contains(nameof(DatasetException), result.Stderr);
        Assert.Matches(new Regex(@"^\s+at \S+\(", RegexOptions.Multiline), result.Stderr);
    }

    [Fact]
    public void ACorruptResumeCheckpointIsOneLineNamingTheFileAndExitCode1()
    {
        // train-classifier resumes from <out>/checkpoint/state.json: a garbage one must be reported, not crash.
        using var data = new TempFolder();
        using var output = new TempFolder();
        TestFiles.WriteIdxFolder(data.Path, trainCount: 1000, testCount: 300, gzip: false);
        var state = Path.Combine(output.Path, "checkpoint", "state.json");
        Directory.CreateDirectory(Path.GetDirectoryName(state)!);
        File.WriteAllText(state, "{ \"settings\": garbage");
        var result = Run("train-classifier.cs", new Dictionary<string, string> { [FashionMnist.EnvironmentVariable] = data.Path },
            "--smoke", "--out", output.Path);
        AssertOneErrorLine(result, "train-classifier", 1, state, "not a valid training state", "delete the folder");
    }
}
