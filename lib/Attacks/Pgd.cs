using static TorchSharp.torch;

namespace Carso.Attacks;

public enum PgdLoss { CrossEntropy, Dlr, TargetedDlr }

/// <summary>
/// PGD (Madry et al. 2018): from a random start in the ball (or x itself), Steps steps of size StepSize along
/// the steepest-ascent direction of the loss (sign of the gradient for Linf, unit L2 direction for L2), each
/// followed by the projection P. StepSize null means 2.5 * eps / Steps (Madry et al.). Restarts: independent
/// runs, a point counts as fooled when any run fools it. EotIter > 1: the gradient is the mean over that many
/// forward/backward passes (Expectation over Transformation, for stochastic models).
/// Targeted (targets given): minimise the cross-entropy to the target, or maximise the targeted DLR.
/// </summary>
public sealed record PgdSettings(
    Threat Threat, int Steps = 10, double? StepSize = null, bool RandomStart = true,
    int Restarts = 1, int EotIter = 1, PgdLoss Loss = PgdLoss.CrossEntropy)
{
    public double Alpha => StepSize ?? 2.5 * Threat.Eps / Math.Max(1, Steps);

    /// <summary>PGD+EOT as used against CARSO: 200 steps of 0.007, EOT 20, CE (sum), random start.</summary>
    public static PgdSettings Eot(Threat threat) => new(threat, Steps: 200, StepSize: 0.007, EotIter: 20);
}

public static class Pgd
{
    /// <summary>
    /// model: images [B, C, H, W] in [0, 1] -> logits [B, K]; x: [B, C, H, W]; y: [B]; targets: [B] or null.
    /// Returns xAdv [B, C, H, W] (detached). Parameters receive no gradient; the model's train/eval mode is the
    /// caller's choice.
    /// Per-example budgets: eps [B] (optional) replaces settings.Threat.Eps row by row (the norm stays
    /// settings.Threat.Norm; Linf and L2) in the random start and the projection, so one call attacks groups of rows at
    /// different budgets; stepSize [B] (optional) replaces settings.Alpha row by row (without it, with eps given and
    /// settings.StepSize null, row i steps 2.5 * eps[i] / Steps). Row i's result is what a call on row i alone at
    /// Threat.Eps = eps[i] (and StepSize = stepSize[i]) computes, up to float rounding; the random start draws
    /// the same numbers as that call for Linf (one uniform per pixel, in row order: on the CPU generator, one call over
    /// groups of rows draws exactly what consecutive calls over the groups drew).
    /// Without eps and stepSize, nothing changes: the scalar path is the one every other caller runs.
    /// </summary>
    public static Tensor Attack(Func<Tensor, Tensor> model, Tensor x, Tensor y, PgdSettings settings,
        Generator? generator = null, AttackMonitor? monitor = null, Tensor? targets = null, Tensor? eps = null, Tensor? stepSize = null)
    {
        if (settings.Steps < 0) throw new ArgumentOutOfRangeException(nameof(settings), $"PGD Steps must be >= 0, got {settings.Steps}");
        if (settings.Restarts < 1) throw new ArgumentOutOfRangeException(nameof(settings), $"PGD Restarts must be >= 1, got {settings.Restarts}");
        if (settings.EotIter < 1) throw new ArgumentOutOfRangeException(nameof(settings), $"PGD EotIter must be >= 1, got {settings.EotIter}");
        if ((settings.Loss == PgdLoss.TargetedDlr) != (targets is not null) && settings.Loss != PgdLoss.CrossEntropy)
            throw new ArgumentException("PGD with the targeted DLR loss needs targets, and only it among the DLR losses takes them");
        var threat = settings.Threat.Validated();
        using var budgets = Budgets.Of(x, settings, eps, stepSize);
        Func<Tensor, Tensor> loss = logits => settings.Loss switch
        {
            PgdLoss.CrossEntropy when targets is null => Losses.CrossEntropy(logits, y),
            PgdLoss.CrossEntropy => -Losses.CrossEntropy(logits, targets!),
            PgdLoss.Dlr => Losses.Dlr(logits, y),
            PgdLoss.TargetedDlr => Losses.TargetedDlr(logits, y, targets!),
            _ => throw new ArgumentOutOfRangeException(nameof(settings)),
        };
        using var outer = NewDisposeScope();
        Tensor? best = null;
        for (var restart = 0; restart < settings.Restarts; restart++)
        {
            var xAdv = Run(model, x, loss, settings, threat, budgets, generator, monitor);
            if (best is null) { best = xAdv; continue; }
            using (no_grad())
            {
                // keep, per point, a run that fools the model (the first one found)
                var bestFools = model(best).argmax(1).ne(y);
                var fools = model(xAdv).argmax(1).ne(y);
                var take = fools.logical_and(bestFools.logical_not()).view(-1, 1, 1, 1);
                best = where(take, xAdv, best).MoveToOuterDisposeScope();
            }
        }
        return best!.detach().MoveToOuterDisposeScope();
    }

    /// <summary>Per-example budgets of one attack: Eps [B] and Alpha [B, 1, 1, 1] in x's dtype and device, either null
    /// (then the settings' scalar is used, exactly as before per-example budgets existed).</summary>
    sealed record Budgets(Tensor? Eps, Tensor? Alpha) : IDisposable
    {
        public static Budgets Of(Tensor x, PgdSettings settings, Tensor? eps, Tensor? stepSize)
        {
            var b = x.shape[0];
            Tensor? Rows(Tensor? t, string name)
            {
                if (t is null) return null;
                if (t.dim() != 1 || t.shape[0] != b)
                    throw new ArgumentException($"PGD per-example {name} must be [B] = [{b}], got [{string.Join(", ", t.shape)}]");
                using var scope = NewDisposeScope();
                var rows = t.detach().to(x.dtype, x.device);
                if (!rows.isfinite().all().item<bool>() || rows.lt(0).any().item<bool>())
                    throw new ArgumentOutOfRangeException(name, $"PGD per-example {name} must be finite and >= 0");
                return rows.MoveToOuterDisposeScope();
            }
            var epsRows = Rows(eps, nameof(eps));
            if (epsRows is not null && settings.Threat.Norm == Norm.L1)
                throw new NotSupportedException("PGD per-example eps: Linf and L2 only (the L1 ball-and-box projection takes one eps)");
            var alpha = Rows(stepSize, nameof(stepSize))
                        ?? (epsRows is not null && settings.StepSize is null ? epsRows * (2.5 / Math.Max(1, settings.Steps)) : null);
            var alphaRows = alpha?.view(-1, 1, 1, 1);
            if (alpha is not null && !ReferenceEquals(alpha, epsRows)) alpha.Dispose(); // the view holds its storage
            return new Budgets(epsRows, alphaRows);
        }

        public void Dispose() { Eps?.Dispose(); Alpha?.Dispose(); }
    }

    static Tensor Run(Func<Tensor, Tensor> model, Tensor x, Func<Tensor, Tensor> loss, PgdSettings settings, Threat threat,
        Budgets budgets, Generator? generator, AttackMonitor? monitor)
    {
        using var outer = NewDisposeScope();
        var xAdv = !settings.RandomStart ? x.clone()
            : budgets.Eps is { } startEps ? Projection.RandomStart(x, threat.Norm, startEps, generator)
            : Projection.RandomStart(x, threat, generator);
        var first = xAdv;
        for (var step = 0; step < settings.Steps; step++)
        {
            using var scope = NewDisposeScope();
            var grad = EotGradient(model, xAdv, loss, settings.EotIter, monitor);
            using (no_grad())
            {
                var direction = Projection.AscentDirection(grad, threat.Norm);
                var moved = budgets.Alpha is { } alpha ? xAdv + alpha * direction : xAdv + settings.Alpha * direction;
                xAdv = (budgets.Eps is { } eps ? Projection.Project(moved, x, threat.Norm, eps) : Projection.Project(moved, x, threat))
                    .MoveToOuterDisposeScope();
            }
        }
        monitor?.Iterates(first, xAdv);
        return xAdv.detach().MoveToOuterDisposeScope();
    }

    /// <summary>Mean over eotIter passes of the gradient of the summed loss with respect to the input only
    /// (no parameter gradients accumulate). loss: logits [B, K] -> per-example loss [B].</summary>
    public static Tensor EotGradient(Func<Tensor, Tensor> model, Tensor x, Func<Tensor, Tensor> loss, int eotIter = 1, AttackMonitor? monitor = null)
    {
        using var scope = NewDisposeScope();
        if (EotModels.EotGradientOf(model) is { } own)
        {
            var estimate = own(x, loss, eotIter, monitor is null ? null : monitor.Logits);
            monitor?.Gradients(estimate.Gradient);
            return estimate.Gradient.MoveToOuterDisposeScope();
        }
        var input = x.detach().requires_grad_(true);
        using var enabled = enable_grad();
        Tensor? sum = null;
        for (var i = 0; i < eotIter; i++)
        {
            var logits = model(input);
            monitor?.Logits(logits);
            var grad = autograd.grad([loss(logits).sum()], [input])[0];
            sum = sum is null ? grad : sum + grad;
        }
        var mean = (sum! / eotIter).detach();
        monitor?.Gradients(mean);
        return mean.MoveToOuterDisposeScope();
    }

    /// <summary>Gradient of the summed cross-entropy with respect to the input only.</summary>
    public static Tensor InputGradient(Func<Tensor, Tensor> model, Tensor x, Tensor y) =>
        EotGradient(model, x, logits => Losses.CrossEntropy(logits, y));
}

/// <summary>FGSM with random start (Wong et al. 2020): start at x + U(-eps, eps), one step of StepSize (1.25 eps), project.</summary>
public sealed record FgsmSettings(Threat Threat, double? StepSize = null, bool RandomStart = true)
{
    public double Alpha => StepSize ?? 1.25 * Threat.Eps;
}

public static class Fgsm
{
    /// <summary>x: [B, C, H, W] in [0, 1]; y: [B]; returns xAdv [B, C, H, W]. One PGD step (<see cref="Pgd.Attack"/>).
    /// Per-example budgets as PGD's: eps [B] replaces Threat.Eps row by row; stepSize [B] replaces the step row by row
    /// (without it, with eps given and settings.StepSize null, row i steps 1.25 * eps[i]).</summary>
    public static Tensor Attack(Func<Tensor, Tensor> model, Tensor x, Tensor y, FgsmSettings settings, Generator? generator = null, AttackMonitor? monitor = null,
        Tensor? eps = null, Tensor? stepSize = null)
    {
        using var scope = NewDisposeScope();
        var rowStep = stepSize ?? (eps is not null && settings.StepSize is null ? eps * 1.25 : null);
        return Pgd.Attack(model, x, y, new PgdSettings(settings.Threat, Steps: 1, StepSize: settings.Alpha, RandomStart: settings.RandomStart),
            generator, monitor, eps: eps, stepSize: rowStep).MoveToOuterDisposeScope();
    }
}
