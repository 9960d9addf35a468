using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>
/// Settings of FAB-T, the targeted Fast Adaptive Boundary attack (Croce &amp; Hein 2020), with the defaults
/// AutoAttack uses for it. Threat: the norm FAB minimises and the eps a point must be fooled within to count.
/// NIter: iterations per target and restart. AlphaMax: the largest weight of the step from the original point.
/// Eta: overshoot of the projections (past the linearised boundary). Beta: backward step towards the original
/// point after an adversarial iterate. NTargetClasses: targets tried, the classes ranked 2..NTargetClasses+1 by
/// the clean logits (with fewer classes, all other classes). NRestarts: runs per target; every run after the
/// first starts from a random point at distance eps/2.
/// </summary>
public sealed record FabSettings(
    Threat Threat,
    int NIter = 100,
    double AlphaMax = 0.1,
    double Eta = 1.05,
    double Beta = 0.9,
    int NTargetClasses = 9,
    int NRestarts = 1)
{
    /// <summary>This record when every setting is in range; otherwise an ArgumentOutOfRangeException naming the setting.</summary>
    public FabSettings Validated()
    {
        Threat.Validated();
        if (NIter < 1) throw new ArgumentOutOfRangeException(nameof(NIter), NIter, "FAB NIter must be >= 1");
        if (!(AlphaMax >= 0 && AlphaMax <= 1)) throw new ArgumentOutOfRangeException(nameof(AlphaMax), AlphaMax, "FAB AlphaMax must be in [0, 1]");
        if (!(Eta > 0 && double.IsFinite(Eta))) throw new ArgumentOutOfRangeException(nameof(Eta), Eta, "FAB Eta must be a finite number > 0");
        if (!(Beta >= 0 && Beta <= 1)) throw new ArgumentOutOfRangeException(nameof(Beta), Beta, "FAB Beta must be in [0, 1]");
        if (NTargetClasses < 1) throw new ArgumentOutOfRangeException(nameof(NTargetClasses), NTargetClasses, "FAB NTargetClasses must be >= 1");
        if (NRestarts < 1) throw new ArgumentOutOfRangeException(nameof(NRestarts), NRestarts, "FAB NRestarts must be >= 1");
        return this;
    }
}

/// <summary>
/// FAB-T (Croce &amp; Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary attack"),
/// Linf, L2 and L1. A minimum-norm attack: each iteration linearises the margin f_t - f_y at the current point x1,
/// projects both x1 and the original point x0 onto the linearised boundary (inside the box [0, 1]), and moves to
/// a mix of the two projections, biased towards the one from x1 but pulled back towards x0 so the result stays
/// close to it. Adversarial iterates are recorded when they are the smallest found, then pushed back towards x0.
/// </summary>
public static class Fab
{
    /// <summary>
    /// FAB-T. model: images [B, C, H, W] in [0, 1] -> logits [B, K] (examples must be independent, e.g. batch
    /// norm in eval mode); x: [B, C, H, W]; y: labels [B] (int64). Only the points the model classifies
    /// correctly at the start are attacked. For the targets ranked 2..NTargetClasses+1 by the clean logits (all
    /// other classes when K - 1 &lt; NTargetClasses), and NRestarts runs each, the points not fooled yet are
    /// attacked; a point is fooled when FAB found a misclassified point within eps of it, and then it keeps the
    /// smallest-norm misclassified point of that run and is not attacked further.
    /// Returns xAdv [B, C, H, W], detached: that point where one was found, x elsewhere.
    /// generator: the random starts of restarts (unused with NRestarts = 1). monitor: counts non-finite logits and
    /// gradients and zero gradients, once per iteration.
    /// </summary>
    public static Tensor Attack(Func<Tensor, Tensor> model, Tensor x, Tensor y, FabSettings settings,
        Generator? generator = null, AttackMonitor? monitor = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        settings = settings.Validated();
        using var outer = NewDisposeScope();
        var x0 = x.detach();
        Tensor clean;
        using (no_grad()) clean = model(x0);
        var classes = clean.shape[1];
        var robust = clean.argmax(1).eq(y);                    // [B] still to be fooled; wrong ones never are
        var ranking = clean.argsort(1, descending: true);      // [B, K] classes by descending clean logit
        var xAdv = x0.clone();
        var targets = (int)Math.Min(settings.NTargetClasses, classes - 1);

        for (var rank = 2; rank <= targets + 1; rank++)
        {
            for (var restart = 0; restart < settings.NRestarts; restart++)
            {
                using var scope = NewDisposeScope();
                var todo = robust.nonzero().squeeze(1);        // [n] indices of points not fooled yet
                if (todo.shape[0] == 0) break;
                var target = ranking.select(1, rank - 1).index_select(0, todo);
                var (adv, norm) = Run(model, x0.index_select(0, todo), y.index_select(0, todo), target, settings,
                    randomStart: restart > 0, generator, monitor);
                // Only a point within eps counts; a larger one is no success under the threat model.
                var success = norm.le(settings.Threat.Eps);
                var fooled = todo.masked_select(success);
                xAdv.index_copy_(0, fooled, adv.index_select(0, success.nonzero().squeeze(1)));
                robust.index_fill_(0, fooled, false);
            }
        }
        return xAdv.detach().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One FAB-T run on points all correctly classified. x0: [n, C, H, W]; y, target: [n].
    /// Returns the smallest-norm misclassified iterate per point [n, C, H, W] (x0 where none) and its norm [n]
    /// (+inf where none).
    /// </summary>
    static (Tensor Adv, Tensor Norm) Run(Func<Tensor, Tensor> model, Tensor x0, Tensor y, Tensor target,
        FabSettings settings, bool randomStart, Generator? generator, AttackMonitor? monitor)
    {
        using var scope = NewDisposeScope();
        var norm = settings.Threat.Norm;
        var x1 = randomStart ? RandomStart(x0, settings.Threat, generator) : x0.clone();
        var best = x0.clone();
        var bestNorm = full(x0.shape[0], double.PositiveInfinity, dtype: x0.dtype, device: x0.device);
        for (var i = 0; i < settings.NIter; i++)
        {
            using var iteration = NewDisposeScope();
            var (margin, grad) = TargetMarginGradient(model, x1, y, target, monitor);
            using (no_grad())
            {
                var next = BoundaryStep(x1, x0, margin, grad, norm, settings.Eta, settings.AlphaMax);
                var adversarial = model(next).argmax(1).ne(y);
                var distance = Projection.NormOf(next - x0, norm);
                var better = adversarial.logical_and(distance.lt(bestNorm));
                var newBest = where(PerExample(better, x0), next, best).MoveToOuterDisposeScope();
                var newBestNorm = where(better, distance, bestNorm).MoveToOuterDisposeScope();
                // Having crossed the boundary, restart the search from closer to x0: the next linearisation
                // then looks for a boundary point nearer to the original than the one just found.
                var newX1 = where(PerExample(adversarial, x0), x0 + settings.Beta * (next - x0), next).MoveToOuterDisposeScope();
                // These came from outside this iteration's scope: free them now rather than at the end of the run.
                x1.Dispose(); best.Dispose(); bestNorm.Dispose();
                (x1, best, bestNorm) = (newX1, newBest, newBestNorm);
            }
        }
        return (best.MoveToOuterDisposeScope(), bestNorm.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The targeted margin f_t(x) - f_y(x) [n] and its gradient w.r.t. the input [n, C, H, W]. One backward of the
    /// summed margins gives every example's own gradient because examples do not interact in the model.
    /// </summary>
    static (Tensor Margin, Tensor Grad) TargetMarginGradient(Func<Tensor, Tensor> model, Tensor x, Tensor y, Tensor target,
        AttackMonitor? monitor)
    {
        using var scope = NewDisposeScope();
        var input = x.detach().requires_grad_(true);
        Tensor logits, margin, grad;
        using (enable_grad())
        {
            logits = model(input);
            margin = logits.gather(1, target.unsqueeze(1)).squeeze(1) - logits.gather(1, y.unsqueeze(1)).squeeze(1);
            grad = autograd.grad([margin.sum()], [input])[0];
        }
        monitor?.Logits(logits);
        monitor?.Gradients(grad);
        return (margin.detach().MoveToOuterDisposeScope(), grad.detach().MoveToOuterDisposeScope());
    }

    /// <summary>
    /// One FAB step. x1, x0: [n, C, H, W]; margin [n] and grad [n, C, H, W] of f_t - f_y at x1.
    /// The linearised boundary is {z : margin + grad·(z - x1) = 0}; d1 and d2 are the box-constrained minimal
    /// projections of x1 and x0 onto it, a1 and a2 their norms, and alpha = clamp(a1 / (a1 + a2), 0, alphaMax):
    /// the further x1 is from the boundary compared with x0, the more the step leans on x0's projection, which
    /// keeps the iterates near x0. Eta overshoots both projections so the linearised step lands past the boundary.
    /// Returns the next iterate [n, C, H, W] in [0, 1].
    /// </summary>
    static Tensor BoundaryStep(Tensor x1, Tensor x0, Tensor margin, Tensor grad, Norm norm, double eta, double alphaMax)
    {
        using var scope = NewDisposeScope();
        var n = x1.shape[0];
        var w = grad.flatten(1);
        // The boundary as w·z = b; b in float64, else w·x1 - margin loses the small margin to cancellation.
        var b = (w.to_type(ScalarType.Float64) * x1.flatten(1).to_type(ScalarType.Float64)).sum(1) - margin.to_type(ScalarType.Float64);
        // Both projections in one call: same hyperplane, two starting points.
        var d = HyperplaneProjection(cat([x1.flatten(1), x0.flatten(1)], 0), cat([w, w], 0), cat([b, b], 0), norm);
        var lengths = Projection.NormOf(d, norm).clamp_min(1e-8); // floor: a point already on the plane gives 0/0 otherwise
        var (a1, a2) = (lengths.narrow(0, 0, n), lengths.narrow(0, n, n));
        var alpha = (a1 / (a1 + a2)).clamp(0, alphaMax).view(PerExampleShape(x1));
        var d1 = d.narrow(0, 0, n).view_as(x1);
        var d2 = d.narrow(0, n, n).view_as(x1);
        var next = ((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha).clamp(0, 1);
        return next.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The start of a restart (as in the reference): x0 + (eps / 2) * t / ||t||, t ~ U[-1, 1] per pixel for Linf and
    /// t ~ N(0, 1) for L2 and L1 (normalised in the threat's norm), clipped to [0, 1]. [n, C, H, W] -> [n, C, H, W].
    /// </summary>
    static Tensor RandomStart(Tensor x0, Threat threat, Generator? generator)
    {
        using var scope = NewDisposeScope();
        var t = threat.Norm == Norm.Linf
            ? rand(x0.shape, generator: generator, dtype: x0.dtype, device: x0.device) * 2 - 1
            : randn(x0.shape, generator: generator, dtype: x0.dtype, device: x0.device);
        var unit = t / Projection.NormOf(t, threat.Norm).clamp_min(1e-12).view(PerExampleShape(x0));
        return (x0 + 0.5 * threat.Eps * unit).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The minimal-norm displacement onto a hyperplane inside the box [0, 1]^D. points: t [N, D] in [0, 1];
    /// w: [N, D]; b: [N]. Returns d [N, D] such that t + d is the point of {z : w·z = b} ∩ [0, 1]^D nearest to t in
    /// the norm (Linf, L2 or L1). Where the hyperplane misses the box, t + d is the corner of the box nearest to it (each
    /// coordinate with w_i != 0 at the bound that moves w·z towards b). Coordinates with w_i = 0 never move.
    /// Pure; computed in float64, returned in the points' dtype.
    /// </summary>
    /// <remarks>
    /// Orient the problem so that w'·d = |c| with c = b - w·t, w' = sign(c) w. By the optimality conditions the
    /// minimiser moves each coordinate along sign(w'_i), by min(tau, room_i) for Linf and by |w'_i| min(tau,
    /// room_i / |w'_i|) for L2 (the box-clipped multiple of w), where room_i is the distance to the bound in that
    /// direction. The covered amount is sum_i omega_i min(tau, beta_i), nondecreasing and piecewise linear in tau
    /// with breakpoints beta_i, so sorting the breakpoints locates the segment where it equals |c| and tau solves a
    /// linear equation there. Without a binding bound this reduces to the closed forms d = w (b - w·t) / ||w||_2^2
    /// (L2) and d = sign(w) (b - w·t) / ||w||_1 (Linf). L1 is a fractional knapsack instead, solved greedily by
    /// <see cref="L1Displacement"/>: without a binding bound, d moves only the coordinate of largest |w_i|, by |c| / |w_i|.
    /// </remarks>
    public static Tensor HyperplaneProjection(Tensor points, Tensor w, Tensor b, Norm norm)
    {
        using var scope = NewDisposeScope();
        var t = points.to_type(ScalarType.Float64);
        var w64 = w.to_type(ScalarType.Float64);
        var c = b.to_type(ScalarType.Float64) - (w64 * t).sum(1);
        var orientation = c.ge(0).to_type(ScalarType.Float64) * 2 - 1;
        var wo = w64 * orientation.unsqueeze(1);
        var moves = wo.ne(0);
        var room = where(wo.gt(0), 1 - t, t).clamp_min(0);       // distance to the bound in the favourable direction
        var absW = wo.abs();
        if (norm == Norm.L1)
            return L1Displacement(wo, room, c.abs()).to_type(points.dtype).MoveToOuterDisposeScope();
        var infinity = full_like(t, double.PositiveInfinity);
        Tensor scale, omega, breakpoint;
        switch (norm)
        {
            case Norm.Linf:
                scale = ones_like(t); omega = absW; breakpoint = where(moves, room, infinity);
                break;
            case Norm.L2:
                scale = absW; omega = absW.square(); breakpoint = where(moves, room / absW, infinity);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(norm), norm, "FAB projections support Linf, L2 and L1");
        }
        var tau = SolveCoverage(omega, breakpoint, c.abs());
        var d = where(moves, wo.sign() * scale * minimum(tau.unsqueeze(1), breakpoint), zeros_like(t));
        return d.to_type(points.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The minimal L1 displacement d [N, D] with wo·d = target inside the box, for the oriented normal wo [N, D] (the
    /// displacement moves along sign(wo)), the room to the favourable bound room [N, D] &gt;= 0 and target [N] &gt;= 0, all
    /// float64. Moving coordinate i by u costs u in L1 and covers |wo_i| u, so the cheapest cover takes the coordinates in
    /// descending |wo_i|, each to its bound, until the next one covers the rest partially (the greedy solution of this
    /// fractional knapsack; ties split arbitrarily, any split is optimal). When the whole box falls short, every
    /// coordinate with wo_i != 0 goes to its bound (the nearest corner, as for Linf and L2).
    /// </summary>
    static Tensor L1Displacement(Tensor wo, Tensor room, Tensor target)
    {
        using var scope = NewDisposeScope();
        var absW = wo.abs();
        var (sortedW, order) = absW.sort(1, descending: true);
        var sortedRoom = room.gather(1, order);
        var coverage = sortedW * sortedRoom;
        var before = coverage.cumsum(1) - coverage;              // covered by the coordinates ahead of each one
        var positive = sortedW.gt(0);
        var needed = (target.unsqueeze(1) - before).clamp_min(0) / where(positive, sortedW, ones_like(sortedW));
        var amount = where(positive, minimum(needed, sortedRoom), zeros_like(sortedW));
        var magnitude = zeros_like(amount).scatter(1, order, amount);
        return (wo.sign() * magnitude).MoveToOuterDisposeScope();
    }

    /// <summary>The minimal L1 displacement onto {z : w·z = b} inside [0, 1]^D; see <see cref="HyperplaneProjection"/>.</summary>
    public static Tensor ProjectionL1(Tensor points, Tensor w, Tensor b) => HyperplaneProjection(points, w, b, Norm.L1);

    /// <summary>The minimal Linf displacement onto {z : w·z = b} inside [0, 1]^D; see <see cref="HyperplaneProjection"/>.</summary>
    public static Tensor ProjectionLinf(Tensor points, Tensor w, Tensor b) => HyperplaneProjection(points, w, b, Norm.Linf);

    /// <summary>The minimal L2 displacement onto {z : w·z = b} inside [0, 1]^D; see <see cref="HyperplaneProjection"/>.</summary>
    public static Tensor ProjectionL2(Tensor points, Tensor w, Tensor b) => HyperplaneProjection(points, w, b, Norm.L2);

    /// <summary>
    /// Per row, the smallest tau >= 0 with sum_i omega_i min(tau, beta_i) = target, or +inf when even tau = +inf
    /// falls short (every coordinate at its bound). omega, beta: [N, D], omega > 0 wherever beta is finite and
    /// beta = +inf where omega = 0; target: [N] >= 0. Returns [N].
    /// </summary>
    static Tensor SolveCoverage(Tensor omega, Tensor beta, Tensor target)
    {
        using var scope = NewDisposeScope();
        var (sorted, order) = beta.sort(1);
        var weights = omega.gather(1, order);
        var finite = sorted.isfinite();
        var clipped = where(finite, weights * sorted, zeros_like(sorted));  // coverage of a coordinate at its bound
        var rows = sorted.shape[0];
        // Coverage of the coordinates before breakpoint k (all at their bound once tau >= their breakpoint) ...
        var before = cat([zeros(rows, 1, dtype: sorted.dtype, device: sorted.device), clipped.cumsum(1).narrow(1, 0, sorted.shape[1] - 1)], 1);
        // ... and the slope from breakpoint k on (a suffix sum, so it stays > 0 where a moving coordinate is left).
        var slope = weights.flip(1).cumsum(1).flip(1);
        var atBreakpoint = where(finite, before + sorted * slope, full_like(sorted, double.PositiveInfinity));
        var passed = atBreakpoint.lt(target.unsqueeze(1)).sum(1);            // coordinates that sit at their bound
        var reachable = passed.lt(finite.sum(1));
        var k = passed.clamp_max(sorted.shape[1] - 1).unsqueeze(1);
        var tau = ((target - before.gather(1, k).squeeze(1)) / slope.gather(1, k).squeeze(1)).clamp_min(0);
        return where(reachable, tau, full_like(tau, double.PositiveInfinity)).MoveToOuterDisposeScope();
    }

    /// <summary>A per-example mask or scalar [n] viewed so it broadcasts over like [n, ...].</summary>
    static Tensor PerExample(Tensor perExample, Tensor like) => perExample.view(PerExampleShape(like));

    static long[] PerExampleShape(Tensor like) => [like.shape[0], .. Enumerable.Repeat(1L, (int)like.dim() - 1)];
}
