#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// The whole CARSO story on Fashion-MNIST in about fifteen minutes on 2 CPU cores, from nothing but the dataset:
// adversarially trains a classifier, trains its CARSO purifier, attacks both (AutoAttack standard on the classifier;
// AutoAttack rand, PGD+EOT and the adaptive attacks on CARSO), prints the table and writes the figures and a run
// record to results/quickstart/. Every budget is REDUCED to fit (printed at the start); the full protocol is in
// train-classifier.cs, train-carso.cs, eval-autoattack.cs and eval-carso.cs.
//   dotnet run scripts/quickstart.cs            -> results/quickstart/
//   dotnet run scripts/quickstart.cs --smoke    -> a temporary folder, seconds

// ---- settings -------------------------------------------------------------------------------
var settings = new Settings(
    Model: Committed.ClassifierSettings, // the committed classifier's architecture
    // The committed classifier's recipe, REDUCED: 3 epochs (12), decay at 67% only, held-out PGD-10 on 500 points.
    Classifier: AdversarialTrainingSettings.FashionMnistPgdAt with
        { Epochs = 3, Schedule = new ScheduleSettings(ScheduleKind.Piecewise, Milestones: [0.67], Factor: 0.1), EvalPgdSteps = 10, EvalPoints = 500 },
    Layers: ["conv1", "conv2", "fc1"],
    PurifierSize: new(ConditioningSize: 256, LatentSize: 64),
    Purifier: new() { Epochs = 4, PgdSteps = 10, PgdStepSize = 0.025, EvalPoints = 200, EvalPgdSteps = 10 },
    Defence: new(Samples: 8, Aggregation: AggregationKind.ExpShare),
    TrainPoints: 20000,
    ValidationCount: 1000,
    TestPoints: 200,
    ClassifierAttacks: new(ApgdIterations: 50, FabIterations: 50, NTargetClasses: 3, SquareQueries: 500),
    CarsoProtocol: new(ApgdIterations: 20, EotIter: 2, PgdSteps: 40, PgdStepSize: 0.01,
        SquareQueries: 0, LargeEpsIterations: 10),
    BatchSize: 100,
    Seed: 0);
var run = ScriptRun.Start(settings, args);
if (run.Smoke) settings = settings with
    {
        TrainPoints = 512, ValidationCount = 128, TestPoints = 24,
        Classifier = settings.Classifier with { Epochs = 1, AttackSteps = 2, EvalPoints = 64, EvalPgdSteps = 2 },
        Purifier = settings.Purifier with { Epochs = 1, PgdSteps = 2, EvalPoints = 32, EvalPgdSteps = 2, BatchSize = 64 },
        ClassifierAttacks = AutoAttackSettings.Smoke,
        CarsoProtocol = CarsoProtocolSettings.Smoke with { SquareQueries = 0 },
        BatchSize = 12,
    };
var seed = run.SeedOverride ?? settings.Seed;
settings = settings with { Classifier = settings.Classifier with { Seed = seed }, Purifier = settings.Purifier with { Seed = seed } };
manual_seed(seed);
var threat = settings.Classifier.Threat;
Console.WriteLine("REDUCED budgets (a quick look, not the paper protocol):");
Console.WriteLine($"  classifier: SmallCnn, {settings.Classifier.Method} {threat}, {settings.Classifier.AttackSteps} attack steps, " +
                  $"{settings.Classifier.Epochs} epochs on {Math.Min(settings.TrainPoints, 60000 - settings.ValidationCount)} images " +
                  $"(full: scripts/train-classifier.cs{FullClassifierScale()})");
Console.WriteLine($"  purifier: {settings.Purifier.Epochs} epochs on the same images, PGD-{settings.Purifier.PgdSteps} training examples " +
                  "(full: scripts/train-carso.cs)");
Console.WriteLine($"  test points: the first {settings.TestPoints} (full: 1000 and more)");
Console.WriteLine($"  classifier attack: AutoAttack standard with {settings.ClassifierAttacks} (full: scripts/eval-autoattack.cs)");
Console.WriteLine($"  CARSO attacks: {string.Join(", ", Budget.Departures(settings.CarsoProtocol, CarsoProtocolSettings.Published))} (full: scripts/eval-carso.cs)");

// ---- data -------------------------------------------------------------------------------------
var (train, validation, test) = FashionMnist.Splits(settings.ValidationCount, seed, settings.TrainPoints, settings.TestPoints, run.Log);
var times = new Dictionary<string, double>();
var clock = System.Diagnostics.Stopwatch.StartNew();
double Lap() { var s = clock.Elapsed.TotalSeconds; clock.Restart(); return s; }

// ---- 1. adversarially train the classifier -------------------------------------------------------
var classifier = new SmallCnn(settings.Model);
classifier.to(run.Device);
var classifierFolder = run.Output("classifier");
var classifierResult = AdversarialTraining.Train(classifier, train, validation, settings.Classifier, classifierFolder,
    log: run.Log, progress: run.Progress.Steps("classifier epoch (batches)"), device: run.Device);
classifier.load(new TrainingCheckpoint<EpochMetrics>(classifierFolder).BestPath);
classifier.eval();
foreach (var p in classifier.parameters()) p.requires_grad_(false);
StateDicts.Export(classifier, run.Output("smallcnn-fmnist-pgdat.safetensors"));
times["train classifier"] = Lap();

// ---- 2. train its CARSO purifier ------------------------------------------------------------------
var layerShapes = settings.Layers.Select(name =>
    Representation.Describe(classifier, [1, 28, 28]).Single(l => l.Name == name).OutputShape[1..]).ToArray();
var purifier = Purifier.Build(settings.PurifierSize, layerShapes, [1, 28, 28]);
purifier.to(run.Device);
var purifierResult = PurifierTraining.Train(classifier, settings.Layers, purifier, train, validation, settings.Purifier,
    run.Output("purifier"), run.Log, run.Progress.Steps("purifier epoch (batches)"), run.Device);
purifier.eval();
PurifierCheckpoint.Save(run.Output("purifier-smallcnn-fmnist.safetensors"), purifier,
    PurifierSpec.For(classifier, settings.Layers, [1, 28, 28], settings.PurifierSize));
times["train purifier"] = Lap();

// ---- 3. the classifier under AutoAttack standard --------------------------------------------------
var options = new EvaluationOptions(seed, settings.BatchSize, run.Device, Log: line => run.Log("  " + line), Progress: run.Progress);
var classifierEval = ProtocolEvaluation.Run(classifier.call, test,
    Protocol.Of("autoattack-standard", threat, m => AutoAttack.Standard(threat, settings.ClassifierAttacks, m)),
    options with { StateDir = run.Output("classifier-attacks") });
using var transfer = new TransferSet("(the classifier's AutoAttack examples)", new TransferSetSpec(threat.Norm.ToString(), threat.Eps,
    test.Name, (int)test.Count, "SmallCnn", PurifierCheckpoint.Fingerprint(classifier), "AutoAttack standard (quickstart)"),
    classifierEval.WorstCaseImages!, test.Labels.clone());
times["attack classifier"] = Lap();

// ---- 4. CARSO under AutoAttack rand, PGD+EOT and the adaptive attacks -----------------------------
var carso = new CarsoModel(classifier, purifier, settings.Layers, settings.Defence);
var carsoEval = ProtocolEvaluation.Run(carso.AsModel(), test, CarsoProtocol.Build(carso, threat, settings.CarsoProtocol, transfer),
    options with { StateDir = run.Output("carso-attacks") });
var carsoDiagnostics = CarsoProtocol.Diagnose(carso, test, carsoEval, settings.CarsoProtocol, options);
carsoEval.WorstCaseImages?.Dispose();
times["attack CARSO"] = Lap();

// ---- table and figures ----------------------------------------------------------------------------
var rows = new List<ResultRow>
{
    new("classifier", "clean", classifierEval.Clean),
    new("classifier", "AutoAttack standard", classifierEval.WorstCase),
    new("CARSO", "clean", carsoEval.Clean),
};
rows.AddRange(carsoEval.Families.Select(g => new ResultRow("CARSO", g.Name, g.Robust)));
rows.Add(new ResultRow("CARSO", "worst case over all", carsoEval.WorstCase));
Console.WriteLine();
Console.WriteLine($"Fashion-MNIST, {threat}, REDUCED budgets (see above), seed {seed}:");
Console.Write(ResultTable.Text(rows));
File.WriteAllText(run.Output("table.md"), ResultTable.Markdown(rows));
Console.WriteLine($"CARSO diagnostics: {(carsoDiagnostics.AllClear ? "all clear" : string.Join("; ", carsoDiagnostics.Warnings))}; " +
                  $"accuracy at eps {carsoDiagnostics.LargeEps}: {carsoDiagnostics.LargeEpsAccuracy}");
Console.WriteLine("full protocol: dotnet run scripts/eval-carso.cs (AutoAttack rand and PGD+EOT at EOT 20, on 1000 points)");

// Clean and classifier-AutoAttack inputs, each followed by 4 purified samples (seeded).
const int gallerySamples = 4;
var shown = (int)Math.Min(4, test.Count);
var galleryCarso = carso.With(carso.Settings with { Samples = gallerySamples });
var gallery = new List<Tensor>();
var galleryLabels = new List<string>();
using var galleryGenerator = Seeds.Generator(seed, "quickstart/gallery", run.Device);
foreach (var (images, kind) in new[] { (test.Images, "clean"), (transfer.Images, "AA") })
{
    var x = images.narrow(0, 0, shown).to(run.Device);
    var decoded = galleryCarso.Reconstructions(x, galleryGenerator);
    for (var i = 0; i < shown; i++)
    {
        gallery.Add(cat([x[i].unsqueeze(0), decoded[i]]).cpu());
        galleryLabels.Add($"{kind}: {test.Classes[(int)test.Labels[i].item<long>()]}");
    }
}
var reconstructions = Gallery.Of(cat(gallery), 1 + gallerySamples, galleryLabels, "input, then 4 CARSO reconstructions", cellPixels: 60);
var peakMiB = ProcessStats.PeakRssMiB();
Console.WriteLine($"time: {string.Join(", ", times.Select(t => $"{t.Key} {t.Value:F0} s"))}; total {run.Clock.Elapsed.TotalSeconds:F0} s; " +
                  $"peak memory {peakMiB:F0} MiB");

// ---- record -----------------------------------------------------------------------------------------
var record = run.Finish(settings, seed, new
{
    rows,
    classifierTraining = classifierResult.History,
    purifierTraining = purifierResult.History,
    classifierStages = classifierEval.Families[0].Stages,
    carso = new { carsoEval.Clean, Groups = carsoEval.Families, carsoEval.WorstCase, Diagnostics = carsoDiagnostics },
    seconds = times,
    peakMemoryMiB = peakMiB,
    galleries = new Dictionary<string, Gallery> { ["reconstructions"] = reconstructions },
});
foreach (var (name, figure) in QuickstartReport.Figures(record).Concat(Gallery.FiguresOf(record))) run.SaveFigure(figure, name);
foreach (var data in new[] { train, validation, test }) data.Dispose();

/// <summary>Settings (their values are at the top of the script): edit and re-run (a changed setting needs a fresh output folder or --out).</summary>

// The full run's scale as its committed record states it (typed text would drift from it).
static string FullClassifierScale()
{
    var path = Committed.PathOf("results/train-classifier/run.json");
    if (!File.Exists(path)) return "";
    var record = RunRecord.Load(path);
    return $", {record.Settings?["training"]?["epochs"]} epochs on {record.Metric<long>("trainPoints"):N0}";
}

record Settings(SmallCnn.Settings Model, AdversarialTrainingSettings Classifier, string[] Layers,
    PurifierSettings PurifierSize, PurifierTrainingSettings Purifier, CarsoSettings Defence, int TrainPoints,
    int ValidationCount, int TestPoints, AutoAttackSettings ClassifierAttacks, CarsoProtocolSettings CarsoProtocol,
    int BatchSize, long Seed);
