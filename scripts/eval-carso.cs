#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// The evaluation protocol of the CARSO defence (DESIGN.md "Evaluation protocol") on the committed Fashion-MNIST
// classifier and purifier: transfer of the classifier's AutoAttack examples (the committed transfer set); AutoAttack
// rand and PGD+EOT end to end through the differentiable defence; the same through a non-saturating surrogate
// aggregation, judged by the defence's own; APGD through the deterministic (z = 0) defence; Square. Robust accuracy is
// the per-point worst case over all; every family is also reported alone, next to the classifier on the same points.
// Resumable: a killed run continues from attacks/ in its output folder. The budget printed at the start (and stored in
// the record) says how the settings below depart from the published protocol. Sharded: --shard K/N evaluates shard K
// of N into shard-K-of-N/, --merge makes the record of the unsharded run from them (README, "Scale-out").
//   dotnet run scripts/eval-carso.cs            -> results/eval-carso/
//   dotnet run scripts/eval-carso.cs --smoke    -> a temporary folder, seconds
using System.Text.Json;

// ---- settings (edit and re-run; the published protocol is CarsoProtocolSettings.Published on 1000 points) ------
var settings = new Settings(Purifier: Committed.PurifierPath, Defence: new CarsoSettings(Samples: 8, Aggregation: AggregationKind.ExpShare),
    ClassifierEvaluation: "results/eval-autoattack", Eps: 0.1, Points: 200,
    Protocol: new CarsoProtocolSettings(EotIter: 4, SquareQueries: 1000, SurrogatePgdEot: false), BatchSize: 100, Seed: 0);
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
List<ResultRow> rows =
[
    new("classifier", "clean", classifierClean, "dotnet run scripts/eval-autoattack.cs"),
    new("classifier", "AutoAttack standard", classifierRobust, "dotnet run scripts/eval-autoattack.cs"),
    new("CARSO", "clean", result.Clean, command),
    .. result.Families.Select(f => new ResultRow("CARSO", f.Name, f.Robust, command)),
    new("CARSO", "worst case over all", result.WorstCase, command),
];
Console.Write("\n" + ResultTable.Text(rows));
File.WriteAllText(run.Output("table.md"), ResultTable.Markdown(rows));
Console.WriteLine($"diagnostics: {(diagnostics.AllClear ? "all clear" : string.Join("", diagnostics.Warnings.Select(w => $"\n  WARNING: {w}")))}");
Console.WriteLine($"  {JsonSerializer.Serialize(diagnostics with { Warnings = [] }, RunRecord.Json)}");
var record = run.Finish(settings, seed, new
{
    rows, budget, reduced = budget.StartsWith("REDUCED", StringComparison.Ordinal), clean = result.Clean, worstCase = result.WorstCase,
    groups = result.Families, diagnostics, peakMemoryMiB = ProcessStats.PeakRssMiB(), points = result.Points,
});
foreach (var (name, figure) in EvalCarsoReport.Figures(record)) run.SaveFigure(figure, name);

/// <summary>Settings (a changed setting needs a fresh output folder or --out: the attack state is checked).</summary>
/// <param name="Purifier">The purifier checkpoint (its spec names the classifier and layers), relative to the repository root.</param>
/// <param name="ClassifierEvaluation">The classifier's AutoAttack run (scripts/eval-autoattack.cs) giving its per-point records.</param>
/// <param name="Points">The first Points test points (published: 1000).</param>
record Settings(string Purifier, CarsoSettings Defence, string ClassifierEvaluation, double Eps, int Points,
    CarsoProtocolSettings Protocol, int BatchSize, long Seed);
