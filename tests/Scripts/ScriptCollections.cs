using System.Runtime.CompilerServices;

namespace Carso.Tests;

/// <summary>
/// The three collections of the script tests, which run side by side (tests/Scripts/AssemblyInfo.cs). Each script
/// belongs to exactly one, so the same script is never built by two tests at once: the evaluations (eval-*, eps-sweep)
/// with the SLURM test (it builds eval-carso); the benchmarks and the ablations of the committed defence, with the
/// reference-AutoAttack test (it runs bench.cs); the scripts that train (the ablations that train their own purifiers
/// among them), data and figures, with the harness tests (datasets.cs, train-classifier.cs). Three, not two: a script
/// test is mostly a build (restore, compile, linking the natives) that leaves a core idle part of the time — measured on
/// CI's 2 cores with two collections, 11.3 CPU-minutes in 10.0 minutes of wall time.
/// </summary>
public static class ScriptCollections
{
    public const string Evaluation = "scripts: evaluation", Benchmarks = "scripts: benchmarks and ablations",
        Training = "scripts: training and data";

    /// <summary>The collection that runs scripts/NAME.</summary>
    public static string For(string script) =>
        script.StartsWith("eval-") || script.StartsWith("eps-sweep") ? Evaluation
        : script.StartsWith("bench") || (script.StartsWith("ablation-") && !TrainsItsOwnPurifiers.Contains(script)) ? Benchmarks
        : Training;

    static readonly string[] TrainsItsOwnPurifiers = ["ablation-purifier.cs", "ablation-adversarial-fraction.cs"];
}

[CollectionDefinition(ScriptCollections.Evaluation)] public sealed class EvaluationScriptsCollection;
[CollectionDefinition(ScriptCollections.Benchmarks)] public sealed class BenchmarkScriptsCollection;
[CollectionDefinition(ScriptCollections.Training)] public sealed class TrainingScriptsCollection;

/// <summary>One libtorch thread in every script the tests start: two scripts and the in-process tests share CI's 2 cores,
/// and OpenMP threads spin while they wait.</summary>
static class ScriptThreads
{
    [ModuleInitializer]
    internal static void OneThread() => Environment.SetEnvironmentVariable("OMP_NUM_THREADS", "1"); // inherited by every child process
}
