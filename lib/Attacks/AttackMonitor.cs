using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>
/// Counts what an attack met that can make its result meaningless: non-finite logits or gradients, and
/// gradients that are exactly zero (a sign of gradient masking). Passed explicitly to attacks (optional);
/// thread-safe; counts are per example.
/// </summary>
public sealed class AttackMonitor
{
    long nonFiniteLogits, nonFiniteGradients, zeroGradients, gradientEvaluations, stalledPoints, attackedPoints;

    public long NonFiniteLogits => Interlocked.Read(ref nonFiniteLogits);
    public long NonFiniteGradients => Interlocked.Read(ref nonFiniteGradients);
    public long ZeroGradients => Interlocked.Read(ref zeroGradients);
    public long GradientEvaluations => Interlocked.Read(ref gradientEvaluations);

    /// <summary>Records the logits [B, K] of one forward pass: examples with any non-finite logit.
    /// Costs one host round trip; attacks call it once per iteration at most.</summary>
    public void Logits(Tensor logits)
    {
        using var scope = NewDisposeScope();
        Interlocked.Add(ref nonFiniteLogits, logits.detach().isfinite().all(1).logical_not().sum().item<long>());
    }

    /// <summary>Records the input gradients [B, ...] of one backward pass: non-finite and all-zero examples.</summary>
    public void Gradients(Tensor grad)
    {
        using var scope = NewDisposeScope();
        var flat = grad.detach().flatten(1);
        var counts = stack([flat.isfinite().all(1).logical_not().sum(), flat.eq(0).all(1).sum()]).cpu().data<long>().ToArray();
        Interlocked.Add(ref nonFiniteGradients, counts[0]);
        Interlocked.Add(ref zeroGradients, counts[1]);
        Interlocked.Add(ref gradientEvaluations, flat.shape[0]);
    }

    /// <summary>Records an attack run's first iterate (after any random start) and its last, [B, ...] each: points whose
    /// iterate never moved are stalled (e.g. sign(NaN) = 0 steps, or a zero gradient everywhere).</summary>
    public void Iterates(Tensor first, Tensor last)
    {
        using var scope = NewDisposeScope();
        Interlocked.Add(ref stalledPoints, last.detach().eq(first.detach()).flatten(1).all(1).sum().item<long>());
        Interlocked.Add(ref attackedPoints, first.shape[0]);
    }

    /// <summary>Counts per example: non-finite logits and gradients (counted before any sign or normalisation), all-zero
    /// gradients, gradient evaluations, and attack runs whose iterate never moved, out of the runs recorded.</summary>
    public sealed record Counts(long NonFiniteLogits, long NonFiniteGradients, long ZeroGradients, long GradientEvaluations,
        long StalledPoints = 0, long AttackedPoints = 0)
    {
        public static Counts Zero { get; } = new(0, 0, 0, 0);

        public static Counts operator +(Counts a, Counts b) => new(a.NonFiniteLogits + b.NonFiniteLogits,
            a.NonFiniteGradients + b.NonFiniteGradients, a.ZeroGradients + b.ZeroGradients, a.GradientEvaluations + b.GradientEvaluations,
            a.StalledPoints + b.StalledPoints, a.AttackedPoints + b.AttackedPoints);

        public static Counts Sum(IEnumerable<Counts> counts) => counts.Aggregate(Zero, (a, b) => a + b);
    }

    public Counts Snapshot() => new(NonFiniteLogits, NonFiniteGradients, ZeroGradients, GradientEvaluations,
        Interlocked.Read(ref stalledPoints), Interlocked.Read(ref attackedPoints));
}
