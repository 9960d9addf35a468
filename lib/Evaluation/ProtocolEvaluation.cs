using System.Collections.Immutable;
using Carso.Attacks;
using Carso.Data;
using Carso.IO;
using Carso.Models;
using Carso.Runtime;
using static TorchSharp.torch;

namespace Carso.Evaluation;

/// <summary>How to run a protocol: the seed every generator is derived from, points per block, the device, where the
/// resumable state lives (null: not resumable), where log lines go, the progress display (a bar per attack), the
/// shard to evaluate (null: every point), and the identity of the run (settings, inputs, code; part of every saved
/// state's fingerprint, so a re-run with other attack budgets or another model never resumes a state it did not make).</summary>
public sealed record EvaluationOptions(long Seed = 0, int BatchSize = 100, Device? Device = null, string? StateDir = null,
    Action<string>? Log = null, Progress? Progress = null, Shard? Shard = null, string? Identity = null)
{
    /// <summary>The points [Start, End) of n this run evaluates: all of them, or the shard's whole blocks.</summary>
    public (int Start, int End) PointRange(int n, string what = "the evaluation") =>
        Shard?.Points(n, BatchSize, what) ?? (0, n);
}

/// <summary>
/// The one evaluation driver: runs any <see cref="Protocol"/> on any model (deterministic or stochastic).
///
/// Points are cut into fixed blocks of BatchSize consecutive points. An attack runs, block by block, on the points of
/// the block still robust in its family; every random draw — the model's (e.g. CARSO's latents), the attack's (random
/// starts, Square) — comes from a generator derived from (seed, purpose, block), so a point's fate depends only on the
/// seed and its block, never on torch's global generator, on other work in the process, or on an interruption.
/// Resumable: each family's state (immutable; every step returns a new one) is saved after every block.
/// Sharded (options.Shard): only the shard's blocks run, each keyed by its GLOBAL block index, and the result covers the
/// shard's points under their global indices, so merging the shards' results (<see cref="Shards.Merge(IReadOnlyList{ProtocolResult})"/>)
/// gives the unsharded result point for point.
/// </summary>
public static class ProtocolEvaluation
{
    /// <summary>A family's progress: per point the index of the attack that broke it (-1: none), its perturbation norm,
    /// the attack running, the blocks it has finished, the stages done, the judge's non-finite outputs, the gradient
    /// monitor's counts and the seconds spent (summed across resumes).</summary>
    public sealed record FamilyState(string Fingerprint, ImmutableArray<int> BrokenBy, ImmutableArray<double> Norms,
        int Attack, int BlocksDone, ImmutableArray<int> Queue, ImmutableList<AttackStage> Stages, long NonFiniteOutputs,
        AttackMonitor.Counts Monitor, double Seconds, double StageSeconds)
    {
        public static FamilyState Start(string fingerprint, int n) => new(fingerprint, [.. Enumerable.Repeat(-1, n)],
            [.. new double[n]], 0, 0, [], [], 0, AttackMonitor.Counts.Zero, 0, 0);

        public bool Done(int attacks) => Attack >= attacks;
    }

    /// <summary>What one block of one attack found: per attacked point, whether the judge was fooled and the norm.</summary>
    public sealed record BlockOutcome(int[] Points, bool[] Fooled, double[] Norms, long NonFiniteOutputs, AttackMonitor.Counts Monitor, double Seconds);

    public static ProtocolResult Run(Func<Tensor, Tensor> model, Dataset data, Protocol protocol, EvaluationOptions options) =>
        Run(StochasticModels.Fixed(model), data, protocol, options);

    public static ProtocolResult Run(StochasticModel model, Dataset allData, Protocol protocol, EvaluationOptions options)
    {
        var log = options.Log ?? (_ => { });
        if (allData.Count == 0) throw new ArgumentException($"{protocol.Name}: no points to evaluate ({allData.Name} is empty)");
        if (options.BatchSize < 1) throw new ArgumentException($"{protocol.Name}: BatchSize must be >= 1, got {options.BatchSize}");
        if (options.StateDir is not null) Directory.CreateDirectory(options.StateDir);
        // The shard's points (all of them unsharded); first: the global index of its first point, on a block boundary.
        var (first, end) = options.PointRange((int)allData.Count, protocol.Name);
        using var part = options.Shard is null ? null : allData.Range(first, end - first);
        var data = part ?? allData;
        var firstBlock = first / options.BatchSize;
        var n = (int)data.Count;
        if (options.Shard is { } shard) log($"{protocol.Name}: shard {shard}, points {first} to {end - 1} of {allData.Count}");

        var (cleanCorrect, cleanNonFinite) = JudgeBlocks(model, data, data.Images, options, "clean", firstBlock);
        var clean = Accuracy.Of(cleanCorrect.Count(c => c), n);
        log($"{protocol.Name}: clean accuracy {clean}");

        var robust = cleanCorrect.ToArray();        // the per-point worst case so far
        var brokenBy = new string?[n];
        var brokenAttack = new string?[n];
        var norms = new double?[n];
        var families = new List<FamilyResult>();
        var worstImages = data.Images.clone();
        var resumed = false;

        void Merge(string family, bool[] survived, Func<int, string?> attack, Func<int, double> norm, Tensor images)
        {
            var newlyBroken = Enumerable.Range(0, n).Where(i => robust[i] && !survived[i]).ToArray();
            foreach (var i in newlyBroken) { robust[i] = false; brokenBy[i] = family; brokenAttack[i] = attack(i); norms[i] = norm(i); }
            if (newlyBroken.Length == 0) return;
            using var index = tensor(newlyBroken.Select(i => (long)i).ToArray());
            worstImages.index_copy_(0, index, images.index_select(0, index));
        }

        if (protocol.Transfer is { } transferSet)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            using var transferAll = transferSet.For(allData, protocol.Threat);
            using var transfer = transferAll.narrow(0, first, n);
            var (correct, nonFinite) = JudgeBlocks(model, data, transfer, options, Protocol.TransferName, firstBlock);
            var survived = correct.Zip(cleanCorrect, (a, b) => a && b).ToArray();
            var transferNorms = PointNorms(transfer, data.Images, protocol.Threat);
            var result = new FamilyResult(Protocol.TransferName, $"transfer of {transferSet.Spec.MadeBy} ({System.IO.Path.GetFileName(transferSet.Path)})",
                Accuracy.Of(survived.Count(s => s), n), [], transferNorms.DefaultIfEmpty(0).Max(), nonFinite,
                AttackMonitor.Counts.Zero, clock.Elapsed.TotalSeconds, BrokenPoints(cleanCorrect, survived, first));
            families.Add(result);
            Merge(Protocol.TransferName, survived, _ => null, i => transferNorms[i], transfer);
            log($"{Protocol.TransferName}: robust accuracy {result.Robust}");
        }

        foreach (var family in protocol.Families)
        {
            log($"{family.Name}: {family.Description}");
            var (state, images, familyResumed) = RunFamily(model, data, protocol, family, cleanCorrect, options, log, firstBlock);
            resumed |= familyResumed;
            var names = family.AttackNames;
            var survived = Enumerable.Range(0, n).Select(i => cleanCorrect[i] && state.BrokenBy[i] < 0).ToArray();
            var result = new FamilyResult(family.Name, family.Description, Accuracy.Of(survived.Count(s => s), n), state.Stages,
                state.Norms.Where((_, i) => state.BrokenBy[i] >= 0).DefaultIfEmpty(0).Max(), state.NonFiniteOutputs, state.Monitor,
                state.Seconds, BrokenPoints(cleanCorrect, survived, first));
            families.Add(result);
            Merge(family.Name, survived, i => names[state.BrokenBy[i]], i => state.Norms[i], images);
            images.Dispose();
            log($"{family.Name}: robust accuracy {result.Robust}; worst case so far {Accuracy.Of(robust.Count(r => r), n)}");
        }

        var labels = data.Labels.cpu().data<long>().ToArray();
        var points = Enumerable.Range(0, n)
            .Select(i => new PointRecord(first + i, labels[i], cleanCorrect[i], brokenBy[i], norms[i], brokenAttack[i])).ToArray();
        if (part is not null)
        {
            // A shard's images cover all of allData like an unsharded run's: the clean image outside the shard.
            var all = allData.Images.clone();
            all.narrow(0, first, n).copy_(worstImages);
            worstImages.Dispose();
            worstImages = all;
        }
        return new ProtocolResult(protocol.Name, protocol.Threat, clean, cleanNonFinite, families,
            Accuracy.Of(robust.Count(r => r), n), points, resumed) { WorstCaseImages = worstImages };
    }

    /// <summary>The clean-correct points a family did not leave robust, by global index (first: the shard's first point).</summary>
    static int[] BrokenPoints(bool[] cleanCorrect, bool[] survived, int first) =>
        Enumerable.Range(0, cleanCorrect.Length).Where(i => cleanCorrect[i] && !survived[i]).Select(i => first + i).ToArray();

    /// <summary>Runs one family to the end (or resumes it), saving after every block; returns its final state and its
    /// adversarial images [N, C, H, W] (the clean image where no attack succeeded), owned by the caller.</summary>
    static (FamilyState State, Tensor Images, bool Resumed) RunFamily(StochasticModel model, Dataset data, Protocol protocol,
        AttackFamily family, bool[] cleanCorrect, EvaluationOptions options, Action<string> log, int firstBlock)
    {
        var n = (int)data.Count;
        var names = family.AttackNames;
        var fingerprint = $"{protocol.Name}|{family.Name}|{string.Join(",", names)}|{protocol.Threat}|{data.Name}|n={n}|seed={options.Seed}|block={options.BatchSize}" +
                          (options.Shard is null ? "" : $"|shard={options.Shard}|firstBlock={firstBlock}") +
                          (options.Identity is null ? "" : $"|run={options.Identity}");
        var stateFile = options.StateDir is null ? null : System.IO.Path.Combine(options.StateDir, family.Name + ".json");
        var images = data.Images.clone();
        var saved = stateFile is null ? null : EvaluationStateFiles.Load<FamilyState>(stateFile, fingerprint, s => s.Fingerprint, images);
        if (saved is not null) log($"  resumed from {stateFile}: attack {saved.Attack + 1}/{names.Count}, block {saved.BlocksDone}");
        var state = saved ?? FamilyState.Start(fingerprint, n);
        var blocks = (n + options.BatchSize - 1) / options.BatchSize;

        while (!state.Done(names.Count))
        {
            if (state.BlocksDone == 0 && state.Queue.IsEmpty)
                state = state with { Queue = [.. Enumerable.Range(0, n).Where(i => cleanCorrect[i] && state.BrokenBy[i] < 0)] };
            using var bar = (options.Progress ?? Progress.None).Start($"{family.Name}: {names[state.Attack]} (points)", state.Queue.Length);
            bar.Advance(state.Queue.Count(i => i < state.BlocksDone * options.BatchSize)); // blocks done before a resume
            for (var block = state.BlocksDone; block < blocks; block++)
            {
                var (start, end) = (block * options.BatchSize, Math.Min(n, (block + 1) * options.BatchSize));
                var points = state.Queue.Where(i => i >= start && i < end).ToArray();
                var outcome = points.Length == 0 ? null : AttackBlock(model, data, protocol, family, state.Attack, firstBlock + block, points, images, options);
                var attackName = names[state.Attack];
                state = Step(state, outcome, blocks, attackName);
                bar.Advance(points.Length);
                if (stateFile is not null) EvaluationStateFiles.Save(stateFile, state, images);
                if (outcome is not null)
                    log($"  {attackName}: block {block + 1}/{blocks} ({points.Length} points), {outcome.Fooled.Count(f => f)} broken, {outcome.Seconds:F1} s");
            }
            var stage = state.Stages[^1];
            log($"  after {stage.Attack}: robust accuracy {stage.RobustAfter} ({stage.PointsBroken} of {stage.PointsAttacked} attacked points broken, {stage.Seconds:F0} s)");
        }
        return (state, images, saved is not null);
    }

    /// <summary>One step of a family: the outcome of one block (null: no point of the block to attack) folded into a new
    /// state; after the last block the attack's stage is recorded and the next attack starts with an empty queue.</summary>
    public static FamilyState Step(FamilyState state, BlockOutcome? outcome, int blocks, string attackName)
    {
        var next = state;
        if (outcome is not null)
        {
            var brokenBy = state.BrokenBy.ToBuilder();
            var norms = state.Norms.ToBuilder();
            for (var k = 0; k < outcome.Points.Length; k++)
                if (outcome.Fooled[k]) { brokenBy[outcome.Points[k]] = state.Attack; norms[outcome.Points[k]] = outcome.Norms[k]; }
            next = state with
            {
                BrokenBy = brokenBy.ToImmutable(), Norms = norms.ToImmutable(),
                NonFiniteOutputs = state.NonFiniteOutputs + outcome.NonFiniteOutputs,
                Monitor = state.Monitor + outcome.Monitor,
                Seconds = state.Seconds + outcome.Seconds, StageSeconds = state.StageSeconds + outcome.Seconds,
            };
        }
        if (next.BlocksDone + 1 < blocks) return next with { BlocksDone = next.BlocksDone + 1 };
        // The queue of an attack is exactly the family's survivors before it: robust after it = queued - broken.
        var broken = next.Queue.Count(i => next.BrokenBy[i] == next.Attack);
        var stage = new AttackStage(attackName, next.Queue.Length, broken, Accuracy.Of(next.Queue.Length - broken, next.BrokenBy.Length),
            next.StageSeconds);
        return next with { Attack = next.Attack + 1, BlocksDone = 0, Queue = [], Stages = next.Stages.Add(stage), StageSeconds = 0 };
    }

    /// <summary>Attack `attack` of the family on the given points of one block (its global index: the key of its generators),
    /// judged by the model.</summary>
    static BlockOutcome AttackBlock(StochasticModel model, Dataset data, Protocol protocol, AttackFamily family, int attack, int block,
        int[] points, Tensor images, EvaluationOptions options)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var device = options.Device ?? CPU;
        using var scope = NewDisposeScope();
        var monitor = new AttackMonitor();
        var namedAttack = family.Attacks(monitor)[attack];
        var index = tensor(points.Select(i => (long)i).ToArray());
        var x = data.Images.index_select(0, index).to(device);
        var y = data.Labels.index_select(0, index).to(device);
        var purpose = $"{protocol.Name}/{family.Name}/{attack}";
        using var attackGenerator = Seeds.Generator(options.Seed, purpose + "/attack", device, block);
        using var judgeGenerator = Seeds.Generator(options.Seed, purpose + "/judge", device, block);
        var target = family.Target ?? model;
        var xAdv = namedAttack.Run(target.Bind(attackGenerator), x, y, attackGenerator).detach();
        using (no_grad())
        {
            var outputs = model(xAdv, judgeGenerator);
            var nonFinite = outputs.isfinite().all(1).logical_not().sum().item<long>();
            var fooledMask = outputs.argmax(1).ne(y).cpu();
            var norms = Projection.NormOf((xAdv - x).cpu(), protocol.Threat.Norm).data<float>().Select(v => (double)v).ToArray();
            var rows = fooledMask.nonzero().squeeze(1);                    // positions in the block of the points it fooled
            if (rows.numel() > 0) images.index_copy_(0, index.index_select(0, rows), xAdv.cpu().index_select(0, rows));
            return new BlockOutcome(points, fooledMask.data<bool>().ToArray(), norms, nonFinite, monitor.Snapshot(), clock.Elapsed.TotalSeconds);
        }
    }

    /// <summary>Per point whether the model classifies images[i] as data's label i, and the count of points with a
    /// non-finite output; block by block, each block's randomness from (seed, purpose, block). Sharded (options.Shard): the
    /// shard's points only (per point of the shard, in order).</summary>
    public static (bool[] Correct, long NonFinite) Judge(StochasticModel model, Dataset data, Tensor images, EvaluationOptions options, string purpose)
    {
        var (first, end) = options.PointRange((int)data.Count, purpose);
        if (options.Shard is null) return JudgeBlocks(model, data, images, options, purpose, 0);
        using var part = data.Range(first, end - first);
        using var partImages = images.narrow(0, first, end - first);
        return JudgeBlocks(model, part, partImages, options, purpose, first / options.BatchSize);
    }

    /// <summary>Judge on points whose first block has the global index firstBlock (the key of its generator).</summary>
    static (bool[] Correct, long NonFinite) JudgeBlocks(StochasticModel model, Dataset data, Tensor images, EvaluationOptions options,
        string purpose, int firstBlock)
    {
        var device = options.Device ?? CPU;
        var n = (int)data.Count;
        var correct = new bool[n];
        long nonFinite = 0;
        for (int block = 0, start = 0; start < n; block++, start += options.BatchSize)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var size = Math.Min(options.BatchSize, n - start);
            using var generator = Seeds.Generator(options.Seed, purpose, device, firstBlock + block);
            var outputs = model(images.narrow(0, start, size).to(device), generator);
            nonFinite += outputs.isfinite().all(1).logical_not().sum().item<long>();
            var ok = outputs.argmax(1).eq(data.Labels.narrow(0, start, size).to(device)).cpu().data<bool>().ToArray();
            Array.Copy(ok, 0, correct, start, size);
        }
        return (correct, nonFinite);
    }

    static double[] PointNorms(Tensor images, Tensor clean, Threat threat)
    {
        using var scope = NewDisposeScope();
        return Projection.NormOf(images.cpu() - clean.cpu(), threat.Norm).data<float>().Select(v => (double)v).ToArray();
    }
}
