using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>
/// The L1 Square attack (as AutoAttack's square.py implements it, Croce &amp; Hein 2021), score-based: forward passes only.
/// Start: meta-pseudo-gaussian tiles (the L1 pattern: rectangles weighted 1/(k+1)^4, unit L1) with random signs
/// (<see cref="SquareWindows.InitialPerturbation"/>), projected onto the L1 ball of radius eps (1 - 1e-6) and the box
/// jointly (<see cref="Projection.L1BallAndBox"/>). Each iteration picks windows W1 and W2 of side s (odd, at least 3, from
/// the p schedule) and per image and channel rewrites delta on W1 as u = sign * eta + delta_W1 / ||delta_W1||_1, rescaled
/// to L1 norm C (max(eps - ||delta||_1, 0) / C + ||delta_(W1 u W2)||_1) (the reference's scale, which may exceed the
/// budget: the projection that follows brings it back), and sets delta on W2 \ W1 to 0; the candidate is
/// x + P(delta) with P the joint projection at radius eps (1 - 1e-6). Kept where the margin falls (or is &lt;= 0).
/// Run it through <see cref="Square.Attack"/> or <see cref="Square.Run"/> with an L1 threat.
/// </summary>
public static class SquareL1
{
    /// <summary>The radius the reference projects onto: eps (1 - 1e-6), so float rounding cannot leave the ball.</summary>
    const double RadiusFactor = 1 - 1e-6;

    /// <summary>One run on points all correctly classified: xs [n, C, H, W], ys [n]. Returns the best points, their
    /// margins [n] and the queries spent per point [n] int64.</summary>
    internal static (Tensor Best, Tensor Margin, Tensor Queries) SingleRun(Func<Tensor, Tensor> model, Tensor xs, Tensor ys,
        SquareSettings settings, Generator? generator, AttackMonitor? monitor)
    {
        using var scope = NewDisposeScope();
        var eps = settings.Threat.Eps;
        var start = Inside(xs, SquareWindows.InitialPerturbation(xs, Norm.L1, generator), eps);
        var (best, margin, queries) = SquareWindows.Search(model, xs, ys, start, settings, Norm.L1, p => Propose(p, eps), generator, monitor);
        return (best.MoveToOuterDisposeScope(), margin.MoveToOuterDisposeScope(), queries.MoveToOuterDisposeScope());
    }

    /// <summary>The L1 candidate of one iteration (see the class summary), [m, C, H, W] in [0, 1] within eps of XCurr.</summary>
    static Tensor Propose(SquareWindows.Proposal p, double eps)
    {
        using var scope = NewDisposeScope();
        var channels = p.XCurr.shape[1];
        var delta = p.BestCurr - p.XCurr;
        var both = maximum(p.Window, p.Cleared);
        var windowNorm = ChannelL1(delta * p.Window);                  // [m, C, 1, 1]
        var imageNorm = Projection.NormOf(delta, Norm.L1).view(-1, 1, 1, 1);
        var bothNorm = ChannelL1(delta * both);
        var update = p.Pattern * p.Signs + delta * p.Window / (1e-12 + windowNorm);
        var budget = ((eps - imageNorm).clamp_min(0) / channels + bothNorm) * channels;
        update = update / (1e-12 + ChannelL1(update)) * budget;
        var next = where(p.Window.gt(0), update, where(p.Cleared.gt(0), zeros_like(delta), delta));
        return Inside(p.XCurr, next, eps).MoveToOuterDisposeScope();
    }

    /// <summary>x + the joint L1-ball (radius eps (1 - 1e-6)) and box projection of delta, clipped to [0, 1] against rounding.</summary>
    static Tensor Inside(Tensor x, Tensor delta, double eps) =>
        (x + Projection.L1BallAndBox(delta, x, eps * RadiusFactor)).clamp(0, 1);

    /// <summary>Per image and channel the L1 norm over H and W: [m, C, H, W] -> [m, C, 1, 1].</summary>
    static Tensor ChannelL1(Tensor t) => t.abs().sum([-2, -1], keepdim: true);
}
