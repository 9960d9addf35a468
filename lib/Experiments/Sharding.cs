using Carso.Evaluation;
using Carso.Runtime;

namespace Carso.Experiments;

/// <summary>
/// How an evaluating script runs its evaluation, as its command line says: unsharded (the evaluation itself); with
/// --shard K/N (the evaluation of the shard's points, written as a shard record in &lt;out&gt;/shard-K-of-N/, resumable from
/// its state there; the script then stops); or with --merge (no evaluation: the shard records of &lt;out&gt;, checked and
/// merged). Unsharded and merged runs return the same results, so the rest of the script — diagnostics, record, figures —
/// is one piece of code for both.
/// </summary>
public static class Sharding
{
    /// <summary>The named results of the evaluation: its own (unsharded), the merged shard records (--merge), or null
    /// after a shard has written its record (--shard). <paramref name="evaluate"/> gets <paramref name="options"/> with
    /// the shard (and the state folder moved into the shard's folder). The identity every shard and the merge must share:
    /// the script, <paramref name="settings"/>, <paramref name="seed"/>, the contents of <paramref name="inputFiles"/>
    /// (models, transfer sets, records read) and the commit. <paramref name="keepImages"/>: shards keep their worst-case
    /// images for the merge (the scripts that publish them).</summary>
    public static IReadOnlyList<ShardPart>? Parts(ScriptRun run, object settings, long seed, IEnumerable<string> inputFiles,
        EvaluationOptions options, Func<EvaluationOptions, IReadOnlyList<ShardPart>> evaluate, bool keepImages = false)
    {
        var identity = ShardIdentity.Of(run.Script, settings, seed, inputFiles.Select(Committed.PathOf));
        options = options with { Identity = $"{identity.Settings}|{identity.Inputs}|{identity.Code}" };
        if (run.Shard is null && !run.Merge) return evaluate(options);
        if (run.Merge)
        {
            var parts = Shards.MergeFolder(run.OutputDir, identity, keepImages);
            Console.WriteLine($"merged {parts.Count} evaluation(s) from the shard records in {run.OutputDir}");
            return parts;
        }
        var shard = run.Shard!;
        var folder = Shards.FolderOf(run.OutputDir, shard);
        var started = Shards.Begin(folder, identity, shard);
        var shardOptions = options with
        {
            Shard = shard,
            StateDir = options.StateDir is null ? null : Path.Combine(folder, Path.GetRelativePath(run.OutputDir, options.StateDir)),
        };
        var results = evaluate(shardOptions);
        Shards.Complete(folder, started, results, keepImages);
        foreach (var p in results) p.Result.WorstCaseImages?.Dispose();
        Console.WriteLine($"shard {shard}: record {Path.Combine(folder, Shards.RecordFile)}; merge all {shard.Count} shards with --merge (same --out)");
        return null;
    }

    /// <summary>The one-evaluation form of <see cref="Parts"/>: its result, or null after a shard.</summary>
    public static ProtocolResult? Result(ScriptRun run, object settings, long seed, IEnumerable<string> inputFiles, EvaluationOptions options,
        Func<EvaluationOptions, ProtocolResult> evaluate, bool keepImages = false) =>
        Parts(run, settings, seed, inputFiles, options, o => [new ShardPart("result", evaluate(o))], keepImages)?[0].Result;
}
