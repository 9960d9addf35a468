using static TorchSharp.torch;

namespace Carso.Attacks;

public enum Norm { Linf, L2 }

/// <summary>A threat model: perturbations of at most Eps in the given norm, images kept in [0, 1].</summary>
public sealed record Threat(Norm Norm, double Eps)
{
    public static Threat Linf(double eps) => new Threat(Norm.Linf, eps).Validated();
    public static Threat L2(double eps) => new Threat(Norm.L2, eps).Validated();

    public Threat Validated() => Eps >= 0 && double.IsFinite(Eps)
        ? this
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
        _ => throw new ArgumentOutOfRangeException(nameof(norm)),
    };

    /// <summary>P: projects xAdv onto the eps-ball around x, then onto the box [0, 1].</summary>
    public static Tensor Project(Tensor xAdv, Tensor x, Threat threat)
    {
        using var scope = NewDisposeScope();
        var delta = xAdv - x;
        delta = threat.Norm switch
        {
            Norm.Linf => delta.clamp(-threat.Eps, threat.Eps),
            Norm.L2 => delta * (threat.Eps / (NormOf(delta, Norm.L2) + 1e-12)).clamp_max(1.0).view(-1, 1, 1, 1),
            _ => throw new ArgumentOutOfRangeException(nameof(threat)),
        };
        return (x + delta).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary>A uniformly random point of the ball (Linf: U(-eps, eps) per pixel; L2: random direction, radius eps * U^(1/d)), clipped to [0, 1].</summary>
    public static Tensor RandomStart(Tensor x, Threat threat, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        Tensor delta;
        if (threat.Norm == Norm.Linf)
            delta = (rand(x.shape, generator: generator, device: x.device) * 2 - 1) * threat.Eps;
        else
        {
            var direction = randn(x.shape, generator: generator, device: x.device);
            direction /= NormOf(direction, Norm.L2).view(-1, 1, 1, 1) + 1e-12;
            var d = x[0].numel();
            var radius = rand(x.shape[0], generator: generator, device: x.device).pow(1.0 / d) * threat.Eps;
            delta = direction * radius.view(-1, 1, 1, 1);
        }
        return (x + delta).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary>The steepest-ascent direction of a gradient for the norm: sign for Linf, unit L2 for L2.</summary>
    public static Tensor AscentDirection(Tensor grad, Norm norm) => norm switch
    {
        Norm.Linf => grad.sign(),
        Norm.L2 => grad / (NormOf(grad, Norm.L2).view(-1, 1, 1, 1) + 1e-12),
        _ => throw new ArgumentOutOfRangeException(nameof(norm)),
    };
}
