#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Ablation: CARSO's ensemble size N (reconstructions sampled, classified and aggregated per input) with the committed
// classifier and purifier: clean accuracy, per-point worst case over the CARSO protocol's families (with the budget
// below; its departures from the published protocol are printed and recorded) and inference speed (images/s).
//   dotnet run scripts/ablation-samples.cs [--smoke]   -> results/ablation-samples/ (or a temporary folder)

// ---- settings (edit and re-run) --------------------------------------------------------------------
var settings = new Settings(Samples: [1, 2, 4, 8, 16], Aggregation: AggregationKind.ExpShare, TimingPoints: 200, TimingRepeats: 3,
    Budget: new AblationBudget(CleanPoints: 1000, RobustPoints: 200, Protocol: new CarsoProtocolSettings(RandAttacks: ["apgd-ce"],
        ApgdIterations: 10, EotIter: 2, PgdSteps: 0, Surrogate: null, RepresentationPath: false, SquareQueries: 0)));
var run = ScriptRun.Start(settings, args, shardable: true);
if (run.Smoke) settings = settings with { Samples = [1, 2, 4], TimingPoints = 16, TimingRepeats = 1, Budget = settings.Budget.Smoke() };

// ---- the variants ---------------------------------------------------------------------------------------
var variants = settings.Samples.Select(n => new Variant($"N={n}", $"{n} samples, {settings.Aggregation}", context =>
{
    var carso = Committed.Carso(context.Device, new CarsoSettings(n, settings.Aggregation));
    var imagesPerSecond = Throughput.ImagesPerSecond(carso.AsModel(), context.Clean.Images.narrow(0, 0, Math.Min(settings.TimingPoints, context.Clean.Count)),
        settings.TimingRepeats, context.Budget.BatchSize, context.Device);
    return Ablation.Carso(context, carso, new Dictionary<string, double> { ["images/s"] = imagesPerSecond });
}, X: n)).ToArray();

// ---- run, record, figures -------------------------------------------------------------------------------
Ablation.Run(run, settings, run.SeedOverride ?? settings.Budget.Seed, "CARSO ensemble size", "samples N", settings.Budget, variants);

/// <summary>Settings: the N to try, the aggregation, the timing budget, the evaluation budget.</summary>
record Settings(int[] Samples, AggregationKind Aggregation, int TimingPoints, int TimingRepeats, AblationBudget Budget);
