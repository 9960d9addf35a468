using Carso.IO;
using System.Text.Json;
using Carso.Attacks;
using Carso.Data;
using Carso.Reporting;
using static TorchSharp.torch;

namespace Carso.Evaluation;

/// <summary>One test point's fate: clean correctness, the first attack that broke it (null: robust to all, or
/// misclassified clean), and the norm of the perturbation that broke it.</summary>
public sealed record PointRecord(long Index, long Label, bool CleanCorrect, string? BrokenBy, double? PerturbationNorm);

/// <summary>Robust accuracy after an attack of the list (cumulative: per-point worst case so far).</summary>
public sealed record AttackStage(string Attack, int PointsAttacked, int PointsBroken, Accuracy RobustAfter, double Seconds);

public sealed record EvaluationResult(
    Threat Threat,
    Accuracy Clean,
    Accuracy Robust,
    IReadOnlyList<AttackStage> Stages,
    IReadOnlyList<PointRecord> Points,
    double MaxPerturbationNorm,
    long NonFiniteAdversarialValues,
    double AdversarialMin,
    double AdversarialMax,
    AttackMonitor.Counts Monitor,
    bool Resumed);

/// <summary>
/// Robust accuracy as the per-point worst case over an ordered list of attacks (AutoAttack's protocol):
/// each attack runs only on the points still robust; after it, one forward pass marks the points it broke.
/// Resumable: the state (per-point status, adversarial images, progress) is saved atomically after every
/// batch; the randomness of each batch comes from a generator seeded by (seed, attack, batch), so a resumed
/// evaluation gives the same result as an uninterrupted one.
/// </summary>
public static class RobustEvaluation
{
    /// <summary>The resumable state. AttackQueue[i] lists the points attack i runs on (fixed when it starts).</summary>
    public sealed record State(
        string Fingerprint, bool[] CleanCorrect, int[] BrokenBy, double[] Norms,
        List<int[]> AttackQueue, int CurrentAttack, int BatchesDone, List<AttackStage> Stages, double StageSeconds);

    public static EvaluationResult Run(
        Func<Tensor, Tensor> model, Dataset data, Threat threat, IReadOnlyList<NamedAttack> attacks,
        int batchSize = 500, long seed = 0, string? stateFile = null, Action<string>? log = null,
        AttackMonitor? monitor = null, Device? device = null)
    {
        log ??= _ => { };
        device ??= CPU;
        monitor ??= new AttackMonitor();
        var n = (int)data.Count;
        var fingerprint = $"{data.Name}|n={n}|{threat}|{string.Join(",", attacks.Select(a => a.Name))}|seed={seed}|batch={batchSize}";
        var advFile = stateFile is null ? null : stateFile + ".adv";
        var (state, adversarial, resumed) = LoadOrStart(stateFile, advFile, fingerprint, data);
        if (resumed) log($"resumed from {stateFile}: attack {state.CurrentAttack + 1}/{attacks.Count}, batch {state.BatchesDone}");

        if (!resumed)
        {
            var clean = Evaluate.PerPointCorrect(model, data, batchSize, device: device);
            state = state with { CleanCorrect = clean.data<bool>().ToArray() };
            clean.Dispose();
            Save(stateFile, advFile, state, adversarial);
        }
        var cleanAccuracy = Accuracy.Of(state.CleanCorrect.Count(c => c), n);
        log($"clean accuracy {cleanAccuracy}");

        for (var a = state.CurrentAttack; a < attacks.Count; a++)
        {
            var attack = attacks[a];
            if (state.AttackQueue.Count <= a)
            {
                var queue = Enumerable.Range(0, n).Where(i => state.CleanCorrect[i] && state.BrokenBy[i] < 0).ToArray();
                state.AttackQueue.Add(queue);
                state = state with { CurrentAttack = a, BatchesDone = 0, StageSeconds = 0 };
            }
            var points = state.AttackQueue[a];
            var batches = (points.Length + batchSize - 1) / batchSize;
            for (var b = state.BatchesDone; b < batches; b++)
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                using var scope = NewDisposeScope();
                var idx = points.Skip(b * batchSize).Take(batchSize).ToArray();
                var indexTensor = tensor(idx.Select(i => (long)i).ToArray());
                var x = data.Images.index_select(0, indexTensor).to(device);
                var y = data.Labels.index_select(0, indexTensor).to(device);
                var batchSeed = BatchSeed(seed, a, b);
                random.manual_seed(batchSeed); // stochastic models draw from the global generator
                using var generator = new Generator((ulong)batchSeed, device);
                var xAdv = attack.Run(model, x, y, generator).detach();
                using (no_grad())
                {
                    var fooled = model(xAdv).argmax(1).ne(y).cpu().data<bool>().ToArray();
                    var norms = Projection.NormOf((xAdv - x).cpu(), threat.Norm).data<float>().ToArray();
                    var advCpu = xAdv.cpu();
                    for (var k = 0; k < idx.Length; k++)
                    {
                        if (!fooled[k]) continue;
                        state.BrokenBy[idx[k]] = a;
                        state.Norms[idx[k]] = norms[k];
                        adversarial[idx[k]].copy_(advCpu[k]);
                    }
                }
                state = state with { BatchesDone = b + 1, StageSeconds = state.StageSeconds + clock.Elapsed.TotalSeconds };
                Save(stateFile, advFile, state, adversarial);
                log($"  {attack.Name}: batch {b + 1}/{batches} ({idx.Length} points), robust so far {Robust(state, n)}");
            }
            var broken = points.Count(i => state.BrokenBy[i] == a);
            var stage = new AttackStage(attack.Name, points.Length, broken, Robust(state, n), state.StageSeconds);
            state.Stages.Add(stage);
            state = state with { CurrentAttack = a + 1, BatchesDone = 0, StageSeconds = 0 };
            Save(stateFile, advFile, state, adversarial);
            log($"after {attack.Name}: robust accuracy {stage.RobustAfter} ({broken} of {points.Length} attacked points broken, {stage.Seconds:F0} s)");
        }

        var labels = data.Labels.data<long>().ToArray();
        var records = Enumerable.Range(0, n).Select(i => new PointRecord(
            i, labels[i], state.CleanCorrect[i],
            state.BrokenBy[i] >= 0 ? attacks[state.BrokenBy[i]].Name : null,
            state.BrokenBy[i] >= 0 ? state.Norms[i] : null)).ToArray();
        using var finalScope = NewDisposeScope();
        var delta = (adversarial - data.Images);
        var result = new EvaluationResult(threat, cleanAccuracy, Robust(state, n), state.Stages, records,
            Projection.NormOf(delta, threat.Norm).max().item<float>(),
            adversarial.isfinite().logical_not().sum().item<long>(),
            adversarial.min().item<float>(), adversarial.max().item<float>(), monitor.Snapshot(), resumed);
        adversarial.Dispose();
        return result;
    }

    /// <summary>The adversarial images of a finished evaluation's state ([N, C, H, W]: the clean image where no attack succeeded).</summary>
    public static Tensor LoadAdversarial(string stateFile, Dataset data)
    {
        var adv = data.Images.clone();
        ReadAdversarial(stateFile + ".adv", adv);
        return adv;
    }

    public static long BatchSeed(long seed, int attack, int batch) => unchecked(seed * 1_000_003L + attack * 10_007L + batch);

    static Accuracy Robust(State state, int n) =>
        Accuracy.Of(Enumerable.Range(0, n).Count(i => state.CleanCorrect[i] && state.BrokenBy[i] < 0), n);

    static (State, Tensor, bool) LoadOrStart(string? stateFile, string? advFile, string fingerprint, Dataset data)
    {
        var n = (int)data.Count;
        var fresh = new State(fingerprint, new bool[n], Enumerable.Repeat(-1, n).ToArray(), new double[n], [], 0, 0, [], 0);
        var adversarial = data.Images.clone();
        if (stateFile is null || !File.Exists(stateFile)) return (fresh, adversarial, false);
        State state;
        try
        {
            state = JsonSerializer.Deserialize<State>(File.ReadAllText(stateFile), RunRecord.Json) ?? throw new JsonException("empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{stateFile}: not a valid evaluation state ({e.Message}); delete it to start over", e);
        }
        if (state.Fingerprint != fingerprint)
            throw new InvalidOperationException(
                $"{stateFile} belongs to another evaluation:\n  saved:   {state.Fingerprint}\n  current: {fingerprint}\n" +
                "use another state file, or delete it to start over");
        ReadAdversarial(advFile!, adversarial);
        return (state, adversarial, true);
    }

    static void Save(string? stateFile, string? advFile, State state, Tensor adversarial)
    {
        if (stateFile is null) return;
        // Images first, then the state that points into them: a kill between the two loses at most one batch.
        var bytes = new byte[adversarial.numel() * sizeof(float)];
        Buffer.BlockCopy(adversarial.contiguous().data<float>().ToArray(), 0, bytes, 0, bytes.Length);
        AtomicFile.WriteAllBytes(advFile!, bytes);
        AtomicFile.WriteAllText(stateFile, JsonSerializer.Serialize(state, RunRecord.Json));
    }

    static void ReadAdversarial(string advFile, Tensor into)
    {
        var bytes = File.ReadAllBytes(advFile);
        if (bytes.Length != into.numel() * sizeof(float))
            throw new InvalidDataException($"{advFile}: {bytes.Length} bytes, expected {into.numel() * sizeof(float)} for images [{string.Join(", ", into.shape)}]");
        var floats = new float[into.numel()];
        Buffer.BlockCopy(bytes, 0, floats, 0, bytes.Length);
        using var loaded = tensor(floats, into.shape);
        into.copy_(loaded);
    }
}
