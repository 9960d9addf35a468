using Carso.Data;
using static TorchSharp.torch;

namespace Carso.Tests.Data;

public class DatasetOpsTests
{
    /// <summary>n points (n &lt;= 1000); image i is filled with i / 1000, label i % 10.</summary>
    static Dataset Numbered(int n) => Dataset.Create("numbered",
        arange(n, dtype: ScalarType.Float32).div(1000).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(),
        arange(n, dtype: ScalarType.Int64).remainder(10),
        IdxDataset.MnistClasses);

    /// <summary>Which original points a dataset holds, in order.</summary>
    static long[] Ids(Dataset d) => d.Images[.., 0, 0, 0].contiguous().data<float>().Select(v => (long)Math.Round(v * 1000)).ToArray();

    [Fact]
    public void ShuffleDependsOnlyOnTheSeedAndKeepsImagesWithTheirLabels()
    {
        using var data = Numbered(100);
        using var a = data.Shuffled(seed: 7);
        using var b = data.Shuffled(seed: 7);
        using var c = data.Shuffled(seed: 8);
        Assert.Equal(Ids(a), Ids(b));
        Assert.NotEqual(Ids(a), Ids(c));
        Assert.Equal(Enumerable.Range(0, 100).Select(i => (long)i), Ids(a).Order());
        Assert.Equal(Ids(a).Select(i => i % 10), a.Labels.data<long>().ToArray());
    }

    [Fact]
    public void ValidationSplitIsDisjointCompleteAndSeeded()
    {
        using var data = Numbered(100);
        var (train, validation) = data.SplitValidation(20, seed: 3);
        Assert.Equal(80, train.Count);
        Assert.Equal(20, validation.Count);
        Assert.Empty(Ids(train).Intersect(Ids(validation)));
        Assert.Equal(Enumerable.Range(0, 100).Select(i => (long)i), Ids(train).Concat(Ids(validation)).Order());
        var (_, again) = data.SplitValidation(20, seed: 3);
        Assert.Equal(Ids(validation), Ids(again));
        Assert.Throws<ArgumentOutOfRangeException>(() => data.SplitValidation(100, 0));
    }

    [Fact]
    public void BatchesCoverEveryPointOnceWithASmallerLastBatch()
    {
        using var data = Numbered(10);
        var sizes = data.Batches(4).Select(b => b.Labels.shape[0]).ToArray();
        Assert.Equal(new long[] { 4, 4, 2 }, sizes);
        var shuffled = data.Batches(3, shuffleSeed: 1).SelectMany(b => b.Labels.data<long>().ToArray()).ToArray();
        Assert.Equal(data.Labels.data<long>().ToArray().Order(), shuffled.Order());
        Assert.NotEqual(data.Labels.data<long>().ToArray(), shuffled);
    }

    [Fact]
    public void TakeKeepsTheFirstPointsAndCreateChecksShapes()
    {
        using var data = Numbered(10);
        using var first = data.Take(3);
        Assert.Equal(new long[] { 0, 1, 2 }, Ids(first));
        Assert.Equal(10, data.Take(50).Count);
        var e = Assert.Throws<ArgumentException>(() => Dataset.Create("bad", zeros(3, 1, 2, 2), zeros(2, dtype: ScalarType.Int64), ["a"]));
        Assert.Contains("3 images but 2 labels", e.Message);
        var range = Assert.Throws<ArgumentException>(() => Dataset.Create("bad", zeros(1, 1, 2, 2), tensor(new long[] { 5 }), ["a", "b"]));
        Assert.Contains("labels span [5, 5] but there are 2 classes", range.Message);
    }
}
