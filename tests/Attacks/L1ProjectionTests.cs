using Carso.Attacks;
using static TorchSharp.torch;

namespace Carso.Tests.Attacks;

public class L1ProjectionTests
{
    /// <summary>
    /// The brute-force projection: per row, bisection (200 halvings) on the soft-threshold level lambda of
    /// d = sign(v) min(max(|v| - lambda, 0), room) until ||d||_1 = eps (lambda = 0 when the box clamp alone is inside).
    /// One row at a time, in float64.
    /// </summary>
    static double[] BruteForce(double[] v, double[] x, double eps)
    {
        double[] At(double lambda) => v.Select((vi, i) =>
            Math.Sign(vi) * Math.Min(Math.Max(Math.Abs(vi) - lambda, 0), vi >= 0 ? 1 - x[i] : x[i])).ToArray();
        if (At(0).Sum(Math.Abs) <= eps) return At(0);
        double lo = 0, hi = v.Max(Math.Abs);
        for (var i = 0; i < 200; i++)
        {
            var mid = (lo + hi) / 2;
            if (At(mid).Sum(Math.Abs) > eps) lo = mid; else hi = mid;
        }
        return At(hi);
    }

    [Fact]
    public void TheProjectionMatchesABisectionOnTheSoftThresholdLevelOnRandomVectors()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(3);
        const int rows = 64, dims = 50;
        var x = rand([rows, dims], generator: generator, dtype: ScalarType.Float64);
        x[0].fill_(0.5);
        x[1, ..10] = 0;                                                                 // pixels at the box bounds
        x[1, 10..20] = 1;
        // Scales from well inside the ball to far outside it, some large enough for the box to bind.
        var scales = logspace(-2, 1, rows, dtype: ScalarType.Float64).unsqueeze(1);
        var v = randn([rows, dims], generator: generator, dtype: ScalarType.Float64) * scales;
        v[2, ..25] = 0;                                                                 // exact zeros stay zero
        var eps = 3.0;
        var d = Projection.L1BallAndBox(v, x, eps);
        var (inside, boxBinds) = (0, 0);
        for (var i = 0; i < rows; i++)
        {
            var vi = v[i].data<double>().ToArray();
            var xi = x[i].data<double>().ToArray();
            var expected = BruteForce(vi, xi, eps);
            var got = d[i].data<double>().ToArray();
            for (var j = 0; j < dims; j++)
                Assert.True(Math.Abs(got[j] - expected[j]) < 1e-9, $"row {i}, coordinate {j}: {got[j]} vs brute force {expected[j]}");
            if (vi.Select((t, j) => Math.Abs(t) <= (t >= 0 ? 1 - xi[j] : xi[j])).All(b => b) && vi.Sum(Math.Abs) <= eps) inside++;
            if (vi.Select((t, j) => Math.Abs(t) > (t >= 0 ? 1 - xi[j] : xi[j]) && Math.Abs(got[j]) > 0).Any(b => b)) boxBinds++;
        }
        Assert.True(inside >= 3 && boxBinds >= 3, $"the cases must cover points left alone ({inside}) and a binding box ({boxBinds})");
        Assert.True(d[2, ..25].eq(0).all().item<bool>());
        Assert.True(Projection.NormOf(d, Norm.L1).max().item<double>() <= eps + 1e-9);
        Assert.True((x + d).min().item<double>() >= -1e-12 && (x + d).max().item<double>() <= 1 + 1e-12);
    }

    [Fact]
    public void NoFeasiblePointIsCloserThanTheProjection()
    {
        // A generic check that does not share the soft-threshold form: random points of the ball and box are never closer.
        using var scope = NewDisposeScope();
        using var generator = new Generator(5);
        const int rows = 16, dims = 8, samples = 4000;
        var x = rand([rows, dims], generator: generator, dtype: ScalarType.Float64);
        var v = randn([rows, dims], generator: generator, dtype: ScalarType.Float64);
        const double eps = 1.0;
        var best = (Projection.L1BallAndBox(v, x, eps) - v).norm(1, false, 2);          // [rows]
        // Feasible samples: random perturbations shrunk into the ball, then clamped into the box (which only shrinks them).
        var z = randn([samples, rows, dims], generator: generator, dtype: ScalarType.Float64)
                * rand([samples, rows, 1], generator: generator, dtype: ScalarType.Float64);
        z = z / z.abs().sum([2], keepdim: true).clamp_min(eps) * eps;
        z = (x + z).clamp(0, 1) - x;
        var distances = (z - v).norm(2, false, 2).amin([0]);                            // [rows]
        Assert.True(distances.ge(best - 1e-12).all().item<bool>(), "a feasible sample is closer to v than the projection");
    }

    [Fact]
    public void ProjectRandomStartAndAscentDirectionWorkForL1Images()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(9);
        var x = rand([6, 3, 5, 5], generator: generator);
        var threat = Threat.L1(2.0);
        var projected = Projection.Project(x + randn([6, 3, 5, 5], generator: generator), x, threat);
        NormFixtures.AssertInBallAndBox(projected, x, Norm.L1, 2.0, "Project");
        Assert.True(Projection.NormOf(projected - x, Norm.L1).min().item<float>() > 1.99f, "a far point lands on the sphere");
        // Projecting again changes nothing.
        var again = Projection.Project(projected, x, threat);
        Assert.True((again - projected).abs().max().item<float>() < 1e-6);
        NormFixtures.AssertInBallAndBox(Projection.RandomStart(x, threat, generator), x, Norm.L1, 2.0, "RandomStart");
        var g = randn([6, 3, 5, 5], generator: generator);
        var direction = Projection.AscentDirection(g, Norm.L1);
        Assert.True((Projection.NormOf(direction, Norm.L1) - 1).abs().max().item<float>() < 1e-5);
        // The L1 ascent step moves the top 20% of the 75 pixels by |g| (15), each by 1/15 along sign(g).
        Assert.Equal(15, direction[0].ne(0).sum().item<long>());
        var gain = (g * direction).flatten(1).sum([1]);
        Assert.True(gain.gt(0).all().item<bool>());
        Assert.Equal(Norm.L1, Threat.L1(1).Norm);
        Assert.Throws<ArgumentOutOfRangeException>(() => Threat.L1(-1));
    }
}
