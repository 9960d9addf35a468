using System.Text.Json;
using Carso.Attacks;
using Carso.Evaluation;
using Carso.Experiments;
using Carso.IO;
using Carso.Models;
using Carso.Runtime;
using static TorchSharp.torch;

namespace Carso.Tests.Evaluation;

/// <summary>Sharded evaluation: shards are whole blocks, merge(shards) is the unsharded result, and the merge refuses
/// shard records that do not make one whole run, naming the shard.</summary>
public class ShardsTests
{
    static readonly Threat Eps = Threat.Linf(0.05);

    /// <summary>A transfer set (small random perturbations), an FGSM-then-PGD family and a second, stochastic-start PGD family.</summary>
    static Protocol TestProtocol(Carso.Data.Dataset data, string name = "test")
    {
        using var g = new Generator(7);
        var images = (data.Images + (rand(data.Images.shape, generator: g) * 2 - 1) * 0.05).clamp(0, 1);
        var transfer = new TransferSet("(test)", new TransferSetSpec("Linf", 0.05, data.Name, (int)data.Count, "mlp", "", "test"), images, data.Labels.clone());
        NamedAttack Fgsm = new("fgsm", (m, x, y, gen) => Carso.Attacks.Fgsm.Attack(m, x, y, new FgsmSettings(Eps), gen));
        NamedAttack Pgd(int steps) => new($"pgd-{steps}", (m, x, y, gen) => Carso.Attacks.Pgd.Attack(m, x, y, new PgdSettings(Eps, steps, 0.01), gen));
        return new Protocol(name, Eps, [new AttackFamily("fgsm-pgd", "FGSM, then PGD-5", _ => [Fgsm, Pgd(5)]), new AttackFamily("pgd", "PGD-3", _ => [Pgd(3)])],
            transfer);
    }

    static ShardIdentity Identity(long seed = 4) => ShardIdentity.Of("test", new { Points = 60 }, seed, []);

    /// <summary>Runs each shard of `count` into its folder under dir as a script would (record started, evaluated, completed).</summary>
    static void RunShards(string dir, int count, Func<Shard, ProtocolResult> evaluate, Func<int, ShardIdentity>? identity = null)
    {
        for (var k = 0; k < count; k++)
        {
            var shard = new Shard(k, count);
            var folder = Shards.FolderOf(dir, shard);
            var started = Shards.Begin(folder, identity?.Invoke(k) ?? Identity(), shard);
            var result = evaluate(shard);
            Shards.Complete(folder, started, [new ShardPart("result", result)], keepImages: true);
            result.WorstCaseImages?.Dispose();
        }
    }

    /// <summary>A record shaped as scripts/eval-carso.cs writes it (rows and groups), from which its figures are drawn.</summary>
    static RunRecord CarsoShapedRecord(ProtocolResult r) => new("eval-carso", false, 0, RunRecord.ToJson(new { eps = 0.05 }),
        new Dictionary<string, string>(), "cpu", 1, DateTimeOffset.UnixEpoch, 0, RunRecord.ToJson(new
        {
            rows = new[] { new ResultRow("model", "clean", r.Clean) }.Concat(r.Families.Select(f => new ResultRow("model", f.Name, f.Robust)))
                .Append(new ResultRow("model", "worst case", r.WorstCase)).ToArray(),
            groups = r.Families,
        }));

    [Fact]
    public void MergingThreeShardsGivesTheUnshardedResultPointForPoint()
    {
        var (model, data) = ProtocolEvaluationTests.Setup(60);
        using var _ = data;
        using var dir = new TempFolder();
        var protocol = TestProtocol(data);
        var options = new EvaluationOptions(Seed: 4, BatchSize: 8);   // 8 blocks (the last of 4 points): shards of 2, 3 and 3 blocks
        var whole = ProtocolEvaluation.Run(ProtocolEvaluationTests.Noisy(model), data, protocol, options);
        using var wholeImages = whole.WorstCaseImages!;
        RunShards(dir.Path, 3, shard => ProtocolEvaluation.Run(ProtocolEvaluationTests.Noisy(model), data, protocol,
            options with { Shard = shard, StateDir = Path.Combine(dir.Path, shard.Folder, "attacks") }));

        var merged = Assert.Single(Shards.MergeFolder(dir.Path, Identity(), images: true)).Result;
        using var mergedImages = merged.WorstCaseImages!;

        Assert.Equal(whole.Points, merged.Points);
        Assert.Equal((whole.Clean, whole.WorstCase, whole.NonFiniteCleanOutputs), (merged.Clean, merged.WorstCase, merged.NonFiniteCleanOutputs));
        Assert.True(whole.WorstCase.Correct < whole.Clean.Correct, "the attacks should break some points");
        static object Timeless(FamilyResult f) => JsonSerializer.Serialize(f with { Seconds = 0, Stages = f.Stages.Select(s => s with { Seconds = 0 }).ToArray() });
        Assert.Equal(whole.Families.Select(Timeless), merged.Families.Select(Timeless));
        Assert.Equal([Protocol.TransferName, "fgsm-pgd", "pgd"], merged.Families.Select(f => f.Name));
        Assert.True(wholeImages.eq(mergedImages).all().item<bool>(), "the worst-case images differ");
        // The figures are drawn from the records: the same data.
        static string[] FigureData(ProtocolResult r) => EvalCarsoReport.Figures(CarsoShapedRecord(r)).Select(f => f.Figure.Data.ToJsonString()).ToArray();
        Assert.Equal(FigureData(whole), FigureData(merged));
    }

    [Fact]
    public void ShardsAreWholeBlocksCoveringEveryPointOnceAndTooManyShardsAreRefused()
    {
        foreach (var (points, blockSize) in new[] { (60, 8), (200, 100), (1000, 100), (17, 1) })
        {
            var blocks = (points + blockSize - 1) / blockSize;
            for (var count = 1; count <= blocks; count++)
            {
                var ranges = Enumerable.Range(0, count).Select(k => new Shard(k, count).Points(points, blockSize)).ToArray();
                Assert.Equal(0, ranges[0].Start);
                Assert.Equal(points, ranges[^1].End);
                Assert.All(ranges.Zip(ranges.Skip(1)), p => Assert.Equal(p.First.End, p.Second.Start));
                Assert.All(ranges, r => { Assert.True(r.End > r.Start); Assert.Equal(0, r.Start % blockSize); });
            }
        }
        Assert.Equal(new Shard(2, 3), Shard.Parse("2/3"));
        foreach (var bad in new[] { "3/3", "-1/2", "1", "a/b", "0/0" })
            Assert.StartsWith("--shard needs K/N", Assert.Throws<UsageException>(() => Shard.Parse(bad)).Message);
        var e = Assert.Throws<UsageException>(() => new Shard(0, 3).Points(200, 100, "carso"));
        Assert.Equal("--shard 0/3: carso has 200 points in 2 block(s) of BatchSize 100, fewer than 3 shards; use at most 2 shards, " +
                     "or a smaller BatchSize (it keys the randomness: compare only runs with the same BatchSize)", e.Message);
        Assert.Equal(new Shard(1, 2), CommandLine.Parse(["--shard", "1/2"], shardable: true).Shard);
        Assert.True(CommandLine.Parse(["--merge"], shardable: true).Merge);
        Assert.Contains("unknown option '--shard'", Assert.Throws<UsageException>(() => CommandLine.Parse(["--shard", "0/2"])).Message);
        Assert.Contains("--shard and --merge", Assert.Throws<UsageException>(() => CommandLine.Parse(["--shard", "0/2", "--merge"], shardable: true)).Message);
    }

    [Fact]
    public void TheMergeRefusesMissingDuplicatedForeignAndUnfinishedShardsNamingThem()
    {
        var (model, data) = ProtocolEvaluationTests.Setup(16);
        using var _ = data;
        using var dir = new TempFolder();
        var options = new EvaluationOptions(Seed: 4, BatchSize: 4);
        ProtocolResult Evaluate(Shard shard, string name = "test") =>
            ProtocolEvaluation.Run(model, data, Protocol.Of(name, Eps, _ => []), options with { Shard = shard });
        string Refusal(string folder, ShardIdentity? identity = null)
        {
            var e = Assert.Throws<ShardException>(() => Shards.MergeFolder(folder, identity ?? Identity()));
            Assert.IsAssignableFrom<IUserError>(e);
            return e.Message;
        }
        string Fresh(string name, Func<int, ShardIdentity>? identity = null, Func<Shard, ProtocolResult>? evaluate = null)
        {
            var folder = Path.Combine(dir.Path, name);
            RunShards(folder, 2, evaluate ?? (s => Evaluate(s)), identity);
            return folder;
        }

        Assert.Equal(16, Shards.MergeFolder(Fresh("whole"), Identity()).Single().Result.Points.Count);
        Assert.Contains("no shard records", Refusal(Path.Combine(dir.Path, "nothing")));

        var missing = Fresh("missing");
        Directory.Delete(Path.Combine(missing, "shard-1-of-2"), recursive: true);
        Assert.Contains("shard(s) 1/2 missing (no shard-1-of-2/shard.json)", Refusal(missing));

        var twice = Fresh("twice");
        Directory.CreateDirectory(Path.Combine(twice, "shard-0-of-2-copy"));
        File.Copy(Path.Combine(twice, "shard-0-of-2", Shards.RecordFile), Path.Combine(twice, "shard-0-of-2-copy", Shards.RecordFile));
        Assert.Contains("shard 0/2 is there twice", Refusal(twice));

        var split = Fresh("split");
        RunShards(Path.Combine(dir.Path, "split3"), 3, s => Evaluate(s));
        Directory.Move(Path.Combine(dir.Path, "split3", "shard-2-of-3"), Path.Combine(split, "shard-2-of-3"));
        Assert.Contains("belong to different splits", Refusal(split));

        var seed = Fresh("seed", k => k == 1 ? Identity(seed: 5) : Identity());
        Assert.Contains("shard 1/2 (", Refusal(seed));
        Assert.Contains("is from another run: seed 5 (here 4)", Refusal(seed));
        var code = Fresh("code", k => k == 0 ? Identity() with { Code = "sha256:0123abc" } : Identity());
        Assert.Contains("shard 0/2", Refusal(code));
        Assert.Contains("other code", Refusal(code));
        var model2 = Fresh("model", k => k == 0 ? Identity() with { Inputs = "other" } : Identity());
        Assert.Contains("another model or other input files", Refusal(model2));
        var protocol = Fresh("protocol", evaluate: s => Evaluate(s, s.Index == 0 ? "test" : "other"));
        Assert.Contains("cannot merge 'result': shards of different protocols", Refusal(protocol));

        // Unfinished: started (record incomplete) by a live process on this host, or by one that is gone.
        var running = Fresh("running");
        Shards.Begin(Path.Combine(running, "shard-1-of-2"), Identity(), new Shard(1, 2));
        Assert.Contains($"shard 1/2 ({Path.Combine(running, "shard-1-of-2", Shards.RecordFile)}) has not finished: it is still running (process {Environment.ProcessId}",
            Refusal(running));
        using (var gone = System.Diagnostics.Process.Start("true")!)
        {
            gone.WaitForExit();
            var path = Path.Combine(running, "shard-1-of-2", Shards.RecordFile);
            File.WriteAllText(path, JsonSerializer.Serialize(Shards.Load(path) with { Pid = gone.Id }, RunRecord.Json));
        }
        Assert.Contains("it died", Refusal(running));
        Assert.Contains("re-run that shard (it resumes from its state)", Refusal(running));

        // A shard folder of another run is not resumed by this one.
        var e = Assert.Throws<ShardException>(() => Shards.Begin(Path.Combine(seed, "shard-1-of-2"), Identity(), new Shard(1, 2)));
        Assert.Contains("belongs to another run (seed 5 (here 4))", e.Message);
    }
}
