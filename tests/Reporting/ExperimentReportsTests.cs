using Carso.IO;
using Carso.Evaluation;
using Carso.Experiments;
using Carso.Reporting;
using Carso.Runtime;
using static TorchSharp.torch;

namespace Carso.Tests.Reporting;

public class ExperimentReportsTests
{
    [Fact]
    public void EveryScriptHasAReportThatDrawsItsFiguresFromItsRecord()
    {
        // Ablations and sweeps write records of one shape (Ablation.Run), drawn by the generic VariantReport.
        var scripts = Directory.GetFiles(Path.Combine(Paths.RepoRoot()!, "scripts"), "*.cs")
            .Where(file => Path.GetFileNameWithoutExtension(file) != "figures"); // figures.cs is the one that calls them
        Assert.All(scripts, file => Assert.True(Reports.ByScript.ContainsKey(Path.GetFileNameWithoutExtension(file))
            || File.ReadAllText(file).Contains("Ablation.Run("), $"{file} has no entry in Reports.ByScript and is not an ablation"));
    }

    [Fact]
    public void AGalleryStoredInARecordRedrawsTheSameImagesToWithinOneGreyLevel()
    {
        using var images = rand(6, 1, 5, 5, generator: new Generator(1));
        var gallery = Gallery.Of(images, 3, ["a", "b"], "t");
        var json = RunRecord.ToJson(gallery)!;
        var back = System.Text.Json.JsonSerializer.Deserialize<Gallery>(json, RunRecord.Json)!;
        Assert.Equal(images.shape, back.Shape);
        var levels = Convert.FromBase64String(back.Images).Select(b => b / 255f).ToArray();
        var original = images.data<float>().ToArray();
        Assert.All(original.Zip(levels), p => Assert.InRange(Math.Abs(p.First - p.Second), 0, 0.5 / 255 + 1e-6));
        Assert.NotNull(back.Figure());
    }

    [Fact]
    public void TheReadmeTableIsReplacedBetweenItsMarkersAndMissingMarkersAreAnError()
    {
        var rows = new[] { new ResultRow("m", "clean", Accuracy.Of(9, 10), "dotnet run scripts/x.cs") };
        var readme = $"intro\n{ReadmeResults.Begin}\nold table\n{ReadmeResults.End}\noutro\n";
        var rewritten = ReadmeResults.Rewrite(readme, rows);
        Assert.DoesNotContain("old table", rewritten);
        Assert.Contains("| m | clean | 90.00% |", rewritten);
        Assert.StartsWith("intro\n", rewritten);
        Assert.EndsWith($"{ReadmeResults.End}\noutro\n", rewritten);
        Assert.Equal(rewritten, ReadmeResults.Rewrite(rewritten, rows)); // idempotent
        Assert.Contains("no table markers", Assert.Throws<InvalidDataException>(() => ReadmeResults.Rewrite("no markers", rows)).Message);
    }
}
