namespace Carso.Tests.Scripts;

[Collection(ScriptCollections.Training)]
public class DatasetsScriptTests
{
    [Fact]
    public void PrintsFashionMnistCountsPerSplitAndClassAndWritesTheFigure()
    {
        using var dir = new TempFolder();
        var (exitCode, output) = ScriptSmokeTests.RunScript("datasets.cs", "--out", dir.File("datasets"));
        Assert.True(exitCode == 0, output);
        Assert.Contains("fashion-mnist/train: 60000 images of 1x28x28", output);
        Assert.Contains("fashion-mnist/test: 10000 images of 1x28x28", output);
        Assert.Matches(@"T-shirt/top\s+6000\s+1000", output);
        Assert.Matches(@"Ankle boot\s+6000\s+1000", output);
        Assert.True(File.Exists(dir.File("datasets/fashion-mnist-samples.html")));
        Assert.True(File.Exists(dir.File("datasets/run.json")));
        Assert.True(Directory.Exists(dir.File("_plotly")));
    }
}
