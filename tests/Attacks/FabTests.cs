using Carso.Attacks;
using static TorchSharp.torch;

namespace Carso.Tests.Attacks;

public class FabTests
{
    // ---------- models ----------

    /// <summary>
    /// A linear "binary-ish" model on 1x8x8: class 0 has logit 0, class 1 logit v·x + c, class 2 a constant -100
    /// that never wins. The decision boundary between 0 and 1 is the hyperplane v·x + c = 0, so the minimal
    /// distance of x to it is |v·x + c| / ||v||_2 (L2) and |v·x + c| / ||v||_1 (Linf) when no box bound binds.
    /// </summary>
    sealed record LinearProblem(Tensor V, double C, Tensor X, Tensor Y)
    {
        public Func<Tensor, Tensor> Model => x =>
        {
            var f1 = x.flatten(1).matmul(V) + C;
            return stack([zeros_like(f1), f1, full_like(f1, -100.0)], 1);
        };

        /// <summary>|v·x + c| [B]: the margin between the two live classes.</summary>
        public Tensor Margin => (X.flatten(1).matmul(V) + C).abs();

        public static LinearProblem Create(int n, ulong seed)
        {
            using var generator = new Generator(seed);
            var v = randn([64], generator: generator);
            var c = -0.5 * v.sum().item<float>();                    // the boundary passes through the grey image
            var x = rand([n, 1, 8, 8], generator: generator) * 0.4f + 0.3f;  // [0.3, 0.7]: room on both sides
            var problem = new LinearProblem(v, c, x, empty(0, dtype: ScalarType.Int64));
            using (no_grad())
                return problem with { Y = problem.Model(x).argmax(1) };
        }
    }

    /// <summary>Four classes on 1x8x8: class k is bright in its horizontal band of two rows.</summary>
    static (Tensor X, Tensor Y) Bands(int n, ulong seed)
    {
        using var generator = new Generator(seed);
        var labels = randint(0, 4, [n], generator: generator, dtype: ScalarType.Int64);
        var rows = arange(8).div(2, rounding_mode: RoundingMode.floor).view(1, 1, 8, 1);
        var images = rows.eq(labels.view(n, 1, 1, 1)).to_type(ScalarType.Float32).expand(n, 1, 8, 8) * 0.6f
                     + rand([n, 1, 8, 8], generator: generator) * 0.4f;
        return (images.contiguous(), labels);
    }

    static readonly Lazy<Func<Tensor, Tensor>> TrainedMlp = new(TrainMlp);

    /// <summary>
    /// A 64-32-4 ReLU MLP trained for a few hundred full-batch gradient steps on Bands (undefended). Weights come from
    /// an explicit generator, not the global one, so tests running in parallel cannot disturb it.
    /// </summary>
    static Func<Tensor, Tensor> TrainMlp()
    {
        using var generator = new Generator(7);
        var w1 = (randn([64, 32], generator: generator) * 0.125f).requires_grad_(true);
        var b1 = zeros(32).requires_grad_(true);
        var w2 = (randn([32, 4], generator: generator) * 0.18f).requires_grad_(true);
        var b2 = zeros(4).requires_grad_(true);
        Tensor Forward(Tensor x) => nn.functional.relu(x.flatten(1).matmul(w1) + b1).matmul(w2) + b2;
        var (x, y) = Bands(512, 1);
        Tensor[] parameters = [w1, b1, w2, b2];
        for (var step = 0; step < 300; step++)
        {
            using var scope = NewDisposeScope();
            var loss = nn.functional.cross_entropy(Forward(x), y);
            var grads = autograd.grad([loss], parameters);
            using (no_grad())
                for (var i = 0; i < parameters.Length; i++) parameters[i].sub_(0.5 * grads[i]);
        }
        // The model outlives the test that first asks for it: keep its weights out of that test's dispose scope.
        foreach (var p in parameters) p.requires_grad_(false).DetachFromDisposeScope();
        return Forward;
    }

    static Tensor Predict(Func<Tensor, Tensor> model, Tensor x)
    {
        using (no_grad()) return model(x).argmax(1);
    }

    static Tensor Norms(Tensor xAdv, Tensor x, Norm norm) => Projection.NormOf(xAdv - x, norm);

    // ---------- hyperplane projections ----------

    [Fact]
    public void ProjectionsWithoutABindingBoundAreTheClosedForms()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(3);
        var t = (rand([5, 16], generator: generator, dtype: ScalarType.Float64) * 0.2 + 0.4);
        var w = randn([5, 16], generator: generator, dtype: ScalarType.Float64);
        var c = randn([5], generator: generator, dtype: ScalarType.Float64) * 0.2;   // b - w·t, both signs
        var b = (w * t).sum(1) + c;

        var l2 = Fab.ProjectionL2(t, w, b);
        var l2Closed = w * (c / w.square().sum(1)).unsqueeze(1);
        Assert.True(l2.allclose(l2Closed, rtol: 1e-9, atol: 1e-12));

        var linf = Fab.ProjectionLinf(t, w, b);
        var linfClosed = w.sign() * (c / w.abs().sum(1)).unsqueeze(1);
        Assert.True(linf.allclose(linfClosed, rtol: 1e-9, atol: 1e-12));

        foreach (var d in new[] { l2, linf })
        {
            Assert.True(((w * (t + d)).sum(1) - b).abs().max().item<double>() < 1e-12);   // on the hyperplane
            Assert.True((t + d).min().item<double>() >= 0 && (t + d).max().item<double>() <= 1);  // precondition: no bound binds
        }
    }

    public static TheoryData<double[], double[], double, double[], double[]> HandCases => new()
    {
        // t, w, b, expected L2 d, expected Linf d
        // No bound binds.
        { [0.5, 0.5], [1, 1], 1.2, [0.1, 0.1], [0.1, 0.1] },
        // The first coordinate has room 0.1 only: it stops at 1, the second covers the rest.
        { [0.9, 0.5], [1, 1], 1.8, [0.1, 0.3], [0.1, 0.3] },
        // The same downwards (c < 0): the first coordinate stops at 0.
        { [0.1, 0.5], [1, 1], 0.2, [-0.1, -0.3], [-0.1, -0.3] },
        // Unequal weights: L2 moves along w until the first coordinate binds (lambda = 0.1); Linf solves 2 min(d, 0.1) + d = 0.3.
        { [0.9, 0.5], [2, 1], 2.6, [0.1, 0.1], [0.1, 0.1] },
        // L2 and Linf differ: L2 d = w (0.3 / 5) = [0.12, 0.06]; Linf d = sign(w) 0.3 / 3.
        { [0.5, 0.5], [2, 1], 1.8, [0.12, 0.06], [0.1, 0.1] },
        // The hyperplane misses the box: every coordinate goes to its bound towards it.
        { [0.9, 0.5], [1, 1], 2.5, [0.1, 0.5], [0.1, 0.5] },
        { [0.9, 0.5], [1, -1], -3, [-0.9, 0.5], [-0.9, 0.5] },
        // A zero weight never moves its coordinate.
        { [0.5, 0.5, 0.5], [1, 0, 1], 1.2, [0.1, 0, 0.1], [0.1, 0, 0.1] },
        // Already on the hyperplane.
        { [0.3, 0.7], [1, 2], 1.7, [0, 0], [0, 0] },
    };

    [Theory]
    [MemberData(nameof(HandCases))]
    public void ProjectionsMatchHandComputedCasesAndRespectTheBox(double[] t, double[] w, double b, double[] l2, double[] linf)
    {
        using var scope = NewDisposeScope();
        var (tt, wt, bt) = (tensor(t).unsqueeze(0), tensor(w).unsqueeze(0), tensor(new[] { b }));
        Assert.Equal(l2, Fab.ProjectionL2(tt, wt, bt)[0].data<double>().ToArray(), new Tolerance(1e-12));
        Assert.Equal(linf, Fab.ProjectionLinf(tt, wt, bt)[0].data<double>().ToArray(), new Tolerance(1e-12));
    }

    sealed class Tolerance(double tol) : IEqualityComparer<double>
    {
        public bool Equals(double a, double b) => Math.Abs(a - b) <= tol;
        public int GetHashCode(double x) => 0;
    }

    /// <summary>
    /// Random feasible cases in 3 dimensions, many with binding bounds, checked against a brute force over the
    /// plane: a fine grid of (z1, z2) with z3 solved from the hyperplane (z3 the coordinate of largest |w|). Every
    /// grid point inside the box is feasible, so the projection may not be longer than any of them; and the grid is
    /// fine enough to come within 0.01 of the optimum.
    /// </summary>
    [Theory]
    [InlineData(Norm.L2)]
    [InlineData(Norm.Linf)]
    [InlineData(Norm.L1)]
    public void ProjectionsAreNoLongerThanAnyFeasiblePointOnABruteForceGrid(Norm norm)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(11);
        const int cases = 24;
        var t = rand([cases, 3], generator: generator, dtype: ScalarType.Float64);
        var w = randn([cases, 3], generator: generator, dtype: ScalarType.Float64);
        w = w.gather(1, w.abs().argsort(1));                                   // largest |w| last
        var target = rand([cases, 3], generator: generator, dtype: ScalarType.Float64);
        var b = (w * target).sum(1);                                           // feasible: target is on it, in the box

        var d = Fab.HyperplaneProjection(t, w, b, norm);
        var projected = t + d;
        Assert.True(((w * projected).sum(1) - b).abs().max().item<double>() < 1e-12);
        Assert.True(projected.min().item<double>() >= -1e-12 && projected.max().item<double>() <= 1 + 1e-12);
        var lengths = Projection.NormOf(d, norm);

        var grid = linspace(0, 1, 501, dtype: ScalarType.Float64);
        var z1 = grid.view(-1, 1).expand(501, 501).reshape(-1);
        var z2 = grid.view(1, -1).expand(501, 501).reshape(-1);
        var binding = 0;
        for (var i = 0; i < cases; i++)
        {
            using var inner = NewDisposeScope();
            var (wi, ti, bi) = (w[i], t[i], b[i]);
            var z3 = (bi - wi[0] * z1 - wi[1] * z2) / wi[2];
            var inside = z3.ge(0).logical_and(z3.le(1));
            var points = stack([z1, z2, z3], 1).index_select(0, inside.nonzero().squeeze(1));
            var best = Projection.NormOf(points - ti, norm).min().item<double>();
            var length = lengths[i].item<double>();
            Assert.True(length <= best + 1e-12, $"case {i}: projection {length} longer than the feasible grid point {best}");
            Assert.True(length >= best - 1e-2, $"case {i}: projection {length} much shorter than the grid optimum {best}");
            if (projected[i].lt(1e-9).logical_or(projected[i].gt(1 - 1e-9)).any().item<bool>()) binding++;
        }
        Assert.True(binding >= 3, $"only {binding} cases had a binding bound; the test would not exercise the box");
    }

    // ---------- the attack ----------

    [Theory]
    [InlineData(Norm.L2)]
    [InlineData(Norm.Linf)]
    public void OnALinearModelFabFindsTheMinimalDistanceToTheBoundary(Norm norm)
    {
        using var scope = NewDisposeScope();
        var problem = LinearProblem.Create(16, 5);
        var v = problem.V;
        var dual = norm == Norm.L2 ? v.norm().item<float>() : v.abs().sum().item<float>();
        var trueDistance = problem.Margin / dual;                               // [B]

        // Precondition: the closed-form boundary point stays inside the box, so it is the true minimum.
        var step = norm == Norm.L2 ? v / v.square().sum() : v.sign() / v.abs().sum();
        var reach = trueDistance.max().item<float>() * dual * step.abs().max().item<float>();
        Assert.True(reach < 0.3, $"the boundary point would leave the box (largest coordinate move {reach})");

        var settings = new FabSettings(new Threat(norm, 100));
        var xAdv = Fab.Attack(problem.Model, problem.X, problem.Y, settings);
        Assert.True(Predict(problem.Model, xAdv).ne(problem.Y).all().item<bool>(), "FAB fooled every point");
        var ratio = Norms(xAdv, problem.X, norm) / trueDistance;
        Assert.True(ratio.min().item<float>() >= 0.9999, $"below the true minimum: {ratio.min().item<float>()}");
        Assert.True(ratio.max().item<float>() <= 1.03, $"more than 3% above the true minimum: {ratio.max().item<float>()}");
    }

    [Theory]
    [InlineData(Norm.Linf, 0.225)]
    [InlineData(Norm.L2, 1.42)]
    public void EveryPointIsWithinEpsAndTheBoxAndUnfooledPointsAreUnchanged(Norm norm, double eps)
    {
        using var scope = NewDisposeScope();
        var model = TrainedMlp.Value;
        var (x, y) = Bands(48, 2);
        y = y.clone();
        y[0] = (y[0] + 1).remainder(4);                   // misclassified from the start: must not be attacked
        var xAdv = Fab.Attack(model, x, y, new FabSettings(new Threat(norm, eps), NIter: 30, NTargetClasses: 3));

        Assert.Equal(x.shape, xAdv.shape);
        Assert.False(xAdv.requires_grad);
        Assert.True(Norms(xAdv, x, norm).max().item<float>() <= eps + 1e-6);
        Assert.True(xAdv.min().item<float>() >= 0 && xAdv.max().item<float>() <= 1);
        Assert.True(xAdv[0].eq(x[0]).all().item<bool>());
        var fooled = Predict(model, xAdv).ne(y);
        var unchanged = (xAdv - x).flatten(1).abs().amax([1]).eq(0);
        Assert.True(fooled.logical_or(unchanged).all().item<bool>(), "a point is neither fooled nor the original");
        var attackedAndFooled = fooled.logical_and(unchanged.logical_not()).sum().item<long>();
        Assert.True(attackedAndFooled > 0 && attackedAndFooled < 47, $"eps should fool some points but not all, fooled {attackedAndFooled}");
    }

    [Theory]
    [InlineData(Norm.Linf, 0.4)]
    [InlineData(Norm.L2, 2.5)]
    public void FabPerturbationsAreSmallerThanPgdsAtTheSameEps(Norm norm, double eps)
    {
        using var scope = NewDisposeScope();
        var model = TrainedMlp.Value;
        var (x, y) = Bands(48, 3);
        var threat = new Threat(norm, eps);
        var fab = Fab.Attack(model, x, y, new FabSettings(threat, NTargetClasses: 3));
        using var generator = new Generator(1);
        var pgd = Pgd.Attack(model, x, y, new PgdSettings(threat, Steps: 20), generator);

        var correct = Predict(model, x).eq(y);
        var both = correct.logical_and(Predict(model, fab).ne(y)).logical_and(Predict(model, pgd).ne(y));
        var count = both.sum().item<long>();
        Assert.True(count >= 24, $"too few points fooled by both ({count}) for a comparison");
        var fabNorm = Norms(fab, x, norm).masked_select(both).mean().item<float>();
        var pgdNorm = Norms(pgd, x, norm).masked_select(both).mean().item<float>();
        Assert.True(fabNorm < 0.8 * pgdNorm, $"FAB mean norm {fabNorm} not clearly below PGD's {pgdNorm}");
    }

    [Fact]
    public void AtLargeLinfEpsFabFoolsAllCorrectlyClassifiedPointsOfAnUndefendedModel()
    {
        using var scope = NewDisposeScope();
        var model = TrainedMlp.Value;
        var (x, y) = Bands(64, 4);
        var correct = Predict(model, x).eq(y);
        Assert.True(correct.sum().item<long>() >= 60, "the MLP should have learnt the bands");
        var monitor = new AttackMonitor();
        var xAdv = Fab.Attack(model, x, y, new FabSettings(Threat.Linf(0.5)), monitor: monitor);
        var robust = correct.logical_and(Predict(model, xAdv).eq(y)).sum().item<long>();
        Assert.Equal(0, robust);
        Assert.True(monitor.GradientEvaluations > 0);
        Assert.Equal(0, monitor.NonFiniteLogits);
        Assert.Equal(0, monitor.NonFiniteGradients);
    }

    [Fact]
    public void WithFewerClassesThanTargetsEveryOtherClassIsTried()
    {
        // K = 3 and NTargetClasses = 9: ranks 2 and 3 only. The linear model's third class can never win, so
        // every point is fooled through rank 2 and nothing fails on the missing ranks.
        using var scope = NewDisposeScope();
        var problem = LinearProblem.Create(8, 6);
        var xAdv = Fab.Attack(problem.Model, problem.X, problem.Y, new FabSettings(Threat.Linf(1), NIter: 10));
        Assert.True(Predict(problem.Model, xAdv).ne(problem.Y).all().item<bool>());
    }

    [Theory]
    [InlineData(Norm.Linf, 0.12)]
    [InlineData(Norm.L2, 0.7)]
    public void TheSameGeneratorSeedGivesIdenticalResults(Norm norm, double eps)
    {
        using var scope = NewDisposeScope();
        var model = TrainedMlp.Value;
        var (x, y) = Bands(32, 5);
        // Two restarts, so the random start of the second one is exercised.
        var settings = new FabSettings(new Threat(norm, eps), NIter: 15, NTargetClasses: 2, NRestarts: 2);
        Tensor Run(ulong seed)
        {
            using var generator = new Generator(seed);
            return Fab.Attack(model, x, y, settings, generator);
        }
        var first = Run(42);
        Assert.True(first.eq(Run(42)).all().item<bool>());
    }

    [Fact]
    public void OutOfRangeSettingsAreRejectedByName()
    {
        using var scope = NewDisposeScope();
        var problem = LinearProblem.Create(2, 1);
        void Attack(FabSettings s) => Fab.Attack(problem.Model, problem.X, problem.Y, s);
        Assert.Equal("Eps", Assert.Throws<ArgumentOutOfRangeException>(() => Attack(new FabSettings(new Threat(Norm.Linf, -0.1)))).ParamName);
        Assert.Equal("NIter", Assert.Throws<ArgumentOutOfRangeException>(() => Attack(new FabSettings(Threat.L2(1), NIter: 0))).ParamName);
        Assert.Equal("NTargetClasses", Assert.Throws<ArgumentOutOfRangeException>(() => Attack(new FabSettings(Threat.L2(1), NTargetClasses: 0))).ParamName);
        Assert.Equal("NRestarts", Assert.Throws<ArgumentOutOfRangeException>(() => Attack(new FabSettings(Threat.L2(1), NRestarts: 0))).ParamName);
    }
}
