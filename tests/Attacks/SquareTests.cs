using Carso.Attacks;
using static TorchSharp.torch;

namespace Carso.Tests.Attacks;

public class SquareTests
{
    /// <summary>
    /// A separable problem: class k images (1x8x8) are bright (0.6 + U(0, 0.4)) in their k-th band of two rows and
    /// dark (U(0, 0.4)) elsewhere; 4 classes. Labels int64 [n], images [n, 1, 8, 8] in [0, 1].
    /// </summary>
    static (Tensor X, Tensor Y) Bands(int n, ulong seed)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(seed);
        var labels = randint(0, 4, [n], generator: generator, dtype: ScalarType.Int64);
        var rows = arange(8).div(2, rounding_mode: RoundingMode.floor).view(1, 1, 8, 1);
        var images = rows.eq(labels.view(n, 1, 1, 1)).to_type(ScalarType.Float32).expand(n, 1, 8, 8) * 0.6f
                     + rand([n, 1, 8, 8], generator: generator) * 0.4f;
        return (images.contiguous().MoveToOuterDisposeScope(), labels.MoveToOuterDisposeScope());
    }

    /// <summary>An MLP 64 -> 32 -> 4, optionally behind an input quantiser round(4 x) / 4 (zero input gradient a.e.).</summary>
    sealed class Mlp : nn.Module<Tensor, Tensor>
    {
        readonly TorchSharp.Modules.Flatten flatten = nn.Flatten();
        readonly TorchSharp.Modules.Linear fc1 = nn.Linear(64, 32), fc2 = nn.Linear(32, 4);
        readonly TorchSharp.Modules.ReLU relu = nn.ReLU();
        readonly bool quantise;
        public Mlp(bool quantise) : base("mlp") { this.quantise = quantise; RegisterComponents(); }

        public override Tensor forward(Tensor x)
        {
            var input = quantise ? (x * 4).round() / 4 : x;
            return fc2.call(relu.call(fc1.call(flatten.call(input))));
        }
    }

    /// <summary>Trains an MLP with Adam on 512 band images for 300 full-batch steps; returns it in eval mode.</summary>
    static Mlp Train(bool quantise)
    {
        manual_seed(7);
        var model = new Mlp(quantise);
        var (x, y) = Bands(512, 1);
        using var optimizer = optim.Adam(model.parameters(), 0.01);
        for (var step = 0; step < 300; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            nn.functional.cross_entropy(model.call(x), y).backward();
            optimizer.step();
        }
        x.Dispose();
        y.Dispose();
        model.eval();
        return model;
    }

    static readonly Lazy<Mlp> Plain = new(() => Train(quantise: false));
    static readonly Lazy<Mlp> Quantised = new(() => Train(quantise: true));

    static double Accuracy(Func<Tensor, Tensor> model, Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return model(x).argmax(1).eq(y).to_type(ScalarType.Float64).mean().item<double>();
    }

    static void AssertInBallAndBox(Tensor xAdv, Tensor x, double eps)
    {
        using var scope = NewDisposeScope();
        Assert.Equal(x.shape, xAdv.shape);
        Assert.True(xAdv.isfinite().all().item<bool>(), "xAdv has non-finite values");
        var linf = (xAdv - x).abs().max().item<float>();
        Assert.True(linf <= eps + 1e-6, $"||xAdv - x||_inf = {linf} > eps = {eps}");
        Assert.True(xAdv.min().item<float>() >= 0 && xAdv.max().item<float>() <= 1, "xAdv leaves [0, 1]");
    }

    [Fact]
    public void PSelectionFollowsTheScheduleAtItsBoundaries()
    {
        const double p = 0.8;
        (int Iteration, double Divisor)[] expected =
        [
            (0, 1), (10, 1), (11, 2), (50, 2), (51, 4), (200, 4), (201, 8), (500, 8), (501, 16), (1000, 16),
            (1001, 32), (2000, 32), (2001, 64), (4000, 64), (4001, 128), (6000, 128), (6001, 256), (8000, 256),
            (8001, 512), (9000, 512),
        ];
        foreach (var (iteration, divisor) in expected)
            Assert.Equal(p / divisor, Square.PSelection(p, iteration));
    }

    [Fact]
    public void SideLengthRoundsHalvesToEvenAndStaysInsideTheImage()
    {
        Assert.Equal(25, Square.SideLength(0.8, 28, 28));        // sqrt(627.2) = 25.04
        Assert.Equal(29, Square.SideLength(0.8, 32, 32));        // sqrt(819.2) = 28.62
        Assert.Equal(2, Square.SideLength(0.25, 5, 5));          // sqrt(6.25) = 2.5 -> 2, as Python's round
        Assert.Equal(4, Square.SideLength(0.25, 7, 7));          // sqrt(12.25) = 3.5 -> 4
        Assert.Equal(1, Square.SideLength(0.8 / 512, 28, 28));   // sqrt(1.225) -> 1
        Assert.Equal(1, Square.SideLength(0.8 / 512, 4, 4));     // sqrt(0.025) -> 0 -> at least 1
        Assert.Equal(4, Square.SideLength(0.8, 4, 100));         // sqrt(320) = 17.9 -> at most min(H, W)
    }

    [Fact]
    public void InvalidSettingsAreRejectedNamingTheSetting()
    {
        Func<Tensor, Tensor> model = images => zeros(images.shape[0], 4);
        using var x = rand(2, 1, 8, 8);
        using var y = zeros(2, ScalarType.Int64);
        var eps = Assert.Throws<ArgumentOutOfRangeException>(() => Square.Attack(model, x, y, new SquareSettings(new Threat(Norm.Linf, -0.1))));
        Assert.Equal("Eps", eps.ParamName);
        var nQueries = Assert.Throws<ArgumentOutOfRangeException>(() => Square.Attack(model, x, y, new SquareSettings(Threat.Linf(0.1), NQueries: 0)));
        Assert.Equal("NQueries", nQueries.ParamName);
        var pInit = Assert.Throws<ArgumentOutOfRangeException>(() => Square.Attack(model, x, y, new SquareSettings(Threat.Linf(0.1), PInit: 0)));
        Assert.Equal("PInit", pInit.ParamName);
        var restarts = Assert.Throws<ArgumentOutOfRangeException>(() => Square.Attack(model, x, y, new SquareSettings(Threat.Linf(0.1), NRestarts: 0)));
        Assert.Equal("NRestarts", restarts.ParamName);
        // L2 and L1 are implemented (SquareNormsTests); an undefined norm is rejected by name.
        Assert.Equal("Norm", Assert.Throws<ArgumentOutOfRangeException>(() => Square.Attack(model, x, y, new SquareSettings(new Threat((Norm)7, 0.5)))).ParamName);
    }

    [Fact]
    public void EveryPointStaysInTheBallAndTheBox()
    {
        var model = Plain.Value;
        var (x, y) = Bands(64, 2);
        using var generator = new Generator(3);
        // Pixels at 0 and 1 exercise the box clipping; eps 0.3 moves many pixels past it.
        using var xEdges = x.clone();
        xEdges[.., .., 0].fill_(0);
        xEdges[.., .., -1].fill_(1);
        using var xAdv = Square.Attack(model.call, xEdges, y, new SquareSettings(Threat.Linf(0.3), NQueries: 200), generator);
        AssertInBallAndBox(xAdv, xEdges, 0.3);

        // Non-square images with 3 channels: every window fits, whatever the schedule.
        manual_seed(4);
        var linear = nn.Linear(3 * 5 * 11, 3);
        using var wide = rand(16, 3, 5, 11);
        using var wideLabels = zeros(16, ScalarType.Int64);
        using var wideAdv = Square.Attack(images => linear.call(images.flatten(1)), wide, wideLabels,
            new SquareSettings(Threat.Linf(0.05), NQueries: 100), generator);
        AssertInBallAndBox(wideAdv, wide, 0.05);
        x.Dispose();
        y.Dispose();
    }

    [Fact]
    public void QueriesNeverExceedTheBudgetAndAreCountedHonestly()
    {
        var model = Plain.Value;
        var (x, y) = Bands(32, 5);
        y[0] = (y[0] + 1) % 4;  // a label the model gets wrong: never attacked, 0 queries
        long rowsSeen = 0;
        Tensor Counting(Tensor images)
        {
            rowsSeen += images.shape[0];
            return model.call(images);
        }

        const int budget = 60;
        using var generator = new Generator(6);
        // A tiny eps: most points are never fooled and use the whole budget.
        using var result = Square.Run(Counting, x, y, new SquareSettings(Threat.Linf(0.002), NQueries: budget), generator);
        var queries = result.Queries.data<long>().ToArray();
        Assert.All(queries, q => Assert.InRange(q, 0, budget));
        Assert.Equal(0, queries[0]);
        Assert.True(result.Fooled[0].item<bool>(), "a misclassified point counts as fooled");
        Assert.Contains(budget, queries);
        // Every forward pass the attack made is accounted for: one clean pass per point plus the counted queries.
        Assert.Equal(x.shape[0] + queries.Sum(), rowsSeen);

        // Restarts: at most NQueries each.
        rowsSeen = 0;
        using var restarted = Square.Run(Counting, x, y, new SquareSettings(Threat.Linf(0.002), NQueries: budget, NRestarts: 2), generator);
        var restartedQueries = restarted.Queries.data<long>().ToArray();
        Assert.All(restartedQueries, q => Assert.InRange(q, 0, 2 * budget));
        Assert.Equal(x.shape[0] + restartedQueries.Sum(), rowsSeen);
        x.Dispose();
        y.Dispose();
    }

    [Fact]
    public void FoolsAnUndefendedModelAtALargeEps()
    {
        var model = Plain.Value;
        var (x, y) = Bands(128, 8);
        Assert.True(Accuracy(model.call, x, y) >= 0.95, "the undefended model did not learn the bands");
        using var generator = new Generator(9);
        var monitor = new AttackMonitor();
        using var result = Square.Run(model.call, x, y, new SquareSettings(Threat.Linf(0.5), NQueries: 300), generator, monitor);
        AssertInBallAndBox(result.XAdv, x, 0.5);
        var robust = Accuracy(model.call, result.XAdv, y);
        Assert.True(robust <= 0.02, $"robust accuracy under Square at eps 0.5 is {robust:P1}, expected ~0");
        // Fooled agrees with a fresh evaluation of xAdv.
        using (no_grad())
            Assert.True(model.call(result.XAdv).argmax(1).ne(y).eq(result.Fooled).all().item<bool>());
        Assert.Equal(0, monitor.NonFiniteLogits);
        x.Dispose();
        y.Dispose();
    }

    /// <summary>
    /// The key test. Quantising the input (round(4 x) / 4) makes the input gradient exactly zero almost
    /// everywhere: PGD has no direction to follow and leaves the accuracy nearly untouched, while Square,
    /// which only reads the logits, breaks the same model at the same eps.
    /// </summary>
    [Fact]
    public void SquareBreaksAGradientMaskingModelThatPgdCannot()
    {
        var model = Quantised.Value;
        var (x, y) = Bands(128, 10);
        const double eps = 0.4;
        var clean = Accuracy(model.call, x, y);
        Assert.True(clean >= 0.95, $"the quantised model did not learn the bands (clean accuracy {clean:P1})");
        using (var grad = Pgd.InputGradient(model.call, x, y))
            Assert.True(grad.eq(0).all().item<bool>(), "the quantiser should make every input gradient exactly zero");

        using var pgdGenerator = new Generator(11);
        using var pgdAdv = Pgd.Attack(model.call, x, y, new PgdSettings(Threat.Linf(eps), Steps: 20), pgdGenerator);
        var pgd = Accuracy(model.call, pgdAdv, y);

        using var squareGenerator = new Generator(12);
        using var squareAdv = Square.Attack(model.call, x, y, new SquareSettings(Threat.Linf(eps), NQueries: 300), squareGenerator);
        AssertInBallAndBox(squareAdv, x, eps);
        var square = Accuracy(model.call, squareAdv, y);

        Assert.True(pgd >= clean - 0.15, $"PGD should barely move a model without gradients: clean {clean:P1}, PGD {pgd:P1}");
        Assert.True(square <= pgd - 0.5, $"Square should break the gradient-masking model: PGD {pgd:P1}, Square {square:P1}");
        x.Dispose();
        y.Dispose();
    }

    [Fact]
    public void TheSameSeedGivesTheSameResult()
    {
        var model = Plain.Value;
        var (x, y) = Bands(32, 13);
        var settings = new SquareSettings(Threat.Linf(0.35), NQueries: 100, NRestarts: 2);  // fools some points, not all
        SquareResult RunWith(ulong seed)
        {
            using var generator = new Generator(seed);
            return Square.Run(model.call, x, y, settings, generator);
        }
        using var a = RunWith(21);
        using var b = RunWith(21);
        using var c = RunWith(22);
        static bool Same(Tensor u, Tensor v) => u.eq(v).all().item<bool>();
        Assert.True(a.Fooled.any().item<bool>(), "the run should fool some points for the seeds to matter");
        Assert.True(Same(a.XAdv, b.XAdv), "same seed, different xAdv");
        Assert.True(Same(a.Queries, b.Queries), "same seed, different query counts");
        Assert.False(Same(a.XAdv, c.XAdv) && Same(a.Queries, c.Queries), "a different seed should give a different run");
        x.Dispose();
        y.Dispose();
    }
}
