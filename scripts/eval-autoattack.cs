#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// AutoAttack "standard" (APGD-CE, APGD-T, FAB-T, Square 5000) on a classifier checkpoint, with the gradient-masking
// diagnostics, and the classifier's adversarial examples published as a transfer set (transfer.safetensors + spec) for
// the CARSO evaluations. Default: the committed Fashion-MNIST PGD-AT SmallCnn, Linf eps 0.1, the first 1000 test
// points. Resumable: a killed run continues from attacks/ in its output folder. Sharded: --shard K/N evaluates shard K
// of N into shard-K-of-N/, --merge makes the record (and transfer set) of the unsharded run from them (README, "Scale-out").
// The L2 classifier at L2: scripts/eval-autoattack-l2.cs (the same experiment, lib/Experiments/AutoAttackEvaluation.cs).
//   dotnet run scripts/eval-autoattack.cs            -> results/eval-autoattack/
//   dotnet run scripts/eval-autoattack.cs --smoke    -> a temporary folder, seconds

// ---- settings (published AutoAttack budgets; edit and re-run) ------------------------------------
var settings = new AutoAttackEvaluation.Settings(Checkpoint: Committed.ClassifierPath, Norm: Norm.Linf, Eps: 0.1, Points: 1000,
    Attacks: new AutoAttackSettings(), BatchSize: 500,
    LargeEps: 0.5, // half the pixel range: any image can be moved to a flat mid-grey one
    DiagnosticPoints: 200, Seed: 0);
var run = ScriptRun.Start(settings, args, shardable: true);
if (run.Smoke) settings = settings.Smoke();

// ---- evaluate, publish the transfer set, diagnose, record ----------------------------------------
AutoAttackEvaluation.Run(run, settings);
