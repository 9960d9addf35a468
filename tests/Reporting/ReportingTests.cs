using Carso.IO;
using System.Text.Json.Nodes;
using Carso.Reporting;
using static TorchSharp.torch;

namespace Carso.Tests.Reporting;

public class ReportingTests
{
    [Fact]
    public void AtomicWriteReplacesTheFileAndLeavesNoTemporaryFiles()
    {
        using var dir = new TempFolder();
        var path = dir.File("sub/record.json");
        AtomicFile.WriteAllText(path, "first");
        AtomicFile.WriteAllText(path, "second");
        Assert.Equal("second", File.ReadAllText(path));
        Assert.Equal(["record.json"], Directory.GetFiles(dir.File("sub")).Select(Path.GetFileName));
    }

    [Fact]
    public void AFailedWriteKeepsTheOldFileIntact()
    {
        using var dir = new TempFolder();
        var path = dir.File("record.json");
        AtomicFile.WriteAllText(path, "old");
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, s =>
        {
            s.Write("partial"u8);
            throw new InvalidOperationException("killed mid-write");
        }));
        Assert.Equal("old", File.ReadAllText(path));
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    sealed record DemoSettings(int Epochs = 3, double Eps = 0.1, string Aggregation = "peel");

    [Fact]
    public void RunRecordRoundTripsThroughJson()
    {
        using var dir = new TempFolder();
        var record = new RunRecord("demo", Smoke: true, Seed: 42, RunRecord.ToJson(new DemoSettings()),
            Carso.Runtime.Versions.All(), "cpu", 2, DateTimeOffset.UnixEpoch, 1.5,
            RunRecord.ToJson(new { accuracy = 0.875, n = 1000, perEpoch = new[] { 0.5, 0.75 } }));
        record.Save(dir.File("run.json"));
        var loaded = RunRecord.Load(dir.File("run.json"));
        Assert.Equal("demo", loaded.Script);
        Assert.Equal(42, loaded.Seed);
        Assert.Equal(0.1, loaded.Settings!["eps"]!.GetValue<double>());
        Assert.Equal("peel", loaded.Settings!["aggregation"]!.GetValue<string>());
        Assert.Equal(0.75, loaded.Metrics!["perEpoch"]![1]!.GetValue<double>());
        Assert.Equal("0.107.0", loaded.Versions["torchSharp"]);
        File.WriteAllText(dir.File("bad.json"), "{ not json");
        var e = Assert.Throws<InvalidDataException>(() => RunRecord.Load(dir.File("bad.json")));
        Assert.Contains(dir.File("bad.json"), e.Message);
    }

    [Fact]
    public void FiguresReferenceOneSharedLocalPlotlyJsAndNoCdn()
    {
        using var dir = new TempFolder();
        var figure = new Figure([new JsonObject { ["type"] = "scatter", ["x"] = new JsonArray(0, 1), ["y"] = new JsonArray(1, 0) }],
            new JsonObject { ["title"] = new JsonObject { ["text"] = "demo" } }, 400, 300);
        var (htmlA, _, _) = Figures.Save(figure, dir.File("a/one.html"), dir.Path, png: false);
        var (htmlB, _, _) = Figures.Save(figure, dir.File("b/two.html"), dir.Path, png: false);
        var plotly = Directory.GetFiles(dir.File("_plotly"), "plotly-*.min.js");
        Assert.Single(plotly);
        Assert.True(new FileInfo(plotly[0]).Length > 1_000_000);
        foreach (var html in new[] { htmlA, htmlB })
        {
            var text = File.ReadAllText(html);
            Assert.Contains($"<script src=\"../_plotly/{Path.GetFileName(plotly[0])}\"></script>", text);
            Assert.DoesNotContain("cdn", text, StringComparison.OrdinalIgnoreCase);
            Assert.True(text.Length < 20_000, "plotly.js must not be inlined");
        }
    }

    [Fact]
    public void ImageGridPlacesEachImageInItsCellAndDrawsAPngWhereChromiumExists()
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        // 2 rows x 3 columns of 4x4 images; image k is filled with k / 5
        var images = arange(6, dtype: ScalarType.Float32).div(5).reshape(6, 1, 1, 1).expand(6, 1, 4, 4);
        var figure = ImageGrid.Create(images, 3, ["first", "second"], "grid");
        var z = figure.Data[0]!["z"]!.AsArray();
        Assert.Equal(2 * 6, z.Count);               // rows * (4 + 2 gutter)
        Assert.Equal(3 * 6, z[0]!.AsArray().Count); // columns * (4 + 2 gutter)
        Assert.Equal(0.8, z[6 + 1]![6 + 1]!.GetValue<float>(), 3);         // row 1, column 1 -> image 4
        Assert.Equal(0.4, z[1]![2 * 6 + 1]!.GetValue<float>(), 3);         // row 0, column 2 -> image 2
        Assert.Equal(1.0, z[4]![0]!.GetValue<float>(), 3);               // gutter is white
        var (_, png, skipped) = Figures.Save(figure, dir.File("grid/grid.html"), dir.Path);
        if (Chromium.Find() is null)
            Assert.Contains("apt-get install -y chromium", skipped);
        else
        {
            Assert.NotNull(png);
            var bytes = File.ReadAllBytes(png!);
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
        }
    }
}
