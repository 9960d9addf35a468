using Carso.Attacks;
using Carso.Data;
using Carso.Evaluation;
using static TorchSharp.torch;

namespace Carso.Tests.Evaluation;

public class DiagnosticsTests
{
    /// <summary>4 classes of 1x8x8 images: class k is bright (0.7) in its band of rows 2k..2k+1, dim (0.1-0.3) elsewhere.</summary>
    static Dataset Bands(int n, long seed) => TestData.Bands(n, seed, signal: 0.6f, offset: 0.1f, noise: 0.2f);

    /// <summary>An MLP trained on the bands (undefended): returns its weights as a function.</summary>
    static Func<Tensor, Tensor> TrainedMlp()
    {
        manual_seed(31);
        using var data = Bands(512, 30);
        var w1 = new TorchSharp.Modules.Parameter(randn(64, 32) * 0.1);
        var w2 = new TorchSharp.Modules.Parameter(randn(32, 4) * 0.1);
        var optimizer = optim.Adam([w1, w2], 0.01);
        for (var step = 0; step < 200; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            nn.functional.cross_entropy(data.Images.flatten(1).matmul(w1).relu().matmul(w2), data.Labels).backward();
            optimizer.step();
        }
        var (a, b) = (w1.detach(), w2.detach());
        return x => x.flatten(1).matmul(a).relu().matmul(b);
    }

    static readonly Threat Eps = Threat.Linf(0.4);
    static readonly AutoAttackSettings Budget = new(ApgdIterations: 20, FabIterations: 20, NTargetClasses: 3, SquareQueries: 300);

    static (ProtocolResult, DiagnosticsReport) Evaluate(Func<Tensor, Tensor> model, Dataset data)
    {
        var protocol = Protocol.Of("aa", Eps, m => AutoAttack.Custom([AutoAttack.ApgdCeName, AutoAttack.SquareName], Eps, Budget, m));
        var result = ProtocolEvaluation.Run(model, data, protocol, new EvaluationOptions(Seed: 2, BatchSize: 100));
        var report = Diagnostics.Run(model, data, result, (t, k) => AutoAttack.ApgdCe(t, Budget with { ApgdIterations = k }),
            largeEps: 0.5, checkPoints: 100, seed: 2, batchSize: 100, iterations: 20);
        return (result, report);
    }

    [Fact]
    public void AnUndefendedModelPassesEveryCheckAndFallsToZeroAtLargeEps()
    {
        var model = TrainedMlp();
        using var data = Bands(100, 40);
        var (result, report) = Evaluate(model, data);
        Assert.True(result.Clean.Value > 0.95, $"clean {result.Clean}");
        Assert.False(report.Stochastic);
        Assert.Equal(0, report.ZeroGradientFraction);
        Assert.True(report.LargeEpsAtOrBelowChance, $"large eps {report.LargeEpsAccuracy}");
        Assert.Equal(0, report.LargeEpsAccuracy.Correct);
        Assert.True(report.MonotoneInEps);
        Assert.Equal(0, report.Monitor.NonFiniteLogits);
        Assert.False(report.SquareStrongerThanWhiteBox, string.Join("; ", report.Warnings));
    }

    [Fact]
    public void InputQuantisationIsFlaggedAsGradientMaskingAndSquareStillBreaksIt()
    {
        var mlp = TrainedMlp();
        Func<Tensor, Tensor> quantised = x => mlp(x.mul(4).round().div(4)); // zero gradient almost everywhere
        using var data = Bands(100, 40);
        var (result, report) = Evaluate(quantised, data);
        Assert.True(report.ZeroGradientFraction > 0.9, $"zero-gradient fraction {report.ZeroGradientFraction}");
        Assert.Contains(report.Warnings, w => w.Contains("gradient masking"));
        var apgd = result.Families[0].Stages.Single(s => s.Attack == AutoAttack.ApgdCeName);
        var square = result.Families[0].Stages.Single(s => s.Attack == AutoAttack.SquareName);
        Assert.True(square.PointsBroken > 3 * Math.Max(1, apgd.PointsBroken), $"APGD broke {apgd.PointsBroken}, Square {square.PointsBroken}");
        Assert.True(report.SquareStrongerThanWhiteBox);
        Assert.True(result.WorstCase.Value < result.Clean.Value - 0.5, $"Square should break most points: {result.WorstCase} vs clean {result.Clean}");
        Assert.True(report.Monitor.ZeroGradients > 0);
    }

    [Fact]
    public void AStochasticModelIsFlagged()
    {
        var mlp = TrainedMlp();
        Func<Tensor, Tensor> noisy = x => mlp(x + randn_like(x) * 0.05);
        using var data = Bands(20, 41);
        Assert.True(Diagnostics.LogitDisagreement(noisy, data.Images) > 0);
        Assert.Equal(0, Diagnostics.LogitDisagreement(mlp, data.Images));
    }

    [Fact]
    public void StandardAutoAttackIsTheFourAttacksInOrderAndRandUsesEot()
    {
        Assert.Equal(["apgd-ce", "apgd-t", "fab-t", "square"], AutoAttack.Standard(Threat.Linf(0.1)).Select(a => a.Name));
        Assert.Equal(["apgd-ce", "apgd-dlr"], AutoAttack.Rand(Threat.Linf(0.1)).Select(a => a.Name));
        Assert.Equal(["apgd-ce", "apgd-t", "fab-t", "square"], AutoAttack.Standard(Threat.L2(0.5)).Select(a => a.Name));
        Assert.Equal(["apgd-ce", "apgd-t", "fab-t", "square"], AutoAttack.Standard(Threat.L1(10)).Select(a => a.Name));
        Assert.Equal(["apgd-ce", "apgd-dlr"], AutoAttack.Rand(Threat.L1(10)).Select(a => a.Name));
        var e = Assert.Throws<ArgumentException>(() => AutoAttack.Custom(["apgd-xx"], Threat.Linf(0.1)));
        Assert.Contains("unknown attack 'apgd-xx'", e.Message);
    }

    [Fact]
    public void EveryAttackOfTheSuiteBreaksAnUndefendedModelAtLargeEpsAndStaysInTheBall()
    {
        var model = TrainedMlp();
        using var data = Bands(60, 42);
        var threat = Threat.Linf(0.5);
        foreach (var attack in AutoAttack.Custom(["apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "pgd"], threat, Budget with { SquareQueries = 500 }))
        {
            using var scope = NewDisposeScope();
            using var generator = new Generator(7);
            var xAdv = attack.Run(model, data.Images, data.Labels, generator);
            var robust = model(xAdv).argmax(1).eq(data.Labels).to_type(ScalarType.Float32).mean().item<float>();
            Assert.True(robust <= 0.05, $"{attack.Name}: robust accuracy {robust} at eps 0.5");
            Assert.True(Projection.NormOf(xAdv - data.Images, Norm.Linf).max().item<float>() <= 0.5 + 1e-6, attack.Name);
            Assert.True(xAdv.min().item<float>() >= 0 && xAdv.max().item<float>() <= 1, attack.Name);
        }
    }

    [Fact]
    public void ACurveMayRiseWithinItsToleranceBetweenIndependentRunsButNotBeyond()
    {
        static CurvePoint[] Curve(params long[] correct) => correct.Select((c, i) => new CurvePoint(i, Accuracy.Of(c, 200))).ToArray();
        Assert.True(Diagnostics.NonIncreasing(Curve(151, 140, 141)));          // +1 of 200 = 0.5 points: noise
        Assert.True(Diagnostics.NonIncreasing(Curve(151, 140, 142)));          // +2 of 200 = 1.0 point: the tolerance
        Assert.False(Diagnostics.NonIncreasing(Curve(151, 140, 143)));         // +3 of 200 = 1.5 points: flagged
        Assert.False(Diagnostics.NonIncreasing(Curve(151, 140, 141), tolerancePoints: 0));
        Assert.True(Diagnostics.NonIncreasing(Curve(151, 140, 140), tolerancePoints: 0));
    }
}
