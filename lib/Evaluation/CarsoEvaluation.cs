using Carso.Attacks;
using Carso.Data;
using Carso.Defence;
using static TorchSharp.torch;

namespace Carso.Evaluation;

/// <summary>
/// Budgets of the CARSO evaluation protocol (DESIGN.md "Evaluation protocol"). Defaults are the published ones:
/// AutoAttack rand (APGD-CE and APGD-DLR, 100 iterations, EOT 20) and PGD+EOT (200 steps of 0.007, EOT 20).
/// </summary>
/// <param name="ApgdIterations">APGD iterations of AutoAttack rand and of the adaptive APGD attacks.</param>
/// <param name="EotIter">Gradient samples per step (Expectation over Transformation) against the sampled defence.</param>
/// <param name="PgdSteps">Steps of the end-to-end PGD+EOT attack.</param>
/// <param name="PgdStepSize">Step size of PGD+EOT (reference: 0.007).</param>
/// <param name="Surrogate">Adaptive attack (a): the same attacks through this aggregation (non-saturating: mean
/// logits), judged by the defence's own; null skips them.</param>
/// <param name="SurrogatePgdEot">Whether the surrogate family also runs PGD+EOT (after AutoAttack rand).</param>
/// <param name="RepresentationPath">Adaptive attack: APGD-CE and APGD-DLR through the deterministic defence (z = 0:
/// no sampling noise, so no EOT needed and the gradient of the representation path is exact), judged by the
/// sampled defence.</param>
/// <param name="SquareQueries">Square (black-box) queries against the defence itself; 0 skips it. Reported against the
/// white-box attacks: a black-box attack that breaks more points signals gradient masking.</param>
/// <param name="LargeEps">Diagnostics: accuracy at this eps under APGD-CE+EOT must fall to chance or below.</param>
/// <param name="LargeEpsIterations">APGD iterations of the large-eps check (with EOT 2: it needs no precision).</param>
public sealed record CarsoProtocolSettings(
    int ApgdIterations = 100,
    int EotIter = 20,
    int PgdSteps = 200,
    double PgdStepSize = 0.007,
    AggregationKind? Surrogate = AggregationKind.Logit,
    bool SurrogatePgdEot = true,
    bool RepresentationPath = true,
    int SquareQueries = 0,
    double LargeEps = 0.5,
    int LargeEpsIterations = 20)
{
    public override string ToString() =>
        $"AutoAttack rand (APGD-CE, APGD-DLR: {ApgdIterations} iterations, EOT {EotIter}); PGD+EOT ({PgdSteps} steps of {PgdStepSize}, EOT {EotIter})" +
        (Surrogate is { } s ? $"; {(SurrogatePgdEot ? "the same" : "AutoAttack rand")} through the {s.ToString().ToLowerInvariant()} surrogate aggregation" : "") +
        (RepresentationPath ? $"; APGD-CE/DLR through the deterministic (z = 0) defence ({ApgdIterations} iterations)" : "") +
        (SquareQueries > 0 ? $"; Square {SquareQueries} queries" : "");

    /// <summary>Tiny budgets for smoke runs (seconds); never for reported numbers.</summary>
    public static CarsoProtocolSettings Smoke => new(ApgdIterations: 3, EotIter: 2, PgdSteps: 3, PgdStepSize: 0.03,
        SquareQueries: 5, LargeEpsIterations: 3);
}

/// <summary>One attack family of the protocol: its robust accuracy on its own, and where it came from.</summary>
public sealed record AttackGroupResult(string Name, string Description, Accuracy Robust, IReadOnlyList<AttackStage> Stages,
    double MaxPerturbationNorm, long SaturatedOutputs, double Seconds);

/// <summary>Diagnostics of a CARSO evaluation (DESIGN.md): each number with what it should be.</summary>
public sealed record CarsoDiagnostics(
    long SaturatedCleanOutputs,
    long SaturatedAdversarialOutputs,
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

/// <summary>Per point: whether it survived every attack family, and the first family (in protocol order) that broke it.</summary>
public sealed record WorstCasePoint(long Index, long Label, bool CleanCorrect, string? BrokenBy);

public sealed record CarsoEvaluationResult(
    Threat Threat,
    Accuracy Clean,
    IReadOnlyList<AttackGroupResult> Groups,
    Accuracy WorstCase,
    IReadOnlyList<WorstCasePoint> Points,
    CarsoDiagnostics Diagnostics);

/// <summary>
/// The evaluation protocol of a stochastic defence, CARSO: every attack family runs on its own over all points
/// (so each gets its own robust accuracy), and the reported robust accuracy is the per-point worst case over
/// all of them: a point counts as robust only when it is classified correctly clean and after every attack.
/// Families, in order: transfer of adversarial examples crafted elsewhere (e.g. the classifier's AutoAttack
/// examples); AutoAttack rand and PGD+EOT end to end through the differentiable defence; the same through a
/// surrogate aggregation; APGD through the deterministic defence; Square. Every family is judged by the defence as
/// deployed (sampled, its own aggregation, no gradient). Resumable: each family keeps a state file in stateDir,
/// and the randomness of every step is seeded from (seed, family, attack, batch).
/// </summary>
public static class CarsoEvaluation
{
    public const string TransferName = "transfer", RandName = "autoattack-rand", PgdEotName = "pgd-eot",
        RepresentationPathName = "representation-path", SquareName = "square";

    /// <summary>The attack run against a surrogate model (gradients from it), judged by the model the evaluation holds.</summary>
    public static NamedAttack Through(Func<Tensor, Tensor> surrogate, NamedAttack attack, string? name = null) =>
        new(name ?? attack.Name, (_, x, y, g) => attack.Run(surrogate, x, y, g));

    /// <summary>The attack families of the protocol (without transfer), each an ordered list of named attacks
    /// aimed at the surrogate the name says, for the defence <paramref name="carso"/> (its settings: the judge).</summary>
    public static IReadOnlyList<(string Name, string Description, IReadOnlyList<NamedAttack> Attacks)> Families(
        CarsoModel carso, Threat threat, CarsoProtocolSettings settings, AttackMonitor? monitor = null)
    {
        var endToEnd = carso.With(carso.Settings with { Differentiable = true }).AsModel();
        var aa = new AutoAttackSettings(ApgdIterations: settings.ApgdIterations, EotIter: settings.EotIter);
        var pgd = new NamedAttack("pgd-eot", (m, x, y, g) =>
            Pgd.Attack(m, x, y, new PgdSettings(threat, settings.PgdSteps, settings.PgdStepSize, EotIter: settings.EotIter), g, monitor));
        IReadOnlyList<NamedAttack> Aimed(Func<Tensor, Tensor> model, IEnumerable<NamedAttack> attacks) =>
            attacks.Select(a => Through(model, a)).ToArray();

        var families = new List<(string, string, IReadOnlyList<NamedAttack>)>
        {
            (RandName, $"AutoAttack rand: APGD-CE, APGD-DLR ({settings.ApgdIterations} iterations, EOT {settings.EotIter}) end to end",
                Aimed(endToEnd, AutoAttack.Rand(threat, aa, monitor))),
            (PgdEotName, $"PGD+EOT end to end ({settings.PgdSteps} steps of {settings.PgdStepSize}, EOT {settings.EotIter}, CE)",
                Aimed(endToEnd, [pgd])),
        };
        if (settings.Surrogate is { } kind && kind != carso.Settings.Aggregation)
        {
            var surrogate = carso.With(carso.Settings with { Aggregation = kind, Differentiable = true }).AsModel();
            var label = kind.ToString().ToLowerInvariant();
            var attacks = settings.SurrogatePgdEot ? AutoAttack.Rand(threat, aa, monitor).Append(pgd) : AutoAttack.Rand(threat, aa, monitor);
            families.Add(($"surrogate-{label}",
                $"AutoAttack rand{(settings.SurrogatePgdEot ? " and PGD+EOT" : "")} through the {label} aggregation, judged by {carso.Settings.Aggregation.ToString().ToLowerInvariant()}",
                Aimed(surrogate, attacks)));
        }
        if (settings.RepresentationPath)
        {
            var deterministic = carso.With(carso.Settings with { Deterministic = true, Samples = 1, Differentiable = true }).AsModel();
            families.Add((RepresentationPathName,
                $"APGD-CE, APGD-DLR ({settings.ApgdIterations} iterations) through the deterministic defence (z = 0, N = 1)",
                Aimed(deterministic, AutoAttack.Custom([AutoAttack.ApgdCeName, AutoAttack.ApgdDlrName], threat, aa, monitor))));
        }
        if (settings.SquareQueries > 0)
            families.Add((SquareName, $"Square ({settings.SquareQueries} queries) on the defence itself",
                AutoAttack.Custom([AutoAttack.SquareName], threat, aa with { SquareQueries = settings.SquareQueries }, monitor)));
        return families;
    }

    /// <summary>
    /// Runs the protocol. data: the test points (images [N, C, H, W] in [0, 1]); transfer: adversarial images
    /// [N, C, H, W] for the same points, in the same order (checked: each within eps of its clean image), or null.
    /// stateDir: where each family keeps its resumable state (null: not resumable).
    /// </summary>
    public static CarsoEvaluationResult Run(
        CarsoModel carso, Dataset data, Threat threat, CarsoProtocolSettings settings, Tensor? transfer = null,
        string? stateDir = null, long seed = 0, int batchSize = 100, Action<string>? log = null, Device? device = null)
    {
        log ??= _ => { };
        device ??= CPU;
        var n = (int)data.Count;
        var judge = carso.With(carso.Settings with { Differentiable = false });
        var judgeModel = judge.AsModel();
        var monitor = new AttackMonitor();
        if (stateDir is not null) Directory.CreateDirectory(stateDir);

        // Clean accuracy: one seeded pass of the sampled defence.
        manual_seed(seed);
        using var cleanCorrect = Evaluate.PerPointCorrect(judgeModel, data, batchSize, device: device);
        var clean = Evaluate.ToAccuracy(cleanCorrect);
        log($"CARSO clean accuracy {clean}");
        var cleanSaturated = Saturated(judge, data.Images, batchSize, device);

        var robust = cleanCorrect.data<bool>().ToArray();                // worst case so far
        var brokenBy = new string?[n];
        var groups = new List<AttackGroupResult>();
        long adversarialSaturated = 0;

        void Merge(string name, bool[] survived)
        {
            for (var i = 0; i < n; i++)
                if (robust[i] && !survived[i]) { robust[i] = false; brokenBy[i] = name; }
        }

        if (transfer is not null)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            CheckTransfer(transfer, data, threat);
            var transferSet = data with { Images = transfer, Name = data.Name + " (transfer)" }; // shares tensors: not disposed
            manual_seed(seed + 1);
            using var correct = Evaluate.PerPointCorrect(judgeModel, transferSet, batchSize, device: device);
            var survived = correct.data<bool>().ToArray().Zip(cleanCorrect.data<bool>().ToArray(), (a, b) => a && b).ToArray();
            var saturated = Saturated(judge, transfer, batchSize, device);
            adversarialSaturated += saturated;
            using var norms = Projection.NormOf(transfer - data.Images, threat.Norm);
            var accuracy = Accuracy.Of(survived.Count(s => s), n);
            groups.Add(new AttackGroupResult(TransferName, "transfer of adversarial examples crafted against the classifier alone",
                accuracy, [], norms.max().item<float>(), saturated, clock.Elapsed.TotalSeconds));
            Merge(TransferName, survived);
            log($"{TransferName}: robust accuracy {accuracy}");
        }

        var families = Families(carso, threat, settings, monitor);
        for (var f = 0; f < families.Count; f++)
        {
            var (name, description, attacks) = families[f];
            var clock = System.Diagnostics.Stopwatch.StartNew();
            log($"{name}: {description}");
            var familySeed = unchecked(seed * 7919 + f + 2);
            manual_seed(familySeed); // the clean pass inside the run uses the global generator
            var stateFile = stateDir is null ? null : Path.Combine(stateDir, name + ".json");
            var result = RobustEvaluation.Run(judgeModel, data, threat, attacks, batchSize, familySeed, stateFile,
                line => log("  " + line), monitor, device);
            var survived = result.Points.Select(p => p.CleanCorrect && p.BrokenBy is null).ToArray();
            long saturated = 0;
            if (stateFile is not null)
            {
                using var adversarial = RobustEvaluation.LoadAdversarial(stateFile, data);
                saturated = Saturated(judge, adversarial, batchSize, device);
                adversarialSaturated += saturated;
            }
            // Attack time from the stages (they carry it across resumes), plus this process's clean pass and checks.
            var seconds = result.Resumed ? result.Stages.Sum(st => st.Seconds) : clock.Elapsed.TotalSeconds;
            groups.Add(new AttackGroupResult(name, description, result.Robust, result.Stages, result.MaxPerturbationNorm,
                saturated, seconds));
            Merge(name, survived);
            log($"{name}: robust accuracy {result.Robust}; worst case so far {Accuracy.Of(robust.Count(r => r), n)}");
        }

        var worst = Accuracy.Of(robust.Count(r => r), n);
        var labels = data.Labels.data<long>().ToArray();
        var cleanArray = cleanCorrect.data<bool>().ToArray();
        var points = Enumerable.Range(0, n).Select(i => new WorstCasePoint(i, labels[i], cleanArray[i], brokenBy[i])).ToArray();
        var diagnostics = Diagnose(carso, judgeModel, data, threat, settings, groups, cleanSaturated, adversarialSaturated,
            monitor, seed, batchSize, device, log);
        return new CarsoEvaluationResult(threat, clean, groups, worst, points, diagnostics);
    }

    /// <summary>Outputs the naive float32 aggregation would have saturated, over the images [N, C, H, W].</summary>
    public static long Saturated(CarsoModel judge, Tensor images, int batchSize, Device device)
    {
        long total = 0;
        for (long start = 0; start < images.shape[0]; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var x = images.narrow(0, start, Math.Min(batchSize, images.shape[0] - start)).to(device);
            total += judge.ForwardWithSaturation(x).Saturated;
        }
        return total;
    }

    /// <summary>Transfer images must be the data's points in order: same shape, and each within eps of its clean image.</summary>
    static void CheckTransfer(Tensor transfer, Dataset data, Threat threat)
    {
        if (!transfer.shape.SequenceEqual(data.Images.shape))
            throw new ArgumentException(
                $"transfer images [{string.Join(", ", transfer.shape)}] do not match the test points [{string.Join(", ", data.Images.shape)}]");
        using var norms = Projection.NormOf(transfer - data.Images, threat.Norm);
        var worst = norms.max().item<float>();
        if (worst > threat.Eps + 1e-5)
            throw new ArgumentException(
                $"transfer images are not perturbations of these test points within {threat}: the largest distance is {worst:G4} " +
                "(another eps, or the points in another order?)");
    }

    static CarsoDiagnostics Diagnose(CarsoModel carso, Func<Tensor, Tensor> judgeModel, Dataset data, Threat threat,
        CarsoProtocolSettings settings, IReadOnlyList<AttackGroupResult> groups, long cleanSaturated, long adversarialSaturated,
        AttackMonitor monitor, long seed, int batchSize, Device device, Action<string> log)
    {
        var warnings = new List<string>();
        var counts = monitor.Snapshot();
        if (counts.NonFiniteLogits > 0 || counts.NonFiniteGradients > 0)
            warnings.Add($"non-finite values during the attacks: {counts.NonFiniteLogits} logits, {counts.NonFiniteGradients} gradients");
        if (counts.GradientEvaluations > 0 && counts.ZeroGradients > 0.05 * counts.GradientEvaluations)
            warnings.Add($"{counts.ZeroGradients} of {counts.GradientEvaluations} per-example gradients exactly zero (gradient masking?)");
        // Saturation is reported, not warned about: the aggregation runs in log space and stays finite and
        // differentiable; the count says how often a naive float32 implementation would have masked the gradient.

        // Large eps: a budget that can turn any image into any other must leave chance accuracy or less.
        var large = new Threat(threat.Norm, settings.LargeEps);
        var endToEnd = carso.With(carso.Settings with { Differentiable = true }).AsModel();
        var largeAttack = Through(endToEnd, AutoAttack.ApgdCe(large,
            new AutoAttackSettings(ApgdIterations: settings.LargeEpsIterations, EotIter: 2), monitor, eotIter: 2));
        manual_seed(seed + 3);
        var largeResult = RobustEvaluation.Run(judgeModel, data, large, [largeAttack], batchSize, seed + 3, device: device);
        var chance = 1.0 / data.Classes.Count;
        if (largeResult.Robust.Value > chance + 0.05)
            warnings.Add($"accuracy at eps {settings.LargeEps} is {largeResult.Robust}, above chance ({100 * chance:F0}%): the attacks do not reach the defence");
        log($"large-eps check: accuracy at eps {settings.LargeEps}: {largeResult.Robust} (chance {100 * chance:F0}%)");

        using var sample = data.Images.narrow(0, 0, Math.Min(batchSize, data.Count)).to(device);
        var disagreement = Diagnostics.LogitDisagreement(judgeModel, sample);
        if (!carso.Settings.Deterministic && disagreement == 0)
            warnings.Add("the sampled defence gave identical outputs on repeated passes: is the latent really sampled?");

        int? squareExtra = null;
        if (groups.FirstOrDefault(g => g.Name == SquareName) is { } square)
        {
            var whiteBox = groups.Where(g => g.Name is not SquareName and not TransferName).ToArray();
            var bestWhiteBox = whiteBox.Length == 0 ? square.Robust.Value : whiteBox.Min(g => g.Robust.Value);
            squareExtra = (int)Math.Round((bestWhiteBox - square.Robust.Value) * data.Count);
            if (100 * (bestWhiteBox - square.Robust.Value) > Diagnostics.SquareTolerancePoints)
                warnings.Add($"Square (black-box) leaves {square.Robust}, below the strongest white-box family " +
                             $"({100 * bestWhiteBox:F2}%): gradient masking");
        }
        return new CarsoDiagnostics(cleanSaturated, adversarialSaturated, counts, settings.LargeEps, largeResult.Robust, chance,
            disagreement, squareExtra, warnings);
    }
}
