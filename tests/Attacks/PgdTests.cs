using Carso.Attacks;
using static TorchSharp.torch;

namespace Carso.Tests.Attacks;

public class PgdTests
{
    [Fact]
    public void OnALinearModelPgdLinfReachesTheClosedFormOptimum()
    {
        using var scope = NewDisposeScope();
        manual_seed(4);
        // logits = [w.x, -w.x]; for label 0 the cross-entropy grows as w.x falls, so its gradient has the
        // sign of -w everywhere and the optimum in the Linf ball is x - eps * sign(w), clipped to [0, 1].
        var w = randn(1 * 6 * 6);
        w[3] = 0; // a pixel the model ignores stays at its (random) start, inside the ball
        Func<Tensor, Tensor> model = x => { var s = x.flatten(1).matmul(w).unsqueeze(1); return cat([s, -s], 1); };
        var x = rand(5, 1, 6, 6);
        var y = zeros(5, dtype: ScalarType.Int64);
        var eps = 0.1;
        var xAdv = Pgd.Attack(model, x, y, new PgdSettings(Threat.Linf(eps), Steps: 10));
        var optimum = (x - eps * w.sign().view(1, 1, 6, 6)).clamp(0, 1);
        var moving = w.ne(0).view(1, 1, 6, 6).expand_as(x);
        Assert.True(xAdv.masked_select(moving).allclose(optimum.masked_select(moving), rtol: 0, atol: 1e-6));
        Assert.True((xAdv - x).abs().max().item<float>() <= eps + 1e-6);
    }

    [Fact]
    public void EotGradientIsTheMeanOfTheSinglePassGradients()
    {
        using var scope = NewDisposeScope();
        // A stochastic linear model: logits = x . (w + noise); the loss is the first logit, so each pass's input
        // gradient is the noisy weight row, and EOT must return their mean.
        var w = randn(16, 2);
        var draws = Enumerable.Range(0, 4).Select(i => { manual_seed(100 + i); return randn(16, 2); }).ToArray();
        var call = 0;
        Func<Tensor, Tensor> model = x => x.flatten(1).matmul(w + draws[call++ % 4]);
        var x = rand(3, 1, 4, 4);
        var gradient = Pgd.EotGradient(model, x, logits => logits[.., 0], eotIter: 4);
        var expected = stack(draws.Select(d => (w + d)[.., 0]).ToArray()).mean([0]).view(1, 1, 4, 4).expand(3, 1, 4, 4);
        Assert.True(gradient.allclose(expected, atol: 1e-5));
        Assert.Equal(4, call);
    }

    [Fact]
    public void RestartsNeverLoseAFooledPointAndTheSeedFixesTheResult()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var w = randn(36, 4);
        Func<Tensor, Tensor> model = x => x.flatten(1).matmul(w);
        var x = rand(40, 1, 6, 6);
        var y = model(x).argmax(1);
        var settings = new PgdSettings(Threat.Linf(0.03), Steps: 5);
        Tensor Fooled(Tensor xAdv) => model(xAdv).argmax(1).ne(y);
        using var g1 = new Generator(1);
        var one = Fooled(Pgd.Attack(model, x, y, settings, g1));
        using var g2 = new Generator(1);
        var three = Fooled(Pgd.Attack(model, x, y, settings with { Restarts = 3 }, g2));
        Assert.True(three.logical_or(one.logical_not()).all().item<bool>(), "a point fooled by the first restart must stay fooled");
        using var g3 = new Generator(9);
        using var g4 = new Generator(9);
        Assert.True(Pgd.Attack(model, x, y, settings, g3).equal(Pgd.Attack(model, x, y, settings, g4)).all().item<bool>());
    }
}
