using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>
/// PGD (Madry et al. 2018): from a random start in the ball, Steps steps of size StepSize along the
/// steepest-ascent direction of the loss (sign of the gradient for Linf), each followed by the projection P.
/// StepSize null means 2.5 * eps / Steps (Madry et al.).
/// </summary>
public sealed record PgdSettings(Threat Threat, int Steps = 10, double? StepSize = null, bool RandomStart = true)
{
    public double Alpha => StepSize ?? 2.5 * Threat.Eps / Steps;
}

public static class Pgd
{
    /// <summary>
    /// Untargeted PGD on the cross-entropy. model: images [B, C, H, W] in [0, 1] -> logits [B, K];
    /// x: [B, C, H, W]; y: [B]. Returns xAdv [B, C, H, W] (no gradient history). The model's mode
    /// (train/eval) is the caller's choice; parameters receive no gradient from the attack.
    /// </summary>
    public static Tensor Attack(Func<Tensor, Tensor> model, Tensor x, Tensor y, PgdSettings settings, Generator? generator = null)
    {
        if (settings.Steps < 0) throw new ArgumentOutOfRangeException(nameof(settings), $"PGD steps must be >= 0, got {settings.Steps}");
        var threat = settings.Threat.Validated();
        using var outer = NewDisposeScope();
        var xAdv = settings.RandomStart ? Projection.RandomStart(x, threat, generator) : x.clone();
        for (var step = 0; step < settings.Steps; step++)
        {
            using var scope = NewDisposeScope();
            var grad = InputGradient(model, xAdv, y);
            using (no_grad())
            {
                var next = Projection.Project(xAdv + settings.Alpha * Projection.AscentDirection(grad, threat.Norm), x, threat);
                xAdv = next.MoveToOuterDisposeScope();
            }
        }
        return xAdv.detach().MoveToOuterDisposeScope();
    }

    /// <summary>Gradient of the summed cross-entropy with respect to the input only (no parameter gradients are accumulated).</summary>
    public static Tensor InputGradient(Func<Tensor, Tensor> model, Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        var input = x.detach().requires_grad_(true);
        using var enabled = enable_grad();
        var loss = Losses.CrossEntropy(model(input), y).sum();
        var grad = autograd.grad([loss], [input])[0];
        return grad.detach().MoveToOuterDisposeScope();
    }
}

/// <summary>FGSM with random start (Wong et al. 2020): start at x + U(-eps, eps), one step of StepSize (1.25 eps), project.</summary>
public sealed record FgsmSettings(Threat Threat, double? StepSize = null, bool RandomStart = true)
{
    public double Alpha => StepSize ?? 1.25 * Threat.Eps;
}

public static class Fgsm
{
    public static Tensor Attack(Func<Tensor, Tensor> model, Tensor x, Tensor y, FgsmSettings settings, Generator? generator = null) =>
        Pgd.Attack(model, x, y, new PgdSettings(settings.Threat, Steps: 1, StepSize: settings.Alpha, RandomStart: settings.RandomStart), generator);
}
