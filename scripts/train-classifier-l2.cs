#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Adversarially trains SmallCnn on Fashion-MNIST with PGD-AT at L2 eps 1.5 (10 steps of 2.5 eps / 10; why: the doc comment
// of AdversarialTrainingSettings.FashionMnistPgdAtL2), the same architecture and recipe as the committed Linf classifier
// otherwise; keeps the checkpoint with the best held-out L2 PGD-20 accuracy, measures its clean and L2 PGD-20 accuracy on
// the full test set and exports it as safetensors (Committed.ClassifierL2Path). Resumable like scripts/train-classifier.cs
// (the same experiment, lib/Experiments/ClassifierTraining.cs). Then: scripts/eval-autoattack-l2.cs.
//   dotnet run scripts/train-classifier-l2.cs            -> results/train-classifier-l2/
//   dotnet run scripts/train-classifier-l2.cs --smoke    -> a temporary folder, seconds

// ---- settings -------------------------------------------------------------------------------
var settings = new ClassifierTraining.Settings(
    Model: Committed.ClassifierSettings, // the committed Linf classifier's architecture
    Training: AdversarialTrainingSettings.FashionMnistPgdAtL2, // L2 eps 1.5, 10 steps of 0.375 (see its doc comment)
    ValidationCount: 5000,
    TrainPoints: int.MaxValue,
    TestPoints: int.MaxValue,
    TestPgdSteps: 20);
var run = ScriptRun.Start(settings, args);
settings = ClassifierTraining.ForRun(settings, run); // --smoke, --seed
manual_seed(settings.Training.Seed); // the model's initial weights (the library never seeds torch's global generator)

// ---- train, test, export, record ---------------------------------------------------------------
ClassifierTraining.Run(run, settings, weightsFile: Path.GetFileName(Committed.ClassifierL2Path));
