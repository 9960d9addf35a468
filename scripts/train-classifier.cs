#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Adversarially trains SmallCnn on Fashion-MNIST (PGD-AT, Linf eps 0.1 by default), keeps the checkpoint with the
// best held-out PGD accuracy, then measures its clean and PGD-20 accuracy on the full test set and exports it as
// safetensors. Resumable: kill it and run it again, it continues from the last complete epoch (a changed setting
// needs a fresh --out folder). Writes to results/train-classifier/. The L2 classifier: scripts/train-classifier-l2.cs
// (the same experiment, lib/Experiments/ClassifierTraining.cs, with its own settings).
//   dotnet run scripts/train-classifier.cs            -> results/train-classifier/
//   dotnet run scripts/train-classifier.cs --smoke    -> a temporary folder, seconds

// ---- settings -------------------------------------------------------------------------------
var settings = new ClassifierTraining.Settings(
    Model: Committed.ClassifierSettings, // the committed classifier's architecture
    Training: AdversarialTrainingSettings.FashionMnistPgdAt, // the committed classifier's recipe (see its doc comment)
    ValidationCount: 5000,
    TrainPoints: int.MaxValue,
    TestPoints: int.MaxValue,
    TestPgdSteps: 20);
var run = ScriptRun.Start(settings, args);
settings = ClassifierTraining.ForRun(settings, run); // --smoke, --seed
manual_seed(settings.Training.Seed); // the model's initial weights (the library never seeds torch's global generator)

// ---- train, test, export, record ---------------------------------------------------------------
ClassifierTraining.Run(run, settings, weightsFile: Path.GetFileName(Committed.ClassifierPath));
