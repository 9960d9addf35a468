namespace Carso.Attacks;

/// <summary>
/// Budgets of the AutoAttack suites. Defaults are the reference's (Croce &amp; Hein 2020): 100 iterations for
/// APGD and FAB, 9 target classes, 5000 Square queries, EOT 20 for the "rand" version.
/// </summary>
public sealed record AutoAttackSettings(
    int ApgdIterations = 100, int FabIterations = 100, int NTargetClasses = 9, int SquareQueries = 5000, int EotIter = 20)
{
    /// <summary>Tiny budgets for smoke runs (seconds); never for reported numbers.</summary>
    public static AutoAttackSettings Smoke => new(ApgdIterations: 5, FabIterations: 5, NTargetClasses: 2, SquareQueries: 20, EotIter: 2);

    public override string ToString() =>
        $"APGD {ApgdIterations} iterations, {NTargetClasses} targets, FAB {FabIterations} iterations, Square {SquareQueries} queries, EOT {EotIter}";
}

/// <summary>
/// AutoAttack as an ordered list of named attacks; the evaluation driver (Evaluation.ProtocolEvaluation) runs each on the
/// points still robust and takes the per-point worst case. Each attack runs in the threat's norm (Linf, L2, L1).
/// standard: APGD-CE, APGD-T, FAB-T, Square (deterministic models). Linf and L2: APGD-CE 1 restart, APGD-T
/// NTargetClasses (9) targets, FAB-T 9 targets, Square. L1, as the reference sets it: APGD-CE with 5 restarts and
/// APGD-T with at most 5 targets, both with the large-reps schedule (3, 2, 1 eps), then FAB-T (9 targets) and Square.
/// rand: APGD-CE and APGD-DLR with EOT (stochastic models), 1 restart each, for every norm.
/// </summary>
public static class AutoAttack
{
    public const string ApgdCeName = "apgd-ce", ApgdDlrName = "apgd-dlr", ApgdTName = "apgd-t", FabTName = "fab-t", SquareName = "square";

    /// <summary>APGD-CE's restarts in AutoAttack standard for L1 (the reference's n_restarts = 5 with use_largereps).</summary>
    public const int L1ApgdRestarts = 5;

    /// <summary>APGD-T's target classes in AutoAttack standard for L1 (the reference's 5; fewer when settings ask for fewer).</summary>
    public const int L1ApgdTargetClasses = 5;

    public static IReadOnlyList<NamedAttack> Standard(Threat threat, AutoAttackSettings? settings = null, AttackMonitor? monitor = null)
    {
        settings ??= new AutoAttackSettings();
        threat.Validated();
        if (threat.Norm != Norm.L1)
            return Custom([ApgdCeName, ApgdTName, FabTName, SquareName], threat, settings, monitor);
        return
        [
            new(ApgdCeName, (m, x, y, g) => Apgd.Attack(m, x, y,
                new ApgdSettings(threat, ApgdLoss.Ce, settings.ApgdIterations, NRestarts: L1ApgdRestarts, UseLargeReps: true), g, monitor)),
            new(ApgdTName, (m, x, y, g) => ApgdTargeted.Attack(m, x, y,
                new ApgdTargetedSettings(threat, settings.ApgdIterations, NTargetClasses: Math.Min(settings.NTargetClasses, L1ApgdTargetClasses),
                    UseLargeReps: true), g, monitor)),
            .. Custom([FabTName, SquareName], threat, settings, monitor),
        ];
    }

    public static IReadOnlyList<NamedAttack> Rand(Threat threat, AutoAttackSettings? settings = null, AttackMonitor? monitor = null) =>
        Custom([ApgdCeName, ApgdDlrName], threat, (settings ?? new AutoAttackSettings()), monitor, eot: true);

    /// <summary>A list of attacks by name: apgd-ce, apgd-dlr, apgd-t, fab-t, square, pgd (100 steps), fgsm.
    /// eot: APGD runs with settings.EotIter gradient samples.</summary>
    public static IReadOnlyList<NamedAttack> Custom(IEnumerable<string> names, Threat threat, AutoAttackSettings? settings = null,
        AttackMonitor? monitor = null, bool eot = false)
    {
        settings ??= new AutoAttackSettings();
        var eotIter = eot ? settings.EotIter : 1;
        return names.Select(name => name switch
        {
            ApgdCeName => ApgdCe(threat, settings, monitor, eotIter),
            ApgdDlrName => new NamedAttack(name, (m, x, y, g) =>
                Apgd.Attack(m, x, y, new ApgdSettings(threat, ApgdLoss.Dlr, settings.ApgdIterations, EotIter: eotIter), g, monitor)),
            ApgdTName => new NamedAttack(name, (m, x, y, g) =>
                ApgdTargeted.Attack(m, x, y, new ApgdTargetedSettings(threat, settings.ApgdIterations, EotIter: eotIter,
                    NTargetClasses: settings.NTargetClasses), g, monitor)),
            FabTName => new NamedAttack(name, (m, x, y, g) =>
                Fab.Attack(m, x, y, new FabSettings(threat, settings.FabIterations, NTargetClasses: settings.NTargetClasses), g, monitor)),
            SquareName => new NamedAttack(name, (m, x, y, g) =>
                Square.Attack(m, x, y, new SquareSettings(threat, settings.SquareQueries), g, monitor)),
            "pgd" => new NamedAttack(name, (m, x, y, g) => Pgd.Attack(m, x, y, new PgdSettings(threat, 100, EotIter: eotIter), g, monitor)),
            "fgsm" => new NamedAttack(name, (m, x, y, g) => Fgsm.Attack(m, x, y, new FgsmSettings(threat), g, monitor)),
            _ => throw new ArgumentException($"unknown attack '{name}': known are {ApgdCeName}, {ApgdDlrName}, {ApgdTName}, {FabTName}, {SquareName}, pgd, fgsm"),
        }).ToArray();
    }

    public static NamedAttack ApgdCe(Threat threat, AutoAttackSettings settings, AttackMonitor? monitor = null, int eotIter = 1) =>
        new(ApgdCeName, (m, x, y, g) => Apgd.Attack(m, x, y, new ApgdSettings(threat, ApgdLoss.Ce, settings.ApgdIterations, EotIter: eotIter), g, monitor));
}
