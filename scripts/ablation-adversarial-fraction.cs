#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Ablation: the fraction of each purifier-training batch that is adversarial (0: clean only; 1: all adversarial), for
// the committed classifier. One purifier per fraction, from the same initialisation on the same images in the same
// order (REDUCED training, see Training: compare fractions with each other only; the purifiers go to purifiers/ in the
// output folder, not committed), then CARSO (N = 8, peel) with each: clean accuracy and the per-point worst case over
// the CARSO protocol's families with the budget below (its departures from the published protocol are recorded).
//   dotnet run scripts/ablation-adversarial-fraction.cs [--smoke]   -> results/ablation-adversarial-fraction/

// ---- settings (edit and re-run) --------------------------------------------------------------------
var settings = new Settings(Fractions: [0, 0.25, 0.5, 1.0], TrainPoints: 16384, ValidationCount: 5000,
    Purifier: new PurifierSettings(ConditioningSize: 256, LatentSize: 64), Defence: new CarsoSettings(Samples: 8, Aggregation: AggregationKind.ExpShare),
    Training: new PurifierTrainingSettings { Epochs = 1, PgdSteps = 10, PgdStepSize = 0.025, EvalPoints = 100, EvalPgdSteps = 10 },
    Budget: new AblationBudget(CleanPoints: 500, RobustPoints: 100, Protocol: new CarsoProtocolSettings(RandAttacks: ["apgd-ce"],
        ApgdIterations: 10, EotIter: 2, PgdSteps: 0, Surrogate: null, RepresentationPath: false, SquareQueries: 0)));
var run = ScriptRun.Start(settings, args, shardable: true);
if (run.Smoke)
    settings = settings with { Fractions = [0, 1.0], TrainPoints = 64, ValidationCount = 32, Budget = settings.Budget.Smoke(),
        Training = settings.Training with { BatchSize = 32, PgdSteps = 2, EvalPoints = 16, EvalPgdSteps = 2 } };
var seed = run.SeedOverride ?? settings.Budget.Seed;
var (train, validation, _) = FashionMnist.Splits(settings.ValidationCount, seed, settings.TrainPoints, testPoints: 0);

// ---- the variants: train a purifier, then CARSO with it ------------------------------------------------
var variants = settings.Fractions.Select(fraction => new Variant($"fraction {fraction}", $"purifier trained with {100 * fraction:F0}% adversarial inputs", context =>
{
    var classifier = Committed.Classifier(context.Device);
    var layers = PurifierCheckpoint.ReadSpec(Committed.PathOf(Committed.PurifierPath)).LayerNames;
    manual_seed(seed); // the same initialisation for every fraction
    var purifier = PurifierVariants.Build(classifier, layers, settings.Purifier, context.Device);
    return PurifierVariants.TrainedCarso(context, classifier, purifier, layers, settings.Training with { AdversarialFraction = fraction, Seed = seed },
        settings.Defence, train, validation, run.Output($"purifiers/purifier-fraction-{fraction}.safetensors"));
}, X: fraction)).ToArray();

// ---- run, record, figures -------------------------------------------------------------------------------
Ablation.Run(run, settings, seed, "CARSO by the purifier's adversarial training fraction", "adversarial fraction", settings.Budget, variants,
    notes: [$"Each purifier: {settings.Training.Epochs} epoch(s) on {train.Count} images, PGD-{settings.Training.PgdSteps} examples (reference " +
            "scripts/train-carso.cs trains far longer): much weaker than the committed purifier; compare fractions with each other only."], ownPurifiers: true);

/// <summary>Settings: fractions, the training data and budget, the purifier's size, CARSO's settings, the evaluation budget.</summary>
record Settings(double[] Fractions, int TrainPoints, int ValidationCount, PurifierSettings Purifier, CarsoSettings Defence,
    PurifierTrainingSettings Training, AblationBudget Budget);
