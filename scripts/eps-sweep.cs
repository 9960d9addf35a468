#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Robust accuracy against the Linf budget eps (0 to 0.3) on Fashion-MNIST, for the committed PGD-AT SmallCnn and
// for CARSO (its committed purifier), on the same test points, each with 95% Wilson bands.
//   classifier: APGD-CE + APGD-T (AutoAttack.Custom), per-point worst case.
//   CARSO: a REDUCED CARSO protocol per eps (CarsoEvaluation.Run): transfer of the classifier's examples at that eps,
//          AutoAttack rand and PGD+EOT end to end, APGD through the deterministic defence; no surrogate, no Square.
// REDUCED budgets relative to the full protocol (scripts/eval-carso.cs, CarsoProtocolSettings defaults: APGD 100
// iterations, EOT 20, PGD 200 steps; AutoAttack standard 100 iterations, 9 targets): here APGD 10 iterations, EOT 1,
// PGD+EOT 10 steps (10x fewer iterations, 20x fewer EOT samples, 20x fewer PGD steps), large-eps check 2 iterations,
// the classifier's APGD 25 iterations with 3 targets (4x fewer iterations, 3 of 9 targets), on the first 100 test
// points (not 1000). Sized for a 2-core CPU shared with other jobs (about 8 minutes). The figure comes from the run record only
// (lib/Experiments/EpsSweepReport.cs).
//   dotnet run scripts/eps-sweep.cs            -> results/eps-sweep/
//   dotnet run scripts/eps-sweep.cs --smoke    -> a temporary folder, seconds
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
var run = ScriptRun.Start("eps-sweep", args);
var settings = new Settings();
if (run.Smoke)
    settings = settings with
    {
        Points = 8, Eps = [0, 0.1, 0.3], BatchSize = 8,
        ClassifierAttacks = AutoAttackSettings.Smoke,
        CarsoProtocol = settings.CarsoProtocol with { ApgdIterations = 2, EotIter = 1, PgdSteps = 2, LargeEpsIterations = 2 },
    };
settings.Validate();
var seed = run.SeedOverride ?? settings.Seed;
var root = Paths.RepoRoot() ?? ".";
Console.WriteLine($"REDUCED budgets: classifier APGD-CE + APGD-T ({settings.ClassifierAttacks.ApgdIterations} iterations, " +
                  $"{settings.ClassifierAttacks.NTargetClasses} targets); CARSO per eps: {settings.CarsoProtocol} with PGD step " +
                  $"{settings.PgdStepFactor} * eps; {settings.Points} points; eps {string.Join(", ", settings.Eps)}");

// ---- data and models --------------------------------------------------------------------------
using var test = FashionMnist.Load(Split.Test).Take(settings.Points);
var classifier = StateDicts.ImportFrozen(new SmallCnn(settings.Model), Path.Combine(root, settings.Classifier), run.Device);
var (purifier, _) = PurifierCheckpoint.Load(Path.Combine(root, settings.Purifier), classifier, settings.Layers);
var carso = new CarsoModel(classifier, purifier, settings.Layers, settings.Defence);

// ---- the sweep ---------------------------------------------------------------------------------
var n = (int)test.Count;
var classifierAlive = Enumerable.Repeat(true, n).ToArray(); // robust at every eps so far (envelope)
var carsoAlive = Enumerable.Repeat(true, n).ToArray();
var curve = new List<EpsPoint>();
foreach (var eps in settings.Eps)
{
    var threat = Threat.Linf(eps);
    Console.WriteLine($"---- eps {eps} ----");
    var clock = System.Diagnostics.Stopwatch.StartNew();
    bool[] classifierRobust, carsoRobust;
    Accuracy carsoClean;
    Accuracy? largeEps = null;
    var families = new List<EpsFamily>();
    var warnings = new List<string>();
    double classifierSeconds, carsoSeconds;
    if (eps == 0)
    {
        using (var c = Evaluate.PerPointCorrect(classifier.call, test, settings.BatchSize, device: run.Device)) classifierRobust = c.data<bool>().ToArray();
        classifierSeconds = clock.Elapsed.TotalSeconds;
        clock.Restart();
        manual_seed(seed);
        using (var c = Evaluate.PerPointCorrect(carso.AsModel(), test, settings.BatchSize, device: run.Device)) carsoRobust = c.data<bool>().ToArray();
        carsoClean = Accuracy.Of(carsoRobust.Count(r => r), n);
        carsoSeconds = clock.Elapsed.TotalSeconds;
    }
    else
    {
        // The classifier's attack keeps its state file so its examples can be transferred to CARSO.
        var stateFile = run.Output(Path.Combine("attacks", $"classifier-eps{eps}.json"));
        Directory.CreateDirectory(Path.GetDirectoryName(stateFile)!);
        var attacks = AutoAttack.Custom([AutoAttack.ApgdCeName, AutoAttack.ApgdTName], threat, settings.ClassifierAttacks);
        var result = RobustEvaluation.Run(classifier.call, test, threat, attacks, settings.BatchSize, seed, stateFile,
            line => Console.WriteLine("  classifier " + line), device: run.Device);
        classifierRobust = result.Points.Select(p => p.CleanCorrect && p.BrokenBy is null).ToArray();
        classifierSeconds = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"classifier: {result.Robust} ({classifierSeconds:F0} s)");
        clock.Restart();
        using var transfer = RobustEvaluation.LoadAdversarial(stateFile, test);
        var protocol = settings.CarsoProtocol with { PgdStepSize = settings.PgdStepFactor * eps };
        var carsoResult = CarsoEvaluation.Run(carso, test, threat, protocol, transfer, stateDir: null, seed, settings.BatchSize,
            line => Console.WriteLine("  " + line), run.Device);
        carsoRobust = carsoResult.Points.Select(p => p.CleanCorrect && p.BrokenBy is null).ToArray();
        carsoClean = carsoResult.Clean;
        families.AddRange(carsoResult.Groups.Select(g => new EpsFamily(g.Name, g.Robust, g.Seconds)));
        largeEps = carsoResult.Diagnostics.LargeEpsAccuracy;
        warnings.AddRange(carsoResult.Diagnostics.Warnings);
        carsoSeconds = clock.Elapsed.TotalSeconds;
    }
    for (var i = 0; i < n; i++) { classifierAlive[i] &= classifierRobust[i]; carsoAlive[i] &= carsoRobust[i]; }
    var point = new EpsPoint(eps, Accuracy.Of(classifierRobust.Count(r => r), n), Accuracy.Of(carsoRobust.Count(r => r), n),
        Accuracy.Of(classifierAlive.Count(r => r), n), Accuracy.Of(carsoAlive.Count(r => r), n), carsoClean, families, largeEps,
        warnings, classifierSeconds, carsoSeconds);
    curve.Add(point);
    Console.WriteLine($"eps {eps}: classifier {point.Classifier}, CARSO {point.Carso} ({carsoSeconds:F0} s)");
}

// ---- checks, table, record, figures -------------------------------------------------------------
var epsList = curve.Select(p => p.Eps).ToArray();
var checks = new[]
{
    EpsSweepReport.Check("classifier", epsList, curve.Select(p => p.Classifier).ToArray()),
    EpsSweepReport.Check("CARSO", epsList, curve.Select(p => p.Carso).ToArray()),
};
foreach (var c in checks)
    Console.WriteLine($"monotonicity ({c.Model}): {(c.NonIncreasing ? "non-increasing" : "VIOLATED: " + string.Join("; ", c.Violations))}");
var metrics = new EpsSweepMetrics(n,
    $"APGD-CE + APGD-T ({settings.ClassifierAttacks.ApgdIterations} iterations, {settings.ClassifierAttacks.NTargetClasses} targets)",
    $"reduced CARSO protocol: {settings.CarsoProtocol} (PGD step {settings.PgdStepFactor} * eps), plus transfer of the classifier's examples at the same eps",
    "full protocol (scripts/eval-carso.cs): APGD 100 iterations, EOT 20, PGD+EOT 200 steps, logit surrogate, 1000 points; " +
    "here 10x fewer APGD iterations, 20x fewer EOT samples and PGD steps, no surrogate, 100 points",
    curve, checks);
var record = run.Finish(settings, seed, metrics);
File.WriteAllText(run.Output("table.md"), ResultTable.Markdown(EpsSweepReport.Rows(record)));
Console.Write(ResultTable.Text(EpsSweepReport.Rows(record)));
foreach (var (name, figure) in EpsSweepReport.Figures(record)) run.SaveFigure(figure, name);

/// <summary>Settings: edit and re-run (delete the attacks/ folder of the output after changing any).</summary>
record Settings
{
    public string Classifier { get; init; } = "results/train-classifier/smallcnn-fmnist-pgdat.safetensors";
    public SmallCnn.Settings Model { get; init; } = new(Channels1: 32, Channels2: 64, Hidden: 256);
    public string Purifier { get; init; } = "results/train-carso/purifier-smallcnn-fmnist.safetensors";
    public string[] Layers { get; init; } = ["conv1", "conv2", "fc1"];
    public CarsoSettings Defence { get; init; } = new(Samples: 8, Aggregation: AggregationKind.Peel);
    public double[] Eps { get; init; } = [0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3];
    /// <summary>The first Points test images (the same for every eps and both models).</summary>
    public int Points { get; init; } = 100;
    public AutoAttackSettings ClassifierAttacks { get; init; } = new(ApgdIterations: 25, NTargetClasses: 3);
    /// <summary>REDUCED (full: CarsoProtocolSettings defaults); PgdStepSize is replaced by PgdStepFactor * eps.</summary>
    public CarsoProtocolSettings CarsoProtocol { get; init; } = new(ApgdIterations: 10, EotIter: 1, PgdSteps: 10,
        Surrogate: null, RepresentationPath: true, SquareQueries: 0, LargeEps: 0.5, LargeEpsIterations: 2);
    /// <summary>PGD step as a fraction of eps: 2.5 * eps / steps (Madry et al.).</summary>
    public double PgdStepFactor { get; init; } = 2.5 / 10;
    public int BatchSize { get; init; } = 100;
    public long Seed { get; init; } = 0;

    public void Validate()
    {
        if (Points < 1) throw new ArgumentException($"Settings.Points must be >= 1, got {Points}");
        if (Eps.Length == 0 || Eps.Any(e => e < 0 || !double.IsFinite(e)))
            throw new ArgumentException($"Settings.Eps must be non-empty, finite and >= 0, got [{string.Join(", ", Eps)}]");
        if (!Eps.SequenceEqual(Eps.Order()) || Eps.Distinct().Count() != Eps.Length)
            throw new ArgumentException($"Settings.Eps must be strictly increasing, got [{string.Join(", ", Eps)}]");
        if (PgdStepFactor <= 0) throw new ArgumentException($"Settings.PgdStepFactor must be > 0, got {PgdStepFactor}");
    }
}
