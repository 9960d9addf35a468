using Carso.Evaluation;

namespace Carso.Tests.Evaluation;

public class AccuracyTests
{
    [Fact]
    public void WilsonIntervalMatchesPublishedValues()
    {
        // 50 of 100: 95% Wilson interval [0.4038, 0.5962]; 0 of 10: [0, 0.2775]; 10 of 10: [0.7225, 1].
        var half = Accuracy.Of(50, 100);
        Assert.Equal(0.4038, half.Lower, 4);
        Assert.Equal(0.5962, half.Upper, 4);
        Assert.Equal(0.0, Accuracy.Of(0, 10).Lower, 6);
        Assert.Equal(0.2775, Accuracy.Of(0, 10).Upper, 4);
        Assert.Equal(0.7225, Accuracy.Of(10, 10).Lower, 4);
        Assert.Throws<ArgumentOutOfRangeException>(() => Accuracy.Of(11, 10));
    }
}
