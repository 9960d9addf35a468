using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>The loss APGD maximises (definitions in <see cref="Losses"/>). TargetedDlr belongs to APGD-T, which
/// supplies the target classes: use <see cref="ApgdTargeted.Attack"/> for it.</summary>
public enum ApgdLoss { Ce, Dlr, TargetedDlr }

/// <summary>
/// APGD settings with the published defaults (Croce &amp; Hein 2020, reference AutoAttack implementation):
/// NIter iterations per restart, Rho the oscillation threshold of the step-size check, Alpha the momentum
/// (used from the second step on; the first step has none), NRestarts random restarts, EotIter gradient
/// samples per iteration (Expectation over Transformation, for stochastic models). UseLargeReps (L1 only, the
/// reference's use_largereps, which AutoAttack standard turns on for L1): each restart runs at 3 eps for 30% of NIter,
/// then 2 eps for 30%, then eps for the rest, each stage starting from the previous stage's best point projected onto the
/// smaller ball (the first from a random N(0, I) perturbation projected onto the 3 eps ball).
/// L1 (Croce &amp; Hein 2021, "Mind the box"): no momentum; the step moves the top fraction of coordinates by |gradient|,
/// a sparsity that starts at 20% and is re-set at every checkpoint to the best point's (see <see cref="Apgd"/>).
/// </summary>
public sealed record ApgdSettings(
    Threat Threat,
    ApgdLoss Loss = ApgdLoss.Ce,
    int NIter = 100,
    double Rho = 0.75,
    double Alpha = 0.75,
    int NRestarts = 1,
    int EotIter = 1,
    bool UseLargeReps = false)
{
    /// <summary>This record, or a clear <see cref="ArgumentOutOfRangeException"/> naming the bad setting.</summary>
    public ApgdSettings Validated()
    {
        ArgumentNullException.ThrowIfNull(Threat);
        if (!(Threat.Eps >= 0) || !double.IsFinite(Threat.Eps))
            throw new ArgumentOutOfRangeException("Threat.Eps", Threat.Eps, $"APGD eps (Threat.Eps) must be a finite number >= 0, got {Threat.Eps}");
        if (NIter < 1) throw new ArgumentOutOfRangeException(nameof(NIter), NIter, $"APGD NIter must be >= 1, got {NIter}");
        if (!(Rho >= 0 && Rho <= 1)) throw new ArgumentOutOfRangeException(nameof(Rho), Rho, $"APGD Rho must be in [0, 1], got {Rho}");
        if (!(Alpha > 0 && Alpha <= 1)) throw new ArgumentOutOfRangeException(nameof(Alpha), Alpha, $"APGD Alpha (momentum) must be in (0, 1], got {Alpha}");
        if (NRestarts < 1) throw new ArgumentOutOfRangeException(nameof(NRestarts), NRestarts, $"APGD NRestarts must be >= 1, got {NRestarts}");
        if (EotIter < 1) throw new ArgumentOutOfRangeException(nameof(EotIter), EotIter, $"APGD EotIter must be >= 1, got {EotIter}");
        if (!Enum.IsDefined(Loss)) throw new ArgumentOutOfRangeException(nameof(Loss), Loss, "unknown APGD loss");
        if (!Enum.IsDefined(Threat.Norm)) throw new ArgumentOutOfRangeException("Threat.Norm", Threat.Norm, "unknown APGD norm");
        if (UseLargeReps && Threat.Norm != Norm.L1)
            throw new ArgumentException($"APGD UseLargeReps is the L1 schedule (as in the reference), got {Threat}", nameof(UseLargeReps));
        if (UseLargeReps && NIter < 3)
            throw new ArgumentOutOfRangeException(nameof(NIter), NIter, $"APGD with UseLargeReps needs NIter >= 3 (three stages), got {NIter}");
        return this;
    }
}

/// <summary>
/// One EOT estimate at a point: Gradient [B, C, H, W] of the summed per-example loss with respect to the input,
/// Loss [B] and Logits [B, K], each the mean over the EOT passes. A deterministic model gives one pass's values.
/// </summary>
public sealed record EotEstimate(Tensor Gradient, Tensor Loss, Tensor Logits);

/// <summary>
/// APGD (Croce &amp; Hein 2020): PGD with momentum and a step size that halves at fixed checkpoints when the loss
/// stops rising, starting at 2 eps. Linf, L2 and L1 threats; CE or DLR loss. The schedule and the rules follow the
/// reference AutoAttack implementation (see /work/shared/notes/attacks.md).
/// L1 (APGD-L1, Croce &amp; Hein 2021, as the reference implements it): eta_0 = 1 eps; the step is
/// x + eta * sign(g_S) / |S| on the set S of the coordinates whose |g| is at least the (1 - k)-quantile of |g|, with the
/// sparsity k = 0.2 at the start, then projected onto the L1 ball and the box jointly (<see cref="Projection.L1BallAndBox"/>);
/// no momentum. Every max(floor(0.04 N), 1) iterations: with s the number of nonzero coordinates of the best point's
/// perturbation, k becomes s / D / 1.5; where s fell below 0.95 of its value at the previous check, eta is re-set to
/// eta_0 and the point restarts from its best point and gradient; elsewhere eta is divided by 1.5, never below eta_0 / 10.
/// </summary>
public static class Apgd
{
    /// <summary>eta_0 = 2 eps per point (Linf and L2).</summary>
    const double InitialStepFactor = 2.0;

    /// <summary>eta_0 = 1 eps per point for L1 (the reference's alpha for L1).</summary>
    const double InitialStepFactorL1 = 1.0;

    /// <summary>APGD-L1's sparsity schedule: the start (fraction of coordinates the step moves), the factor the step size is
    /// divided by at a check, the ratio of the largest to the smallest step size, and the sparsity's shrink factor.</summary>
    const double L1InitialTopK = 0.2, L1StepReduction = 1.5, L1MinStepRatio = 10.0, L1TopKDivisor = 1.5;

    /// <summary>eta_0 / eps for the norm: 2 for Linf and L2, 1 for L1.</summary>
    public static double InitialStepFactorFor(Norm norm) => norm == Norm.L1 ? InitialStepFactorL1 : InitialStepFactor;

    /// <summary>The interval between APGD-L1's checks: max(floor(0.04 N), 1) iterations (fixed, unlike Linf/L2).</summary>
    public static int L1CheckInterval(int nIter) => Math.Max((int)(0.04 * nIter), 1);

    /// <summary>The reference's large-reps schedule for N iterations: eps multipliers 3, 2, 1 for ceil(0.3 N), ceil(0.3 N)
    /// and the remaining iterations.</summary>
    public static (double EpsFactor, int NIter)[] LargeRepsSchedule(int nIter)
    {
        var first = (int)Math.Ceiling(0.3 * nIter);
        return [(3.0, first), (2.0, first), (1.0, nIter - 2 * first)];
    }

    /// <summary>
    /// Untargeted APGD. model: images [B, C, H, W] in [0, 1] -> logits [B, K]; x: [B, C, H, W]; y: [B] (int64).
    /// Only points the model classifies correctly are attacked, and each restart only those not yet fooled.
    /// Returns xAdv [B, C, H, W] (no gradient history): per point a misclassified iterate when one was found
    /// (x itself for points misclassified already), else the highest-loss point over all restarts.
    /// The model's mode (train/eval) is the caller's choice; parameters receive no gradient.
    /// </summary>
    public static Tensor Attack(Func<Tensor, Tensor> model, Tensor x, Tensor y, ApgdSettings settings,
        Generator? generator = null, AttackMonitor? monitor = null)
    {
        settings = settings.Validated();
        Func<Tensor, Tensor, Tensor> loss = settings.Loss switch
        {
            ApgdLoss.Ce => Losses.CrossEntropy,
            ApgdLoss.Dlr => Losses.Dlr,
            _ => throw new ArgumentException(
                $"APGD loss {settings.Loss} needs target classes: use ApgdTargeted.Attack", nameof(settings)),
        };
        using var scope = NewDisposeScope();
        x = x.detach();
        Tensor clean;
        using (no_grad()) clean = model(x);
        // Evaluate the loss once on the clean logits so a model with too few classes for DLR fails here,
        // with the loss's own message, even when no point is left to attack.
        loss(clean, y).Dispose();
        var outcome = Outcome.Start(clean, x, y);
        for (var restart = 0; restart < settings.NRestarts; restart++)
        {
            var next = outcome.AttackRobust(x, y, (_, xs, ys) => Run(model, xs, ys, loss, settings, generator, monitor));
            if (next is null) break;
            outcome.Dispose();
            outcome = next;
        }
        return outcome.Result().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The iterations (1-based counts of completed iterations) after which the step-size check runs. Interval
    /// lengths as the reference computes them: the first floor(0.22 N), each next one floor(0.03 N) shorter, never
    /// below floor(0.06 N) (each at least 1). N = 100 gives 22, 41, 57, 70, 80, 87, 93, 99.
    /// </summary>
    public static int[] Checkpoints(int nIter)
    {
        if (nIter < 1) throw new ArgumentOutOfRangeException(nameof(nIter), nIter, $"APGD NIter must be >= 1, got {nIter}");
        // Integer truncation of the fractions of N, as the reference does. The paper's form ceil(p_j * N) in
        // floating point breaks on rounding: 0.22 * 100 = 22.000000000000004, whose ceiling is 23.
        var interval = Math.Max((int)(0.22 * nIter), 1);
        var shrink = Math.Max((int)(0.03 * nIter), 1);
        var shortest = Math.Max((int)(0.06 * nIter), 1);
        var checkpoints = new List<int>();
        for (var at = interval; at <= nIter; at += interval)
        {
            checkpoints.Add(at);
            interval = Math.Max(interval - shrink, shortest);
        }
        return checkpoints.ToArray();
    }

    /// <summary>
    /// The step-size rule at a checkpoint closing an interval of k iterations; all tensors [B], returns bool [B]:
    /// halve eta where (a) the loss rose in at most rho * k of the interval's k steps (increases &lt;= rho * k,
    /// the reference's comparison), or (b) eta was not halved at the previous checkpoint and the best loss has not
    /// improved since then (bestLossAtLastCheck &gt;= bestLoss). reducedAtLastCheck starts all true, so (b) cannot
    /// fire at the first checkpoint.
    /// </summary>
    /// <param name="increases">[B] count of steps in the interval whose loss exceeded the previous step's.</param>
    /// <param name="interval">k, the interval's length in iterations.</param>
    /// <param name="rho">the oscillation threshold (0.75).</param>
    /// <param name="reducedAtLastCheck">[B] bool: halved at the previous checkpoint.</param>
    /// <param name="bestLossAtLastCheck">[B] best loss at the previous checkpoint (the start loss before the first).</param>
    /// <param name="bestLoss">[B] best loss now.</param>
    public static Tensor ShouldHalveStep(Tensor increases, int interval, double rho, Tensor reducedAtLastCheck,
        Tensor bestLossAtLastCheck, Tensor bestLoss)
    {
        using var scope = NewDisposeScope();
        var oscillating = increases.to_type(ScalarType.Float64).le(rho * interval);
        var stalled = reducedAtLastCheck.to_type(ScalarType.Bool).logical_not().logical_and(bestLossAtLastCheck.ge(bestLoss));
        return oscillating.logical_or(stalled).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One APGD update: z = P(x_k + eta * d(g)), with d the sign (Linf) or g / ||g||_2 (L2), then
    /// x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})). P projects onto the eps-ball around x and [0, 1].
    /// xk, xPrev, grad, x: [B, C, H, W]; stepSize: [B]; a: 1 at the first step, Alpha afterwards.
    /// </summary>
    public static Tensor MomentumStep(Tensor xk, Tensor xPrev, Tensor grad, Tensor stepSize, double a, Tensor x, Threat threat)
    {
        if (threat.Norm == Norm.L1)
            throw new ArgumentException("APGD-L1 has no momentum step: use SparseL1Step", nameof(threat));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var z = Projection.Project(xk + Rows(stepSize, xk) * Projection.AscentDirection(grad, threat.Norm), x, threat);
        var next = Projection.Project(xk + a * (z - xk) + (1 - a) * (xk - xPrev), x, threat);
        return next.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// APGD's starting point: Linf x + eps * t / ||t||_inf with t ~ U[-1, 1]; L2 x + eps * t / ||t||_2 with
    /// t ~ N(0, I); then clipped to [0, 1]. L1: x + P(t), t ~ N(0, I), P the joint L1-ball and box projection. (On the sphere of radius eps, unlike <see cref="Projection.RandomStart(Tensor, Threat, Generator?)"/>,
    /// which samples the whole ball for PGD.) x: [B, C, H, W] -> [B, C, H, W].
    /// </summary>
    public static Tensor RandomStart(Tensor x, Threat threat, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        if (threat.Norm == Norm.L1)
        {
            // APGD-L1: a N(0, I) perturbation projected onto the L1 ball and the box jointly.
            var gaussian = randn(x.shape, dtype: x.dtype, device: x.device, generator: generator);
            return (x + Projection.L1BallAndBox(gaussian, x, threat.Eps)).clamp(0, 1).MoveToOuterDisposeScope();
        }
        var t = threat.Norm == Norm.Linf
            ? rand(x.shape, dtype: x.dtype, device: x.device, generator: generator) * 2 - 1
            : randn(x.shape, dtype: x.dtype, device: x.device, generator: generator);
        var unit = t / (Rows(Projection.NormOf(t, threat.Norm), t) + 1e-12);
        return (x + threat.Eps * unit).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The EOT gradient at x [B, C, H, W]: the mean over eotIter forward/backward passes of the gradient of
    /// sum_b loss(model(x), y)_b with respect to x only (no parameter gradients), with the passes' mean loss [B]
    /// and mean logits [B, K]. loss: (logits [B, K], y [B]) -> [B]. For a stochastic model each pass draws anew.
    /// The loss and logits are averaged too (the reference keeps the last pass's) so that the best-point and
    /// misclassification bookkeeping sees the same expectation the gradient estimates, not one random draw.
    /// </summary>
    public static EotEstimate EotGradient(Func<Tensor, Tensor> model, Tensor x, Tensor y, Func<Tensor, Tensor, Tensor> loss, int eotIter)
    {
        if (eotIter < 1) throw new ArgumentOutOfRangeException(nameof(eotIter), eotIter, $"EOT iterations must be >= 1, got {eotIter}");
        if (EotModels.EotGradientOf(model) is { } own) return own(x, logits => loss(logits, y), eotIter, null);
        using var scope = NewDisposeScope();
        var input = x.detach().requires_grad_(true);
        var gradSum = zeros_like(x);
        Tensor? lossSum = null, logitsSum = null;
        for (var pass = 0; pass < eotIter; pass++)
        {
            // Each pass's graph is freed as soon as its gradient is taken.
            using var passScope = NewDisposeScope();
            Tensor logits, losses;
            using (enable_grad())
            {
                logits = model(input);
                losses = loss(logits, y);
            }
            var grad = autograd.grad([losses.sum()], [input])[0];
            using (no_grad())
            {
                gradSum.add_(grad);
                if (lossSum is null) lossSum = losses.detach().clone().MoveToOuterDisposeScope();
                else lossSum.add_(losses.detach());
                if (logitsSum is null) logitsSum = logits.detach().clone().MoveToOuterDisposeScope();
                else logitsSum.add_(logits.detach());
            }
        }
        return new EotEstimate((gradSum / eotIter).MoveToOuterDisposeScope(), (lossSum! / eotIter).MoveToOuterDisposeScope(),
            (logitsSum! / eotIter).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// One APGD restart on x [n, C, H, W], y [n]: <see cref="SingleRun"/>, or with UseLargeReps (L1) the three stages
    /// at 3, 2 and 1 eps (<see cref="LargeRepsSchedule"/>), each from the previous stage's best point projected onto the
    /// stage's ball. The result is the last stage's (its fooled iterates lie within eps). The monitor counts every
    /// gradient of every stage, and the iterates of the last stage (a stalled point never moved in it).
    /// </summary>
    internal static RunResult Run(Func<Tensor, Tensor> model, Tensor x, Tensor y, Func<Tensor, Tensor, Tensor> loss,
        ApgdSettings settings, Generator? generator, AttackMonitor? monitor)
    {
        if (!settings.UseLargeReps) return SingleRun(model, x, y, loss, settings, generator, monitor);
        using var scope = NewDisposeScope();
        var schedule = LargeRepsSchedule(settings.NIter);
        var eps = settings.Threat.Eps;
        var start = x + Projection.L1BallAndBox(randn(x.shape, dtype: x.dtype, device: x.device, generator: generator), x,
            schedule[0].EpsFactor * eps);
        RunResult? result = null;
        for (var stage = 0; stage < schedule.Length; stage++)
        {
            var (factor, nIter) = schedule[stage];
            var stageThreat = settings.Threat with { Eps = factor * eps };
            var init = (x + Projection.L1BallAndBox(start - x, x, stageThreat.Eps)).clamp(0, 1);
            var last = stage == schedule.Length - 1;
            result = SingleRun(model, x, y, loss, settings with { Threat = stageThreat, NIter = nIter, UseLargeReps = false },
                generator, monitor, init, countIterates: last);
            start = result.XBest;
        }
        return result!.MoveOut();
    }

    /// <summary>
    /// One APGD run on x [n, C, H, W], y [n] with the given per-example loss, from a random start (or from xInit
    /// [n, C, H, W], clipped to [0, 1]: the large-reps stages). Returns the highest-loss point, whether a misclassified
    /// iterate was met, its loss and the last misclassified iterate.
    /// </summary>
    internal static RunResult SingleRun(Func<Tensor, Tensor> model, Tensor x, Tensor y, Func<Tensor, Tensor, Tensor> loss,
        ApgdSettings settings, Generator? generator, AttackMonitor? monitor, Tensor? xInit = null, bool countIterates = true)
    {
        using var run = NewDisposeScope();
        var l1 = settings.Threat.Norm == Norm.L1;
        Dictionary<int, int> intervals;
        if (l1)
        {
            var every = L1CheckInterval(settings.NIter);
            intervals = Enumerable.Range(1, settings.NIter / every).ToDictionary(j => j * every, _ => every);
        }
        else
        {
            var checkpoints = Checkpoints(settings.NIter);
            intervals = checkpoints.Select((at, j) => (at, k: at - (j == 0 ? 0 : checkpoints[j - 1]))).ToDictionary(c => c.at, c => c.k);
        }

        var x0 = xInit is null ? RandomStart(x, settings.Threat, generator) : xInit.clamp(0, 1);
        var first = monitor is null || !countIterates ? null : x0.clone(); // the state's bookkeeping frees x0 as the iterates move on
        var start = EotGradient(model, x0, y, loss, settings.EotIter);
        monitor?.Logits(start.Logits);
        monitor?.Gradients(start.Gradient);
        var n = x.shape[0];
        var features = x[0].numel();
        // APGD-L1's sparsity: 20% of the coordinates from a random start; from a given start, the start's own (over 1.5).
        Tensor topK, sparsityOld;
        if (xInit is null || !l1)
        {
            topK = full([n], L1InitialTopK, dtype: ScalarType.Float64, device: x.device);
            sparsityOld = full([n], (double)features, dtype: ScalarType.Float64, device: x.device);
        }
        else
        {
            sparsityOld = NonZeros(x0 - x);
            topK = sparsityOld / features / L1TopKDivisor;
        }
        var state = new RunState(
            XAdv: x0, XPrev: x0, Grad: start.Gradient,
            XBest: x0, GradBest: start.Gradient, LossBest: start.Loss,
            XBestAdv: x0, Fooled: start.Logits.argmax(1).ne(y),
            LossPrev: start.Loss, Increases: zeros_like(start.Loss),
            StepSize: full([n], InitialStepFactorFor(settings.Threat.Norm) * settings.Threat.Eps, dtype: x.dtype, device: x.device),
            ReducedAtLastCheck: ones([n], dtype: ScalarType.Bool, device: x.device),
            LossBestAtLastCheck: start.Loss, TopK: topK, SparsityOld: sparsityOld);

        for (var i = 0; i < settings.NIter; i++)
        {
            using var iteration = NewDisposeScope();
            var next = Iterate(state, i, intervals.TryGetValue(i + 1, out var k) ? k : null, model, x, y, loss, settings, monitor);
            state = state.Advance(next);
        }
        if (first is not null) monitor!.Iterates(first, state.XAdv);
        return new RunResult(state.XBest, state.Fooled, state.LossBest, state.XBestAdv).MoveOut();
    }

    /// <summary>Per image the number of nonzero entries of delta [B, ...], float64 [B] (the reference's L0_norm).</summary>
    static Tensor NonZeros(Tensor delta) => delta.flatten(1).ne(0).sum([1]).to_type(ScalarType.Float64);

    /// <summary>
    /// APGD-L1's step: with k = topK [B] (a fraction of the D coordinates), the threshold is the entry at position
    /// clamp(floor((1 - k) D), 0, D - 1) of the ascending |g|; the coordinates S with |g| at least the threshold move by
    /// eta * sign(g) / |S|, then the perturbation is projected onto the L1 ball and the box jointly. xk, grad, x:
    /// [B, C, H, W]; stepSize, topK: [B]. Returns x_{k+1} [B, C, H, W] in [0, 1].
    /// </summary>
    public static Tensor SparseL1Step(Tensor xk, Tensor grad, Tensor stepSize, Tensor topK, Tensor x, double eps)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var flat = grad.flatten(1);
        var features = flat.shape[1];
        var magnitude = flat.abs();
        var position = ((1 - topK) * features).floor().clamp(0, features - 1).to_type(ScalarType.Int64).unsqueeze(1);
        var threshold = magnitude.sort(1).Values.gather(1, position);
        var signs = flat.sign() * magnitude.ge(threshold).to_type(flat.dtype);
        var step = signs / (signs.abs().sum([1], keepdim: true) + 1e-10);
        var moved = xk + Rows(stepSize, xk) * step.view_as(xk);
        return (x + Projection.L1BallAndBox(moved - x, x, eps)).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary>Iteration i: the step (momentum for Linf and L2, the sparse step for L1), the EOT gradient there, the
    /// bookkeeping of best and misclassified points, and at a checkpoint closing an interval of k iterations the step-size
    /// rule (Linf/L2: halving; L1: the sparsity and step-size update).</summary>
    static RunState Iterate(RunState s, int i, int? interval, Func<Tensor, Tensor> model, Tensor x, Tensor y,
        Func<Tensor, Tensor, Tensor> loss, ApgdSettings settings, AttackMonitor? monitor)
    {
        var l1 = settings.Threat.Norm == Norm.L1;
        var xNext = l1
            ? SparseL1Step(s.XAdv, s.Grad, s.StepSize, s.TopK, x, settings.Threat.Eps)
            : MomentumStep(s.XAdv, s.XPrev, s.Grad, s.StepSize, i == 0 ? 1.0 : settings.Alpha, x, settings.Threat);
        var e = EotGradient(model, xNext, y, loss, settings.EotIter);
        monitor?.Logits(e.Logits);
        monitor?.Gradients(e.Gradient);

        var wrong = e.Logits.argmax(1).ne(y);
        var improved = e.Loss.gt(s.LossBest);
        var lossBest = where(improved, e.Loss, s.LossBest);
        var xBest = where(Rows(improved, xNext), xNext, s.XBest);
        var gradBest = where(Rows(improved, xNext), e.Gradient, s.GradBest);
        // The step counts toward condition (a) when its loss beats the previous iterate's. The first step is
        // compared with the loss at the starting point, as in the paper (the reference compares it with a not yet
        // written entry of its loss history, i.e. with 0).
        var increases = s.Increases + e.Loss.gt(s.LossPrev).to_type(s.Increases.dtype);
        var next = s with
        {
            XAdv = xNext, XPrev = s.XAdv, Grad = e.Gradient,
            XBest = xBest, GradBest = gradBest, LossBest = lossBest,
            XBestAdv = where(Rows(wrong, xNext), xNext, s.XBestAdv), Fooled = s.Fooled.logical_or(wrong),
            LossPrev = e.Loss, Increases = increases,
        };
        if (interval is not int k) return next;

        if (l1)
        {
            // The sparsity follows the best point's; where it shrank clearly, the step size starts over from the best point.
            var eta0 = InitialStepFactorL1 * settings.Threat.Eps;
            var sparsity = NonZeros(xBest - x);
            var shrank = (sparsity / s.SparsityOld).lt(0.95);
            return next with
            {
                XAdv = where(Rows(shrank, xNext), xBest, xNext),
                Grad = where(Rows(shrank, xNext), gradBest, e.Gradient),
                StepSize = where(shrank, full_like(s.StepSize, eta0), s.StepSize / L1StepReduction).clamp(eta0 / L1MinStepRatio, eta0),
                TopK = sparsity / x[0].numel() / L1TopKDivisor,
                SparsityOld = sparsity,
            };
        }

        var halve = ShouldHalveStep(increases, k, settings.Rho, s.ReducedAtLastCheck, s.LossBestAtLastCheck, lossBest);
        // Halved points restart from their best point with its gradient; the momentum term keeps x_{k-1}.
        return next with
        {
            XAdv = where(Rows(halve, xNext), xBest, xNext),
            Grad = where(Rows(halve, xNext), gradBest, e.Gradient),
            StepSize = where(halve, s.StepSize / 2, s.StepSize),
            Increases = zeros_like(increases),
            ReducedAtLastCheck = halve,
            LossBestAtLastCheck = lossBest,
        };
    }

    /// <summary>A per-point tensor [B] viewed as [B, 1, ..., 1] to broadcast against like [B, ...].</summary>
    internal static Tensor Rows(Tensor perPoint, Tensor like) =>
        perPoint.reshape([-1, .. Enumerable.Repeat(1L, (int)like.dim() - 1)]);

    /// <summary>The state one APGD run carries from iteration to iteration; per-point tensors are [n] and
    /// points [n, C, H, W]. TopK and SparsityOld are APGD-L1's (fraction of coordinates a step moves, and the best
    /// point's nonzero count at the last check), float64; unused for Linf and L2. Fields may share tensors (XPrev is the previous XAdv).</summary>
    sealed record RunState(
        Tensor XAdv, Tensor XPrev, Tensor Grad,
        Tensor XBest, Tensor GradBest, Tensor LossBest,
        Tensor XBestAdv, Tensor Fooled,
        Tensor LossPrev, Tensor Increases, Tensor StepSize,
        Tensor ReducedAtLastCheck, Tensor LossBestAtLastCheck,
        Tensor TopK, Tensor SparsityOld)
    {
        Tensor[] Tensors => [XAdv, XPrev, Grad, XBest, GradBest, LossBest, XBestAdv, Fooled, LossPrev, Increases, StepSize,
            ReducedAtLastCheck, LossBestAtLastCheck, TopK, SparsityOld];

        /// <summary>
        /// Called inside an iteration's dispose scope with the state that iteration built: its new tensors move out
        /// to the run's scope, tensors carried over stay where they are, and the old ones no longer used are
        /// disposed now rather than piling up in the run's scope for all NIter iterations.
        /// </summary>
        public RunState Advance(RunState next)
        {
            var old = new HashSet<Tensor>(Tensors, ReferenceEqualityComparer.Instance);
            var kept = new HashSet<Tensor>(next.Tensors, ReferenceEqualityComparer.Instance);
            foreach (var t in kept) if (!old.Contains(t)) t.MoveToOuterDisposeScope();
            foreach (var t in old) if (!kept.Contains(t)) t.Dispose();
            return next;
        }
    }
}

/// <summary>What one APGD run found, per point: XBest [n, C, H, W] with loss LossBest [n]; Fooled [n] bool and
/// XBestAdv [n, C, H, W], the last misclassified iterate (meaningful where Fooled).</summary>
internal sealed record RunResult(Tensor XBest, Tensor Fooled, Tensor LossBest, Tensor XBestAdv)
{
    /// <summary>Moves the tensors to the outer dispose scope (each once, even when fields share one).</summary>
    public RunResult MoveOut()
    {
        foreach (var t in new HashSet<Tensor>([XBest, Fooled, LossBest, XBestAdv], ReferenceEqualityComparer.Instance))
            t.MoveToOuterDisposeScope();
        return this;
    }
}

/// <summary>
/// The per-point result across restarts (and APGD-T's targets): Adv [B, C, H, W] the misclassified point where
/// Fooled [B], Best [B, C, H, W] the highest-loss point with BestLoss [B] (float64) for the others.
/// </summary>
internal sealed record Outcome(Tensor Adv, Tensor Fooled, Tensor Best, Tensor BestLoss) : IDisposable
{
    /// <summary>Before any attack: points misclassified on clean logits [B, K] are fooled already, by x itself.</summary>
    public static Outcome Start(Tensor cleanLogits, Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        return new Outcome(x.detach().clone(), cleanLogits.detach().argmax(1).ne(y), x.detach().clone(),
            full([x.shape[0]], double.NegativeInfinity, dtype: ScalarType.Float64, device: x.device)).MoveOut();
    }

    /// <summary>
    /// Runs one attack on the points not yet fooled (run gets their indices [n], x [n, ...] and y [n]) and merges
    /// its result; null when every point is fooled already. One host round trip (the number of such points).
    /// </summary>
    public Outcome? AttackRobust(Tensor x, Tensor y, Func<Tensor, Tensor, Tensor, RunResult> run)
    {
        using var scope = NewDisposeScope();
        var idx = Fooled.logical_not().nonzero().squeeze(1);
        if (idx.shape[0] == 0) return null;
        var r = run(idx, x.index_select(0, idx), y.index_select(0, idx));
        var advBefore = Adv.index_select(0, idx);
        var bestBefore = Best.index_select(0, idx);
        var lossBefore = BestLoss.index_select(0, idx);
        var runLoss = r.LossBest.to_type(ScalarType.Float64);
        var better = runLoss.gt(lossBefore);
        return new Outcome(
            Adv.index_copy(0, idx, where(Apgd.Rows(r.Fooled, advBefore), r.XBestAdv, advBefore)),
            Fooled.index_copy(0, idx, r.Fooled),       // idx holds exactly the points not fooled before
            Best.index_copy(0, idx, where(Apgd.Rows(better, bestBefore), r.XBest, bestBefore)),
            BestLoss.index_copy(0, idx, where(better, runLoss, lossBefore))).MoveOut();
    }

    /// <summary>xAdv [B, C, H, W]: the misclassified point where one was found, else the highest-loss point.</summary>
    public Tensor Result() => where(Apgd.Rows(Fooled, Adv), Adv, Best);

    Outcome MoveOut()
    {
        Adv.MoveToOuterDisposeScope(); Fooled.MoveToOuterDisposeScope();
        Best.MoveToOuterDisposeScope(); BestLoss.MoveToOuterDisposeScope();
        return this;
    }

    public void Dispose()
    {
        Adv.Dispose(); Fooled.Dispose(); Best.Dispose(); BestLoss.Dispose();
    }
}
