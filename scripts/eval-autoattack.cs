#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// AutoAttack "standard" (APGD-CE, APGD-T, FAB-T, Square 5000) on a classifier checkpoint, with the
// gradient-masking diagnostics. Default: the committed Fashion-MNIST PGD-AT SmallCnn, Linf eps 0.1, the first
// 1000 test points. Resumable: a killed run continues from its state file.
//   dotnet run scripts/eval-autoattack.cs            -> results/eval-autoattack/
//   dotnet run scripts/eval-autoattack.cs --smoke    -> a temporary folder, seconds
using Carso.IO;
using Carso.Attacks;
using Carso.Data;
using Carso.Evaluation;
using Carso.Experiments;
using Carso.Models;
using Carso.Reporting;
using Carso.Runtime;
using Carso.Training;
using TorchSharp;
using static TorchSharp.torch;

// ---- settings -------------------------------------------------------------------------------
var run = ScriptRun.Start("eval-autoattack", args);
var settings = new Settings();
if (run.Smoke)
    settings = settings with { Points = 24, Attacks = AutoAttackSettings.Smoke, DiagnosticPoints = 24, BatchSize = 12 };
var seed = run.SeedOverride ?? settings.Seed;
var threat = Threat.Linf(settings.Eps);

// ---- data and model ---------------------------------------------------------------------------
using var test = FashionMnist.Load(Split.Test).Take(settings.Points);
var checkpoint = Path.Combine(Paths.RepoRoot() ?? ".", settings.Checkpoint);
var model = new SmallCnn(settings.Model);
var report = StateDicts.Import(model, checkpoint);
model.to(run.Device).eval();
foreach (var p in model.parameters()) p.requires_grad_(false); // frozen: attacks need input gradients only
Func<Tensor, Tensor> classifier = model.call;
Console.WriteLine($"model: SmallCnn from {settings.Checkpoint} ({report.Loaded.Count} tensors)");
Console.WriteLine($"AutoAttack standard, {threat}, {test.Count} test points, seed {seed}: {settings.Attacks}");

// ---- evaluate ------------------------------------------------------------------------------------
var monitor = new AttackMonitor();
var attacks = AutoAttack.Standard(threat, settings.Attacks, monitor);
var clock = System.Diagnostics.Stopwatch.StartNew();
var result = RobustEvaluation.Run(classifier, test, threat, attacks, settings.BatchSize, seed,
    stateFile: run.Output("state.json"), log: Console.WriteLine, monitor: monitor, device: run.Device);
var attackSeconds = clock.Elapsed.TotalSeconds;
Console.WriteLine($"clean accuracy:                {result.Clean}");
Console.WriteLine($"AutoAttack robust accuracy:    {result.Robust}");
Console.WriteLine($"max perturbation norm {result.MaxPerturbationNorm:G4} (eps {threat.Eps}), non-finite values {result.NonFiniteAdversarialValues}, " +
                  $"adversarial range [{result.AdversarialMin:G3}, {result.AdversarialMax:G3}]");

// ---- diagnostics ---------------------------------------------------------------------------------
clock.Restart();
var diagnostics = Diagnostics.Run(classifier, test, result,
    (t, iterations) => AutoAttack.ApgdCe(t, settings.Attacks with { ApgdIterations = iterations }, monitor),
    squareName: AutoAttack.SquareName, largeEps: settings.LargeEps, checkPoints: settings.DiagnosticPoints, seed: seed,
    batchSize: settings.BatchSize, device: run.Device, iterations: settings.Attacks.ApgdIterations);
Console.WriteLine($"diagnostics ({clock.Elapsed.TotalSeconds:F0} s): " + (diagnostics.AllClear ? "all clear" : $"{diagnostics.Warnings.Count} warning(s)"));
foreach (var w in diagnostics.Warnings) Console.WriteLine($"  WARNING: {w}");
Console.WriteLine($"  accuracy at eps {diagnostics.LargeEps}: {diagnostics.LargeEpsAccuracy} (chance {100 * diagnostics.Chance:F0}%)");
Console.WriteLine($"  eps curve (APGD-CE): {string.Join(", ", diagnostics.EpsCurve.Select(p => $"{p.Budget:G3}: {100 * p.Robust.Value:F1}%"))}");
Console.WriteLine($"  iterations curve (APGD-CE): {string.Join(", ", diagnostics.IterationCurve.Select(p => $"{p.Budget}: {100 * p.Robust.Value:F1}%"))}");
var peakMiB = ProcessStats.PeakRssMiB();
Console.WriteLine($"time: attacks {attackSeconds:F0} s; peak memory {peakMiB:F0} MiB");

// ---- record --------------------------------------------------------------------------------------
var record = run.Finish(settings, seed, new
{
    clean = result.Clean,
    robust = result.Robust,
    stages = result.Stages,
    result.MaxPerturbationNorm,
    result.NonFiniteAdversarialValues,
    adversarialRange = new[] { result.AdversarialMin, result.AdversarialMax },
    resumed = result.Resumed,
    attackSeconds,
    peakMemoryMiB = peakMiB,
    diagnostics,
    points = result.Points,
});
foreach (var (name, figure) in EvalAutoAttackReport.Figures(record)) run.SaveFigure(figure, name);

/// <summary>Settings: edit and re-run (a changed setting needs a fresh output folder: the state file is checked).</summary>
record Settings
{
    public string Checkpoint { get; init; } = "results/train-classifier/smallcnn-fmnist-pgdat.safetensors";
    public SmallCnn.Settings Model { get; init; } = new(Channels1: 32, Channels2: 64, Hidden: 256);
    public double Eps { get; init; } = 0.1;
    public int Points { get; init; } = 1000;
    public AutoAttackSettings Attacks { get; init; } = new();
    public int BatchSize { get; init; } = 500;
    public double LargeEps { get; init; } = 0.5;
    public int DiagnosticPoints { get; init; } = 200;
    public long Seed { get; init; } = 0;
}
