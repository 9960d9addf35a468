using Carso.Defence;
using static TorchSharp.torch;

namespace Carso.Tests.Defence;

public class AggregationTests
{
    static readonly double Ln3 = Math.Log(3), Ln7 = Math.Log(7);

    /// <summary>
    /// B = 1, K = 3, N = 2: l[class][sample] =
    ///   class 0: [ln 3, 0]
    ///   class 1: [0, ln 7]
    ///   class 2: [-ln 3, ln 3]
    /// </summary>
    static Tensor Small() => tensor(new[] { Ln3, 0, 0, Ln7, -Ln3, Ln3 }, dtype: ScalarType.Float32).view(1, 3, 2);

    static void AssertValues(double[] expected, Tensor actual)
    {
        Assert.Equal(new long[] { 1, expected.Length }, actual.shape);
        var values = actual.to_type(ScalarType.Float64).data<double>().ToArray();
        for (var i = 0; i < expected.Length; i++) Assert.Equal(expected[i], values[i], 5);
    }

    [Fact]
    public void LogitIsTheMeanOverSamples()
    {
        // (ln 3 + 0) / 2, (0 + ln 7) / 2, (-ln 3 + ln 3) / 2
        AssertValues([Ln3 / 2, Ln7 / 2, 0], Aggregation.Logit(Small()));
    }

    [Fact]
    public void ProbIsTheInverseSigmoidOfTheMeanSigmoid()
    {
        // sigmoid(ln a) = a / (a + 1):
        //   class 0: (3/4 + 1/2) / 2 = 5/8  -> ln((5/8) / (3/8)) = ln(5/3)
        //   class 1: (1/2 + 7/8) / 2 = 11/16 -> ln(11/5)
        //   class 2: (1/4 + 3/4) / 2 = 1/2  -> 0
        AssertValues([Math.Log(5.0 / 3), Math.Log(11.0 / 5), 0], Aggregation.Prob(Small()));
    }

    [Fact]
    public void CountSumsOneHotVotesOfEachSamplesArgmax()
    {
        // sample 0: [ln 3, 0, -ln 3] -> class 0; sample 1: [0, ln 7, ln 3] -> class 1
        AssertValues([1, 1, 0], Aggregation.Count(Small()));
        Assert.Equal(ScalarType.Float32, Aggregation.Count(Small()).dtype);
    }

    [Fact]
    public void PeelIsTheLogOddsOfTheSoftmaxOfSummedExponentials()
    {
        // S = sum over samples of exp(l): S0 = 3 + 1 = 4, S1 = 1 + 7 = 8, S2 = 1/3 + 3 = 10/3.
        // p_c / (1 - p_c) = S_c / sum of the others:
        //   class 0: 4 / (8 + 10/3) = 6/17;  class 1: 8 / (4 + 10/3) = 12/11;  class 2: (10/3) / 12 = 5/18
        double[] expected = [Math.Log(6.0 / 17), Math.Log(12.0 / 11), Math.Log(5.0 / 18)];
        AssertValues(expected, Aggregation.Peel(Small()));
        AssertValues(expected, Aggregation.NaivePeel(Small())); // the textbook formula agrees where it is finite
        Assert.Equal(0, Aggregation.Saturation(AggregationKind.Peel, Small()));
    }

    [Theory]
    [InlineData(100f)]
    [InlineData(1e4f)]
    public void PeelAndProbStayFiniteWhereTheNaiveFormulasSaturate(float scale)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(5);
        // Confident logits of +-scale (naive exp overflows float32 from ~88.7; sigmoid rounds to 1 from ~17):
        // rows 0-2 keep each class's sign over all samples (so the mean sigmoid is exactly 1 or 0 naively),
        // rows 3-5 draw a sign per sample.
        var signs = randint(0, 2, [6, 10, 8], generator: generator).to_type(ScalarType.Float32) * 2 - 1;
        signs[..3] = signs[..3, .., ..1].expand(3, 10, 8);
        var logits = signs * scale;
        foreach (var kind in new[] { AggregationKind.Peel, AggregationKind.Prob, AggregationKind.Logit, AggregationKind.Count })
        {
            var (output, saturated) = Aggregation.Apply(kind, logits);
            Assert.Equal(new long[] { 6, 10 }, output.shape);
            Assert.True(output.isfinite().all().item<bool>(), $"{kind} has non-finite outputs at +-{scale}");
            if (kind is AggregationKind.Peel or AggregationKind.Prob)
                Assert.True(saturated > 0, $"{kind}: the naive formula saturates at +-{scale} but none were counted");
            else Assert.Equal(0, saturated);
        }
        Assert.False(Aggregation.NaivePeel(logits).isfinite().all().item<bool>(), "the naive peel was expected to saturate");

        // Gradients through the log-space peel are finite too (attacks need them).
        var input = logits.clone().requires_grad_(true);
        var grad = autograd.grad([Aggregation.Peel(input).sum()], [input])[0];
        Assert.True(grad.isfinite().all().item<bool>());
    }

    [Fact]
    public void PeelArgmaxEqualsTheNaiveArgmaxWhereTheNaiveOutputIsFinite()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(11);
        // Rows 0-7 moderate (naive finite), rows 8-15 confident (naive saturates).
        var moderate = randn([8, 10, 8], generator: generator) * 2;
        var confident = randn([8, 10, 8], generator: generator) * 100;
        var logits = cat([moderate, confident], 0);
        var naive = Aggregation.NaivePeel(logits);
        var finiteRows = naive.isfinite().all(1);
        Assert.True(finiteRows.sum().item<long>() >= 8, "the moderate rows should be finite naively");
        Assert.True(finiteRows.logical_not().any().item<bool>(), "some confident rows should saturate naively");
        var peel = Aggregation.Peel(logits);
        Assert.True(peel.isfinite().all().item<bool>());
        Assert.True(peel.argmax(1).eq(naive.argmax(1)).masked_select(finiteRows).all().item<bool>());
        // Where finite, the values agree too.
        var rows = finiteRows.unsqueeze(1);
        Assert.True(peel.masked_select(rows).allclose(naive.masked_select(rows), rtol: 1e-4, atol: 1e-4));
        // The argmax of the peel is the class with the largest sum of exponentials, saturated rows included.
        Assert.True(peel.argmax(1).eq(logits.logsumexp(2).argmax(1)).all().item<bool>());
    }

    [Fact]
    public void NamesParseIgnoringCaseAndAnUnknownNameListsTheValidOnes()
    {
        Assert.Equal(AggregationKind.Peel, Aggregation.Parse("peel"));
        Assert.Equal(AggregationKind.Logit, Aggregation.Parse("Logit"));
        Assert.Equal(AggregationKind.Count, Aggregation.Parse(" COUNT "));
        foreach (var bad in new[] { "median", "2", "logit, prob", "" })
        {
            var e = Assert.Throws<ArgumentException>(() => Aggregation.Parse(bad));
            Assert.Contains($"'{bad}'", e.Message);
            Assert.Contains("logit, prob, count, peel", e.Message);
        }
    }

    [Fact]
    public void WrongLogitShapesAreAnError()
    {
        var e = Assert.Throws<ArgumentException>(() => Aggregation.Logit(zeros(2, 3)));
        Assert.Contains("[B, K, N]", e.Message);
        Assert.Throws<ArgumentException>(() => Aggregation.Peel(zeros(2, 1, 4)));
    }
}
