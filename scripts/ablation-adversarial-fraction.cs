#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Ablation: the fraction of each training batch that is adversarial when training the CARSO purifier (0: clean
// images only; 1: all adversarial), for the committed Fashion-MNIST PGD-AT classifier. One purifier per fraction,
// trained from the same initialisation (seed) on the same images in the same order, then CARSO (N = 8, peel) with
// each: clean accuracy on the first 500 test points, robust accuracy on the first 100.
// Robust = per-point worst case of: transfer of the classifier's committed AutoAttack examples (eps 0.1), and APGD-CE
// with EOT end to end through CARSO.
// REDUCED budgets: purifier training 1 epoch on 16,384 images (128 steps of 128; the reference, scripts/train-carso.cs,
// trains 3 epochs on 30,000: about 5.5x fewer steps) with PGD-10 training examples (reference PGD-40), held-out checks on
// 100 points; attacks relative to the full protocol (scripts/eval-carso.cs: AutoAttack rand + PGD+EOT, APGD 100
// iterations, EOT 20, 1000 points): APGD-CE only, 10 iterations (10x fewer), EOT 2 (10x fewer), 100 points (10x
// fewer). These purifiers are much weaker than the committed one; compare the fractions with each other only. The
// trained purifiers (7 MB each) are written to purifiers/ in the output folder and not committed. Figures come from
// the run record only (lib/Experiments/AblationAdversarialFractionReport.cs).
//   dotnet run scripts/ablation-adversarial-fraction.cs            -> results/ablation-adversarial-fraction/
//   dotnet run scripts/ablation-adversarial-fraction.cs --smoke    -> a temporary folder, seconds
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
var run = ScriptRun.Start("ablation-adversarial-fraction", args);
var settings = new Settings();
if (run.Smoke)
    settings = settings with
    {
        Fractions = [0, 1.0], TrainPoints = 64, ValidationCount = 32, CleanPoints = 16, RobustPoints = 8,
        ApgdIterations = 2, EotIter = 1, BatchSize = 8,
        Training = settings.Training with { Epochs = 1, BatchSize = 32, PgdSteps = 2, EvalPoints = 16, EvalPgdSteps = 2 },
    };
settings.Validate();
var seed = run.SeedOverride ?? settings.Seed;
var root = Paths.RepoRoot() ?? ".";
var threat = Threat.Linf(settings.Eps);
var steps = settings.Training.Epochs * ((settings.TrainPoints + settings.Training.BatchSize - 1) / settings.Training.BatchSize);
var attackDescription = $"transfer of the classifier's AutoAttack examples + APGD-CE end to end ({settings.ApgdIterations} iterations, " +
                        $"EOT {settings.EotIter}), {threat}";
Console.WriteLine($"REDUCED budgets: each purifier {settings.Training.Epochs} epoch(s) on {settings.TrainPoints} images ({steps} steps, " +
                  $"PGD-{settings.Training.PgdSteps} training examples); attacks: {attackDescription}; clean on {settings.CleanPoints} points, " +
                  $"robust on {settings.RobustPoints}; fractions {string.Join(", ", settings.Fractions)}");

// ---- data and the frozen classifier -----------------------------------------------------------
var (train, validation, test) = FashionMnist.Splits(settings.ValidationCount, seed, settings.TrainPoints, settings.TransferSavedPoints);
using var adversarialAll = RobustEvaluation.LoadAdversarial(Path.Combine(root, settings.Transfer), test);
using var clean = test.Take(settings.CleanPoints);
using var attacked = test.Take(settings.RobustPoints);
using var transfer = adversarialAll.narrow(0, 0, attacked.Count).clone();
var classifier = StateDicts.ImportFrozen(new SmallCnn(settings.Model), Path.Combine(root, settings.Classifier), run.Device);
var layerShapes = PurifierCheckpoint.LayerShapes(classifier, settings.Layers, [1, 28, 28]);
var spec = PurifierSpec.For(classifier, settings.Layers, [1, 28, 28], settings.PurifierSize);

// ---- one purifier per fraction ------------------------------------------------------------------
var variants = new List<VariantResult>();
var training = new List<FractionTraining>();
foreach (var fraction in settings.Fractions)
{
    var name = $"fraction {fraction}";
    Console.WriteLine($"---- {name} ----");
    manual_seed(seed); // the same initialisation for every fraction
    var purifier = Purifier.Build(settings.PurifierSize, layerShapes, [1, 28, 28]);
    purifier.to(run.Device);
    var trainingSettings = settings.Training with { AdversarialFraction = fraction, Seed = seed, Threat = threat };
    var clock = System.Diagnostics.Stopwatch.StartNew();
    var history = PurifierTraining.Train(classifier, settings.Layers, purifier, train, validation, trainingSettings,
        checkpointFolder: null, log: Console.WriteLine, device: run.Device).History;
    var seconds = clock.Elapsed.TotalSeconds;
    purifier.eval();
    var checkpoint = Path.Combine("purifiers", $"purifier-fraction-{fraction}.safetensors");
    PurifierCheckpoint.Save(run.Output(checkpoint), purifier, spec);
    var last = history[^1];
    training.Add(new FractionTraining(fraction, steps, seconds, last.Bce, last.Kl, last.DefendedClean, last.DefendedPgd, checkpoint));

    var carso = new CarsoModel(classifier, purifier, settings.Layers, settings.Defence);
    var judge = carso.AsModel();
    var cleanAccuracy = Ablation.Clean(judge, clean, seed, settings.BatchSize, run.Device);
    Console.WriteLine($"clean {cleanAccuracy}");
    var endToEnd = carso.With(carso.Settings with { Differentiable = true }).AsModel();
    var robust = Ablation.Evaluate(judge, attacked, threat, transfer,
        [new AttackFamily("apgd-ce-eot", $"APGD-CE ({settings.ApgdIterations} iterations, EOT {settings.EotIter}) end to end",
            m => CarsoEvaluation.Through(endToEnd, Ablation.ApgdCeEot(threat, settings.ApgdIterations, settings.EotIter, m)))],
        seed, settings.BatchSize, run.Device, Console.WriteLine);
    variants.Add(new VariantResult(name, $"purifier trained with {100 * fraction:F0}% adversarial inputs", cleanAccuracy, robust));
    Console.WriteLine($"{name}: clean {cleanAccuracy}, robust (worst case) {robust.WorstCase} (training {seconds:F0} s)");
}

// ---- record, table, figures -----------------------------------------------------------------------
var metrics = new AblationAdversarialFractionMetrics((int)clean.Count, (int)attacked.Count, (int)train.Count, settings.Training.Epochs,
    attackDescription,
    $"purifier training {steps} steps per fraction (reference scripts/train-carso.cs: 3 epochs on 30,000 images, 705 steps) with PGD-" +
    $"{settings.Training.PgdSteps} examples (reference PGD-40); attacks: APGD-CE only, 10x fewer iterations and EOT than the full protocol " +
    "(scripts/eval-carso.cs), 100 points",
    settings.Fractions, variants, training,
    ["Same initialisation, images and batch order for every fraction; only the adversarial share of each batch differs.",
     "Purifiers are far weaker than the committed one (reduced training): compare fractions with each other only.",
     "The trained purifiers are in purifiers/ of the output folder (not committed: 7 MB each; rerun to regenerate)."]);
var record = run.Finish(settings, seed, metrics);
var rows = AblationAdversarialFractionReport.Rows(record);
File.WriteAllText(run.Output("table.md"), ResultTable.Markdown(rows));
Console.Write(ResultTable.Text(rows));
foreach (var (name, figure) in AblationAdversarialFractionReport.Figures(record)) run.SaveFigure(figure, name);
foreach (var data in new[] { train, validation, test }) data.Dispose();

/// <summary>Settings: edit and re-run.</summary>
record Settings
{
    public string Classifier { get; init; } = "results/train-classifier/smallcnn-fmnist-pgdat.safetensors";
    public SmallCnn.Settings Model { get; init; } = new(Channels1: 32, Channels2: 64, Hidden: 256);
    public string[] Layers { get; init; } = ["conv1", "conv2", "fc1"];
    public PurifierSettings PurifierSize { get; init; } = new(ConditioningSize: 256, LatentSize: 64);
    public double[] Fractions { get; init; } = [0, 0.25, 0.5, 1.0];
    /// <summary>REDUCED (reference: 3 epochs on 30,000 images, PGD-40): 1 epoch on TrainPoints, PGD-10 of step 0.025.</summary>
    public PurifierTrainingSettings Training { get; init; } = new()
        { Epochs = 1, PgdSteps = 10, PgdStepSize = 0.025, EvalPoints = 100, EvalPgdSteps = 10 };
    public int TrainPoints { get; init; } = 16384;
    public int ValidationCount { get; init; } = 5000;
    public CarsoSettings Defence { get; init; } = new(Samples: 8, Aggregation: AggregationKind.Peel);
    /// <summary>The classifier's AutoAttack state (eps 0.1) and the number of points it was saved with.</summary>
    public string Transfer { get; init; } = "results/eval-autoattack/state.json";
    public int TransferSavedPoints { get; init; } = 1000;
    public double Eps { get; init; } = 0.1;
    public int CleanPoints { get; init; } = 500;
    /// <summary>The first RobustPoints test images are attacked. REDUCED (full: 1000).</summary>
    public int RobustPoints { get; init; } = 100;
    /// <summary>REDUCED (full: 100 iterations, EOT 20).</summary>
    public int ApgdIterations { get; init; } = 10;
    public int EotIter { get; init; } = 2;
    public int BatchSize { get; init; } = 100;
    public long Seed { get; init; } = 0;

    public void Validate()
    {
        if (Fractions.Length == 0 || Fractions.Any(f => f < 0 || f > 1 || !double.IsFinite(f)))
            throw new ArgumentException($"Settings.Fractions must be non-empty, each in [0, 1], got [{string.Join(", ", Fractions)}]");
        if (TrainPoints < 1) throw new ArgumentException($"Settings.TrainPoints must be >= 1, got {TrainPoints}");
        if (RobustPoints < 1 || RobustPoints > TransferSavedPoints)
            throw new ArgumentException($"Settings.RobustPoints must be in [1, {TransferSavedPoints}] (the transfer examples saved), got {RobustPoints}");
        if (CleanPoints < 1 || CleanPoints > TransferSavedPoints)
            throw new ArgumentException($"Settings.CleanPoints must be in [1, {TransferSavedPoints}], got {CleanPoints}");
        if (ApgdIterations < 1 || EotIter < 1)
            throw new ArgumentException($"Settings.ApgdIterations and Settings.EotIter must be >= 1, got {ApgdIterations} and {EotIter}");
        if (Defence.Samples < 1) throw new ArgumentException($"Settings.Defence.Samples (N) must be >= 1, got {Defence.Samples}");
    }
}
