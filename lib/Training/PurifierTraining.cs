using Carso.Defence;
using Carso.IO;
using Carso.Attacks;
using Carso.Data;
using Carso.Evaluation;
using Carso.Models;
using Carso.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Training;

/// <summary>
/// Settings of purifier training (CARSO). Defaults follow the reference recipe scaled to Fashion-MNIST on a CPU:
/// half of each batch adversarial (FGSM and PGD-40, step 0.01, random start, at eps/2 and eps, a quarter each),
/// precomputed against the frozen classifier for the whole training set every <see cref="AdversarialRefreshEpochs"/>
/// epochs; Adam (the reference: RAdam, see Optimizer) in Lookahead (k 6, alpha 0.8); learning rate warm-up over the
/// first 12.5% of training, flat for the next 12.5%, then a linear anneal to 0 (or the 2023 reference's triangular
/// cycle, <see cref="LrSchedule"/>); beta 0 for the first 12.5% of the epochs, then a linear ramp to BetaMax over 4%.
/// </summary>
public sealed record PurifierTrainingSettings
{
    public Threat Threat { get; init; } = Threat.Linf(0.1);
    public double AdversarialFraction { get; init; } = 0.5;
    public int PgdSteps { get; init; } = 40;
    public double PgdStepSize { get; init; } = 0.01;
    public int Epochs { get; init; } = 8;
    public int BatchSize { get; init; } = 128;
    /// <summary>The peak learning rate (of either schedule).</summary>
    public double LearningRate { get; init; } = 1e-3;
    /// <summary>The optimiser inside Lookahead. The reference uses RAdam. TorchSharp 0.107's RAdam did not train the
    /// purifier (BCE stuck near 500 per image after 100 steps with beta 0, where Adam reached 240): its rectified step
    /// is multiplied by the learning rate twice. PurifierOptimizer.RAdam is Carso's <see cref="Carso.Training.RAdam"/>,
    /// which matches PyTorch's (tests/Training/RAdamTests.cs).</summary>
    public PurifierOptimizer Optimizer { get; init; } = PurifierOptimizer.Adam;
    public Lookahead.Settings Lookahead { get; init; } = new(K: 6, Alpha: 0.8);
    public PurifierLrSchedule LrSchedule { get; init; } = PurifierLrSchedule.WarmupFlatAnneal;
    public double WarmupFraction { get; init; } = 0.125;
    public double FlatFraction { get; init; } = 0.125;
    /// <summary>Triangular: the learning rate at the first and the last epoch (the reference's CyclicLR base_lr).</summary>
    public double MinLearningRate { get; init; } = 5e-9;
    /// <summary>Triangular: the fraction of the epochs spent rising to LearningRate (the reference: a third).</summary>
    public double TriangularUpFraction { get; init; } = 1.0 / 3;
    public double BetaZeroFraction { get; init; } = 0.125;
    public double BetaRampFraction { get; init; } = 0.04;
    public double BetaMax { get; init; } = 1.0;
    /// <summary>Free bits (Kingma et al. 2016): nats per latent dimension the KL term does not charge — the KL of each
    /// dimension (averaged over the batch) enters the loss as max(FreeBits, KL_j). 0: the plain KL, as the reference.</summary>
    public double FreeBits { get; init; } = 0;
    /// <summary>The two budgets of the training attacks, as multiples of Threat.Eps: FGSM and PGD at each (the 2023
    /// reference: eps/2 and eps; the 2025 CIFAR code: 2 eps and 4 eps).</summary>
    public double AttackEpsLow { get; init; } = 0.5;
    public double AttackEpsHigh { get; init; } = 1.0;
    /// <summary>The classifier is frozen, so its adversarial examples can be made for the whole training set at once and
    /// reused: every this many epochs they are made anew (with new random starts and a new choice of perturbed points).
    /// 1 perturbs each epoch's batches afresh, as the reference does per batch.</summary>
    public int AdversarialRefreshEpochs { get; init; } = 1;
    /// <summary>Held-out points evaluated each epoch (clean, and PGD against the classifier alone).</summary>
    public int EvalPoints { get; init; } = 500;
    public int EvalPgdSteps { get; init; } = 40;
    public int EvalBatchSize { get; init; } = 250;
    public CarsoSettings Defence { get; init; } = new();
    /// <summary>The seed of every random draw of the training (see <see cref="PurifierTraining"/>); not of the
    /// purifier's initialisation, which is the caller's.</summary>
    public long Seed { get; init; } = 0;

    /// <summary>WarmupFlatAnneal: the LR at training progress t in [0, 1] (counted in steps: a run of a few epochs still
    /// warms up within its first one).</summary>
    public double LearningRateAt(double t) =>
        t < WarmupFraction ? LearningRate * (t + 1e-3) / WarmupFraction
        : t < WarmupFraction + FlatFraction ? LearningRate
        : LearningRate * Math.Max(0, (1 - t) / (1 - WarmupFraction - FlatFraction));

    /// <summary>Triangular: the LR of epoch e (0-based), as PyTorch's CyclicLR "triangular" stepped once per epoch:
    /// linear from MinLearningRate at epoch 0 to LearningRate at epoch up = floor(TriangularUpFraction * Epochs), then
    /// linear back to MinLearningRate at epoch Epochs.</summary>
    public double TriangularAt(int epoch)
    {
        var up = Math.Max(1, (int)(TriangularUpFraction * Epochs));
        var down = Math.Max(1, Epochs - up);
        return epoch <= up
            ? MinLearningRate + (LearningRate - MinLearningRate) * epoch / up
            : LearningRate - (LearningRate - MinLearningRate) * Math.Min(1, (epoch - up) / (double)down);
    }

    /// <summary>The LR of a step in epoch e (0-based) at training progress t in [0, 1].</summary>
    public double LearningRateAt(int epoch, double t) => LrSchedule switch
    {
        PurifierLrSchedule.WarmupFlatAnneal => LearningRateAt(t),
        PurifierLrSchedule.Triangular => TriangularAt(epoch),
        _ => throw new ArgumentOutOfRangeException(nameof(LrSchedule), $"unknown learning-rate schedule {LrSchedule}"),
    };

    /// <summary>The KL weight of epoch e (0-based), counted in epochs as the reference's beta scheduler: 0 for the first
    /// floor(BetaZeroFraction * Epochs) epochs, then a linear ramp reaching BetaMax after max(1, floor(BetaRampFraction *
    /// Epochs)) epochs. BetaZeroFraction = BetaRampFraction = 0 is the 2023 reference: BetaMax throughout.</summary>
    public double BetaAt(int epoch)
    {
        var lag = (int)(BetaZeroFraction * Epochs);
        var ramp = Math.Max(1, (int)(BetaRampFraction * Epochs));
        return epoch < lag ? 0 : BetaMax * Math.Min(1, (epoch - lag + 1) / (double)ramp);
    }

    /// <summary>The 2023 reference recipe for Fashion-MNIST (train_a_carso.py): adversarial fraction 0.4, RAdam in
    /// Lookahead (5 steps, alpha 0.8), triangular cyclic LR counted in epochs from 5e-9 up to 3e-5 * batch size over a
    /// third of the epochs, beta 1 throughout, 150 epochs at batch 1536. Threat, epochs and batch size are the caller's.</summary>
    public static PurifierTrainingSettings Published2023(int epochs, int batchSize) => new()
    {
        AdversarialFraction = 0.4, Epochs = epochs, BatchSize = batchSize,
        Optimizer = PurifierOptimizer.RAdam, Lookahead = new(K: 5, Alpha: 0.8),
        LrSchedule = PurifierLrSchedule.Triangular, LearningRate = 3e-5 * batchSize, MinLearningRate = 5e-9,
        BetaZeroFraction = 0, BetaRampFraction = 0, BetaMax = 1,
    };
}

/// <summary>WarmupFlatAnneal: the 2025 reference's warm-up, flat, linear anneal. Triangular: the 2023 reference's CyclicLR.</summary>
public enum PurifierLrSchedule { WarmupFlatAnneal, Triangular }

public enum PurifierOptimizer { Adam, RAdam }

/// <summary>One epoch of purifier training: schedules, mean BCE and KL per image, held-out accuracies, time, and the
/// latent's health and the VAE loss terms on the held-out points (see <see cref="LatentHealth"/>; zeros in records made
/// before they were logged). AdversarialSeconds: the part of Seconds spent making the adversarial training set.</summary>
public sealed record PurifierEpochMetrics(int Epoch, double LearningRate, double Beta, double Bce, double Kl,
    Accuracy ClassifierClean, Accuracy DefendedClean, Accuracy ClassifierPgd, Accuracy DefendedPgd, double Seconds,
    int ActiveUnits = 0, int LatentSize = 0, double SampleSpread = 0, double HeldOutBce = 0, double HeldOutKl = 0,
    double AdversarialSeconds = 0);

/// <summary>
/// Whether the purifier's latent carries information, on held-out points: ActiveUnits counts latent dimensions whose
/// encoder mean varies across inputs (Var_x[mu_j] above <see cref="PurifierTraining.ActiveUnitThreshold"/>, Burda et al.
/// 2016) out of LatentSize; SampleSpread is the mean over pixels of the standard deviation over the defence's N sampled
/// reconstructions of one input. A collapsed latent has no active unit and a spread near 0: the N samples are one image.
/// HeldOutBce and HeldOutKl: the two terms of the VAE loss per image on the clean held-out images (z from the posterior).
/// </summary>
public sealed record LatentHealth(int ActiveUnits, int LatentSize, double SampleSpread, double HeldOutBce, double HeldOutKl);

public sealed record PurifierTrainingResult(IReadOnlyList<PurifierEpochMetrics> History, bool Resumed);

/// <summary>
/// Purifier training (CARSO), resumable per epoch like <see cref="AdversarialTraining"/>. Randomness is explicit:
/// every draw comes from a generator derived by <see cref="Seeds"/> from (settings.Seed, purpose, epoch[, batch]),
/// never from torch's global generator, so the same seed gives the same purifier whatever else the process draws,
/// and a resumed epoch draws what it would have drawn. Purposes: "purifier-training/shuffle" (e) for the order of
/// epoch e; "purifier-training/mixed-batch" (e, b) for the random starts of the attacks on chunk b of the adversarial
/// training set made at epoch e (the chunks are epoch e's batches, so with AdversarialRefreshEpochs 1 every batch is
/// perturbed afresh, exactly as a per-batch attack would);
/// "purifier-training/reparameterise" (e, b) for its latent noise — a stream of its own, so a change to the attacks
/// (fraction, steps) leaves the noise alone; "purifier-training/held-out-pgd" and "purifier-training/held-out-latents"
/// for the held-out evaluation, the same in every epoch.
/// </summary>
public static class PurifierTraining
{
    const string ShufflePurpose = "purifier-training/shuffle";
    const string MixedBatchPurpose = "purifier-training/mixed-batch";
    const string ReparameterisePurpose = "purifier-training/reparameterise";
    const string HeldOutPgdPurpose = "purifier-training/held-out-pgd";
    const string HeldOutLatentsPurpose = "purifier-training/held-out-latents";

    /// <summary>
    /// The training input: the first AdversarialFraction of the batch perturbed against the frozen classifier,
    /// in four equal parts (FGSM and PGD at AttackEpsLow and AttackEpsHigh times eps: by default FGSM eps/2, FGSM eps,
    /// PGD eps/2, PGD eps), the rest clean. x: [B,C,H,W], y: [B].
    /// The PGD random starts come from <paramref name="generator"/> (torch's global one when null).
    /// Two attack calls with per-example eps (<see cref="Pgd.Attack"/>'s eps and stepSize): one FGSM step over both FGSM
    /// parts (step = each row's eps, no random start), one PGD call over both PGD parts (a single call over all four would
    /// spend PgdSteps steps on the FGSM rows too). The result is <see cref="MixedBatchSeparate"/>'s (the four calls),
    /// up to float rounding of the classifier's batched gradient; for Linf the random starts are the same numbers (the PGD
    /// parts draw one uniform per pixel in row order, as the two separate calls did; on the CPU generator).
    /// </summary>
    public static Tensor MixedBatch(Func<Tensor, Tensor> classifier, Tensor x, Tensor y, PurifierTrainingSettings settings, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        var b = (int)x.shape[0];
        var (adversarial, bounds, low, high) = Parts(b, settings);
        var parts = new List<Tensor>();
        // Rows [bounds[k], bounds[k + 2]) with the budget of part k (low) or k + 1 (high): k = 0 FGSM, k = 2 PGD.
        Tensor Budget(int k) => cat([
            full([bounds[k + 1] - bounds[k]], low.Eps, dtype: x.dtype, device: x.device),
            full([bounds[k + 2] - bounds[k + 1]], high.Eps, dtype: x.dtype, device: x.device)]);
        var fgsm = bounds[2] - bounds[0];
        if (fgsm > 0)
        {
            var eps = Budget(0);
            parts.Add(Fgsm.Attack(classifier, x.narrow(0, bounds[0], fgsm), y.narrow(0, bounds[0], fgsm),
                new FgsmSettings(settings.Threat, RandomStart: false), generator, eps: eps, stepSize: eps));
        }
        var pgd = bounds[4] - bounds[2];
        if (pgd > 0)
            parts.Add(Pgd.Attack(classifier, x.narrow(0, bounds[2], pgd), y.narrow(0, bounds[2], pgd),
                new PgdSettings(settings.Threat, settings.PgdSteps, settings.PgdStepSize), generator, eps: Budget(2)));
        if (b > adversarial) parts.Add(x.narrow(0, adversarial, b - adversarial));
        return cat(parts).detach().MoveToOuterDisposeScope();
    }

    /// <summary>The adversarial rows of a batch of b, the bounds of its four parts [5] (FGSM low, FGSM high, PGD low, PGD high:
    /// part k is rows [bounds[k], bounds[k + 1])), and the two budgets.</summary>
    static (int Adversarial, int[] Bounds, Threat Low, Threat High) Parts(int b, PurifierTrainingSettings settings)
    {
        var adversarial = (int)Math.Round(b * settings.AdversarialFraction);
        var bounds = Enumerable.Range(0, 5).Select(i => adversarial * i / 4).ToArray();
        return (adversarial, bounds, settings.Threat with { Eps = settings.Threat.Eps * settings.AttackEpsLow },
            settings.Threat with { Eps = settings.Threat.Eps * settings.AttackEpsHigh });
    }

    /// <summary>
    /// <see cref="MixedBatch"/> as four separate attack calls, one per part (FGSM low, FGSM high, PGD low, PGD high), as
    /// training made it before the batched form (commit a4f09db). Kept as the reference the batched form is tested and
    /// benchmarked against. x: [B,C,H,W], y: [B].
    /// </summary>
    public static Tensor MixedBatchSeparate(Func<Tensor, Tensor> classifier, Tensor x, Tensor y, PurifierTrainingSettings settings, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        var b = (int)x.shape[0];
        var (adversarial, bounds, low, high) = Parts(b, settings);
        var attacks = new Func<Tensor, Tensor, Tensor>[]
        {
            (xs, ys) => Fgsm.Attack(classifier, xs, ys, new FgsmSettings(low, StepSize: low.Eps, RandomStart: false), generator),
            (xs, ys) => Fgsm.Attack(classifier, xs, ys, new FgsmSettings(high, StepSize: high.Eps, RandomStart: false), generator),
            (xs, ys) => Pgd.Attack(classifier, xs, ys, new PgdSettings(low, settings.PgdSteps, settings.PgdStepSize), generator),
            (xs, ys) => Pgd.Attack(classifier, xs, ys, new PgdSettings(high, settings.PgdSteps, settings.PgdStepSize), generator),
        };
        var parts = new List<Tensor>();
        for (var k = 0; k < 4; k++)
        {
            var n = bounds[k + 1] - bounds[k];
            if (n > 0) parts.Add(attacks[k](x.narrow(0, bounds[k], n), y.narrow(0, bounds[k], n)));
        }
        if (b > adversarial) parts.Add(x.narrow(0, adversarial, b - adversarial));
        return cat(parts).detach().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The adversarial training set made at epoch <paramref name="epoch"/> against the frozen classifier: images [N, C, H, W]
    /// on the CPU, point i the perturbed or clean version of train.Images[i]. The points are cut into the batches of that
    /// epoch's order and each batch is a <see cref="MixedBatch"/> (its first AdversarialFraction perturbed, in four parts),
    /// its random starts from (Seed, "purifier-training/mixed-batch", epoch, batch).
    /// </summary>
    public static Tensor AdversarialSet(Func<Tensor, Tensor> classifier, Dataset train, PurifierTrainingSettings settings, int epoch, Device device)
    {
        var result = train.Images.clone();
        using var order = DatasetOps.Permutation(train.Count, Seeds.Derive(settings.Seed, ShufflePurpose, epoch));
        var batch = 0;
        for (long start = 0; start < train.Count; start += settings.BatchSize, batch++)
        {
            using var scope = NewDisposeScope();
            var idx = order.narrow(0, start, Math.Min(settings.BatchSize, train.Count - start));
            using var generator = Seeds.Generator(settings.Seed, MixedBatchPurpose, device, epoch, batch);
            var mixed = MixedBatch(classifier, train.Images.index_select(0, idx).to(device), train.Labels.index_select(0, idx).to(device), settings, generator);
            result.index_copy_(0, idx, mixed.cpu());
        }
        return result;
    }

    /// <summary>
    /// One step: representation of the mixed batch (classifier frozen, no gradient), conditioning, encoder on the
    /// same mixed batch (the classifier's own input, as in the reference), reparameterised z, decode, BCE (sum)
    /// against the clean image + beta * KL (both summed per image, averaged over the batch: Purifier.PurifierLoss).
    /// The reparameterisation noise comes from <paramref name="generator"/> (torch's global one when null).
    /// Returns (bce, kl) per image as 0-dim tensors.
    /// </summary>
    public static (Tensor Bce, Tensor Kl) Step(nn.Module<Tensor, Tensor> classifier, IReadOnlyList<string> layerNames, Purifier purifier,
        Lookahead optimizer, Tensor clean, Tensor mixed, double beta, Generator? generator = null, double freeBits = 0)
    {
        using var scope = NewDisposeScope();
        Tensor[] layers;
        using (no_grad()) layers = Representation.Capture(classifier, layerNames, mixed).Layers.Select(l => l.detach()).ToArray();
        purifier.train();
        optimizer.zero_grad();
        // The encoder sees the classifier's own input (the mixed batch), as in the reference; the target is the clean image.
        var (reconstruction, mu, logVar) = purifier.Reconstruct(layers, mixed, generator);
        var (total, bce, kl) = Purifier.PurifierLoss(reconstruction, clean, mu, logVar, beta, freeBits);
        total.backward();
        optimizer.step();
        return (bce.detach().MoveToOuterDisposeScope(), kl.detach().MoveToOuterDisposeScope());
    }

    /// <summary>The optimiser inside Lookahead. RAdam is Carso's <see cref="RAdam"/> (PyTorch's algorithm), not TorchSharp's,
    /// whose rectified step is lr times too short.</summary>
    public static optim.Optimizer CreateOptimizer(IEnumerable<TorchSharp.Modules.Parameter> parameters, PurifierTrainingSettings settings) =>
        settings.Optimizer switch
        {
            PurifierOptimizer.RAdam => new RAdam(parameters, settings.LearningRate),
            PurifierOptimizer.Adam => optim.Adam(parameters, settings.LearningRate),
            _ => throw new ArgumentOutOfRangeException(nameof(settings), $"unknown purifier optimiser {settings.Optimizer}"),
        };

    /// <summary>
    /// Trains the purifier for settings.Epochs epochs on <paramref name="train"/> (the classifier frozen), evaluating on
    /// <paramref name="validation"/> after each; with a checkpoint folder, resumes from its last complete epoch.
    /// The purifier's initial weights are the caller's: TorchSharp draws them from torch's global generator when the
    /// module is built (scripts seed it before building), and this function never touches that generator. Every draw
    /// here comes from generators derived from settings.Seed (see the class).
    /// </summary>
    public static PurifierTrainingResult Train(nn.Module<Tensor, Tensor> classifier, IReadOnlyList<string> layerNames, Purifier purifier,
        Dataset train, Dataset validation, PurifierTrainingSettings settings, string? checkpointFolder = null,
        Action<string>? log = null, Action<int, int>? progress = null, Device? device = null)
    {
        log ??= _ => { };
        device ??= CPU;
        classifier.eval();
        foreach (var p in classifier.parameters()) p.requires_grad_(false);
        var inner = CreateOptimizer(purifier.parameters(), settings);
        using var optimizer = new Lookahead(inner, purifier.parameters(), settings.Lookahead);
        var optimizerState = new OptimizerState(
            w => { ((TorchSharp.Modules.OptimizerHelper)inner).save_state_dict(w); optimizer.Save(w); },
            r => { ((TorchSharp.Modules.OptimizerHelper)inner).load_state_dict(r); optimizer.Load(r); });
        var checkpoint = checkpointFolder is null ? null : new TrainingCheckpoint<PurifierEpochMetrics>(checkpointFolder);
        var history = new List<PurifierEpochMetrics>();
        var resumed = false;
        if (checkpoint?.Load(purifier, optimizerState, settings) is { } state)
        {
            history.AddRange(state.History);
            resumed = true;
            log($"resumed from {checkpoint.Folder} after epoch {history.Count}");
        }
        using var evalSet = validation.Take(settings.EvalPoints);
        if (settings.AdversarialRefreshEpochs < 1)
            throw new ArgumentOutOfRangeException(nameof(settings), $"AdversarialRefreshEpochs must be >= 1, got {settings.AdversarialRefreshEpochs}");
        var stepsPerEpoch = (int)((train.Count + settings.BatchSize - 1) / settings.BatchSize);
        var totalSteps = (double)stepsPerEpoch * settings.Epochs;
        Tensor? adversarialSet = null;
        try
        {
            for (var epoch = history.Count; epoch < settings.Epochs; epoch++)
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                using var epochScope = NewDisposeScope();
                // The set of the current refresh round: made at its first epoch (also after a resume mid-round: it depends
                // on the seed and that epoch only).
                var madeAt = epoch / settings.AdversarialRefreshEpochs * settings.AdversarialRefreshEpochs;
                var adversarialSeconds = 0.0;
                if (adversarialSet is null || epoch == madeAt)
                {
                    adversarialSet?.Dispose();
                    adversarialSet = AdversarialSet(classifier.call, train, settings, madeAt, device).DetachFromDisposeScope();
                    adversarialSeconds = clock.Elapsed.TotalSeconds;
                    log($"adversarial training set made at epoch {madeAt + 1} in {adversarialSeconds:F0} s");
                }
                var bceSum = zeros(1, dtype: ScalarType.Float64, device: device);
                var klSum = zeros(1, dtype: ScalarType.Float64, device: device);
                var beta = settings.BetaAt(epoch);
                double lr = 0;
                using var order = DatasetOps.Permutation(train.Count, Seeds.Derive(settings.Seed, ShufflePurpose, epoch));
                for (var step = 0; step < stepsPerEpoch; step++)
                {
                    using var scope = NewDisposeScope();
                    var start = (long)step * settings.BatchSize;
                    var idx = order.narrow(0, start, Math.Min(settings.BatchSize, train.Count - start));
                    // A generator per batch: a batch's draws do not depend on how much earlier batches drew.
                    using var noiseGenerator = Seeds.Generator(settings.Seed, ReparameterisePurpose, device, epoch, step);
                    lr = settings.LearningRateAt(epoch, (epoch * stepsPerEpoch + step) / totalSteps);
                    Optimizers.SetLearningRate(inner, lr);
                    var x = train.Images.index_select(0, idx).to(device);
                    var mixed = adversarialSet.index_select(0, idx).to(device);
                    // Batch norm cannot normalise one point: a last batch of one is left out.
                    if (x.shape[0] > 1 || !purifier.Settings.BatchNorm)
                    {
                        var (bce, kl) = Step(classifier, layerNames, purifier, optimizer, x, mixed, beta, noiseGenerator, settings.FreeBits);
                        bceSum.add_(bce * x.shape[0]);
                        klSum.add_(kl * x.shape[0]);
                    }
                    progress?.Invoke(step + 1, stepsPerEpoch);
                }
                var (classifierClean, defendedClean, classifierPgd, defendedPgd) = EvaluateEpoch(classifier, layerNames, purifier, evalSet, settings, device);
                var health = Latent(classifier, layerNames, purifier, evalSet.Images, settings, device);
                var metrics = new PurifierEpochMetrics(epoch + 1, lr, beta, bceSum.item<double>() / train.Count, klSum.item<double>() / train.Count,
                    classifierClean, defendedClean, classifierPgd, defendedPgd, clock.Elapsed.TotalSeconds,
                    health.ActiveUnits, health.LatentSize, health.SampleSpread, health.HeldOutBce, health.HeldOutKl, adversarialSeconds);
                history.Add(metrics);
                log($"epoch {metrics.Epoch}/{settings.Epochs}: lr {lr:G3} beta {beta:G3} BCE {metrics.Bce:F2} KL {metrics.Kl:F2} per image " +
                    $"(held out: BCE {health.HeldOutBce:F2} KL {health.HeldOutKl:F2}), {health.ActiveUnits}/{health.LatentSize} active units, " +
                    $"sample spread {health.SampleSpread:G3} | held-out clean: classifier {classifierClean}, CARSO {defendedClean} | " +
                    $"PGD-{settings.EvalPgdSteps} on the classifier: classifier {classifierPgd}, CARSO {defendedPgd} | {metrics.Seconds:F0} s");
                checkpoint?.Save(purifier, optimizerState, settings, history, isBest: true);
            }
        }
        finally { adversarialSet?.Dispose(); }
        return new PurifierTrainingResult(history, resumed);
    }

    /// <summary>The dataset with every image replaced by its PGD example against the given model (on the CPU). The random
    /// starts come from <paramref name="generator"/> (on <paramref name="device"/>; torch's global one when null).</summary>
    public static Dataset TransferSet(Func<Tensor, Tensor> model, Dataset data, PgdSettings pgd, int batchSize, Device device, Generator? generator = null)
    {
        var parts = new List<Tensor>();
        foreach (var (images, labels) in data.Batches(batchSize))
        {
            using var scope = NewDisposeScope();
            using var batchImages = images;
            using var batchLabels = labels;
            parts.Add(Pgd.Attack(model, images.to(device), labels.to(device), pgd, generator).cpu().MoveToOuterDisposeScope());
        }
        var all = cat(parts);
        foreach (var p in parts) p.Dispose();
        return data with { Name = data.Name + "/pgd", Images = all, Labels = data.Labels.clone() };
    }

    /// <summary>A latent unit is active when the variance of its encoder mean across inputs exceeds this (Burda et al. 2016).</summary>
    public const double ActiveUnitThreshold = 0.01;

    /// <summary>Active latent units among [B, LatentSize] encoder means: dimensions whose variance over the B inputs exceeds
    /// <see cref="ActiveUnitThreshold"/>.</summary>
    public static int ActiveUnits(Tensor mu)
    {
        using var scope = NewDisposeScope();
        return (int)mu.detach().var(0).gt(ActiveUnitThreshold).sum().item<long>();
    }

    /// <summary>Mean over pixels of the standard deviation over samples of reconstructions [B, N, C, H, W] (0 when N = 1).</summary>
    public static double SampleSpread(Tensor reconstructions)
    {
        using var scope = NewDisposeScope();
        return reconstructions.shape[1] < 2 ? 0 : reconstructions.detach().std(1).mean().item<float>();
    }

    /// <summary>The latent's health on held-out images [B, C, H, W] (clean), in eval mode: the encoder means for the active
    /// units, the VAE loss terms with z drawn from the posterior, the defence's N samples (settings.Defence, at least 2) for
    /// the spread; every draw from a generator derived from settings.Seed.</summary>
    public static LatentHealth Latent(nn.Module<Tensor, Tensor> classifier, IReadOnlyList<string> layerNames, Purifier purifier,
        Tensor images, PurifierTrainingSettings settings, Device device)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        purifier.eval();
        using var generator = Seeds.Generator(settings.Seed, "purifier-training/latent-health", device);
        var x = images.to(device);
        var (_, layers) = Representation.Capture(classifier, layerNames, x);
        var c = purifier.Condition(layers);
        var (mu, logVar) = purifier.Encode(x, c);
        var (_, heldOutBce, heldOutKl) = Purifier.PurifierLoss(purifier.Decode(Purifier.Reparameterise(mu, logVar, generator), c), x, mu, logVar, 1.0);
        // The defence's N samples (at least 2: a spread needs two), always sampled.
        var carso = new CarsoModel(classifier, purifier, layerNames,
            settings.Defence with { Differentiable = false, Deterministic = false, Samples = Math.Max(2, settings.Defence.Samples) });
        // The spread over chunks of whole points (B * N reconstructions at once would not fit), weighted by their sizes.
        var chunk = Math.Max(1, carso.Settings.MaxReconstructions / carso.Settings.Samples);
        double spread = 0;
        for (long start = 0; start < x.shape[0]; start += chunk)
        {
            using var inner = NewDisposeScope();
            var part = x.narrow(0, start, Math.Min(chunk, x.shape[0] - start));
            spread += SampleSpread(carso.Reconstructions(part, generator)) * part.shape[0];
        }
        return new LatentHealth(ActiveUnits(mu), (int)mu.shape[1], spread / x.shape[0], heldOutBce.item<float>(), heldOutKl.item<float>());
    }

    /// <summary>Held-out accuracies: classifier and defended model, on clean images and on PGD examples crafted against the classifier alone.
    /// The PGD random starts and CARSO's latents come from generators derived from settings.Seed alone, the same in every epoch:
    /// epochs then differ by their weights, not by their draws.</summary>
    public static (Accuracy ClassifierClean, Accuracy DefendedClean, Accuracy ClassifierPgd, Accuracy DefendedPgd) EvaluateEpoch(
        nn.Module<Tensor, Tensor> classifier, IReadOnlyList<string> layerNames, Purifier purifier, Dataset data, PurifierTrainingSettings settings, Device device)
    {
        purifier.eval();
        using var pgdGenerator = Seeds.Generator(settings.Seed, HeldOutPgdPurpose, device);
        using var latentGenerator = Seeds.Generator(settings.Seed, HeldOutLatentsPurpose, device);
        var carso = new CarsoModel(classifier, purifier, layerNames, settings.Defence with { Differentiable = false });
        var defended = carso.AsModel().Bind(latentGenerator);
        var pgd = new PgdSettings(settings.Threat, settings.EvalPgdSteps, settings.PgdStepSize);
        // One set of PGD examples against the classifier alone, judged by both models.
        using var adversarial = TransferSet(classifier.call, data, pgd, settings.EvalBatchSize, device, pgdGenerator);
        var result = (
            Evaluate.ToAccuracy(Evaluate.PerPointCorrect(classifier.call, data, settings.EvalBatchSize, device: device)),
            Evaluate.ToAccuracy(Evaluate.PerPointCorrect(defended, data, settings.EvalBatchSize, device: device)),
            Evaluate.ToAccuracy(Evaluate.PerPointCorrect(classifier.call, adversarial, settings.EvalBatchSize, device: device)),
            Evaluate.ToAccuracy(Evaluate.PerPointCorrect(defended, adversarial, settings.EvalBatchSize, device: device)));
        return result;
    }
}
