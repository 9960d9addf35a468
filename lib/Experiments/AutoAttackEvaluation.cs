using Carso.Attacks;
using Carso.Evaluation;
using Carso.IO;
using Carso.Runtime;

namespace Carso.Experiments;

/// <summary>
/// The experiment of scripts/eval-autoattack.cs (Linf) and scripts/eval-autoattack-l2.cs (L2), written once: AutoAttack
/// "standard" on a SmallCnn checkpoint in the settings' threat, with the gradient-masking diagnostics, and the classifier's
/// adversarial examples published as a transfer set in the run's output folder. Resumable (attacks/ in the output folder)
/// and sharded (--shard K/N, --merge; README, "Scale-out").
/// </summary>
public static class AutoAttackEvaluation
{
    /// <summary>Settings (a changed setting needs a fresh output folder: the attack state is checked).</summary>
    /// <param name="Checkpoint">The classifier (SmallCnn, the committed architecture), relative to the repository root.</param>
    /// <param name="Norm">The threat's norm (Linf, L2 or L1; AutoAttack's per-norm lists and budgets).</param>
    /// <param name="Eps">The threat's eps, in that norm.</param>
    /// <param name="Points">The first Points test points are evaluated (and published as the transfer set).</param>
    /// <param name="Attacks">AutoAttack's budgets (defaults: the published ones).</param>
    /// <param name="BatchSize">Points per block of the evaluation driver.</param>
    /// <param name="LargeEps">The large-eps check (in the same norm): APGD-CE at this eps must leave chance accuracy or less.</param>
    /// <param name="DiagnosticPoints">Points of the eps, iteration and large-eps curves.</param>
    /// <param name="Seed">The seed of every draw of the attacks.</param>
    public sealed record Settings(string Checkpoint, Norm Norm, double Eps, int Points, AutoAttackSettings Attacks, int BatchSize,
        double LargeEps, int DiagnosticPoints, long Seed)
    {
        [System.Text.Json.Serialization.JsonIgnore]
        public Threat Threat => new Threat(Norm, Eps).Validated();

        /// <summary>--smoke: 24 points, AutoAttack's smoke budgets, seconds.</summary>
        public Settings Smoke() => this with { Points = 24, Attacks = AutoAttackSettings.Smoke, DiagnosticPoints = 24, BatchSize = 12 };
    }

    /// <summary>Evaluates (or, with --shard, one shard; with --merge, merges the shards), publishes the transfer set, runs the
    /// diagnostics and writes the record and its figure. Returns the record, or null after a shard.</summary>
    public static RunRecord? Run(ScriptRun run, Settings settings)
    {
        var seed = run.SeedOverride ?? settings.Seed;
        var threat = settings.Threat;
        if (settings.LargeEps <= settings.Eps)
            throw new SettingsException(nameof(Settings.LargeEps), $"must be larger than Eps ({settings.Eps}), got {settings.LargeEps}");

        // ---- data and model ---------------------------------------------------------------------------
        using var test = Committed.TestPoints(settings.Points);
        var classifier = Committed.Classifier(run.Device, settings.Checkpoint);
        Console.WriteLine($"model: SmallCnn from {settings.Checkpoint}; AutoAttack standard, {threat}, {test.Count} test points, seed {seed}: {settings.Attacks}");
        Console.WriteLine(Budget.Describe(settings.Attacks, new AutoAttackSettings()));

        // ---- evaluate ------------------------------------------------------------------------------------
        var protocol = Protocol.Of("autoattack-standard", threat, m => AutoAttack.Standard(threat, settings.Attacks, m));
        var result = Sharding.Result(run, settings, seed, [settings.Checkpoint],
            new EvaluationOptions(seed, settings.BatchSize, run.Device, run.Output("attacks"), run.Log, run.Progress),
            options => ProtocolEvaluation.Run(classifier.call, test, protocol, options), keepImages: true);
        if (result is null) return null; // a shard: its record is written; --merge does the rest
        var family = result.Families[0];
        Console.WriteLine($"clean accuracy {result.Clean}; AutoAttack robust accuracy {result.WorstCase}; largest perturbation ({threat.Norm}) {family.MaxPerturbationNorm:G4}");
        TransferSet.Save(run.Output("transfer.safetensors"), result.WorstCaseImages!, test.Labels,
            new TransferSetSpec(threat.Norm.ToString(), threat.Eps, test.Name, (int)test.Count, nameof(Carso.Models.SmallCnn),
                PurifierCheckpoint.Fingerprint(classifier), $"AutoAttack standard on {settings.Checkpoint} (scripts/{run.Script}.cs, seed {seed})"));
        result.WorstCaseImages!.Dispose();
        Console.WriteLine($"transfer set: {run.Output("transfer.safetensors")}");

        // ---- diagnostics ---------------------------------------------------------------------------------
        var diagnostics = Diagnostics.Run(classifier.call, test, result,
            (t, iterations) => AutoAttack.ApgdCe(t, settings.Attacks with { ApgdIterations = iterations }),
            squareName: AutoAttack.SquareName, largeEps: settings.LargeEps, checkPoints: settings.DiagnosticPoints, seed: seed,
            batchSize: settings.BatchSize, device: run.Device, iterations: settings.Attacks.ApgdIterations);
        Console.WriteLine("diagnostics: " + (diagnostics.AllClear ? "all clear" : string.Join("", diagnostics.Warnings.Select(w => $"\n  WARNING: {w}"))));
        Console.WriteLine($"  accuracy at {threat.Norm} eps {diagnostics.LargeEps}: {diagnostics.LargeEpsAccuracy}; eps curve " +
                          string.Join(", ", diagnostics.EpsCurve.Select(p => $"{p.Budget:G3}: {100 * p.Robust.Value:F1}%")) +
                          "; iterations curve " + string.Join(", ", diagnostics.IterationCurve.Select(p => $"{p.Budget}: {100 * p.Robust.Value:F1}%")));

        // ---- record --------------------------------------------------------------------------------------
        var record = run.Finish(settings, seed, new
        {
            clean = result.Clean, robust = result.WorstCase, stages = family.Stages, family.MaxPerturbationNorm,
            nonFiniteOutputs = new[] { result.NonFiniteCleanOutputs, family.NonFiniteOutputs }, resumed = result.Resumed,
            attackSeconds = family.Seconds, peakMemoryMiB = ProcessStats.PeakRssMiB(), transferSet = "transfer.safetensors",
            diagnostics, points = result.Points,
        });
        foreach (var (name, figure) in EvalAutoAttackReport.Figures(record)) run.SaveFigure(figure, name);
        return record;
    }
}
