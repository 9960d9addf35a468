using Carso.Attacks;
using Carso.Experiments;
using Carso.IO;
using Carso.Runtime;
using static TorchSharp.torch;

namespace Carso.Tests.Experiments;

/// <summary>The committed artefacts' paths, the error a missing one gives, and the README rows of the L2 classifier.</summary>
public class CommittedTests
{
    [Fact]
    public void AMissingClassifierIsOneUserErrorLineNamingTheFileAndTheCommandThatMakesIt()
    {
        // The L2 weights' folder with a file name that never exists (the real L2 weights may be committed later).
        const string missing = "results/train-classifier-l2/not-there.safetensors";
        var e = Assert.Throws<FileNotFoundException>(() => Committed.Classifier(CPU, missing));
        Assert.Contains(Committed.PathOf(missing), e.Message);
        Assert.Contains("`dotnet run scripts/train-classifier-l2.cs`", e.Message);
        var failure = ScriptErrors.Classify("eval-autoattack-l2", e, verbose: false);
        Assert.Equal(ScriptErrors.UserErrorExitCode, failure.ExitCode);
        Assert.False(failure.StackTrace);
        Assert.DoesNotContain('\n', failure.Line);
        Assert.StartsWith("eval-autoattack-l2: ", failure.Line);
    }

    [Fact]
    public void TheCommandThatMakesAResultsFileIsItsFoldersScript()
    {
        Assert.Equal("dotnet run scripts/train-classifier-l2.cs", Committed.CommandThatMakes(Committed.ClassifierL2Path));
        Assert.Equal("dotnet run scripts/train-classifier.cs", Committed.CommandThatMakes(Committed.ClassifierPath));
        Assert.Equal("dotnet run scripts/eval-autoattack.cs", Committed.CommandThatMakes(Committed.TransferSetPath));
        Assert.Null(Committed.CommandThatMakes("data/elsewhere.safetensors"));
        var e = Assert.Throws<FileNotFoundException>(() => Committed.Require("data/elsewhere.safetensors", "x"));
        Assert.Contains("check the path in the settings", e.Message);
    }

    [Fact]
    public void EachTrainedNormHasItsClassifierAndL1IsASettingsError()
    {
        Assert.Equal(Committed.ClassifierPath, Committed.ClassifierPathFor(Norm.Linf));
        Assert.Equal(Committed.ClassifierL2Path, Committed.ClassifierPathFor(Norm.L2));
        Assert.Equal("Norm", Assert.Throws<SettingsException>(() => Committed.ClassifierPathFor(Norm.L1)).Setting);
        // The scripts write the committed file names: the paths' folders are the scripts' output folders.
        Assert.Equal("results/train-classifier-l2", Path.GetDirectoryName(Committed.ClassifierL2Path)!.Replace('\\', '/'));
    }

    [Fact]
    public void TheL2RecordsGiveReadmeRowsAfterTheLinfOnesNamingTheirThreatAndCommand()
    {
        var root = Paths.RepoRoot()!;
        var train = RunRecord.Load(Path.Combine(root, "results", "train-classifier", "run.json"));
        var autoattack = RunRecord.Load(Path.Combine(root, "results", "eval-autoattack", "run.json"));
        var trainSettings = train.Settings!.DeepClone();
        trainSettings["training"]!["threat"] = RunRecord.ToJson(Threat.L2(1.5));
        var autoattackSettings = autoattack.Settings!.DeepClone();
        autoattackSettings["norm"] = "L2";
        autoattackSettings["eps"] = 1.5;
        var linf = new Dictionary<string, RunRecord> { ["train-classifier"] = train, ["eval-autoattack"] = autoattack };
        var both = new Dictionary<string, RunRecord>(linf)
        {
            ["train-classifier-l2"] = train with { Script = "train-classifier-l2", Settings = trainSettings },
            ["eval-autoattack-l2"] = autoattack with { Script = "eval-autoattack-l2", Settings = autoattackSettings },
        };
        var linfRows = ReadmeResults.Rows(linf);
        var rows = ReadmeResults.Rows(both);
        Assert.Equal(linfRows, rows.Take(linfRows.Count)); // the Linf rows are unchanged
        var l2 = rows.Skip(linfRows.Count).ToArray();
        Assert.Equal(4, l2.Length);
        Assert.All(l2, r => Assert.Contains("L2", r.Model));
        Assert.Equal("PGD-20 at L2 eps=1.5, full test set", l2[1].Evaluation);
        Assert.Equal("AutoAttack standard at L2 eps=1.5, first 1000 test points", l2[3].Evaluation);
        Assert.Equal(["dotnet run scripts/train-classifier-l2.cs", "dotnet run scripts/train-classifier-l2.cs",
            "dotnet run scripts/eval-autoattack-l2.cs", "dotnet run scripts/eval-autoattack-l2.cs"], l2.Select(r => r.Command));
    }
}
