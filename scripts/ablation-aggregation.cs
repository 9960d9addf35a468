#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Ablation: how CARSO aggregates its N = 8 classified reconstructions (logit, prob, count, peel), with the committed
// Fashion-MNIST classifier and purifier: clean accuracy on 1000 test points, robust accuracy on the first 200.
// Robust = per-point worst case of: transfer of the classifier's committed AutoAttack examples (eps 0.1); APGD-CE+EOT
// through the logit surrogate (non-saturating mean logits); and, where the aggregation is differentiable, APGD-CE+EOT
// end to end through itself. count (argmax votes) has no gradient anywhere, so it is attacked through the surrogate
// only: attacking it through itself would find nothing and fake robustness. Every attack is judged by the variant's
// own aggregation (sampled, no gradient).
// REDUCED budgets relative to the full protocol (scripts/eval-carso.cs: AutoAttack rand + PGD+EOT, APGD 100
// iterations, EOT 20, PGD 200 steps, representation path, 1000 points): here APGD-CE only, 10 iterations (10x
// fewer), EOT 2 (10x fewer), 200 points (5x fewer). Robust numbers are upper bounds. Figures come from the run record
// only (lib/Experiments/VariantAblationReport.cs).
//   dotnet run scripts/ablation-aggregation.cs            -> results/ablation-aggregation/
//   dotnet run scripts/ablation-aggregation.cs --smoke    -> a temporary folder, seconds
using Carso.IO;
using Carso.Attacks;
using Carso.Data;
using Carso.Defence;
using Carso.Evaluation;
using Carso.Experiments;
using Carso.Models;
using Carso.Runtime;
using Carso.Training;
using TorchSharp;
using static TorchSharp.torch;

// ---- settings -------------------------------------------------------------------------------
var run = ScriptRun.Start("ablation-aggregation", args);
var settings = new Settings();
if (run.Smoke)
    settings = settings with { CleanPoints = 24, RobustPoints = 12, ApgdIterations = 2, EotIter = 1, BatchSize = 12 };
settings.Validate();
var aggregations = settings.Aggregations.Select(Aggregation.Parse).ToArray(); // unknown names: a clear error
var seed = run.SeedOverride ?? settings.Seed;
var root = Paths.RepoRoot() ?? ".";
var threat = Threat.Linf(settings.Eps);
var attackDescription = $"transfer of the classifier's AutoAttack examples; APGD-CE ({settings.ApgdIterations} iterations, EOT " +
                        $"{settings.EotIter}) through the logit surrogate and, where differentiable, end to end; {threat}, N = {settings.Samples}";
Console.WriteLine($"REDUCED attacks: {attackDescription}; clean on {settings.CleanPoints} points, robust on {settings.RobustPoints}");

// ---- data and models --------------------------------------------------------------------------
using var test = FashionMnist.Load(Split.Test).Take(settings.TransferSavedPoints);
using var adversarialAll = RobustEvaluation.LoadAdversarial(Path.Combine(root, settings.Transfer), test);
using var clean = test.Take(settings.CleanPoints);
using var attacked = test.Take(settings.RobustPoints);
using var transfer = adversarialAll.narrow(0, 0, attacked.Count).clone();
var classifier = StateDicts.ImportFrozen(new SmallCnn(settings.Model), Path.Combine(root, settings.Classifier), run.Device);
var (purifier, _) = PurifierCheckpoint.Load(Path.Combine(root, settings.Purifier), classifier, settings.Layers);
var baseDefence = new CarsoModel(classifier, purifier, settings.Layers, new CarsoSettings(settings.Samples));
var surrogate = baseDefence.With(new CarsoSettings(settings.Samples, AggregationKind.Logit, Differentiable: true)).AsModel();
NamedAttack Apgd(AttackMonitor monitor) => Ablation.ApgdCeEot(threat, settings.ApgdIterations, settings.EotIter, monitor);

// ---- every aggregation ----------------------------------------------------------------------------
var variants = new List<VariantResult>();
foreach (var kind in aggregations)
{
    var name = kind.ToString().ToLowerInvariant();
    Console.WriteLine($"---- {name} ----");
    var carso = baseDefence.With(new CarsoSettings(settings.Samples, kind));
    var judge = carso.AsModel();
    var cleanAccuracy = Ablation.Clean(judge, clean, seed, settings.BatchSize, run.Device);
    Console.WriteLine($"clean {cleanAccuracy}");
    var families = new List<AttackFamily>
    {
        new("via-logit", $"APGD-CE+EOT through the logit surrogate, judged by {name}", m => CarsoEvaluation.Through(surrogate, Apgd(m))),
    };
    // count: piecewise constant (its gradient is zero or absent), so no end-to-end attack; logit: the surrogate is itself.
    if (kind is not AggregationKind.Count and not AggregationKind.Logit)
        families.Add(new("end-to-end", $"APGD-CE+EOT end to end through {name}",
            m => CarsoEvaluation.Through(carso.With(carso.Settings with { Differentiable = true }).AsModel(), Apgd(m))));
    var robust = Ablation.Evaluate(judge, attacked, threat, transfer, families, seed, settings.BatchSize, run.Device, Console.WriteLine);
    var description = kind switch
    {
        AggregationKind.Count => "argmax votes: no gradient, attacked through the logit surrogate only",
        AggregationKind.Logit => "mean logits: the surrogate is the aggregation itself",
        _ => "attacked through the logit surrogate and end to end",
    };
    variants.Add(new VariantResult(name, description, cleanAccuracy, robust));
    Console.WriteLine($"{name}: clean {cleanAccuracy}, robust (worst case) {robust.WorstCase}");
}

// ---- record, table, figures -----------------------------------------------------------------------
var metrics = new VariantAblationMetrics((int)clean.Count, (int)attacked.Count, attackDescription,
    "full protocol (scripts/eval-carso.cs): AutoAttack rand + PGD+EOT (APGD 100 iterations, EOT 20, PGD 200 steps), surrogate and " +
    "representation path, 1000 points; here APGD-CE only, 10x fewer iterations, EOT 10x fewer, 200 points",
    variants,
    ["count has no useful gradient (argmax votes): its robust accuracy comes from the logit surrogate and transfer only.",
     "worst case = per point over transfer, via-logit and (prob, peel) end-to-end."]);
var record = run.Finish(settings, seed, metrics);
var rows = AblationAggregationReport.Rows(record);
File.WriteAllText(run.Output("table.md"), ResultTable.Markdown(rows));
Console.Write(ResultTable.Text(rows));
foreach (var (name, figure) in AblationAggregationReport.Figures(record)) run.SaveFigure(figure, name);

/// <summary>Settings: edit and re-run.</summary>
record Settings
{
    public string Classifier { get; init; } = "results/train-classifier/smallcnn-fmnist-pgdat.safetensors";
    public SmallCnn.Settings Model { get; init; } = new(Channels1: 32, Channels2: 64, Hidden: 256);
    public string Purifier { get; init; } = "results/train-carso/purifier-smallcnn-fmnist.safetensors";
    public string[] Layers { get; init; } = ["conv1", "conv2", "fc1"];
    /// <summary>The classifier's AutoAttack state (eps 0.1) and the number of points it was saved with.</summary>
    public string Transfer { get; init; } = "results/eval-autoattack/state.json";
    public int TransferSavedPoints { get; init; } = 1000;
    /// <summary>Aggregation names (Aggregation.Names): logit, prob, count, peel.</summary>
    public string[] Aggregations { get; init; } = ["logit", "prob", "count", "peel"];
    public int Samples { get; init; } = 8;
    public double Eps { get; init; } = 0.1;
    public int CleanPoints { get; init; } = 1000;
    /// <summary>The first RobustPoints test images are attacked. REDUCED (full: 1000: 5x fewer).</summary>
    public int RobustPoints { get; init; } = 200;
    /// <summary>REDUCED (full: 100 iterations, EOT 20).</summary>
    public int ApgdIterations { get; init; } = 10;
    public int EotIter { get; init; } = 2;
    public int BatchSize { get; init; } = 100;
    public long Seed { get; init; } = 0;

    public void Validate()
    {
        if (Samples < 1) throw new ArgumentException($"Settings.Samples (N) must be >= 1, got {Samples}");
        if (Aggregations.Length == 0) throw new ArgumentException("Settings.Aggregations must name at least one aggregation");
        if (RobustPoints < 1 || RobustPoints > TransferSavedPoints)
            throw new ArgumentException($"Settings.RobustPoints must be in [1, {TransferSavedPoints}] (the transfer examples saved), got {RobustPoints}");
        if (CleanPoints < 1 || CleanPoints > TransferSavedPoints)
            throw new ArgumentException($"Settings.CleanPoints must be in [1, {TransferSavedPoints}], got {CleanPoints}");
        if (ApgdIterations < 1 || EotIter < 1)
            throw new ArgumentException($"Settings.ApgdIterations and Settings.EotIter must be >= 1, got {ApgdIterations} and {EotIter}");
    }
}
