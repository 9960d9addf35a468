using Carso.Attacks;
using Carso.IO;
using Carso.Models;
using static TorchSharp.torch;

namespace Carso.Evaluation;

/// <summary>
/// One attack family: Attacks run in order, each on the points the previous ones left robust (AutoAttack's per-point
/// worst case), aimed at Target (null: the evaluated model itself; else a surrogate, e.g. another aggregation or the
/// deterministic path) and judged by the evaluated model. Attacks receives the family's monitor, which counts
/// non-finite and zero gradients (an attack that sees nothing proves nothing).
/// </summary>
public sealed record AttackFamily(string Name, string Description, Func<AttackMonitor, IReadOnlyList<NamedAttack>> Attacks,
    StochasticModel? Target = null)
{
    /// <summary>The names of the attacks, in order (for fingerprints and reports).</summary>
    public IReadOnlyList<string> AttackNames => Attacks(new AttackMonitor()).Select(a => a.Name).ToArray();
}

/// <summary>
/// An evaluation protocol, as data: an optional transfer set (adversarial images made elsewhere, judged as they are),
/// then attack families. Every family runs on its own over all clean-correct points, so each gets its own robust
/// accuracy; the protocol's robust accuracy is the per-point worst case: a point is robust when it is classified
/// correctly clean, on its transfer image and after every family.
/// </summary>
public sealed record Protocol(string Name, Threat Threat, IReadOnlyList<AttackFamily> Families, TransferSet? Transfer = null)
{
    public const string TransferName = "transfer";

    /// <summary>AutoAttack's list as one family (standard for deterministic models, rand for stochastic ones).</summary>
    public static Protocol Of(string name, Threat threat, Func<AttackMonitor, IReadOnlyList<NamedAttack>> attacks, string? description = null) =>
        new(name, threat, [new AttackFamily(name, description ?? name, attacks)]);
}

/// <summary>Robust accuracy after an attack of a family (cumulative within the family).</summary>
public sealed record AttackStage(string Attack, int PointsAttacked, int PointsBroken, Accuracy RobustAfter, double Seconds);

/// <summary>One test point's fate under the whole protocol: clean correctness, the first family (in protocol order)
/// that broke it and the attack of that family, and the norm of that perturbation (null: robust, or wrong clean).</summary>
public sealed record PointRecord(long Index, long Label, bool CleanCorrect, string? BrokenBy, double? PerturbationNorm, string? Attack = null);

/// <summary>One family's result on its own: robust accuracy, its stages, the largest perturbation, the judge's
/// non-finite outputs on its adversarial images, the gradient monitor's counts, its attack seconds, and the indices of the
/// points it broke (clean-correct points it fooled; null in records made before they were kept).</summary>
public sealed record FamilyResult(string Name, string Description, Accuracy Robust, IReadOnlyList<AttackStage> Stages,
    double MaxPerturbationNorm, long NonFiniteOutputs, AttackMonitor.Counts Monitor, double Seconds, IReadOnlyList<int>? Broken = null);

/// <summary>
/// The result of a protocol: clean accuracy, each family alone, the per-point worst case and its per-point records.
/// WorstCaseImages [N, C, H, W]: per point the adversarial image of the family that broke it (the clean image where
/// none did) — a transfer set for another model; owned by the caller (dispose it).
/// </summary>
public sealed record ProtocolResult(string Protocol, Threat Threat, Accuracy Clean, long NonFiniteCleanOutputs,
    IReadOnlyList<FamilyResult> Families, Accuracy WorstCase, IReadOnlyList<PointRecord> Points, bool Resumed)
{
    [System.Text.Json.Serialization.JsonIgnore]
    public Tensor? WorstCaseImages { get; init; }

    /// <summary>The per-point worst case over some of the families only (e.g. the attacks a paper ran): a point is robust
    /// when it is correct clean and none of these families broke it.</summary>
    public Accuracy WorstCaseOver(IEnumerable<string> families)
    {
        var broken = families.SelectMany(name => Family(name).Broken
            ?? throw new InvalidOperationException($"family '{name}' of {Protocol} has no per-point record")).ToHashSet();
        return Accuracy.Of(Points.Count(p => p.CleanCorrect && !broken.Contains((int)p.Index)), Points.Count);
    }

    public FamilyResult Family(string name) => Families.FirstOrDefault(f => f.Name == name)
        ?? throw new KeyNotFoundException($"no family '{name}' in protocol {Protocol} (families: {string.Join(", ", Families.Select(f => f.Name))})");
}
