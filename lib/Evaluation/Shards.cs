using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Carso.Attacks;
using Carso.IO;
using Carso.Runtime;
using static TorchSharp.torch;

namespace Carso.Evaluation;

/// <summary>What every shard of one evaluation must share, and the merge checks: the script, the seed, its settings and
/// the files it evaluates (SHA-256 of each, e.g. the model checkpoints and the transfer set), and the code's commit.</summary>
public sealed record ShardIdentity(string Script, long Seed, string Settings, string Inputs, string Code)
{
    /// <summary>The identity of a run of <paramref name="script"/> with these settings (hashed as the run record writes them),
    /// seed, input files (paths as given; their contents hashed) and code (<see cref="Versions.CodeHash"/>: the library and
    /// the script's source, so a commit that only adds results or saved state, e.g. between two sessions of a long
    /// evaluation, does not separate the shards, while any change of code, committed or not, does).</summary>
    public static ShardIdentity Of(string script, object settings, long seed, IEnumerable<string> inputFiles) =>
        new(script, seed, Sha256(RunRecord.ToJson(settings)?.ToJsonString() ?? ""),
            Sha256(string.Join("\n", inputFiles.Select(f => $"{Path.GetFileName(f)} {FileSha256(f)}"))),
            Versions.CodeHash(script) ?? "unknown");

    /// <summary>The fields in which <paramref name="other"/> differs from this identity, as "seed 1 (here 0)".</summary>
    public IReadOnlyList<string> Differences(ShardIdentity other) => new[]
    {
        other.Script != Script ? $"script {other.Script} (here {Script})" : null,
        other.Seed != Seed ? $"seed {other.Seed} (here {Seed})" : null,
        other.Settings != Settings ? "other settings (settings hash differs)" : null,
        other.Inputs != Inputs ? "another model or other input files (input files' hash differs)" : null,
        other.Code != Code ? "other code (the hash of lib/ and the script differs)" : null,
    }.OfType<string>().ToArray();

    static string Sha256(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    static string FileSha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}

/// <summary>One named evaluation of a shard (a script may run several, e.g. one per ablation variant): its result over
/// the shard's points, and numbers of its own (e.g. images/s).</summary>
public sealed record ShardPart(string Name, ProtocolResult Result, IReadOnlyDictionary<string, double>? Extra = null);

/// <summary>A shard's record (shard.json in its folder): who it is, whether it finished, which process runs it, and its
/// parts. Written incomplete when the shard starts and complete at its end, each time atomically.</summary>
public sealed record ShardRecord(ShardIdentity Identity, int Index, int Count, bool Complete, string Host, int Pid,
    DateTimeOffset StartedUtc, double Seconds, IReadOnlyList<ShardPart> Parts);

/// <summary>A shard record does not fit the run that reads it, or a split is not whole: the message names the shard,
/// what is wrong and the fix.</summary>
public sealed class ShardException(string message) : Exception(message), IUserError;

/// <summary>
/// Sharded evaluation: the merge of shard results into the result one process would give (pure), and the shard records
/// on disk — written by each shard, checked and merged by <see cref="MergeFolder"/>.
/// </summary>
public static class Shards
{
    public const string RecordFile = "shard.json", ImagesFile = "images.safetensors";

    /// <summary>
    /// The result of the whole evaluation from its shards' results, in shard order: per-point records concatenated (they
    /// must be the points 0..n-1, each once), counts (clean, per family, per stage, the worst case, non-finite outputs,
    /// the gradient monitor's) and seconds summed, accuracies and their intervals recomputed over all points, the largest
    /// perturbation the largest of any shard, and the worst-case images concatenated (when every shard has them).
    /// </summary>
    public static ProtocolResult Merge(IReadOnlyList<ProtocolResult> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("no shard results to merge");
        var head = parts[0];
        foreach (var p in parts.Skip(1))
            if (p.Protocol != head.Protocol || p.Threat != head.Threat || !p.Families.Select(f => f.Name).SequenceEqual(head.Families.Select(f => f.Name)))
                throw new InvalidDataException($"shards of different protocols: {Describe(head)} vs {Describe(p)}");
        var points = parts.SelectMany(p => p.Points).ToArray();
        var n = points.Length;
        var misplaced = Enumerable.Range(0, n).FirstOrDefault(i => points[i].Index != i, -1);
        if (misplaced >= 0)
            throw new InvalidDataException($"the shards' points are not 0..{n - 1} in order, each once: position {misplaced} holds point {points[misplaced].Index}");
        var families = head.Families.Select((f, j) =>
        {
            var all = parts.Select(p => p.Families[j]).ToArray();
            if (all.Any(a => a.Stages.Count != f.Stages.Count || !a.Stages.Select(s => s.Attack).SequenceEqual(f.Stages.Select(s => s.Attack))))
                throw new InvalidDataException($"family {f.Name}: the shards ran different attacks");
            var stages = f.Stages.Select((s, k) =>
            {
                var each = all.Select(a => a.Stages[k]).ToArray();
                return new AttackStage(s.Attack, each.Sum(e => e.PointsAttacked), each.Sum(e => e.PointsBroken),
                    Accuracy.Of(each.Sum(e => e.RobustAfter.Correct), n), each.Sum(e => e.Seconds));
            }).ToArray();
            return new FamilyResult(f.Name, f.Description, Accuracy.Of(all.Sum(a => a.Robust.Correct), n), stages,
                all.Max(a => a.MaxPerturbationNorm), all.Sum(a => a.NonFiniteOutputs), AttackMonitor.Counts.Sum(all.Select(a => a.Monitor)),
                all.Sum(a => a.Seconds), all.Any(a => a.Broken is null) ? null : all.SelectMany(a => a.Broken!).ToArray());
        }).ToArray();
        return new ProtocolResult(head.Protocol, head.Threat, Accuracy.Of(parts.Sum(p => p.Clean.Correct), n), parts.Sum(p => p.NonFiniteCleanOutputs),
            families, Accuracy.Of(parts.Sum(p => p.WorstCase.Correct), n), points, parts.Any(p => p.Resumed))
        {
            WorstCaseImages = parts.All(p => p.WorstCaseImages is not null) ? cat(parts.Select(OwnImages).ToArray(), 0) : null,
        };
    }

    static string Describe(ProtocolResult r) => $"{r.Protocol} at {r.Threat} ({string.Join(", ", r.Families.Select(f => f.Name))})";

    /// <summary>A result's images of its own points: the driver's sharded images cover every point (the clean image
    /// outside the shard); a loaded shard's cover its points only.</summary>
    static Tensor OwnImages(ProtocolResult r) =>
        r.WorstCaseImages!.shape[0] == r.Points.Count ? r.WorstCaseImages : r.WorstCaseImages.narrow(0, r.Points[0].Index, r.Points.Count);

    /// <summary>The folder of shard K of N in a run's output folder.</summary>
    public static string FolderOf(string outputDir, Shard shard) => Path.Combine(outputDir, shard.Folder);

    /// <summary>Marks the shard started (its record, incomplete, with this process's id). A record already there must be
    /// this run's (a re-run resumes the shard from its state) and not held by a live process on this host.</summary>
    public static ShardRecord Begin(string folder, ShardIdentity identity, Shard shard)
    {
        var path = Path.Combine(folder, RecordFile);
        if (File.Exists(path))
        {
            var saved = Load(path);
            var differences = identity.Differences(saved.Identity);
            if (differences.Count > 0)
                throw new ShardException($"{path} belongs to another run ({string.Join("; ", differences)}); " +
                                         $"use another output folder (--out), or delete {folder} to run this shard afresh");
            if (!saved.Complete && saved.Pid != Environment.ProcessId && Alive(saved))
                throw new ShardException($"{path}: shard {shard} is being run by process {saved.Pid} on this host; wait for it, or stop it first");
        }
        var record = new ShardRecord(identity, shard.Index, shard.Count, false, Environment.MachineName, Environment.ProcessId,
            DateTimeOffset.UtcNow, 0, []);
        Directory.CreateDirectory(folder);
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(record, RunRecord.Json) + "\n");
        return record;
    }

    /// <summary>Writes the finished shard: its images first (each part's worst-case images of the shard's points, when
    /// <paramref name="keepImages"/>), then its complete record.</summary>
    public static ShardRecord Complete(string folder, ShardRecord started, IReadOnlyList<ShardPart> parts, bool keepImages)
    {
        if (keepImages)
        {
            using var scope = NewDisposeScope();
            var images = parts.Where(p => p.Result.WorstCaseImages is not null)
                .ToDictionary(p => p.Name, p => OwnImages(p.Result).contiguous());
            StateDicts.ExportTensors(images, Path.Combine(folder, ImagesFile));
        }
        var record = started with { Complete = true, Seconds = (DateTimeOffset.UtcNow - started.StartedUtc).TotalSeconds, Parts = parts };
        AtomicFile.WriteAllText(Path.Combine(folder, RecordFile), JsonSerializer.Serialize(record, RunRecord.Json) + "\n");
        return record;
    }

    public static ShardRecord Load(string path)
    {
        try { return JsonSerializer.Deserialize<ShardRecord>(File.ReadAllText(path), RunRecord.Json) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new ShardException($"{path}: not a valid shard record ({e.Message}); re-run that shard"); }
    }

    /// <summary>
    /// The parts of a whole evaluation from the shard records in <paramref name="outputDir"/> (folders shard-K-of-N), each
    /// merged across shards (<see cref="Merge(IReadOnlyList{ProtocolResult})"/>); with their worst-case images when
    /// <paramref name="images"/>. Refuses, naming the shard: no records, shards of different splits, a missing or duplicated
    /// shard, a shard not finished (still running, or died: re-run it to resume), and a shard of another run (script,
    /// seed, settings, input files or commit differ from <paramref name="identity"/>) or of other parts.
    /// </summary>
    public static IReadOnlyList<ShardPart> MergeFolder(string outputDir, ShardIdentity identity, bool images = false)
    {
        var paths = Directory.Exists(outputDir)
            ? Directory.GetDirectories(outputDir, "shard-*-of-*").Select(d => Path.Combine(d, RecordFile)).Where(File.Exists).Order().ToArray()
            : [];
        if (paths.Length == 0)
            throw new ShardException($"{outputDir}: no shard records (shard-K-of-N/{RecordFile}); run the shards first (--shard K/N with the same --out)");
        var records = paths.Select(p => (Path: p, Record: Load(p))).ToArray();
        string Name((string Path, ShardRecord Record) r) => $"shard {r.Record.Index}/{r.Record.Count} ({r.Path})";
        var count = records[0].Record.Count;
        foreach (var r in records.Where(r => r.Record.Count != count))
            throw new ShardException($"{Name(r)} and {Name(records[0])} belong to different splits (of {r.Record.Count} and of {count}); " +
                                     "delete the folders of the split you do not want");
        foreach (var group in records.GroupBy(r => r.Record.Index).Where(g => g.Count() > 1))
            throw new ShardException($"shard {group.Key}/{count} is there twice: {string.Join(" and ", group.Select(r => r.Path))}; keep one");
        foreach (var r in records.Where(r => Path.GetFileName(Path.GetDirectoryName(r.Path)) != new Shard(r.Record.Index, r.Record.Count).Folder))
            throw new ShardException($"{Name(r)}: its folder is not {new Shard(r.Record.Index, r.Record.Count).Folder}; put each shard in its own folder");
        var missing = Enumerable.Range(0, count).Except(records.Select(r => r.Record.Index)).ToArray();
        if (missing.Length > 0)
            throw new ShardException($"{outputDir}: shard(s) {string.Join(", ", missing.Select(k => $"{k}/{count}"))} missing " +
                                     $"(no {new Shard(missing[0], count).Folder}/{RecordFile}); run them (--shard K/{count} with the same --out), then merge");
        foreach (var r in records)
        {
            var differences = identity.Differences(r.Record.Identity);
            if (differences.Count > 0)
                throw new ShardException($"{Name(r)} is from another run: {string.Join("; ", differences)}; re-run it with this run's settings, or merge it with its own");
            if (!r.Record.Complete)
                throw new ShardException($"{Name(r)} has not finished: " + (r.Record.Host != Environment.MachineName
                    ? $"it is still running or it died (process {r.Record.Pid} on {r.Record.Host}, started {r.Record.StartedUtc:u}); " +
                      "wait for it, or if it died re-run that shard (it resumes from its state), then merge"
                    : Alive(r.Record)
                        ? $"it is still running (process {r.Record.Pid} on this host, started {r.Record.StartedUtc:u}); wait for it, then merge"
                        : $"it died (its process {r.Record.Pid} on this host is gone); re-run that shard (it resumes from its state), then merge"));
        }
        var ordered = records.OrderBy(r => r.Record.Index).ToArray();
        var names = ordered[0].Record.Parts.Select(p => p.Name).ToArray();
        foreach (var r in ordered)
            if (!r.Record.Parts.Select(p => p.Name).SequenceEqual(names))
                throw new ShardException($"{Name(r)} holds other evaluations ({string.Join(", ", r.Record.Parts.Select(p => p.Name))}) than " +
                                         $"{Name(ordered[0])} ({string.Join(", ", names)}); re-run it");
        var loaded = images ? ordered.Select(r => StateDicts.Read(Path.Combine(Path.GetDirectoryName(r.Path)!, ImagesFile))).ToArray() : null;
        try
        {
            return names.Select((name, j) =>
            {
                var results = ordered.Select((r, k) => r.Record.Parts[j].Result with { WorstCaseImages = loaded?[k].GetValueOrDefault(name) }).ToArray();
                ProtocolResult merged;
                try { merged = Merge(results); }
                catch (InvalidDataException e) { throw new ShardException($"{outputDir}: cannot merge '{name}': {e.Message}"); }
                return new ShardPart(name, merged, MergeExtra(ordered.Select(r => r.Record.Parts[j].Extra).ToArray()));
            }).ToArray();
        }
        finally
        {
            foreach (var tensors in loaded ?? []) foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>A part's own numbers across shards: the value when all agree, else the mean (e.g. a speed each measured).</summary>
    static IReadOnlyDictionary<string, double>? MergeExtra(IReadOnlyList<IReadOnlyDictionary<string, double>?> extras) =>
        extras[0] is null ? null : extras[0]!.Keys.ToDictionary(key => key, key =>
        {
            var values = extras.Select(e => e?.GetValueOrDefault(key, double.NaN) ?? double.NaN).ToArray();
            return values.All(v => v.Equals(values[0])) ? values[0] : values.Average();
        });

    /// <summary>Whether the process that wrote an incomplete record is alive (only knowable on the same host).</summary>
    static bool Alive(ShardRecord record)
    {
        if (record.Host != Environment.MachineName) return false;
        try { using var p = Process.GetProcessById(record.Pid); return !p.HasExited; }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }
}
