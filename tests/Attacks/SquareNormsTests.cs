using Carso.Attacks;
using TorchSharp;
using static TorchSharp.torch;
using static Carso.Tests.Attacks.NormFixtures;

namespace Carso.Tests.Attacks;

/// <summary>The L2 and L1 Square attacks (<see cref="SquareL2"/>, <see cref="SquareL1"/>).</summary>
public class SquareNormsTests
{
    [Fact]
    public void ThePseudoGaussianWindowsHaveUnitNormAndOppositeHalves()
    {
        foreach (var norm in new[] { Norm.L2, Norm.L1 })
            foreach (var side in new[] { 1, 3, 4, 5, 8 })
            {
                using var scope = NewDisposeScope();
                var eta = SquareWindows.PseudoGaussian(side, norm);
                Assert.Equal(new long[] { side, side }, eta.shape);
                var total = Projection.NormOf(eta.view(1, -1), norm).item<double>();
                Assert.True(Math.Abs(total - 1) < 1e-12, $"{norm} side {side}: norm {total}");
                var top = side / 2;
                Assert.True(eta.narrow(0, 0, top).ge(0).all().item<bool>() && eta.narrow(0, top, side - top).lt(0).all().item<bool>(),
                    $"{norm} side {side}: the top half is positive, the bottom negative");
                // Odd sides (every window the search draws): centred bumps, symmetric left-right.
                if (side % 2 == 1) Assert.True((eta - eta.flip(1)).abs().max().item<double>() < 1e-12, $"{norm} side {side}: not symmetric");
            }
        // The 3x3 L2 window by hand: top row [1/4, 5/4, 1/4] (the 1x1 centre plus the 3-wide ring at 1/2^2), unit L2; bottom
        // two rows the 2x3 block [[1/4, 1/4, 1/4], [1/4, 5/4, 1/4]] (its centre is the cell (rows / 2, cols / 2) = (1, 1), as in
        // the reference, and the ring around it is cut by the block), unit L2, negated.
        var top3 = new[] { 0.25, 1.25, 0.25 };
        var bottom3 = new[] { 0.25, 0.25, 0.25, 0.25, 1.25, 0.25 };
        double[] Unit(double[] v) { var n = Math.Sqrt(v.Sum(t => t * t)); return v.Select(t => t / n).ToArray(); }
        var expected = Unit([.. Unit(top3), .. Unit(bottom3).Select(t => -t)]);
        var three = SquareWindows.PseudoGaussian(3, Norm.L2).data<double>().ToArray();
        for (var i = 0; i < 9; i++) Assert.True(Math.Abs(three[i] - expected[i]) < 1e-12, $"cell {i}: {three[i]} vs {expected[i]}");
        Assert.Equal(3, SquareWindows.SideLength(0.8 / 512, 8, 8));
        Assert.Equal(7, SquareWindows.SideLength(0.8, 8, 8));
        Assert.Equal(5, SquareWindows.SideLength(0.8, 5, 5));
        Assert.Equal(25, SquareWindows.SideLength(0.8, 28, 28));
    }

    [Theory]
    [InlineData(Norm.L2, 1.0)]
    [InlineData(Norm.L1, 4.0)]
    public void PointsStayInTheBallAndTheBoxAndUnfooledPointsAreTheOriginal(Norm norm, double eps)
    {
        using var scope = NewDisposeScope();
        var (x, y) = Bands(32, 41);
        using var generator = new Generator(1);
        using var result = Square.Run(Mlp, x, y, new SquareSettings(new Threat(norm, eps), NQueries: 300), generator);
        AssertInBallAndBox(result.XAdv, x, norm, eps, $"{norm}");
        var fooled = Predict(Mlp, result.XAdv).ne(y);
        Assert.True(fooled.eq(result.Fooled).all().item<bool>(), "Fooled reports the points misclassified at XAdv");
        var unchanged = result.XAdv.eq(x).flatten(1).all(1);
        Assert.True(fooled.logical_or(unchanged).all().item<bool>(), "a point is neither fooled nor the original");
        Assert.True(result.Queries.le(300).all().item<bool>());
    }

    [Theory]
    [InlineData(Norm.L2, 4.0)]
    [InlineData(Norm.L1, 16.0)]
    public void AtALargeEpsTheUndefendedModelHasNoRobustAccuracyLeft(Norm norm, double eps)
    {
        using var scope = NewDisposeScope();
        var (x, y) = Bands(64, 42);
        using var generator = new Generator(2);
        var monitor = new AttackMonitor();
        var xAdv = Square.Attack(Mlp, x, y, new SquareSettings(new Threat(norm, eps), NQueries: 1000), generator, monitor);
        AssertInBallAndBox(xAdv, x, norm, eps, $"{norm}");
        Assert.True(RobustAccuracy(Mlp, xAdv, y) <= 0.05, $"{norm}: robust accuracy {RobustAccuracy(Mlp, xAdv, y)} at eps {eps}");
        Assert.Equal(0, monitor.NonFiniteLogits);
    }

    /// <summary>
    /// Square is a random search over window patterns, not a minimal-norm attack: on this linear model (64 pixels, a random
    /// normal v) it does not come within 3% of the closed-form minimal perturbation. Measured with 5000 queries on these 16
    /// points (fooled at factor x the minimum): L2 0 at 1.03x, 1.1x and 1.25x, 2 at 1.5x, 14 at 2x, 16 at 3x; L1 0 up to 1.5x,
    /// 15 at 2x, 16 at 3x. The L1 optimum moves one pixel, which the windows of side &gt;= 3 cannot isolate; the L2 optimum is
    /// the direction of v, which sums of the fixed patterns reach only roughly. The test pins 3x and checks nothing is fooled
    /// below the minimum (the budget is respected).
    /// </summary>
    [Theory]
    [InlineData(Norm.L2)]
    [InlineData(Norm.L1)]
    public void OnALinearModelSquareFoolsEveryPointAtThreeTimesTheMinimalPerturbationAndNoneBelowIt(Norm norm)
    {
        using var scope = NewDisposeScope();
        var problem = Linear.Create(16, 43);
        var minimal = problem.MinimalNorm(norm);
        using var generator = new Generator(3);
        var xAdv = Square.Attack(problem.Model, problem.X, problem.Y, new SquareSettings(new Threat(norm, 3 * minimal)), generator);
        AssertInBallAndBox(xAdv, problem.X, norm, 3 * minimal);
        var fooled = Predict(problem.Model, xAdv).ne(problem.Y).sum().item<long>();
        Assert.True(fooled == 16, $"{norm}: {fooled} of 16 points fooled at 3x the minimal perturbation {minimal}");
        var below = Square.Attack(problem.Model, problem.X, problem.Y, new SquareSettings(new Threat(norm, 0.97 * minimal), NQueries: 500), generator);
        Assert.True(Predict(problem.Model, below).eq(problem.Y).all().item<bool>(), $"{norm}: a point fooled below the minimal perturbation");
    }

    [Theory]
    [InlineData(Norm.L2)]
    [InlineData(Norm.L1)]
    public void TheSameGeneratorSeedGivesTheSamePoints(Norm norm)
    {
        using var scope = NewDisposeScope();
        var (x, y) = Bands(16, 44);
        Tensor Run(ulong seed)
        {
            using var generator = new Generator(seed);
            // Eps where (nearly) every point is fooled, each by its own random search.
            return Square.Attack(Mlp, x, y, new SquareSettings(new Threat(norm, norm == Norm.L2 ? 3 : 16), NQueries: 300), generator);
        }
        Assert.True(Run(5).eq(Run(5)).all().item<bool>());
        Assert.False(Run(5).eq(Run(6)).all().item<bool>());
    }

    [Fact]
    public void ThreeChannelImagesWithAnOddSizeWork()
    {
        // 3 x 11 x 11: tiles of side 2 from offset 0 (the last column of tiles is cut at the border), windows of odd side.
        using var scope = NewDisposeScope();
        using var generator = new Generator(8);
        var w = randn([3 * 11 * 11, 5], generator: generator);
        Func<Tensor, Tensor> model = images => images.flatten(1).matmul(w);
        var x = rand([6, 3, 11, 11], generator: generator);
        var y = Predict(model, x);
        foreach (var (norm, eps) in new[] { (Norm.L2, 2.0), (Norm.L1, 8.0) })
        {
            var xAdv = Square.Attack(model, x, y, new SquareSettings(new Threat(norm, eps), NQueries: 200), generator);
            AssertInBallAndBox(xAdv, x, norm, eps, $"{norm}");
        }
    }

    [Theory]
    [InlineData(Norm.L2, 0.1)]
    [InlineData(Norm.L1, 0.3)]
    public void TensorsDoNotPileUpOverTheIterations(Norm norm, double eps)
    {
        using var scope = NewDisposeScope();
        var (x, y) = Bands(16, 45);
        var mlp = Mlp;                                                  // trained (and its weights live) before counting
        var live = new List<long>();
        Tensor Model(Tensor input)
        {
            live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
            return mlp(input);
        }
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using var generator = new Generator(3);
        using (var attack = NewDisposeScope())
            _ = Square.Attack(Model, x, y, new SquareSettings(new Threat(norm, eps), NQueries: 60), generator);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        Assert.Equal(61, live.Count);                                   // the clean pass, the start, 59 iterations (none fooled)
        var steady = live.Skip(4).ToArray();
        Assert.True(steady.Max() - steady.Min() <= 4, $"live tensors grow over the iterations: {string.Join(" ", live)}");
    }
}
