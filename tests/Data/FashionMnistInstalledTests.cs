using Carso.Data;

namespace Carso.Tests.Data;

/// <summary>The real, installed Fashion-MNIST (.ci/run installs dataset-fashion-mnist when missing).</summary>
public class FashionMnistInstalledTests
{
    [Fact]
    public void LoadsSixtyThousandTrainingAndTenThousandTestImagesBalancedOverTenClasses()
    {
        using var train = FashionMnist.Load(Split.Train);
        using var test = FashionMnist.Load(Split.Test);
        Assert.Equal(new long[] { 60000, 1, 28, 28 }, train.Images.shape);
        Assert.Equal(new long[] { 10000, 1, 28, 28 }, test.Images.shape);
        Assert.All(train.ClassCounts(), c => Assert.Equal(6000, c));
        Assert.All(test.ClassCounts(), c => Assert.Equal(1000, c));
        Assert.InRange(test.Images.min().item<float>(), 0f, 0f);
        Assert.InRange(test.Images.max().item<float>(), 1f, 1f);
        // published statistic: mean pixel of the training set is about 0.286
        Assert.InRange(train.Images.mean().item<float>(), 0.28f, 0.29f);
    }
}
