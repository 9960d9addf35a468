#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// AutoAttack "standard" (APGD-CE, APGD-T, FAB-T, Square 5000) on a classifier checkpoint, with the gradient-masking
// diagnostics, and the classifier's adversarial examples published as a transfer set (transfer.safetensors + spec) for
// the CARSO evaluations. Default: the committed Fashion-MNIST PGD-AT SmallCnn, Linf eps 0.1, the first 1000 test
// points. Resumable: a killed run continues from attacks/ in its output folder. Sharded: --shard K/N evaluates shard K
// of N into shard-K-of-N/, --merge makes the record (and transfer set) of the unsharded run from them (README, "Scale-out").
//   dotnet run scripts/eval-autoattack.cs            -> results/eval-autoattack/
//   dotnet run scripts/eval-autoattack.cs --smoke    -> a temporary folder, seconds

// ---- settings (published AutoAttack budgets; edit and re-run) ------------------------------------
var settings = new Settings(Checkpoint: Committed.ClassifierPath, Eps: 0.1, Points: 1000, Attacks: new AutoAttackSettings(),
    BatchSize: 500, LargeEps: 0.5, DiagnosticPoints: 200, Seed: 0);
var run = ScriptRun.Start(settings, args, shardable: true);
if (run.Smoke) settings = settings with { Points = 24, Attacks = AutoAttackSettings.Smoke, DiagnosticPoints = 24, BatchSize = 12 };
var seed = run.SeedOverride ?? settings.Seed;
var threat = Threat.Linf(settings.Eps);

// ---- data and model ---------------------------------------------------------------------------
using var test = Committed.TestPoints(settings.Points);
var classifier = Committed.Classifier(run.Device, settings.Checkpoint);
Console.WriteLine($"model: SmallCnn from {settings.Checkpoint}; AutoAttack standard, {threat}, {test.Count} test points, seed {seed}: {settings.Attacks}");
Console.WriteLine(Budget.Describe(settings.Attacks, new AutoAttackSettings()));

// ---- evaluate ------------------------------------------------------------------------------------
var protocol = Protocol.Of("autoattack-standard", threat, m => AutoAttack.Standard(threat, settings.Attacks, m));
var result = Sharding.Result(run, settings, seed, [settings.Checkpoint],
    new EvaluationOptions(seed, settings.BatchSize, run.Device, run.Output("attacks"), run.Log, run.Progress),
    options => ProtocolEvaluation.Run(classifier.call, test, protocol, options), keepImages: true);
if (result is null) return; // a shard: its record is written; --merge does the rest
var family = result.Families[0];
Console.WriteLine($"clean accuracy {result.Clean}; AutoAttack robust accuracy {result.WorstCase}; largest perturbation {family.MaxPerturbationNorm:G4}");
TransferSet.Save(run.Output("transfer.safetensors"), result.WorstCaseImages!, test.Labels,
    new TransferSetSpec(threat.Norm.ToString(), threat.Eps, test.Name, (int)test.Count, nameof(Carso.Models.SmallCnn),
        PurifierCheckpoint.Fingerprint(classifier), $"AutoAttack standard on {settings.Checkpoint} (scripts/eval-autoattack.cs, seed {seed})"));
result.WorstCaseImages!.Dispose();
Console.WriteLine($"transfer set: {run.Output("transfer.safetensors")}");

// ---- diagnostics ---------------------------------------------------------------------------------
var diagnostics = Diagnostics.Run(classifier.call, test, result,
    (t, iterations) => AutoAttack.ApgdCe(t, settings.Attacks with { ApgdIterations = iterations }),
    squareName: AutoAttack.SquareName, largeEps: settings.LargeEps, checkPoints: settings.DiagnosticPoints, seed: seed,
    batchSize: settings.BatchSize, device: run.Device, iterations: settings.Attacks.ApgdIterations);
Console.WriteLine("diagnostics: " + (diagnostics.AllClear ? "all clear" : string.Join("", diagnostics.Warnings.Select(w => $"\n  WARNING: {w}"))));
Console.WriteLine($"  accuracy at eps {diagnostics.LargeEps}: {diagnostics.LargeEpsAccuracy}; eps curve " +
                  string.Join(", ", diagnostics.EpsCurve.Select(p => $"{p.Budget:G3}: {100 * p.Robust.Value:F1}%")) +
                  "; iterations curve " + string.Join(", ", diagnostics.IterationCurve.Select(p => $"{p.Budget}: {100 * p.Robust.Value:F1}%")));

// ---- record --------------------------------------------------------------------------------------
var record = run.Finish(settings, seed, new
{
    clean = result.Clean, robust = result.WorstCase, stages = family.Stages, family.MaxPerturbationNorm,
    nonFiniteOutputs = new[] { result.NonFiniteCleanOutputs, family.NonFiniteOutputs }, resumed = result.Resumed,
    attackSeconds = family.Seconds, peakMemoryMiB = ProcessStats.PeakRssMiB(), transferSet = "transfer.safetensors",
    diagnostics, points = result.Points,
});
foreach (var (name, figure) in EvalAutoAttackReport.Figures(record)) run.SaveFigure(figure, name);

/// <summary>Settings (a changed setting needs a fresh output folder: the attack state is checked).</summary>
/// <param name="Checkpoint">The classifier (SmallCnn, the committed architecture), relative to the repository root.</param>
/// <param name="Points">The first Points test points are evaluated (and published as the transfer set).</param>
/// <param name="DiagnosticPoints">Points of the eps, iteration and large-eps curves.</param>
record Settings(string Checkpoint, double Eps, int Points, AutoAttackSettings Attacks, int BatchSize, double LargeEps, int DiagnosticPoints, long Seed);
