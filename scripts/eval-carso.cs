#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// The verdict on CARSO (DESIGN.md "Evaluation protocol"): the committed Fashion-MNIST classifier and purifier, the
// defence as published (N = 8 samples, the published lexsemble aggregation computed as the reference does), attacked
// the paper's way (AutoAttack rand and PGD+EOT end to end through the published aggregation) and adaptively (transfer
// of the classifier's AutoAttack examples; the same attacks through the stable ExpShare surrogate of the aggregation;
// APGD through the deterministic z = 0 defence; Square on the defence itself), every attack judged by the defence as
// deployed. Reports each family alone, the worst case of the paper's attacks, of the adaptive ones and of all, next to
// the classifier alone on the same points, with the diagnostics that explain a difference (saturated outputs, NaN and
// zero gradients, stalled iterates). Resumable: a killed run continues from attacks/ in its output folder. The budget
// printed at the start (and stored in the record) says how the settings below depart from the published protocol.
// Sharded: --shard K/N evaluates shard K of N into shard-K-of-N/, --merge makes the record of the unsharded run from
// them (README, "Scale-out").
//   dotnet run scripts/eval-carso.cs            -> results/eval-carso/
//   dotnet run scripts/eval-carso.cs --smoke    -> a temporary folder, seconds
using System.Text.Json;

// ---- settings (edit and re-run; the published protocol is CarsoProtocolSettings.Published on 1000 points) ------
var settings = new Settings(Purifier: Committed.PurifierPath, Defence: new CarsoSettings(Samples: 8, Aggregation: AggregationKind.Lexsemble),
    ClassifierEvaluation: "results/eval-autoattack", Eps: 0.1, Points: 500,
    Protocol: CarsoProtocolSettings.Published, BatchSize: 50, Seed: 0);
var run = ScriptRun.Start(settings, args, shardable: true);
if (run.Smoke) settings = settings with { Points = 16, Protocol = CarsoProtocolSettings.Smoke, BatchSize = 8 };
var seed = run.SeedOverride ?? settings.Seed;
var threat = Threat.Linf(settings.Eps);
var budget = Budget.Describe(new { settings.Points, settings.Protocol }, new { Points = 1000, Protocol = CarsoProtocolSettings.Published });

// ---- data, defence, the classifier on the same points ----------------------------------------------
using var test = Committed.TestPoints(settings.Points);
var carso = Committed.Carso(run.Device, settings.Defence, settings.Purifier);
using var transfer = Committed.TransferSet();
var classifierRecord = RunRecord.Load(Committed.PathOf(Path.Combine(settings.ClassifierEvaluation, "run.json")));
var classifierPoints = classifierRecord.Metrics!["points"]!.Deserialize<List<PointRecord>>(RunRecord.Json)!.Take(settings.Points).ToArray();
var classifierClean = Accuracy.Of(classifierPoints.Count(p => p.CleanCorrect), settings.Points);
var classifierRobust = Accuracy.Of(classifierPoints.Count(p => p.CleanCorrect && p.BrokenBy is null), settings.Points);
Console.WriteLine($"defence: CARSO, purifier {settings.Purifier}, {settings.Defence}; {threat}; the first {test.Count} test points; seed {seed}");
Console.WriteLine($"budget: {budget}");
Console.WriteLine($"classifier on these points: clean {classifierClean}, AutoAttack standard {classifierRobust}");

// ---- the protocol -----------------------------------------------------------------------------------
var options = new EvaluationOptions(seed, settings.BatchSize, run.Device, run.Output("attacks"), run.Log, run.Progress);
var judge = carso.With(carso.Settings with { Differentiable = false });
var result = Sharding.Result(run, settings, seed, [settings.Purifier, Committed.ClassifierPath, Committed.TransferSetPath,
        Path.Combine(settings.ClassifierEvaluation, "run.json")], options,
    o => ProtocolEvaluation.Run(judge.AsModel(), test, CarsoProtocol.Build(carso, threat, settings.Protocol, transfer), o));
if (result is null) return; // a shard: its record is written; --merge does the rest
var diagnostics = CarsoProtocol.Diagnose(carso, test, result, settings.Protocol, options);
result.WorstCaseImages?.Dispose();

// ---- table, record, figures --------------------------------------------------------------------------
const string command = "dotnet run scripts/eval-carso.cs";
ResultRow Row(string model, string evaluation, Accuracy accuracy) => new(model, evaluation, accuracy, command);
var paper = result.Families.Where(f => CarsoProtocol.PaperStyle.Contains(f.Name)).ToArray();
var adaptive = result.Families.Except(paper).ToArray();
List<ResultRow> rows =
[
    new("classifier", "clean", classifierClean, "dotnet run scripts/eval-autoattack.cs"),
    new("classifier", "AutoAttack standard", classifierRobust, "dotnet run scripts/eval-autoattack.cs"),
    Row("CARSO", "clean", result.Clean),
    .. paper.Select(f => Row(EvalCarsoReport.PaperStyle, f.Name, f.Robust)),
    .. paper.Length > 0 ? [Row(EvalCarsoReport.PaperStyle, EvalCarsoReport.WorstCase, result.WorstCaseOver(paper.Select(f => f.Name)))] : Array.Empty<ResultRow>(),
    .. adaptive.Select(f => Row(EvalCarsoReport.Adaptive, f.Name, f.Robust)),
    .. adaptive.Length > 0 ? [Row(EvalCarsoReport.Adaptive, EvalCarsoReport.WorstCase, result.WorstCaseOver(adaptive.Select(f => f.Name)))] : Array.Empty<ResultRow>(),
    Row(EvalCarsoReport.Overall, EvalCarsoReport.WorstCase, result.WorstCase),
];
Console.Write("\n" + ResultTable.Text(rows));
Console.WriteLine($"diagnostics: {(diagnostics.AllClear ? "all clear" : string.Join("", diagnostics.Warnings.Select(w => $"\n  WARNING: {w}")))}");
var record = run.Finish(settings, seed, new
{
    rows, budget, reduced = budget.StartsWith("REDUCED", StringComparison.Ordinal), clean = result.Clean, worstCase = result.WorstCase,
    groups = result.Families, diagnostics, peakMemoryMiB = ProcessStats.PeakRssMiB(), points = result.Points,
});
File.WriteAllText(run.Output("table.md"), ResultTable.Markdown(rows) + "\n" + EvalCarsoReport.FamilyDiagnostics(record));
Console.Write("\n" + EvalCarsoReport.FamilyDiagnostics(record));
foreach (var (name, figure) in EvalCarsoReport.Figures(record)) run.SaveFigure(figure, name);

/// <summary>Settings (a changed setting needs a fresh output folder or --out: the attack state is checked).</summary>
/// <param name="Purifier">The purifier checkpoint (its spec names the classifier and layers), relative to the repository root.</param>
/// <param name="ClassifierEvaluation">The classifier's AutoAttack run (scripts/eval-autoattack.cs) giving its per-point records.</param>
/// <param name="Defence">CARSO as published: 8 samples, the reference's lexsemble aggregation (Lexsemble).</param>
/// <param name="Points">The first Points test points (published: 1000).</param>
/// <param name="BatchSize">Points per block: the unit of resumption and of sharding, and the key of the randomness (50: 500 points
/// split into 2 equal shards, and a killed run loses at most one block of one attack).</param>
record Settings(string Purifier, CarsoSettings Defence, string ClassifierEvaluation, double Eps, int Points,
    CarsoProtocolSettings Protocol, int BatchSize, long Seed);
