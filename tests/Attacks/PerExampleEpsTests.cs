using Carso.Attacks;
using static TorchSharp.torch;

namespace Carso.Tests.Attacks;

/// <summary>Per-example budgets of PGD and FGSM (eps [B], stepSize [B]): each row as if attacked alone at its own budget.</summary>
public class PerExampleEpsTests
{
    static Func<Tensor, Tensor> LinearModel(Tensor w) => x => x.flatten(1).matmul(w);

    [Theory]
    [InlineData(Norm.Linf)]
    [InlineData(Norm.L2)]
    public void PerExampleProjectionKeepsEveryRowInsideItsOwnBallAndTheBox(Norm norm)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(11);
        var x = rand([6, 1, 5, 5], generator: g);
        var xAdv = x + (rand([6, 1, 5, 5], generator: g) * 2 - 1) * 3;        // far outside every ball and the box
        var eps = tensor(new float[] { 0, 0.01f, 0.05f, 0.1f, 0.3f, 2f });
        var projected = Projection.Project(xAdv, x, norm, eps);
        var norms = Projection.NormOf(projected - x, norm);
        Assert.True(norms.le(eps + 1e-6f).all().item<bool>(), "every row inside its own eps ball");
        Assert.True(projected.ge(0).logical_and(projected.le(1)).all().item<bool>(), "inside [0, 1]");
        for (var i = 0; i < 6; i++)
        {
            var alone = Projection.Project(xAdv.narrow(0, i, 1), x.narrow(0, i, 1), new Threat(norm, eps[i].item<float>()));
            Assert.True(projected.narrow(0, i, 1).allclose(alone, rtol: 0, atol: norm == Norm.Linf ? 0 : 1e-6), $"row {i} as projected alone");
        }
    }

    [Fact]
    public void FgsmWithPerExampleEpsIsFgsmAtEachEpsOnItsRows()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(12);
        var w = randn([25, 3], generator: g);
        var model = LinearModel(w);
        var x = rand([6, 1, 5, 5], generator: g) * 0.6 + 0.2;
        var y = model(x).argmax(1);
        var epsValues = new[] { 0.01, 0.01, 0.05, 0.05, 0.1, 0.1 };
        var eps = tensor(epsValues.Select(e => (float)e).ToArray());
        // The purifier's FGSM: step = eps, no random start.
        var batched = Fgsm.Attack(model, x, y, new FgsmSettings(Threat.Linf(0.1), RandomStart: false), eps: eps, stepSize: eps);
        // FGSM with random start (step 1.25 eps): one call draws, row by row, what per-row calls draw in order.
        using var g1 = new Generator(5);
        var random = Fgsm.Attack(model, x, y, new FgsmSettings(Threat.Linf(0.1)), g1, eps: eps);
        using var g2 = new Generator(5);
        for (var i = 0; i < 6; i++)
        {
            var (xi, yi) = (x.narrow(0, i, 1), y.narrow(0, i, 1));
            var threat = Threat.Linf(epsValues[i]);
            var alone = Fgsm.Attack(model, xi, yi, new FgsmSettings(threat, StepSize: epsValues[i], RandomStart: false));
            Assert.True(batched.narrow(0, i, 1).eq(alone).all().item<bool>(), $"row {i}: FGSM at eps {epsValues[i]}");
            var randomAlone = Fgsm.Attack(model, xi, yi, new FgsmSettings(threat), g2);
            Assert.True(random.narrow(0, i, 1).eq(randomAlone).all().item<bool>(), $"row {i}: FGSM with random start at eps {epsValues[i]}");
        }
        Assert.True(Projection.NormOf(batched - x, Norm.Linf).allclose(eps, rtol: 0, atol: 1e-6), "FGSM moves every pixel by its row's eps");
    }

    [Theory]
    [InlineData(Norm.Linf, true)]
    [InlineData(Norm.Linf, false)]
    [InlineData(Norm.L2, false)]
    public void PgdWithPerExampleEpsIsPgdAtEachEpsOnItsRows(Norm norm, bool randomStart)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(13);
        var w = randn([25, 3], generator: g);
        var model = LinearModel(w);
        var x = rand([5, 1, 5, 5], generator: g);
        var y = model(x).argmax(1);
        var scale = norm == Norm.Linf ? 1.0 : 10.0;
        var epsValues = new[] { 0.0, 0.02, 0.05, 0.05, 0.1 }.Select(e => e * scale).ToArray();
        var eps = tensor(epsValues.Select(e => (float)e).ToArray());
        // StepSize null: each row steps 2.5 eps / Steps, as alone.
        var settings = new PgdSettings(new Threat(norm, 0.1 * scale), Steps: 5, RandomStart: randomStart);
        using var g1 = new Generator(7);
        var batched = Pgd.Attack(model, x, y, settings, g1, eps: eps);
        using var g2 = new Generator(7);
        Assert.True(Projection.NormOf(batched - x, norm).le(eps + 1e-6f).all().item<bool>());
        for (var i = 0; i < 5; i++)
        {
            var alone = Pgd.Attack(model, x.narrow(0, i, 1), y.narrow(0, i, 1), settings with { Threat = new Threat(norm, epsValues[i]) }, g2);
            Assert.True(batched.narrow(0, i, 1).allclose(alone, rtol: 0, atol: 1e-6), $"row {i} at eps {epsValues[i]}");
        }
    }

    [Fact]
    public void PerExampleBudgetsAreCheckedAndL1IsRefused()
    {
        using var scope = NewDisposeScope();
        var model = LinearModel(ones(25, 3));
        var x = full(2, 1, 5, 5, 0.5f);
        var y = zeros(2, dtype: ScalarType.Int64);
        Assert.Throws<ArgumentException>(() => Pgd.Attack(model, x, y, new PgdSettings(Threat.Linf(0.1)), eps: tensor(new float[] { 0.1f })));
        Assert.Throws<ArgumentOutOfRangeException>(() => Pgd.Attack(model, x, y, new PgdSettings(Threat.Linf(0.1)), eps: tensor(new float[] { 0.1f, -1 })));
        Assert.Throws<NotSupportedException>(() => Pgd.Attack(model, x, y, new PgdSettings(Threat.L1(1)), eps: tensor(new float[] { 1, 2 })));
    }
}
