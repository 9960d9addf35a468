using Carso.Data;
using Carso.Evaluation;
using Carso.IO;
using Carso.Attacks;
using Carso.Models;
using Carso.Runtime;
using Carso.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Experiments;

/// <summary>
/// The experiment of scripts/train-classifier.cs (Linf) and scripts/train-classifier-l2.cs (L2), written once: adversarially
/// train SmallCnn on Fashion-MNIST, keep the checkpoint with the best held-out PGD accuracy, measure its clean and PGD
/// accuracy on the test set, export it as safetensors (re-imported strictly as a check), write the record and the training
/// curve. The scripts differ by their settings and the weights' file name only.
/// </summary>
public static class ClassifierTraining
{
    /// <summary>Settings (their values are at the top of each script): edit and re-run (a changed setting needs a fresh
    /// output folder or --out).</summary>
    /// <param name="Model">SmallCnn's architecture.</param>
    /// <param name="Training">The training recipe (method, threat, attack steps, epochs, optimiser, schedule, seed).</param>
    /// <param name="ValidationCount">Training images held out to choose the best epoch.</param>
    /// <param name="TrainPoints">At most this many training images (after the held-out split).</param>
    /// <param name="TestPoints">At most this many test images for the final clean and PGD accuracy.</param>
    /// <param name="TestPgdSteps">Steps of the final PGD test (step 2.5 eps / steps, random start, in the training threat).</param>
    public sealed record Settings(SmallCnn.Settings Model, AdversarialTrainingSettings Training, int ValidationCount, int TrainPoints,
        int TestPoints, int TestPgdSteps)
    {
        /// <summary>--smoke: tiny data, two short epochs, seconds.</summary>
        public Settings Smoke() => this with
        {
            TrainPoints = 512, ValidationCount = 256, TestPoints = 200,
            Training = Training with { Epochs = 2, AttackSteps = 2, EvalPgdSteps = 3, EvalPoints = 128 },
            TestPgdSteps = 3,
        };
    }

    /// <summary>The settings this run uses: reduced by --smoke, the training seed replaced by --seed.</summary>
    public static Settings ForRun(Settings settings, ScriptRun run)
    {
        if (run.Smoke) settings = settings.Smoke();
        return run.SeedOverride is long seed ? settings with { Training = settings.Training with { Seed = seed } } : settings;
    }

    /// <summary>
    /// Trains, tests, exports <paramref name="weightsFile"/> into the run's output folder and writes the record. Resumable:
    /// a killed run continues from the last complete epoch in &lt;out&gt;/checkpoint. The model's initial weights come from
    /// torch's global generator, which the CALLER seeds (scripts may seed; the library never does).
    /// </summary>
    public static RunRecord Run(ScriptRun run, Settings settings, string weightsFile)
    {
        var seed = settings.Training.Seed;

        // ---- data -------------------------------------------------------------------------------------
        var (train, validation, test) = FashionMnist.Splits(settings.ValidationCount, seed, settings.TrainPoints, settings.TestPoints, run.Log);

        // ---- model and training -------------------------------------------------------------------------
        var model = new SmallCnn(settings.Model);
        model.to(run.Device);
        var training = settings.Training;
        Console.WriteLine($"model: SmallCnn {settings.Model}, {model.parameters().Sum(p => p.numel())} parameters");
        Console.WriteLine($"training: {training.Method} {training.Threat}, {training.AttackSteps} steps" +
                          (training.Method == TrainingMethod.PgdAt ? $" of {training.TrainingPgd.Alpha:G4}" : "") +
                          $", {training.Epochs} epochs, batch {training.BatchSize}, {training.Optimizer}");
        var checkpointFolder = run.Output("checkpoint");
        var result = AdversarialTraining.Train(model, train, validation, training, checkpointFolder,
            log: run.Log, progress: run.Progress.Steps("epoch (batches)"), device: run.Device);

        // ---- evaluate the best checkpoint on the test set ---------------------------------------------
        var checkpoint = new TrainingCheckpoint<EpochMetrics>(checkpointFolder);
        model.load(checkpoint.BestPath);
        model.eval();
        var testPgd = new PgdSettings(training.Threat, settings.TestPgdSteps);
        var clean = Evaluate.ToAccuracy(Evaluate.PerPointCorrect(model.call, test, 500, device: run.Device));
        var robust = Evaluate.ToAccuracy(Evaluate.PerPointCorrect(model.call, test, 500,
            (m, x, y) => Pgd.Attack(m, x, y, testPgd), run.Device));
        Console.WriteLine($"best epoch {result.BestEpoch}; test clean accuracy {clean}");
        Console.WriteLine($"test PGD-{testPgd.Steps} ({testPgd.Threat}, step {testPgd.Alpha:G4}, random start) accuracy {robust}");

        // The reference checkpoint, in the PyTorch-compatible safetensors format; re-imported strictly as a check.
        var weightsPath = run.Output(weightsFile);
        StateDicts.Export(model, weightsPath);
        using (var reloaded = new SmallCnn(settings.Model))
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            StateDicts.Import(reloaded, weightsPath);
            reloaded.to(run.Device).eval();
            var batch = test.Images.narrow(0, 0, Math.Min(64, test.Count)).to(run.Device);
            if (!reloaded.call(batch).eq(model.call(batch)).all().item<bool>())
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
        return record;
    }
}
