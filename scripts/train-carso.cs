#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Trains the CARSO purifier (a conditional VAE on the classifier's internal representation) for the committed
// Fashion-MNIST PGD-AT SmallCnn, then measures on the full test set the clean-accuracy toll and the accuracy on
// PGD-40 examples crafted against the classifier alone (transfer only: the end-to-end attacks are in eval-carso.cs).
// Resumable (a changed setting needs a fresh --out folder). Writes the purifier, its spec, loss curves, a
// reconstruction gallery and a run record to results/train-carso/.
//   dotnet run scripts/train-carso.cs            -> results/train-carso/
//   dotnet run scripts/train-carso.cs --smoke    -> a temporary folder, seconds

// ---- settings -------------------------------------------------------------------------------
// The 2023 reference recipe for Fashion-MNIST (train_a_carso.py) at 2/3 of its epochs and 1/3 of its batch size (a CPU
// budget); the adversarial examples are made against the frozen classifier every 10 epochs instead of every batch.
var settings = new Settings(
    Classifier: Committed.ClassifierPath,
    Layers: ["conv1", "conv2", "fc1", Representation.LogSoftmax],
    Purifier: new(ConditioningSize: 256, LatentSize: 64, BatchNorm: true),
    Training: PurifierTrainingSettings.Published2023(epochs: 100, batchSize: 512) with { AdversarialRefreshEpochs = 10, EvalPoints = 500 },
    ValidationCount: 5000,
    TrainPoints: int.MaxValue,
    TestPoints: int.MaxValue,
    TestPgdSteps: 40);
var run = ScriptRun.Start(settings, args);
if (run.Smoke) settings = settings with
    {
        TrainPoints = 256, ValidationCount = 128, TestPoints = 64, TestPgdSteps = 3,
        Training = settings.Training with { Epochs = 2, AdversarialRefreshEpochs = 1, PgdSteps = 2, EvalPoints = 32, EvalPgdSteps = 2, BatchSize = 64 },
    };
if (run.SeedOverride is long seedOverride) settings = settings with { Training = settings.Training with { Seed = seedOverride } };
var seed = settings.Training.Seed;
manual_seed(seed);

// ---- data -------------------------------------------------------------------------------------
var (train, validation, test) = FashionMnist.Splits(settings.ValidationCount, seed, settings.TrainPoints, settings.TestPoints, run.Log);

// ---- the frozen classifier and the purifier ----------------------------------------------------
var classifier = Committed.Classifier(run.Device, settings.Classifier);
var layers = Representation.Describe(classifier, [1, 28, 28]);
var layerShapes = settings.Layers.Select(name => layers.Single(l => l.Name == name).OutputShape[1..]).ToArray();
Console.WriteLine($"representation: {string.Join(", ", settings.Layers.Select((n, i) => $"{n} [{string.Join("x", layerShapes[i])}]"))}");
var purifier = Purifier.Build(settings.Purifier, layerShapes, [1, 28, 28]);
purifier.to(run.Device);
Console.WriteLine($"purifier: {purifier.parameters().Sum(p => p.numel())} parameters; training {settings.Training.Epochs} epochs, " +
                  $"adversarial fraction {settings.Training.AdversarialFraction}, {settings.Training.Threat}");

// ---- train ---------------------------------------------------------------------------------------
var clock = System.Diagnostics.Stopwatch.StartNew();
var result = PurifierTraining.Train(classifier, settings.Layers, purifier, train, validation, settings.Training,
    run.Output("checkpoint"), run.Log, run.Progress.Steps("epoch (batches)"), run.Device);
// Training time over every epoch (a resumed run's earlier sessions included); this process's share separately.
var (trainingSeconds, processSeconds) = (result.History.Sum(e => e.Seconds), clock.Elapsed.TotalSeconds);
var purifierPath = run.Output("purifier-smallcnn-fmnist.safetensors");
PurifierCheckpoint.Save(purifierPath, purifier, PurifierSpec.For(classifier, settings.Layers, [1, 28, 28], settings.Purifier));
Console.WriteLine($"purifier: {purifierPath}");

// ---- the clean-accuracy toll and transfer robustness on the test set -----------------------------
purifier.eval();
var carso = new CarsoModel(classifier, purifier, settings.Layers, settings.Training.Defence);
using var latentGenerator = Seeds.Generator(seed, "train-carso/test", run.Device); // CARSO's latents: explicit randomness
var defended = carso.AsModel().Bind(latentGenerator);
var pgd = new PgdSettings(settings.Training.Threat, settings.TestPgdSteps, settings.Training.PgdStepSize);
using var adversarial = PurifierTraining.TransferSet(classifier.call, test, pgd, 500, run.Device);
Accuracy Measure(Func<Tensor, Tensor> model, Dataset data) => Evaluate.ToAccuracy(Evaluate.PerPointCorrect(model, data, 500, device: run.Device));
var classifierClean = Measure(classifier.call, test);
var defendedClean = Measure(defended, test);
var classifierPgd = Measure(classifier.call, adversarial);
var defendedPgd = Measure(defended, adversarial);
Console.WriteLine($"test clean accuracy: classifier {classifierClean}, CARSO {defendedClean}");
Console.WriteLine($"test accuracy on PGD-{pgd.Steps} ({pgd.Threat}, step {pgd.Alpha}) examples against the classifier alone: " +
                  $"classifier {classifierPgd}, CARSO {defendedPgd}");
Console.WriteLine("(transfer from the classifier only: the end-to-end and adaptive attacks are in scripts/eval-carso.cs)");
var peakMiB = ProcessStats.PeakRssMiB();
Console.WriteLine($"training time {trainingSeconds:F0} s over {result.History.Count} epochs ({result.History.Sum(e => e.AdversarialSeconds):F0} s of it making adversarial sets; " +
                  $"{processSeconds:F0} s in this process), peak memory {peakMiB:F0} MiB");

// ---- gallery: inputs and purified samples (stored in the record; figures are drawn from it) ----------
Gallery reconstructions;
using (var scope = NewDisposeScope())
using (no_grad())
{
    const int shown = 6, samples = 4;
    var x = test.Images.narrow(0, 0, shown).to(run.Device);
    var xAdv = adversarial.Images.narrow(0, 0, shown).to(run.Device);
    var y = test.Labels.narrow(0, 0, shown);
    var rows = new List<Tensor>();
    var labels = new List<string>();
    using var generator = Seeds.Generator(seed, "train-carso/gallery", run.Device);
    var galleryCarso = carso.With(carso.Settings with { Samples = samples });
    foreach (var (input, kind) in new[] { (x, "clean"), (xAdv, "PGD") })
    {
        // N purified samples per input, as CARSO draws them: z ~ N(0, I), decoded with the input's conditioning.
        var decoded = galleryCarso.Reconstructions(input, generator);
        for (var i = 0; i < shown; i++)
        {
            var predicted = classifier.call(cat([input[i].unsqueeze(0), decoded[i]])).argmax(1).cpu().data<long>().ToArray();
            rows.Add(cat([input[i].unsqueeze(0), decoded[i]]).cpu());
            labels.Add($"{kind} {test.Classes[(int)y[i].item<long>()]}: {string.Join(" ", predicted.Select(p => test.Classes[(int)p].Split('/')[0]))}");
        }
    }
    reconstructions = Gallery.Of(cat(rows), 1 + samples, labels, "input, then 4 purified samples (label: true class: predictions)", cellPixels: 60);
}

// ---- record --------------------------------------------------------------------------------------
var record = run.Finish(settings, seed, new
{
    classifierClean, defendedClean, classifierPgd, defendedPgd,
    cleanAccuracyToll = classifierClean.Value - defendedClean.Value,
    testPgd = pgd,
    trainingSeconds,
    adversarialSetSeconds = result.History.Sum(e => e.AdversarialSeconds),
    processSeconds,
    peakMemoryMiB = peakMiB,
    resumed = result.Resumed,
    epochs = result.History,
    purifier = Path.GetFileName(purifierPath),
    galleries = new Dictionary<string, Gallery> { ["reconstructions"] = reconstructions },
});
foreach (var (name, figure) in TrainingReports.Purifier(record).Concat(Gallery.FiguresOf(record))) run.SaveFigure(figure, name);
foreach (var data in new[] { train, validation, test }) data.Dispose();

/// <summary>Settings (their values are at the top of the script): edit and re-run (a changed setting needs a fresh output folder or --out).</summary>
/// <param name="Layers">The representation: every conv and linear layer before the logits, and the log-softmax of the logits (the reference Fashion-MNIST purifier reads its classifier's hidden layers and its LogSoftmax output).</param>
/// <param name="Purifier">Conditioning 256 and latent 64 (the reference Fashion-MNIST purifier: latent 64), batch norm in the compressors, the conditioning and the encoder as in the reference.</param>
/// <param name="Training">The 2023 reference recipe (PurifierTrainingSettings.Published2023): adversarial fraction 0.4, RAdam + Lookahead, triangular LR, beta 1; 100 epochs at batch 512 over the 55,000 training images (the reference: 150 at 1536 over 60,000).</param>
record Settings(string Classifier, string[] Layers, PurifierSettings Purifier,
    PurifierTrainingSettings Training, int ValidationCount, int TrainPoints, int TestPoints, int TestPgdSteps);
