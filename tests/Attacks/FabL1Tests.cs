using Carso.Attacks;
using static TorchSharp.torch;
using static Carso.Tests.Attacks.NormFixtures;

namespace Carso.Tests.Attacks;

public class FabL1Tests
{
    [Fact]
    public void TheL1ProjectionWithoutABindingBoundMovesOnlyTheLargestWeight()
    {
        using var scope = NewDisposeScope();
        var t = full([1, 4], 0.5, dtype: ScalarType.Float64);
        var w = tensor(new double[] { 1, -3, 2, 0.5 }).view(1, 4);
        var b = tensor(new double[] { (w * t).sum().item<double>() + 0.6 });
        var d = Fab.ProjectionL1(t, w, b);
        Assert.Equal(new double[] { 0, -0.2, 0, 0 }, d.data<double>().ToArray().Select(v => Math.Round(v, 12)));
        // Room 0.1 on the largest weight: it goes to its bound, the next one covers the rest.
        t[0, 1] = 0.1;
        b = tensor(new double[] { (w * t).sum().item<double>() + 0.6 });
        d = Fab.ProjectionL1(t, w, b);
        Assert.Equal(new double[] { 0, -0.1, 0.15, 0 }, d.data<double>().ToArray().Select(v => Math.Round(v, 12)));
    }

    [Theory]
    [InlineData(Norm.L1)]
    [InlineData(Norm.L2)]
    public void OnALinearModelFabFindsTheClosedFormMinimalPerturbationWithin3Percent(Norm norm)
    {
        using var scope = NewDisposeScope();
        var problem = Linear.Create(16, 31);
        var minimal = problem.MinimalNorm(norm);
        var xAdv = Fab.Attack(problem.Model, problem.X, problem.Y, new FabSettings(new Threat(norm, 100)));
        Assert.True(Predict(problem.Model, xAdv).ne(problem.Y).all().item<bool>(), "FAB fooled every point");
        var ratio = Projection.NormOf(xAdv - problem.X, norm) / minimal;
        Assert.True(ratio.min().item<float>() >= 0.9999, $"below the true minimum: {ratio.min().item<float>()}");
        Assert.True(ratio.max().item<float>() <= 1.03, $"more than 3% above the true minimum: {ratio.max().item<float>()}");
    }

    [Fact]
    public void FabL1StaysInTheBallAndTheBoxAndBreaksTheUndefendedModelAtALargeEps()
    {
        using var scope = NewDisposeScope();
        var (x, y) = Bands(48, 32);
        var monitor = new AttackMonitor();
        var small = Fab.Attack(Mlp, x, y, new FabSettings(Threat.L1(3), NIter: 30, NTargetClasses: 3), monitor: monitor);
        AssertInBallAndBox(small, x, Norm.L1, 3, "FAB L1 eps 3");
        var fooledOrUnchanged = Predict(Mlp, small).ne(y).logical_or(small.eq(x).flatten(1).all(1));
        Assert.True(fooledOrUnchanged.all().item<bool>(), "a point is neither fooled nor the original");
        var large = Fab.Attack(Mlp, x, y, new FabSettings(Threat.L1(15), NTargetClasses: 3), monitor: monitor);
        AssertInBallAndBox(large, x, Norm.L1, 15, "FAB L1 eps 15");
        Assert.True(RobustAccuracy(Mlp, large, y) <= 0.05, $"robust accuracy {RobustAccuracy(Mlp, large, y)} at L1 eps 15");
        Assert.True(monitor.GradientEvaluations > 0);
        Assert.Equal(0, monitor.NonFiniteGradients);
    }
}
