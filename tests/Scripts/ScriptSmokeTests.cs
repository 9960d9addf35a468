using System.Diagnostics;
using Carso.Runtime;

namespace Carso.Tests.Scripts;

/// <summary>Every script in scripts/ runs in --smoke mode, so none can rot; smoke output goes to a temporary folder. The
/// scripts are split between the two script collections (<see cref="ScriptCollections"/>), which run side by side.</summary>
public static class ScriptSmokeTests
{
    static string Root => Paths.RepoRoot() ?? throw new InvalidOperationException("tests must run inside the repository");

    /// <summary>The scripts of one collection (every script is in exactly one).</summary>
    public static TheoryData<string> ScriptsOf(string collection)
    {
        var data = new TheoryData<string>();
        foreach (var script in Directory.GetFiles(Path.Combine(Root, "scripts"), "*.cs").Select(Path.GetFileName).Order())
            if (ScriptCollections.For(script!) == collection) data.Add(script!);
        return data;
    }

    /// <summary>How long a script test waits for its script: a hang guard (two scripts share CI's 2 cores).</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromMinutes(10);

    /// <summary>Runs `dotnet run scripts/NAME --smoke` from the repository root; returns exit code and output.</summary>
    public static (int ExitCode, string Output) RunScript(string name, params string[] extraArgs)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = Root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "run", Path.Combine("scripts", name), "--", "--smoke" }.Concat(extraArgs))
            info.ArgumentList.Add(arg);
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(Timeout))
        {
            process.Kill(entireProcessTree: true);
            return (-1, $"timed out after {Timeout.TotalMinutes} minutes\n{stdout.Result}\n{stderr.Result}");
        }
        return (process.ExitCode, stdout.Result + "\n" + stderr.Result);
    }

    public static void RunsInSmokeModeAndWritesItsRunRecordOutsideResults(string script)
    {
        var (exitCode, output) = RunScript(script);
        Assert.True(exitCode == 0, $"{script} --smoke exited with {exitCode}:\n{output}");
        var outputLine = output.Split('\n').FirstOrDefault(l => l.StartsWith("output: "))
            ?? throw new Xunit.Sdk.XunitException($"{script} did not print its output folder:\n{output}");
        var folder = outputLine["output: ".Length..].Trim();
        Assert.StartsWith(Path.GetFullPath(Path.GetTempPath()), folder);
        Assert.DoesNotContain(Path.Combine(Root, "results"), folder);
        Assert.True(File.Exists(Path.Combine(folder, "run.json")), $"{script} wrote no run.json in {folder}:\n{output}");
        Directory.Delete(Path.GetDirectoryName(folder)!, recursive: true);
    }
}

[Collection(ScriptCollections.Evaluation)]
public class EvaluationScriptSmokeTests
{
    public static TheoryData<string> Scripts() => ScriptSmokeTests.ScriptsOf(ScriptCollections.Evaluation);

    [Theory]
    [MemberData(nameof(Scripts))]
    public void RunsInSmokeModeAndWritesItsRunRecordOutsideResults(string script) =>
        ScriptSmokeTests.RunsInSmokeModeAndWritesItsRunRecordOutsideResults(script);
}

[Collection(ScriptCollections.Training)]
public class TrainingScriptSmokeTests
{
    public static TheoryData<string> Scripts() => ScriptSmokeTests.ScriptsOf(ScriptCollections.Training);

    [Theory]
    [MemberData(nameof(Scripts))]
    public void RunsInSmokeModeAndWritesItsRunRecordOutsideResults(string script) =>
        ScriptSmokeTests.RunsInSmokeModeAndWritesItsRunRecordOutsideResults(script);
}
