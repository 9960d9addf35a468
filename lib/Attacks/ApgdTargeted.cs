using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>
/// APGD-T settings with the published defaults: for each of NTargetClasses target classes, NRestarts runs of
/// APGD with the targeted DLR loss, NIter iterations each (Rho, Alpha, EotIter, UseLargeReps as in <see cref="ApgdSettings"/>;
/// AutoAttack standard for L1 runs 5 target classes with the large-reps schedule).
/// </summary>
public sealed record ApgdTargetedSettings(
    Threat Threat,
    int NIter = 100,
    double Rho = 0.75,
    double Alpha = 0.75,
    int NRestarts = 1,
    int EotIter = 1,
    int NTargetClasses = 9,
    bool UseLargeReps = false)
{
    /// <summary>The settings of each APGD run (loss TargetedDlr).</summary>
    public ApgdSettings Core => new(Threat, ApgdLoss.TargetedDlr, NIter, Rho, Alpha, NRestarts, EotIter, UseLargeReps);

    /// <summary>This record, or a clear <see cref="ArgumentOutOfRangeException"/> naming the bad setting.</summary>
    public ApgdTargetedSettings Validated()
    {
        Core.Validated();
        if (NTargetClasses < 1)
            throw new ArgumentOutOfRangeException(nameof(NTargetClasses), NTargetClasses, $"APGD-T NTargetClasses must be >= 1, got {NTargetClasses}");
        return this;
    }
}

/// <summary>
/// APGD-T (Croce &amp; Hein 2020): targeted APGD on the targeted DLR loss, against the classes ranked 2 to
/// NTargetClasses + 1 by the clean logits (descending), one target after the other, each run only on the points
/// still robust (correctly classified and not fooled by an earlier target or restart).
/// </summary>
public static class ApgdTargeted
{
    /// <summary>
    /// model: images [B, C, H, W] in [0, 1] -> logits [B, K] (K &gt;= 4 for the targeted DLR loss, and
    /// NTargetClasses &lt;= K - 1); x: [B, C, H, W]; y: [B] (int64). Returns xAdv [B, C, H, W] (no gradient
    /// history): per point a misclassified iterate when one was found (x itself for points misclassified already),
    /// else the highest targeted-DLR-loss point over all targets and restarts.
    /// </summary>
    public static Tensor Attack(Func<Tensor, Tensor> model, Tensor x, Tensor y, ApgdTargetedSettings settings,
        Generator? generator = null, AttackMonitor? monitor = null)
    {
        settings = settings.Validated();
        var core = settings.Core;
        using var scope = NewDisposeScope();
        x = x.detach();
        Tensor clean;
        using (no_grad()) clean = model(x);
        // The loss's own check first ("needs at least 4 classes"), so it fails even when no point is left to attack.
        Losses.TargetedDlr(clean, y, y).Dispose();
        var classes = clean.shape[1];
        if (settings.NTargetClasses > classes - 1)
            throw new ArgumentOutOfRangeException(nameof(settings.NTargetClasses), settings.NTargetClasses,
                $"APGD-T NTargetClasses must be at most the number of classes - 1 = {classes - 1} for logits of shape " +
                $"[{string.Join(", ", clean.shape)}], got {settings.NTargetClasses}");
        // Targets come from the clean logits, computed once: rank r is column r - 1 of the descending order.
        var ranked = clean.argsort(1, descending: true);
        var outcome = Outcome.Start(clean, x, y);
        for (var rank = 2; rank <= settings.NTargetClasses + 1; rank++)
        {
            for (var restart = 0; restart < settings.NRestarts; restart++)
            {
                var column = rank - 1;
                var next = outcome.AttackRobust(x, y, (idx, xs, ys) =>
                {
                    using var targets = ranked.index_select(0, idx).select(1, column);
                    return Apgd.Run(model, xs, ys, (z, labels) => Losses.TargetedDlr(z, labels, targets), core, generator, monitor);
                });
                if (next is null) return outcome.Result().MoveToOuterDisposeScope();
                outcome.Dispose();
                outcome = next;
            }
        }
        return outcome.Result().MoveToOuterDisposeScope();
    }
}
