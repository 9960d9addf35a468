using Carso.IO;
using Carso.Attacks;
using Carso.Data;
using Carso.Evaluation;
using Carso.Runtime;
using static TorchSharp.torch;

namespace Carso.Training;

public enum TrainingMethod
{
    /// <summary>PGD adversarial training (Madry et al. 2018): k-step PGD with random start at eps, step alpha.</summary>
    PgdAt,
    /// <summary>FGSM with random start (Wong et al. 2020): init U(-eps, eps), one step of 1.25 eps.</summary>
    FgsmRs,
    /// <summary>Plain training on clean images (a baseline).</summary>
    Clean,
}

/// <summary>
/// Settings of adversarial training. Defaults: PGD-AT at Linf eps 0.1 (Fashion-MNIST), 10 steps of
/// 2.5 eps / 10; evaluation each epoch on the held-out split with PGD-20 (step 2.5 eps / 20, random start).
/// </summary>
public sealed record AdversarialTrainingSettings
{
    /// <summary>The recipe of the committed Fashion-MNIST classifier (scripts/train-classifier.cs): PGD-AT at Linf eps
    /// 0.1 with 5 steps of 2.5 eps / 5 (a CPU budget; PGD-20 judges the result), 12 epochs of batch 128, Adam 1e-3 with
    /// x0.1 at 50% and 75% of training, held-out PGD-20 on 1000 points each epoch.</summary>
    public static AdversarialTrainingSettings FashionMnistPgdAt { get; } = new()
    {
        Method = TrainingMethod.PgdAt,
        Threat = Threat.Linf(0.1),
        AttackSteps = 5,
        Epochs = 12,
        BatchSize = 128,
        Optimizer = new OptimizerSettings(OptimizerKind.Adam, LearningRate: 1e-3, WeightDecay: 0),
        Schedule = new ScheduleSettings(ScheduleKind.Piecewise, Milestones: [0.5, 0.75], Factor: 0.1),
        EvalPgdSteps = 20,
        EvalPoints = 1000,
        Seed = 0,
    };

    /// <summary>The recipe of the L2 Fashion-MNIST classifier (scripts/train-classifier-l2.cs): <see cref="FashionMnistPgdAt"/>
    /// (same architecture, epochs, batch, optimiser, schedule, held-out PGD-20 and seed) with PGD-AT at L2 eps 1.5, 10 steps of
    /// 2.5 eps / 10 = 0.375. Why 10 steps, not the Linf recipe's 5: an L2 PGD step moves along the normalised gradient, not
    /// its sign, so it is not pushed to a vertex of the ball in one step, and 10 is the common L2 PGD-AT budget (Madry et
    /// al. 2018; Rice et al. 2020). Why 2.5 eps / steps: Madry et al.'s rule, whatever the norm: the steps add up to 2.5 eps,
    /// so from any random start the iterate can reach the ball's far side and still move along its surface (the same rule
    /// as the Linf recipe, so the two differ by the threat and the step count only). Twice the Linf recipe's cost per epoch.</summary>
    public static AdversarialTrainingSettings FashionMnistPgdAtL2 { get; } = FashionMnistPgdAt with
    {
        Threat = Threat.L2(1.5),
        AttackSteps = 10,
    };

    public TrainingMethod Method { get; init; } = TrainingMethod.PgdAt;
    public Threat Threat { get; init; } = Threat.Linf(0.1);
    public int AttackSteps { get; init; } = 10;
    /// <summary>Null: 2.5 eps / steps for PGD-AT, 1.25 eps for FGSM-RS.</summary>
    public double? AttackStepSize { get; init; }
    public int Epochs { get; init; } = 10;
    public int BatchSize { get; init; } = 128;
    public OptimizerSettings Optimizer { get; init; } = new();
    public ScheduleSettings Schedule { get; init; } = new();
    public int EvalPgdSteps { get; init; } = 20;
    /// <summary>Held-out points evaluated each epoch (all of the split when larger).</summary>
    public int EvalPoints { get; init; } = 1000;
    public int EvalBatchSize { get; init; } = 500;
    /// <summary>Catastrophic overfitting: PGD accuracy on the held-out split falls by more than this many
    /// points below its best so far (Wong et al. 2020 watch for PGD accuracy collapsing to ~0).</summary>
    public double OverfittingDropPoints { get; init; } = 20;
    /// <summary>Stop training at catastrophic overfitting (the best checkpoint is kept either way).</summary>
    public bool StopOnCatastrophicOverfitting { get; init; } = true;
    /// <summary>The seed of every random draw of the training (see <see cref="AdversarialTraining"/>); not of the
    /// model's initialisation, which is the caller's.</summary>
    public long Seed { get; init; } = 0;

    /// <summary>The attack used to make training examples: (model, x, y) -> xAdv, or null for clean training.
    /// Its random starts come from the given generator (not the process-wide one, which other threads share).</summary>
    public Func<Func<Tensor, Tensor>, Tensor, Tensor, Tensor>? TrainingAttack(Generator? generator = null) => Method switch
    {
        TrainingMethod.PgdAt => (m, x, y) => Pgd.Attack(m, x, y, TrainingPgd, generator),
        TrainingMethod.FgsmRs => (m, x, y) => Fgsm.Attack(m, x, y, new FgsmSettings(Threat, AttackStepSize), generator),
        TrainingMethod.Clean => null,
        _ => throw new ArgumentOutOfRangeException(nameof(Method)),
    };

    /// <summary>The PGD of PGD-AT's training examples (its Alpha is the step it takes).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public PgdSettings TrainingPgd => new(Threat, AttackSteps, AttackStepSize);

    [System.Text.Json.Serialization.JsonIgnore]
    public PgdSettings EvalPgd => new(Threat, EvalPgdSteps);
}

/// <summary>What one epoch measured: training loss and accuracy (on the training examples actually used,
/// adversarial for AT), and on the held-out split clean and PGD accuracy.</summary>
public sealed record EpochMetrics(
    int Epoch, double LearningRate, double TrainLoss, double TrainAccuracy,
    Accuracy ValidationClean, Accuracy ValidationPgd, double Seconds, bool CatastrophicOverfitting);

public sealed record TrainingResult(IReadOnlyList<EpochMetrics> History, int BestEpoch, bool Resumed, bool StoppedEarly);

/// <summary>
/// Adversarial training as a pure-ish step function and an epoch loop around it, with a checkpoint after
/// every epoch (atomic; resumable with the same result as an uninterrupted run).
/// Randomness is explicit: every draw comes from a generator derived by <see cref="Seeds"/> from
/// (settings.Seed, purpose, epoch[, batch]), never from torch's global generator, so the same seed gives the
/// same training whatever else the process draws, and a resumed epoch draws what it would have drawn:
/// the order of epoch e from ("adversarial-training/shuffle", e); the random starts of the training attack on
/// batch b of epoch e from ("adversarial-training/attack", e, b); the held-out PGD's random starts from
/// ("adversarial-training/held-out-pgd"), the same in every epoch.
/// </summary>
public static class AdversarialTraining
{
    /// <summary>
    /// One optimisation step on a batch: make training examples with the attack (model in eval mode, no
    /// parameter gradients), then one gradient step on their cross-entropy (train mode).
    /// x: [B, C, H, W], y: [B]. Returns (summed loss, number correct) as 0-dim tensors, to avoid host
    /// round trips inside the loop.
    /// </summary>
    public static (Tensor LossSum, Tensor Correct) Step(
        nn.Module<Tensor, Tensor> model, optim.Optimizer optimizer, Tensor x, Tensor y,
        Func<Func<Tensor, Tensor>, Tensor, Tensor, Tensor>? attack)
    {
        using var scope = NewDisposeScope();
        Tensor input = x;
        if (attack is not null)
        {
            model.eval();
            input = attack(model.call, x, y);
        }
        model.train();
        optimizer.zero_grad();
        var logits = model.call(input);
        var loss = Losses.CrossEntropy(logits, y);
        loss.mean().backward();
        optimizer.step();
        using var noGrad = no_grad();
        return (loss.sum().detach().MoveToOuterDisposeScope(), logits.argmax(1).eq(y).sum().MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Catastrophic overfitting (Wong et al. 2020): the held-out PGD accuracy of this epoch lies more than
    /// dropPoints percentage points below the best of the earlier epochs.
    /// </summary>
    public static bool IsCatastrophicOverfitting(IEnumerable<double> earlierPgdAccuracies, double pgdAccuracy, double dropPoints) =>
        earlierPgdAccuracies.Any() && 100 * (earlierPgdAccuracies.Max() - pgdAccuracy) > dropPoints;

    const string ShufflePurpose = "adversarial-training/shuffle";
    const string AttackPurpose = "adversarial-training/attack";
    const string HeldOutPurpose = "adversarial-training/held-out-pgd";

    /// <summary>
    /// Trains the model for settings.Epochs epochs on <paramref name="train"/>, evaluating on
    /// <paramref name="validation"/> after each. With a checkpoint folder, resumes from its last complete epoch
    /// and keeps best.bin (the weights with the best held-out PGD accuracy). log receives one line per event.
    /// The model's initial weights are the caller's: TorchSharp draws them from torch's global generator when the
    /// module is built (scripts seed it before building), and this function never touches that generator. Every
    /// draw here comes from generators derived from settings.Seed (see the class); layers that draw in their
    /// forward pass (dropout) would use the global generator — the library's models have none.
    /// </summary>
    public static TrainingResult Train(
        nn.Module<Tensor, Tensor> model, Dataset train, Dataset validation, AdversarialTrainingSettings settings,
        string? checkpointFolder = null, Action<string>? log = null, Action<int, int>? progress = null, Device? device = null)
    {
        log ??= _ => { };
        device ??= CPU;
        var optimizer = Optimizers.Create(model.parameters(), settings.Optimizer);
        var learningRate = Schedules.Create(settings.Schedule, settings.Optimizer.LearningRate);
        var history = new List<EpochMetrics>();
        var start = 0;
        var resumed = false;
        var checkpoint = checkpointFolder is null ? null : new TrainingCheckpoint<EpochMetrics>(checkpointFolder);
        var optimizerState = TrainingCheckpoint.OptimizerState(optimizer);
        if (checkpoint?.Load(model, optimizerState, settings, legacyDerived: ["evalPgd"]) is { } state)
        {
            history.AddRange(state.History);
            start = state.History.Count;
            resumed = true;
            log($"resumed from {checkpoint.Folder} after epoch {start}");
        }
        using var evalSet = validation.Take(settings.EvalPoints);
        var stepsPerEpoch = (int)((train.Count + settings.BatchSize - 1) / settings.BatchSize);
        var totalSteps = (double)stepsPerEpoch * settings.Epochs;
        var stoppedEarly = history.Any(h => h.CatastrophicOverfitting) && settings.StopOnCatastrophicOverfitting;
        for (var epoch = start; epoch < settings.Epochs && !stoppedEarly; epoch++)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            using var epochScope = NewDisposeScope();
            var lossSum = zeros(1, dtype: ScalarType.Float64, device: device);
            var correct = zeros(1, dtype: ScalarType.Int64, device: device);
            var step = 0;
            double lr = 0;
            foreach (var (images, labels) in train.Batches(settings.BatchSize, shuffleSeed: Seeds.Derive(settings.Seed, ShufflePurpose, epoch)))
            {
                using var scope = NewDisposeScope();
                using var batchImages = images;  // the batch was made outside this scope: free it with the step
                using var batchLabels = labels;
                // One generator per batch: a batch's random starts do not depend on how much earlier batches drew.
                using var generator = Seeds.Generator(settings.Seed, AttackPurpose, device, epoch, step);
                lr = learningRate((epoch * stepsPerEpoch + step) / totalSteps);
                Optimizers.SetLearningRate(optimizer, lr);
                var (batchLoss, batchCorrect) = Step(model, optimizer, images.to(device), labels.to(device), settings.TrainingAttack(generator));
                lossSum.add_(batchLoss);
                correct.add_(batchCorrect);
                step++;
                progress?.Invoke(step, stepsPerEpoch);
            }
            model.eval();
            // The same random starts in every epoch: epochs then differ by their weights alone, and the best one is chosen on this.
            using var heldOut = Seeds.Generator(settings.Seed, HeldOutPurpose, device);
            var clean = Evaluate.ToAccuracy(Evaluate.PerPointCorrect(model.call, evalSet, settings.EvalBatchSize, device: device));
            var pgd = Evaluate.ToAccuracy(Evaluate.PerPointCorrect(model.call, evalSet, settings.EvalBatchSize,
                (m, x, y) => Pgd.Attack(m, x, y, settings.EvalPgd, heldOut), device));
            var bestPgd = history.Select(h => h.ValidationPgd.Value).Append(pgd.Value).Max();
            var collapsed = IsCatastrophicOverfitting(history.Select(h => h.ValidationPgd.Value), pgd.Value, settings.OverfittingDropPoints);
            var metrics = new EpochMetrics(epoch + 1, lr, lossSum.item<double>() / train.Count,
                (double)correct.item<long>() / train.Count, clean, pgd, clock.Elapsed.TotalSeconds, collapsed);
            history.Add(metrics);
            var isBest = history.MaxBy(h => h.ValidationPgd.Value) == metrics;
            log($"epoch {metrics.Epoch}/{settings.Epochs}: lr {lr:G3} train loss {metrics.TrainLoss:F4} acc {100 * metrics.TrainAccuracy:F2}% | " +
                $"held-out clean {clean} PGD-{settings.EvalPgdSteps} {pgd}{(isBest ? " *best*" : "")} | {metrics.Seconds:F0} s");
            if (collapsed)
                log($"CATASTROPHIC OVERFITTING at epoch {metrics.Epoch}: held-out PGD accuracy fell from {100 * bestPgd:F1}% to {100 * pgd.Value:F1}%" +
                    (settings.StopOnCatastrophicOverfitting ? "; stopping (best checkpoint kept)" : ""));
            checkpoint?.Save(model, optimizerState, settings, history, isBest);
            stoppedEarly = collapsed && settings.StopOnCatastrophicOverfitting;
        }
        var bestEpoch = history.Count == 0 ? 0 : history.MaxBy(h => h.ValidationPgd.Value)!.Epoch;
        return new TrainingResult(history, bestEpoch, resumed, stoppedEarly);
    }
}

