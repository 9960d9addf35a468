#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Adversarially trains SmallCnn on Fashion-MNIST (PGD-AT, Linf eps 0.1 by default), keeps the checkpoint with the
// best held-out PGD accuracy, then measures its clean and PGD-20 accuracy on the full test set and exports it as
// safetensors. Resumable: kill it and run it again, it continues from the last complete epoch (a changed setting
// needs a fresh --out folder). Writes to results/train-classifier/.
//   dotnet run scripts/train-classifier.cs            -> results/train-classifier/
//   dotnet run scripts/train-classifier.cs --smoke    -> a temporary folder, seconds

// ---- settings -------------------------------------------------------------------------------
var settings = new Settings(
    Model: Committed.ClassifierSettings, // the committed classifier's architecture
    Training: AdversarialTrainingSettings.FashionMnistPgdAt, // the committed classifier's recipe (see its doc comment)
    ValidationCount: 5000,
    TrainPoints: int.MaxValue,
    TestPoints: int.MaxValue,
    TestPgdSteps: 20);
var run = ScriptRun.Start(settings, args);
if (run.Smoke) settings = settings with
    {
        TrainPoints = 512, ValidationCount = 256, TestPoints = 200,
        Training = settings.Training with { Epochs = 2, AttackSteps = 2, EvalPgdSteps = 3, EvalPoints = 128 },
        TestPgdSteps = 3,
    };
if (run.SeedOverride is long seedOverride) settings = settings with { Training = settings.Training with { Seed = seedOverride } };
var seed = settings.Training.Seed;
manual_seed(seed);

// ---- data -------------------------------------------------------------------------------------
var (train, validation, test) = FashionMnist.Splits(settings.ValidationCount, seed, settings.TrainPoints, settings.TestPoints, run.Log);

// ---- model and training -------------------------------------------------------------------------
var model = new SmallCnn(settings.Model);
model.to(run.Device);
Console.WriteLine($"model: SmallCnn {settings.Model}, {model.parameters().Sum(p => p.numel())} parameters");
Console.WriteLine($"training: {settings.Training.Method} {settings.Training.Threat}, {settings.Training.AttackSteps} steps, " +
                  $"{settings.Training.Epochs} epochs, batch {settings.Training.BatchSize}, {settings.Training.Optimizer}");
var checkpointFolder = run.Output("checkpoint");
var result = AdversarialTraining.Train(model, train, validation, settings.Training, checkpointFolder,
    log: run.Log, progress: run.Progress.Steps("epoch (batches)"), device: run.Device);

// ---- evaluate the best checkpoint on the test set ---------------------------------------------
var checkpoint = new TrainingCheckpoint<EpochMetrics>(checkpointFolder);
model.load(checkpoint.BestPath);
model.eval();
var testPgd = new PgdSettings(settings.Training.Threat, settings.TestPgdSteps);
var clean = Evaluate.ToAccuracy(Evaluate.PerPointCorrect(model.call, test, 500, device: run.Device));
var robust = Evaluate.ToAccuracy(Evaluate.PerPointCorrect(model.call, test, 500,
    (m, x, y) => Pgd.Attack(m, x, y, testPgd), run.Device));
Console.WriteLine($"best epoch {result.BestEpoch}; test clean accuracy {clean}");
Console.WriteLine($"test PGD-{testPgd.Steps} ({testPgd.Threat}, step {testPgd.Alpha:G4}, random start) accuracy {robust}");

// The reference checkpoint, in the PyTorch-compatible safetensors format; re-imported strictly as a check.
var weightsPath = run.Output("smallcnn-fmnist-pgdat.safetensors");
StateDicts.Export(model, weightsPath);
using (var reloaded = new SmallCnn(settings.Model))
using (var scope = NewDisposeScope())
using (no_grad())
{
    StateDicts.Import(reloaded, weightsPath);
    reloaded.to(run.Device).eval();
    var batch = test.Images.narrow(0, 0, Math.Min(64, test.Count)).to(run.Device);
    if (!reloaded.call(batch).equal(model.call(batch)).all().item<bool>())
        throw new InvalidOperationException($"{weightsPath}: re-imported weights do not reproduce the model's logits");
}
Console.WriteLine($"weights: {weightsPath} (re-imported strictly: same logits)");

// ---- record -------------------------------------------------------------------------------------
var record = run.Finish(settings, seed, new
{
    testClean = clean,
    testPgd = robust,
    testPgdSettings = testPgd,
    bestEpoch = result.BestEpoch,
    resumed = result.Resumed,
    stoppedEarly = result.StoppedEarly,
    epochs = result.History,
    weights = Path.GetFileName(weightsPath),
    trainPoints = train.Count,
    validationPoints = validation.Count,
    testPoints = test.Count,
});
foreach (var (name, figure) in TrainingReports.Classifier(record)) run.SaveFigure(figure, name);
foreach (var data in new[] { train, validation, test }) data.Dispose();

/// <summary>Settings (their values are at the top of the script): edit and re-run (a changed setting needs a fresh output folder or --out).</summary>
record Settings(SmallCnn.Settings Model, AdversarialTrainingSettings Training, int ValidationCount, int TrainPoints,
    int TestPoints, int TestPgdSteps);
