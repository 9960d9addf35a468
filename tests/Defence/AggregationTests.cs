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
    public void LexsembleIsThePublishedLogOddsOfTheSoftmaxOverClassesOfSummedExponentials()
    {
        // S = sum over samples of exp(l): S0 = 3 + 1 = 4, S1 = 1 + 7 = 8, S2 = 1/3 + 3 = 10/3.
        // p = softmax_c(S) (doubly exponential), so p_c / (1 - p_c) = e^S_c / sum_{c' != c} e^S_c':
        //   class 0: 4 - ln(e^8 + e^(10/3)) = -4.00936;  class 1: 8 - ln(e^4 + e^(10/3)) = 3.58563;
        //   class 2: 10/3 - ln(e^4 + e^8) = -4.68482
        double[] expected = [4 - Math.Log(Math.Exp(8) + Math.Exp(10.0 / 3)), 8 - Math.Log(Math.Exp(4) + Math.Exp(10.0 / 3)),
            10.0 / 3 - Math.Log(Math.Exp(4) + Math.Exp(8))];
        Assert.Equal(-4.00936, expected[0], 4);
        var values = Aggregation.Lexsemble(Small()).to_type(ScalarType.Float64).data<double>().ToArray();
        for (var i = 0; i < 3; i++) Assert.Equal(expected[i], values[i], 4);
        Assert.Equal(0, Aggregation.Saturation(AggregationKind.Lexsemble, Small()));
    }

    [Fact]
    public void ExpShareIsTheLogOddsOfEachClasssShareOfTheSummedExponentialsNotThePublishedFunction()
    {
        // S_c / sum of the others: class 0: 4 / (8 + 10/3) = 6/17;  class 1: 8 / (4 + 10/3) = 12/11;  class 2: (10/3) / 12 = 5/18
        AssertValues([Math.Log(6.0 / 17), Math.Log(12.0 / 11), Math.Log(5.0 / 18)], Aggregation.ExpShare(Small()));
        // Same argmax as the published lexsemble, different values.
        Assert.Equal(Aggregation.Lexsemble(Small()).argmax(1).item<long>(), Aggregation.ExpShare(Small()).argmax(1).item<long>());
        Assert.NotEqual(Aggregation.Lexsemble(Small())[0, 0].item<float>(), Aggregation.ExpShare(Small())[0, 0].item<float>(), 2);
    }

    [Fact]
    public void ThePublishedLexsembleSaturatesInFloat32AndGivesNaNGradients()
    {
        using var scope = NewDisposeScope();
        // Two classes whose summed exponentials differ by 30 (logits 30 and 0, one sample): softmax(S) = [1, 0]
        // exactly in float32, so the log-odds are +inf and -inf; moderately confident, not extreme.
        var logits = tensor(new float[] { 30, 0 }).view(1, 2, 1);
        var (output, saturated) = Aggregation.Apply(AggregationKind.Lexsemble, logits);
        Assert.Equal(2, saturated);
        Assert.True(float.IsPositiveInfinity(output[0, 0].item<float>()) && float.IsNegativeInfinity(output[0, 1].item<float>()));
        var input = logits.clone().requires_grad_(true);
        var grad = autograd.grad([nn.functional.cross_entropy(Aggregation.Lexsemble(input).view(1, 2), tensor(new long[] { 0 }))], [input])[0];
        Assert.True(grad.isnan().any().item<bool>(), "cross-entropy through the saturated lexsemble should have a NaN gradient");
        // Above ~88.7 the exponential itself overflows: NaN outputs.
        Assert.True(Aggregation.Lexsemble(tensor(new float[] { 100, 99 }).view(1, 2, 1)).isnan().all().item<bool>());
        // The surrogate stays finite, with a finite gradient, on the same logits.
        Assert.Equal(0, Aggregation.Saturation(AggregationKind.ExpShare, logits));
        var surrogateGrad = autograd.grad([Aggregation.ExpShare(input).sum()], [input])[0];
        Assert.True(surrogateGrad.isfinite().all().item<bool>());
    }

    [Theory]
    [InlineData(100f)]
    [InlineData(1e4f)]
    public void ExpShareProbLogitAndCountStayFiniteWhereThePublishedFormulaSaturates(float scale)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(5);
        // Confident logits of +-scale: rows 0-2 keep each class's sign over all samples, rows 3-5 draw a sign per sample.
        var signs = randint(0, 2, [6, 10, 8], generator: generator).to_type(ScalarType.Float32) * 2 - 1;
        signs[..3] = signs[..3, .., ..1].expand(3, 10, 8);
        var logits = signs * scale;
        foreach (var kind in new[] { AggregationKind.ExpShare, AggregationKind.Prob, AggregationKind.Logit, AggregationKind.Count })
        {
            var (output, saturated) = Aggregation.Apply(kind, logits);
            Assert.Equal(new long[] { 6, 10 }, output.shape);
            Assert.True(output.isfinite().all().item<bool>(), $"{kind} has non-finite outputs at +-{scale}");
            Assert.Equal(0, saturated);
        }
        Assert.True(Aggregation.Saturation(AggregationKind.Lexsemble, logits) > 0, "the published lexsemble was expected to saturate");
    }

    [Fact]
    public void ExpShareArgmaxIsTheClassWithTheLargestSumOfExponentialsAsThePublishedOnesWhereItIsFinite()
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(11);
        var moderate = randn([8, 10, 8], generator: generator) * 0.5;
        var confident = randn([8, 10, 8], generator: generator) * 100;
        var logits = cat([moderate, confident], 0);
        var published = Aggregation.Lexsemble(logits);
        var finiteRows = published.isfinite().all(1);
        Assert.True(finiteRows.sum().item<long>() >= 4, "some moderate rows should be finite in the published form");
        Assert.True(finiteRows.logical_not().any().item<bool>(), "some confident rows should saturate");
        var share = Aggregation.ExpShare(logits);
        Assert.True(share.isfinite().all().item<bool>());
        Assert.True(share.argmax(1).eq(published.argmax(1)).masked_select(finiteRows).all().item<bool>());
        Assert.True(share.argmax(1).eq(logits.logsumexp(2).argmax(1)).all().item<bool>());
    }

    [Fact]
    public void NamesParseIgnoringCaseAndAnUnknownNameListsTheValidOnes()
    {
        Assert.Equal(AggregationKind.Lexsemble, Aggregation.Parse("lexsemble"));
        Assert.Equal(AggregationKind.ExpShare, Aggregation.Parse("ExpShare"));
        Assert.Equal(AggregationKind.Logit, Aggregation.Parse("Logit"));
        Assert.Equal(AggregationKind.Count, Aggregation.Parse(" COUNT "));
        foreach (var bad in new[] { "median", "2", "logit, prob", "" })
        {
            var e = Assert.Throws<ArgumentException>(() => Aggregation.Parse(bad));
            Assert.Contains($"'{bad}'", e.Message);
            Assert.Contains("logit, prob, count, expshare, lexsemble", e.Message);
        }
    }

    [Fact]
    public void WrongLogitShapesAreAnError()
    {
        var e = Assert.Throws<ArgumentException>(() => Aggregation.Logit(zeros(2, 3)));
        Assert.Contains("[B, K, N]", e.Message);
        Assert.Throws<ArgumentException>(() => Aggregation.ExpShare(zeros(2, 1, 4)));
    }
}
