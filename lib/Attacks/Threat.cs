using static TorchSharp.torch;

namespace Carso.Attacks;

public enum Norm { Linf, L2, L1 }

/// <summary>A threat model: perturbations of at most Eps in the given norm, images kept in [0, 1].</summary>
public sealed record Threat(Norm Norm, double Eps)
{
    public static Threat Linf(double eps) => new Threat(Norm.Linf, eps).Validated();
    public static Threat L2(double eps) => new Threat(Norm.L2, eps).Validated();
    public static Threat L1(double eps) => new Threat(Norm.L1, eps).Validated();

    public Threat Validated() => Eps >= 0 && double.IsFinite(Eps)
        ? Enum.IsDefined(Norm) ? this : throw new ArgumentOutOfRangeException(nameof(Norm), Norm, "unknown threat norm")
        : throw new ArgumentOutOfRangeException(nameof(Eps), $"threat eps must be a finite number >= 0, got {Eps}");

    public override string ToString() => $"{Norm} eps={Eps}";
}

/// <summary>Projections and norms used by every attack. Images are [B, C, H, W]; norms are per image, [B].</summary>
public static class Projection
{
    /// <summary>Per-image norm of delta [B, ...] -> [B].</summary>
    public static Tensor NormOf(Tensor delta, Norm norm) => norm switch
    {
        Norm.Linf => delta.flatten(1).abs().amax([1]),
        Norm.L2 => delta.flatten(1).norm(1, keepdim: false, p: 2),
        Norm.L1 => delta.flatten(1).abs().sum([1]),
        _ => throw new ArgumentOutOfRangeException(nameof(norm)),
    };

    /// <summary>P: projects xAdv onto the eps-ball around x, then onto the box [0, 1]. For L1 the two constraints are
    /// projected onto jointly (<see cref="L1BallAndBox"/>: the Euclidean projection onto their intersection, as APGD-L1
    /// publishes it), since clipping an L1-projected point to the box is not the projection onto the intersection.</summary>
    public static Tensor Project(Tensor xAdv, Tensor x, Threat threat)
    {
        using var scope = NewDisposeScope();
        var delta = xAdv - x;
        if (threat.Norm == Norm.L1)
            return (x + L1BallAndBox(delta, x, threat.Eps)).clamp(0, 1).MoveToOuterDisposeScope();
        delta = threat.Norm switch
        {
            Norm.Linf => delta.clamp(-threat.Eps, threat.Eps),
            Norm.L2 => delta * (threat.Eps / (NormOf(delta, Norm.L2) + 1e-12)).clamp_max(1.0).view(-1, 1, 1, 1),
            _ => throw new ArgumentOutOfRangeException(nameof(threat)),
        };
        return (x + delta).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary>P with a per-example radius: projects row i of xAdv [B, C, H, W] onto the eps[i]-ball around x[i] in the
    /// norm (Linf or L2), then onto [0, 1]. eps: [B], in xAdv's dtype and device. Row i equals
    /// <see cref="Project(Tensor, Tensor, Threat)"/> at Eps = eps[i] (Linf exactly; L2 up to float rounding).</summary>
    public static Tensor Project(Tensor xAdv, Tensor x, Norm norm, Tensor eps)
    {
        using var scope = NewDisposeScope();
        var delta = xAdv - x;
        var radius = eps.view(-1, 1, 1, 1);
        delta = norm switch
        {
            Norm.Linf => minimum(maximum(delta, -radius), radius),
            Norm.L2 => delta * (eps / (NormOf(delta, Norm.L2) + 1e-12)).clamp_max(1.0).view(-1, 1, 1, 1),
            _ => throw new NotSupportedException($"per-example eps: Linf and L2 only, got {norm}"),
        };
        return (x + delta).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The Euclidean projection of a perturbation onto {d : ||d||_1 &lt;= eps, 0 &lt;= x + d &lt;= 1}, per image,
    /// batched (APGD-L1's projection, Croce &amp; Hein 2021). delta, x: [B, ...] with x in [0, 1]; returns the projected
    /// perturbation [B, ...] (not the point). Computed in float64, returned in delta's dtype.
    /// </summary>
    /// <remarks>
    /// By the optimality conditions the projection is a soft threshold at a level lambda &gt;= 0 followed by the box clamp:
    /// d_i = sign(v_i) min(max(|v_i| - lambda, 0), r_i), r_i the room to the box in the direction of v_i (1 - x_i or x_i).
    /// lambda = 0 when the clamped v is inside the ball; otherwise the L1 norm f(lambda) = sum_i min(max(|v_i| - lambda, 0), r_i)
    /// is nonincreasing and piecewise linear with breakpoints max(|v_i| - r_i, 0) (where coordinate i starts to shrink, slope
    /// -1) and |v_i| (where it reaches 0, slope back +1): sorting the 2D breakpoints and a cumulative sum give f at each, and
    /// lambda solves the linear equation f(lambda) = eps on the segment where f crosses eps. Exact, no iteration.
    /// </remarks>
    public static Tensor L1BallAndBox(Tensor delta, Tensor x, double eps)
    {
        using var scope = NewDisposeScope();
        var shape = delta.shape;
        var v = delta.flatten(1).to_type(ScalarType.Float64);
        var x64 = x.flatten(1).to_type(ScalarType.Float64);
        var a = v.abs();
        var room = where(v.ge(0), 1 - x64, x64).clamp_min(0);
        var clipped = minimum(a, room);                       // the box clamp alone
        var lambda = L1ThresholdLevel(a, room, eps);
        var projected = v.sign() * minimum((a - lambda.unsqueeze(1)).clamp_min(0), room);
        // Where the box clamp alone is inside the ball, lambda is 0 and the two agree; keep the clamp exactly.
        var inside = clipped.sum([1]).le(eps).unsqueeze(1);
        var result = where(inside, v.sign() * clipped, projected);
        return result.to_type(delta.dtype).view(shape).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The soft-threshold level of <see cref="L1BallAndBox"/>: per row the smallest lambda &gt;= 0 with
    /// sum_i min(max(a_i - lambda, 0), r_i) &lt;= eps. a, r: [N, D] &gt;= 0 (float64); returns [N].
    /// </summary>
    static Tensor L1ThresholdLevel(Tensor a, Tensor r, double eps)
    {
        using var scope = NewDisposeScope();
        var n = a.shape[0];
        var start = (a - r).clamp_min(0);                      // coordinate starts shrinking: slope -1 from here ...
        var breakpoints = cat([start, a], 1);                  // ... and stops at a_i: slope +1 there
        var increments = cat([-ones_like(a), ones_like(a)], 1);
        var (sorted, order) = breakpoints.sort(1);
        var slopeAfter = increments.gather(1, order).cumsum(1); // slope of f on [b_k, b_k+1]
        var gaps = sorted.diff(1);                              // b_k+1 - b_k
        var atZero = minimum(a, r).sum([1], keepdim: true);     // f is flat from 0 to the first breakpoint
        var fAt = cat([atZero, atZero + (slopeAfter.narrow(1, 0, sorted.shape[1] - 1) * gaps).cumsum(1)], 1);
        // f is nonincreasing: the last breakpoint with f > eps starts the segment where f crosses eps.
        var above = fAt.gt(eps).sum([1]);
        var k = (above - 1).clamp(0, sorted.shape[1] - 1).unsqueeze(1);
        var slope = slopeAfter.gather(1, k).squeeze(1);
        var fk = fAt.gather(1, k).squeeze(1);
        var bk = sorted.gather(1, k).squeeze(1);
        var lambda = bk + (fk - eps) / (-slope).clamp_min(1);   // slope < 0 on a crossing segment (an integer)
        return where(above.gt(0), lambda, zeros([n], dtype: a.dtype, device: a.device)).MoveToOuterDisposeScope();
    }

    /// <summary>A uniformly random point of the ball (Linf: U(-eps, eps) per pixel; L2: random direction, radius
    /// eps * U^(1/d); L1: a Laplace direction normalised in L1, radius eps * U^(1/d)), clipped to [0, 1] (for L1 projected
    /// onto the ball and box jointly).</summary>
    public static Tensor RandomStart(Tensor x, Threat threat, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        Tensor delta;
        if (threat.Norm == Norm.Linf)
            delta = (rand(x.shape, generator: generator, device: x.device) * 2 - 1) * threat.Eps;
        else
        {
            Tensor direction;
            if (threat.Norm == Norm.L2)
                direction = randn(x.shape, generator: generator, device: x.device);
            else
            {
                // Laplace(0, 1) = sign * Exp(1): normalised in L1 it is uniform on the L1 sphere.
                var exponential = -(1 - rand(x.shape, generator: generator, device: x.device)).log();
                direction = exponential * (rand(x.shape, generator: generator, device: x.device).lt(0.5).to_type(x.dtype) * 2 - 1);
            }
            direction /= NormOf(direction, threat.Norm).view(-1, 1, 1, 1) + 1e-12;
            var d = x[0].numel();
            var radius = rand(x.shape[0], generator: generator, device: x.device).pow(1.0 / d) * threat.Eps;
            delta = direction * radius.view(-1, 1, 1, 1);
        }
        // Linf and L2 deltas lie in the ball already; an L1 delta needs the joint projection to stay in it inside the box.
        return (threat.Norm == Norm.L1 ? x + L1BallAndBox(delta, x, threat.Eps) : x + delta).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary><see cref="RandomStart(Tensor, Threat, Generator?)"/> with a per-example radius eps [B] (Linf or L2), clipped to
    /// [0, 1]. x: [B, C, H, W]. Linf draws exactly what the scalar form draws (one uniform per pixel, in row order), so on
    /// the CPU generator one call over consecutive groups of rows draws what one call per group, in order, drew. L2 draws
    /// all directions, then all radii: the same distribution as per-group calls, not the same numbers.</summary>
    public static Tensor RandomStart(Tensor x, Norm norm, Tensor eps, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        var radius = eps.view(-1, 1, 1, 1);
        Tensor delta;
        switch (norm)
        {
            case Norm.Linf:
                delta = (rand(x.shape, generator: generator, device: x.device) * 2 - 1) * radius;
                break;
            case Norm.L2:
            {
                var direction = randn(x.shape, generator: generator, device: x.device);
                direction /= NormOf(direction, Norm.L2).view(-1, 1, 1, 1) + 1e-12;
                var d = x[0].numel();
                delta = direction * (rand(x.shape[0], generator: generator, device: x.device).pow(1.0 / d).view(-1, 1, 1, 1) * radius);
                break;
            }
            default: throw new NotSupportedException($"per-example eps: Linf and L2 only, got {norm}");
        }
        return (x + delta).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary>The fraction of pixels an L1 ascent step moves (<see cref="AscentDirection"/>): APGD-L1's starting sparsity.</summary>
    public const double L1AscentFraction = 0.2;

    /// <summary>The ascent direction of a gradient for the norm: sign for Linf (steepest), unit L2 for L2 (steepest); for
    /// L1 a sparse sign step in the manner of SLIDE (Tramèr &amp; Boneh 2019) and APGD-L1's first step: the signs of the
    /// pixels whose |g| is at least the (1 - 0.2)-quantile of |g| (the top 20%; ties share), normalised to unit L1. (The
    /// steepest L1 direction, one pixel, stalls PGD as soon as that pixel reaches the box.)</summary>
    public static Tensor AscentDirection(Tensor grad, Norm norm)
    {
        switch (norm)
        {
            case Norm.Linf: return grad.sign();
            case Norm.L2: return grad / (NormOf(grad, Norm.L2).view(-1, 1, 1, 1) + 1e-12);
            case Norm.L1:
            {
                using var scope = NewDisposeScope();
                var flat = grad.flatten(1);
                var features = flat.shape[1];
                var position = Math.Clamp((long)Math.Floor((1 - L1AscentFraction) * features), 0, features - 1);
                var magnitude = flat.abs();
                var threshold = magnitude.sort(1).Values.narrow(1, position, 1);
                var chosen = magnitude.ge(threshold).logical_and(magnitude.gt(0)).to_type(grad.dtype) * flat.sign();
                return (chosen / (chosen.abs().sum([1], keepdim: true) + 1e-12)).view_as(grad).MoveToOuterDisposeScope();
            }
            default: throw new ArgumentOutOfRangeException(nameof(norm));
        }
    }
}
