using System.Text.Json.Nodes;
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

    [Fact]
    public void TheBenchTableHasEveryRatioIncludingThoseBelowOneAndSaysWherePyTorchDidNotRun()
    {
        static JsonObject Timing(double perSecond) => new() { ["medianImagesPerSecond"] = perSecond };
        var metrics = new JsonObject
        {
            ["operations"] = new JsonArray(
                new JsonObject { ["name"] = "classifier-grad", ["batch"] = 128, ["work"] = "fwd+bwd", ["ours"] = Timing(3000), ["pytorch"] = Timing(1500), ["ratio"] = 2.0 },
                new JsonObject { ["name"] = "classifier-grad", ["batch"] = 512, ["work"] = "fwd+bwd", ["ours"] = Timing(800), ["pytorch"] = Timing(1000), ["ratio"] = 0.8 },
                new JsonObject { ["name"] = "carso-grad-n8", ["batch"] = 128, ["work"] = "CARSO", ["ours"] = Timing(240), ["pytorch"] = null, ["ratio"] = null }),
            ["memory"] = new JsonObject
            {
                ["iterations"] = 2000, ["samples"] = 8, ["eotIter"] = 1, ["firstCheck"] = 100, ["rssAtFirstCheck"] = 293.0,
                ["rssAtLast"] = 276.0, ["growthPercent"] = -5.6, ["peakRssMiB"] = 298.0,
            },
            ["pytorch"] = new JsonObject { ["torchVersion"] = "1.13", ["blas"] = "OpenBLAS 0.3.21 (libblas.so.3)" },
        };
        var record = new RunRecord("bench", false, 0, null, new Dictionary<string, string>(), "cpu", 1, DateTimeOffset.UnixEpoch, 1, metrics);
        var table = BenchReport.MarkdownTable(record);
        Assert.Contains("| classifier-grad (fwd+bwd) | 128 / 512 | 3000 / 800 | 1500 / 1000 | 2.00 / 0.80 |", table);
        Assert.Contains("| carso-grad-n8 (CARSO) | 128 | 240 | not timed | - |", table);
        Assert.Contains("276 MiB at the end (-5.6%), peak 298 MiB", table);
        Assert.Contains("PyTorch 1.13 multiplied on: OpenBLAS 0.3.21 (libblas.so.3).", table);
    }
}
