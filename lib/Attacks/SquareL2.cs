using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>
/// The L2 Square attack (Andriushchenko et al. 2020, as AutoAttack's square.py runs it), score-based: forward passes only.
/// Start: meta-pseudo-gaussian tiles with random signs (<see cref="SquareWindows.InitialPerturbation"/>), scaled to L2 norm
/// eps, clipped to [0, 1]. Each iteration picks a window W1 and a second window W2 of side s (odd, at least 3, from the p
/// schedule), and per image and channel rewrites the perturbation delta on W1 as
/// u = sign * eta + delta_W1 / ||delta_W1||_2, rescaled to L2 norm sqrt(max(eps^2 - ||delta||_2^2, 0) / C + ||delta_(W1 u W2)||_2^2)
/// (the channel's mass on both windows plus its share of the unused budget), while delta on W2 \ W1 is set to 0; the
/// candidate is x + eps * delta / ||delta||_2, clipped to [0, 1]. Kept where the margin falls (or is &lt;= 0).
/// Run it through <see cref="Square.Attack"/> or <see cref="Square.Run"/> with an L2 threat.
/// </summary>
public static class SquareL2
{
    /// <summary>One run on points all correctly classified: xs [n, C, H, W], ys [n]. Returns the best points, their
    /// margins [n] and the queries spent per point [n] int64.</summary>
    internal static (Tensor Best, Tensor Margin, Tensor Queries) SingleRun(Func<Tensor, Tensor> model, Tensor xs, Tensor ys,
        SquareSettings settings, Generator? generator, AttackMonitor? monitor)
    {
        using var scope = NewDisposeScope();
        var eps = settings.Threat.Eps;
        var start = (xs + eps * UnitL2(SquareWindows.InitialPerturbation(xs, Norm.L2, generator))).clamp(0, 1);
        var (best, margin, queries) = SquareWindows.Search(model, xs, ys, start, settings, Norm.L2, p => Propose(p, eps), generator, monitor);
        return (best.MoveToOuterDisposeScope(), margin.MoveToOuterDisposeScope(), queries.MoveToOuterDisposeScope());
    }

    /// <summary>The L2 candidate of one iteration (see the class summary), [m, C, H, W] in [0, 1] within eps of XCurr.</summary>
    static Tensor Propose(SquareWindows.Proposal p, double eps)
    {
        using var scope = NewDisposeScope();
        var channels = p.XCurr.shape[1];
        var delta = p.BestCurr - p.XCurr;
        var both = maximum(p.Window, p.Cleared);
        var windowNorm = ChannelL2(delta * p.Window);                  // [m, C, 1, 1]
        var imageNorm = Projection.NormOf(delta, Norm.L2).view(-1, 1, 1, 1);
        var bothNorm = ChannelL2(delta * both);
        var update = p.Pattern * p.Signs + delta * p.Window / (1e-12 + windowNorm);
        var budget = ((eps * eps - imageNorm.square()).clamp_min(0) / channels + bothNorm.square()).sqrt();
        update = update / (1e-12 + ChannelL2(update)) * budget;
        var next = where(p.Window.gt(0), update, where(p.Cleared.gt(0), zeros_like(delta), delta));
        return (p.XCurr + eps * UnitL2(next)).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary>Per image and channel the L2 norm over H and W: [m, C, H, W] -> [m, C, 1, 1].</summary>
    static Tensor ChannelL2(Tensor t) => t.square().sum([-2, -1], keepdim: true).sqrt();

    /// <summary>delta / (||delta||_2 + 1e-12) per image.</summary>
    static Tensor UnitL2(Tensor delta) => delta / (Projection.NormOf(delta, Norm.L2).view(-1, 1, 1, 1) + 1e-12);
}
