#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Ablation: how CARSO aggregates its N = 8 sampled outputs (logit: mean logits; prob: mean probabilities; count:
// argmax votes; expshare: the published argmax in log space, finite everywhere; lexsemble: the published function as the
// reference computes it, which saturates), with the committed classifier and purifier: clean accuracy and the per-point worst
// case over the CARSO protocol's families with the budget below (its departures from the published protocol are
// printed and recorded). The logit surrogate family attacks every aggregation through mean logits (count's votes have
// no gradient, so its end-to-end family cannot move: the record's zero-gradient counts show it).
//   dotnet run scripts/ablation-aggregation.cs [--smoke]   -> results/ablation-aggregation/ (or a temporary folder)

// ---- settings (edit and re-run) --------------------------------------------------------------------
var settings = new Settings(Aggregations: [AggregationKind.Logit, AggregationKind.Prob, AggregationKind.Count, AggregationKind.ExpShare, AggregationKind.Lexsemble],
    Samples: 8, Budget: new AblationBudget(CleanPoints: 1000, RobustPoints: 200, Protocol: new CarsoProtocolSettings(
        RandAttacks: ["apgd-ce"], ApgdIterations: 10, EotIter: 2, PgdSteps: 0, Surrogate: AggregationKind.Logit,
        RepresentationPath: false, SquareQueries: 0)));
var run = ScriptRun.Start(settings, args, shardable: true);
if (run.Smoke) settings = settings with { Budget = settings.Budget.Smoke() };

// ---- the variants ---------------------------------------------------------------------------------------
var variants = settings.Aggregations.Select(kind => new Variant(kind.ToString().ToLowerInvariant(),
    $"N = {settings.Samples}, {kind} aggregation", context => Ablation.Carso(context, Committed.Carso(context.Device, new CarsoSettings(settings.Samples, kind))))).ToArray();

// ---- run, record, figures -------------------------------------------------------------------------------
Ablation.Run(run, settings, run.SeedOverride ?? settings.Budget.Seed, "CARSO aggregation", "aggregation", settings.Budget, variants);

/// <summary>Settings: the aggregations to compare, N, the evaluation budget.</summary>
record Settings(AggregationKind[] Aggregations, int Samples, AblationBudget Budget);
