using Carso.Attacks;
using Carso.Defence;
using Carso.IO;
using Carso.Models;

namespace Carso.Evaluation;

/// <summary>
/// Budgets of the CARSO evaluation protocol (DESIGN.md "Evaluation protocol"). Defaults are the published ones:
/// AutoAttack rand (APGD-CE and APGD-DLR, 100 iterations, EOT 20) and PGD+EOT (200 steps of 0.007, EOT 20), Square
/// 5000 queries as in AutoAttack standard.
/// </summary>
/// <param name="RandAttacks">The attacks of AutoAttack rand (published: APGD-CE, APGD-DLR); empty skips the family.</param>
/// <param name="ApgdIterations">APGD iterations of AutoAttack rand and of the adaptive APGD attacks.</param>
/// <param name="EotIter">Gradient samples per step (Expectation over Transformation) against the sampled defence.</param>
/// <param name="PgdSteps">Steps of the end-to-end PGD+EOT attack; 0 skips it.</param>
/// <param name="PgdStepSize">Step size of PGD+EOT (reference: 0.007).</param>
/// <param name="Surrogate">Adaptive attack: the same attacks through this aggregation, judged by the defence's own; null
/// (or the defence's own aggregation) skips them. Default ExpShare: the published aggregation's argmax, computed in log
/// space so that it never saturates.</param>
/// <param name="SurrogatePgdEot">Whether the surrogate family also runs PGD+EOT (after AutoAttack rand).</param>
/// <param name="RepresentationPath">Adaptive attack: APGD-CE and APGD-DLR through the deterministic defence (z = 0: no
/// sampling noise, so no EOT needed and the gradient of the representation path is exact), judged by the sampled defence.</param>
/// <param name="SquareQueries">Square (black-box) queries against the defence itself; 0 skips it. A black-box attack that
/// breaks more points than the white-box ones signals gradient masking.</param>
/// <param name="LargeEps">Diagnostics: accuracy at this eps (in the threat's norm) under APGD-CE+EOT must fall to chance or below. The
/// default 0.5 is a Linf budget (half the pixel range), as the CARSO evaluations are Linf (the purifier is Linf-trained);
/// set it for another norm (e.g. L2 7.5 on 28x28 images, see scripts/eval-autoattack-l2.cs).</param>
/// <param name="LargeEpsIterations">APGD iterations of the large-eps check (with EOT 2: it needs no precision).</param>
/// <param name="EndToEnd">Whether the paper's families run (AutoAttack rand and PGD+EOT end to end through the defence's own
/// aggregation); false keeps only the adaptive ones (e.g. through a surrogate, when the own aggregation saturates).</param>
public sealed record CarsoProtocolSettings(
    string[]? RandAttacks = null,
    int ApgdIterations = 100,
    int EotIter = 20,
    int PgdSteps = 200,
    double PgdStepSize = 0.007,
    AggregationKind? Surrogate = AggregationKind.ExpShare,
    bool SurrogatePgdEot = true,
    bool RepresentationPath = true,
    int SquareQueries = 5000,
    double LargeEps = 0.5,
    int LargeEpsIterations = 20,
    bool EndToEnd = true)
{
    /// <summary>The attacks of AutoAttack rand (the published pair when RandAttacks is null).</summary>
    public IReadOnlyList<string> Rand => RandAttacks ?? [AutoAttack.ApgdCeName, AutoAttack.ApgdDlrName];

    /// <summary>The published protocol (the defaults): what a reduced budget is measured against.</summary>
    public static CarsoProtocolSettings Published => new();

    /// <summary>Tiny budgets for smoke runs (seconds); never for reported numbers.</summary>
    public static CarsoProtocolSettings Smoke => new(ApgdIterations: 3, EotIter: 2, PgdSteps: 3, PgdStepSize: 0.03,
        SquareQueries: 5, LargeEpsIterations: 3);
}

/// <summary>
/// The CARSO protocol as data (a <see cref="Protocol"/>): transfer of adversarial examples crafted elsewhere; AutoAttack
/// rand and PGD+EOT end to end through the differentiable defence; the same through a surrogate aggregation; APGD through
/// the deterministic defence; Square on the defence itself. Every family is judged by the defence as deployed (sampled,
/// its own aggregation, no gradient). <see cref="ProtocolEvaluation.Run(StochasticModel, Data.Dataset, Protocol, EvaluationOptions)"/> runs it.
/// </summary>
public static class CarsoProtocol
{
    public const string Name = "carso", RandName = "autoattack-rand", PgdEotName = "pgd-eot",
        RepresentationPathName = "representation-path", SquareName = "square";

    /// <summary>The families the paper's own evaluation runs: AutoAttack rand and PGD+EOT end to end through the defence as
    /// published (its own aggregation). Every other family (transfer, surrogate, deterministic path, Square) is adaptive.</summary>
    public static IReadOnlyList<string> PaperStyle { get; } = [RandName, PgdEotName];

    /// <summary>PGD+EOT: CE with sum reduction, random start, the published step (settings).</summary>
    public static NamedAttack PgdEot(Threat threat, CarsoProtocolSettings settings, AttackMonitor monitor) =>
        new(PgdEotName, (m, x, y, g) =>
            Pgd.Attack(m, x, y, new PgdSettings(threat, settings.PgdSteps, settings.PgdStepSize, EotIter: settings.EotIter), g, monitor));

    public static Protocol Build(CarsoModel carso, Threat threat, CarsoProtocolSettings settings, TransferSet? transfer = null)
    {
        StochasticModel Variant(CarsoSettings s) => carso.With(s).AsModel();
        var endToEnd = Variant(carso.Settings with { Differentiable = true });
        var aa = new AutoAttackSettings(ApgdIterations: settings.ApgdIterations, EotIter: settings.EotIter, SquareQueries: settings.SquareQueries);
        var rand = settings.Rand;
        var randText = string.Join(", ", rand).ToUpperInvariant();
        IReadOnlyList<NamedAttack> Rand(AttackMonitor m) => AutoAttack.Custom(rand, threat, aa, m, eot: true);
        var families = new List<AttackFamily>();
        // Count votes are piecewise constant: no gradient flows through them, so the end-to-end families cannot run;
        // the surrogate family attacks such a defence.
        var differentiable = carso.Settings.Aggregation != AggregationKind.Count && settings.EndToEnd;
        if (rand.Count > 0 && differentiable)
            families.Add(new(RandName, $"AutoAttack rand: {randText} ({settings.ApgdIterations} iterations, EOT {settings.EotIter}) end to end",
                Rand, endToEnd));
        if (settings.PgdSteps > 0 && differentiable)
            families.Add(new(PgdEotName, $"PGD+EOT end to end ({settings.PgdSteps} steps of {settings.PgdStepSize}, EOT {settings.EotIter}, CE)",
                m => [PgdEot(threat, settings, m)], endToEnd));
        if (settings.Surrogate is { } kind && kind != carso.Settings.Aggregation && rand.Count + settings.PgdSteps > 0)
        {
            var label = kind.ToString().ToLowerInvariant();
            var withPgd = settings.SurrogatePgdEot && settings.PgdSteps > 0;
            families.Add(new($"surrogate-{label}",
                $"{(rand.Count > 0 ? $"AutoAttack rand ({randText})" : "")}{(rand.Count > 0 && withPgd ? " and " : "")}{(withPgd ? "PGD+EOT" : "")} " +
                $"through the {label} aggregation, judged by {carso.Settings.Aggregation.ToString().ToLowerInvariant()}",
                m => withPgd ? [.. Rand(m), PgdEot(threat, settings, m)] : Rand(m),
                Variant(carso.Settings with { Aggregation = kind, Differentiable = true })));
        }
        if (settings.RepresentationPath)
            families.Add(new(RepresentationPathName,
                $"{(rand.Count > 0 ? randText : "APGD-CE")} ({settings.ApgdIterations} iterations) through the deterministic defence (z = 0, N = 1)",
                m => AutoAttack.Custom(rand.Count > 0 ? rand : [AutoAttack.ApgdCeName], threat, aa, m),
                // One sample: its own logits (Logit of N = 1), so no aggregation can saturate on this path.
                Variant(carso.Settings with { Deterministic = true, Samples = 1, Aggregation = AggregationKind.Logit, Differentiable = true })));
        if (settings.SquareQueries > 0)
            families.Add(new(SquareName, $"Square ({settings.SquareQueries} queries) on the defence itself",
                m => AutoAttack.Custom([AutoAttack.SquareName], threat, aa, m)));
        return new Protocol(Name, threat, families, transfer);
    }

    /// <summary>The large-eps check's protocol: APGD-CE with EOT 2 end to end at settings.LargeEps.</summary>
    public static Protocol LargeEps(CarsoModel carso, Threat threat, CarsoProtocolSettings settings)
    {
        var large = threat with { Eps = settings.LargeEps };
        var aa = new AutoAttackSettings(ApgdIterations: settings.LargeEpsIterations, EotIter: 2);
        return new Protocol("large-eps", large, [new AttackFamily("apgd-ce-eot", $"APGD-CE ({settings.LargeEpsIterations} iterations, EOT 2) at {large}",
            m => [AutoAttack.ApgdCe(large, aa, m, eotIter: 2)], carso.With(carso.Settings with { Differentiable = true }).AsModel())]);
    }

    /// <summary>
    /// The checks of a CARSO evaluation, each a named function of <see cref="Diagnostics"/>, behind this one entry point:
    /// non-finite values, zero gradients and stalls met by the attacks, non-finite (saturated) outputs of the aggregation
    /// used (counted by the driver on every image it judged), accuracy at a very large eps (run through the driver),
    /// Square against the white-box families, and whether passes of the sampled defence with different generators differ.
    /// </summary>
    public static CarsoDiagnostics Diagnose(CarsoModel carso, Data.Dataset data, ProtocolResult result, CarsoProtocolSettings settings,
        EvaluationOptions options)
    {
        var judge = carso.With(carso.Settings with { Differentiable = false });
        var monitor = AttackMonitor.Counts.Sum(result.Families.Select(f => f.Monitor));
        var large = ProtocolEvaluation.Run(judge.AsModel(), data, LargeEps(carso, result.Threat, settings), options with { StateDir = null });
        large.WorstCaseImages?.Dispose();
        var chance = 1.0 / data.Classes.Count;
        var (squareExtra, squareWarning) = Diagnostics.SquareVersusWhiteBox(result, SquareName);
        using var sample = data.Images.narrow(0, 0, Math.Min(options.BatchSize, data.Count)).to(options.Device ?? TorchSharp.torch.CPU);
        // Measured through ExpShare (the same argmax, finite everywhere): a saturating aggregation's inf - inf would hide it.
        var disagreement = Diagnostics.SampledDisagreement(judge.With(judge.Settings with { Aggregation = AggregationKind.ExpShare }).AsModel(),
            sample, options.Seed);
        var warnings = new[]
        {
            Diagnostics.NonFiniteDuringAttacks(monitor),
            Diagnostics.ZeroGradients(monitor),
            Diagnostics.StalledAttacks(monitor),
            Diagnostics.NonFiniteOutputs(result),
            Diagnostics.LargeEpsAboveChance(large.WorstCase, settings.LargeEps, chance, slack: 0.05, norm: result.Threat.Norm),
            squareWarning,
            !carso.Settings.Deterministic && disagreement == 0 ? "the sampled defence gave identical outputs on passes with different generators: is the latent sampled?" : null,
        }.OfType<string>().ToArray();
        return new CarsoDiagnostics(result.NonFiniteCleanOutputs, result.Families.Sum(f => f.NonFiniteOutputs),
            monitor, settings.LargeEps, large.WorstCase, chance, disagreement, squareExtra, warnings);
    }
}

/// <summary>Diagnostics of a CARSO evaluation: each number with what it should be, and the warnings.</summary>
public sealed record CarsoDiagnostics(
    long NonFiniteCleanOutputs,
    long NonFiniteAdversarialOutputs,
    AttackMonitor.Counts Monitor,
    double LargeEps,
    Accuracy LargeEpsAccuracy,
    double Chance,
    double LogitDisagreement,
    int? SquareExtraBroken,
    IReadOnlyList<string> Warnings)
{
    public bool AllClear => Warnings.Count == 0;
}
