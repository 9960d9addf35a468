#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Ablation: CARSO with the latent sampled, z ~ N(0, I) (the reference; N = 8, peel), versus deterministic, z = 0 (all
// samples the same reconstruction, so N = 1 gives the same outputs and is used), with the committed Fashion-MNIST
// classifier and purifier: clean accuracy on 1000 test points, robust accuracy on the first 200.
// Robust = per-point worst case of: transfer of the classifier's committed AutoAttack examples (eps 0.1); APGD-CE end
// to end through the variant (EOT 2 when sampled; exact gradient, EOT 1, when deterministic); and, for the sampled
// variant, APGD-CE through the deterministic defence (the representation-path attack of the protocol).
// REDUCED budgets relative to the full protocol (scripts/eval-carso.cs: AutoAttack rand + PGD+EOT, APGD 100
// iterations, EOT 20, PGD 200 steps, surrogate, 1000 points): here APGD-CE only, 10 iterations (10x fewer), EOT 2
// (10x fewer), 200 points (5x fewer). Robust numbers are upper bounds. Figures come from the run record only
// (lib/Experiments/VariantAblationReport.cs).
//   dotnet run scripts/ablation-deterministic.cs            -> results/ablation-deterministic/
//   dotnet run scripts/ablation-deterministic.cs --smoke    -> a temporary folder, seconds
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
var run = ScriptRun.Start("ablation-deterministic", args);
var settings = new Settings();
if (run.Smoke)
    settings = settings with { CleanPoints = 24, RobustPoints = 12, ApgdIterations = 2, EotIter = 1, BatchSize = 12 };
settings.Validate();
var seed = run.SeedOverride ?? settings.Seed;
var root = Paths.RepoRoot() ?? ".";
var threat = Threat.Linf(settings.Eps);
var attackDescription = $"transfer of the classifier's AutoAttack examples; APGD-CE ({settings.ApgdIterations} iterations) end to end " +
                        $"(EOT {settings.EotIter} when sampled, 1 when deterministic); for the sampled variant also APGD-CE through z = 0; {threat}";
Console.WriteLine($"REDUCED attacks: {attackDescription}; clean on {settings.CleanPoints} points, robust on {settings.RobustPoints}");

// ---- data and models --------------------------------------------------------------------------
using var test = FashionMnist.Load(Split.Test).Take(settings.TransferSavedPoints);
using var adversarialAll = RobustEvaluation.LoadAdversarial(Path.Combine(root, settings.Transfer), test);
using var clean = test.Take(settings.CleanPoints);
using var attacked = test.Take(settings.RobustPoints);
using var transfer = adversarialAll.narrow(0, 0, attacked.Count).clone();
var classifier = StateDicts.ImportFrozen(new SmallCnn(settings.Model), Path.Combine(root, settings.Classifier), run.Device);
var (purifier, _) = PurifierCheckpoint.Load(Path.Combine(root, settings.Purifier), classifier, settings.Layers);
var sampled = new CarsoModel(classifier, purifier, settings.Layers, new CarsoSettings(settings.Samples, settings.Aggregation));
// z = 0: every sample is the same reconstruction, so N = 1 gives the same prediction at 1/N of the cost.
var deterministic = sampled.With(new CarsoSettings(1, settings.Aggregation, Deterministic: true));
Func<Tensor, Tensor> Differentiable(CarsoModel m) => m.With(m.Settings with { Differentiable = true }).AsModel();

// ---- both variants -------------------------------------------------------------------------------
var variants = new List<VariantResult>();
foreach (var (name, carso) in new[] { ("sampled", sampled), ("deterministic", deterministic) })
{
    Console.WriteLine($"---- {name} ----");
    var judge = carso.AsModel();
    var cleanAccuracy = Ablation.Clean(judge, clean, seed, settings.BatchSize, run.Device);
    Console.WriteLine($"clean {cleanAccuracy}");
    var isSampled = !carso.Settings.Deterministic;
    var families = new List<AttackFamily>
    {
        new("end-to-end", $"APGD-CE end to end (EOT {(isSampled ? settings.EotIter : 1)})",
            m => CarsoEvaluation.Through(Differentiable(carso), Ablation.ApgdCeEot(threat, settings.ApgdIterations, isSampled ? settings.EotIter : 1, m))),
    };
    if (isSampled)
        families.Add(new("via-z0", "APGD-CE through the deterministic defence (z = 0): exact gradient of the representation path",
            m => CarsoEvaluation.Through(Differentiable(deterministic), Ablation.ApgdCeEot(threat, settings.ApgdIterations, 1, m))));
    var robust = Ablation.Evaluate(judge, attacked, threat, transfer, families, seed, settings.BatchSize, run.Device, Console.WriteLine);
    variants.Add(new VariantResult(name, isSampled ? $"z ~ N(0, I), N = {settings.Samples}, {carso.Settings.Aggregation}" : "z = 0 (N = 1: all samples equal)",
        cleanAccuracy, robust));
    Console.WriteLine($"{name}: clean {cleanAccuracy}, robust (worst case) {robust.WorstCase}");
}

// ---- record, table, figures -----------------------------------------------------------------------
var metrics = new VariantAblationMetrics((int)clean.Count, (int)attacked.Count, attackDescription,
    "full protocol (scripts/eval-carso.cs): AutoAttack rand + PGD+EOT (APGD 100 iterations, EOT 20, PGD 200 steps), surrogate and " +
    "representation path, 1000 points; here APGD-CE only, 10x fewer iterations, EOT 10x fewer, 200 points",
    variants,
    ["deterministic uses N = 1: with z = 0 all N reconstructions are identical and every aggregation gives the same argmax."]);
var record = run.Finish(settings, seed, metrics);
var rows = AblationDeterministicReport.Rows(record);
File.WriteAllText(run.Output("table.md"), ResultTable.Markdown(rows));
Console.Write(ResultTable.Text(rows));
foreach (var (name, figure) in AblationDeterministicReport.Figures(record)) run.SaveFigure(figure, name);

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
    /// <summary>N of the sampled variant (the deterministic one uses 1).</summary>
    public int Samples { get; init; } = 8;
    public AggregationKind Aggregation { get; init; } = AggregationKind.Peel;
    public double Eps { get; init; } = 0.1;
    public int CleanPoints { get; init; } = 1000;
    /// <summary>The first RobustPoints test images are attacked. REDUCED (full: 1000).</summary>
    public int RobustPoints { get; init; } = 200;
    /// <summary>REDUCED (full: 100 iterations, EOT 20).</summary>
    public int ApgdIterations { get; init; } = 10;
    public int EotIter { get; init; } = 2;
    public int BatchSize { get; init; } = 100;
    public long Seed { get; init; } = 0;

    public void Validate()
    {
        if (Samples < 1) throw new ArgumentException($"Settings.Samples (N) must be >= 1, got {Samples}");
        if (RobustPoints < 1 || RobustPoints > TransferSavedPoints)
            throw new ArgumentException($"Settings.RobustPoints must be in [1, {TransferSavedPoints}] (the transfer examples saved), got {RobustPoints}");
        if (CleanPoints < 1 || CleanPoints > TransferSavedPoints)
            throw new ArgumentException($"Settings.CleanPoints must be in [1, {TransferSavedPoints}], got {CleanPoints}");
        if (ApgdIterations < 1 || EotIter < 1)
            throw new ArgumentException($"Settings.ApgdIterations and Settings.EotIter must be >= 1, got {ApgdIterations} and {EotIter}");
    }
}
