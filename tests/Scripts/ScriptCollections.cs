using System.Runtime.CompilerServices;

namespace Carso.Tests;

/// <summary>
/// The two collections of the script tests, which run side by side (tests/Scripts/AssemblyInfo.cs). Each script
/// belongs to exactly one, so the same script is never built by two tests at once: the scripts that evaluate committed
/// models (eval-*, bench*, eps-sweep and the ablations of the committed defence) and the SLURM test (it builds eval-carso)
/// in one; the scripts that train (the ablations that train their own purifiers among them), data and figures, with the
/// harness tests (datasets.cs, train-classifier.cs), in the other — except the scripts moved to balance the two, as
/// measured (per-test times of a fresh-clone CI run, 2026-12-02: 409 s in the first, 514 s in the second, 202 s of them
/// figures.cs's smoke, which rendered every PNG then; with it at ~20 s, bench-carso-grad.cs (43 s) moved: ~366 / ~375 s).
/// </summary>
public static class ScriptCollections
{
    public const string Evaluation = "scripts: evaluation", Training = "scripts: training and data";

    /// <summary>The collection that runs scripts/NAME.</summary>
    public static string For(string script) =>
        !MovedForBalance.Contains(script) &&
        (script.StartsWith("eval-") || script.StartsWith("bench") || script.StartsWith("eps-sweep") ||
         (script.StartsWith("ablation-") && !TrainsItsOwnPurifiers.Contains(script)))
            ? Evaluation : Training;

    static readonly string[] TrainsItsOwnPurifiers = ["ablation-purifier.cs", "ablation-adversarial-fraction.cs"];
    static readonly string[] MovedForBalance = ["bench-carso-grad.cs"];
}

[CollectionDefinition(ScriptCollections.Evaluation)] public sealed class EvaluationScriptsCollection;
[CollectionDefinition(ScriptCollections.Training)] public sealed class TrainingScriptsCollection;

/// <summary>The environment of every script the tests start (inherited by each child process): one libtorch thread, as two
/// scripts and the in-process tests share CI's 2 cores and OpenMP threads spin while they wait; and the C# compiler
/// server, so the ~27 script builds share one warm compiler instead of starting a cold one each (an environment that sets
/// UseSharedCompilation=false, as this machine's does, costs each build ~5 s of compiler start-up). .ci/run stops the
/// server it started, by pid.</summary>
static class ScriptEnvironment
{
    [ModuleInitializer]
    internal static void Set()
    {
        Environment.SetEnvironmentVariable("OMP_NUM_THREADS", "1");
        Environment.SetEnvironmentVariable("UseSharedCompilation", "true");
    }
}
