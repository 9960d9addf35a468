using Carso.Training;
using Carso.IO;
using Carso.Attacks;
using Carso.Defence;
using static TorchSharp.torch;

namespace Carso.Tests.Defence;

public class PurifierTrainingTests
{
    [Fact]
    public void MixedBatchPerturbsTheAdversarialFractionInFourEqualPartsAtHalfAndFullEps()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var w = randn(36, 4);
        Func<Tensor, Tensor> model = x => x.flatten(1).matmul(w);
        var x = rand(16, 1, 6, 6) * 0.5 + 0.25;   // away from the box, so clipping does not hide the eps bounds
        var y = model(x).argmax(1);
        var settings = new PurifierTrainingSettings { Threat = Threat.Linf(0.1), AdversarialFraction = 0.5, PgdSteps = 5 };
        var mixed = PurifierTraining.MixedBatch(model, x, y, settings);
        var norms = Projection.NormOf(mixed - x, Norm.Linf).data<float>().ToArray();
        // 8 adversarial points: 2 FGSM eps/2, 2 FGSM eps, 2 PGD eps/2, 2 PGD eps; then 8 clean
        Assert.All(norms[0..2], n => Assert.Equal(0.05f, n, 4));   // FGSM moves every pixel by exactly its eps
        Assert.All(norms[2..4], n => Assert.Equal(0.1f, n, 4));
        Assert.All(norms[4..6], n => Assert.InRange(n, 0.01f, 0.05f + 1e-6f));
        Assert.All(norms[6..8], n => Assert.InRange(n, 0.01f, 0.1f + 1e-6f));
        Assert.All(norms[8..], n => Assert.Equal(0f, n));
    }

    [Fact]
    public void TheTrainingAttackBudgetsAreMultiplesOfEpsAsSet()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var w = randn(36, 4);
        Func<Tensor, Tensor> model = x => x.flatten(1).matmul(w);
        var x = rand(8, 1, 6, 6) * 0.5 + 0.25;
        var y = model(x).argmax(1);
        // The 2025 CIFAR code's budgets, 2 eps and 4 eps, on an all-adversarial batch: FGSM moves every pixel by exactly its eps.
        var settings = new PurifierTrainingSettings { Threat = Threat.Linf(0.05), AdversarialFraction = 1.0, PgdSteps = 3, AttackEpsLow = 2, AttackEpsHigh = 4 };
        var norms = Projection.NormOf(PurifierTraining.MixedBatch(model, x, y, settings) - x, Norm.Linf).data<float>().ToArray();
        Assert.All(norms[0..2], n => Assert.Equal(0.1f, n, 4));
        Assert.All(norms[2..4], n => Assert.Equal(0.2f, n, 4));
        Assert.All(norms[4..6], n => Assert.InRange(n, 0.01f, 0.1f + 1e-6f));
        Assert.All(norms[6..8], n => Assert.InRange(n, 0.01f, 0.2f + 1e-6f));
    }

    [Fact]
    public void FreeBitsChargeEachDimensionAtLeastItsAllowanceAndReportThePlainKl()
    {
        using var scope = NewDisposeScope();
        var reconstruction = full(2, 1, 1, 1, 0.5f);
        var clean = full(2, 1, 1, 1, 0.5f);          // BCE = 2 ln 2 summed over both images, ln 2 per image
        // Dimension 0: mu 1 for both points (KL 0.5 each); dimension 1: mu 0, logvar 0 (KL 0).
        var mu = tensor(new float[] { 1, 0, 1, 0 }).view(2, 2);
        var logVar = zeros(2, 2);
        var (plain, bce, kl) = Purifier.PurifierLoss(reconstruction, clean, mu, logVar, beta: 1);
        Assert.Equal(Math.Log(2), bce.item<float>(), 5);
        Assert.Equal(0.5, kl.item<float>(), 5);
        Assert.Equal(Math.Log(2) + 0.5, plain.item<float>(), 5);
        // 0.25 free nats per dimension: dimension 0 is charged 0.5 (above), dimension 1 is charged 0.25.
        var (free, _, klFree) = Purifier.PurifierLoss(reconstruction, clean, mu, logVar, beta: 1, freeBits: 0.25);
        Assert.Equal(Math.Log(2) + 0.75, free.item<float>(), 5);
        Assert.Equal(0.5, klFree.item<float>(), 5);
    }

    [Fact]
    public void ACheckpointFromBeforeANewSettingResumesWhileTheSettingKeepsItsDefault()
    {
        using var setup = new TinySetup();
        using var dir = new TempFolder();
        var settings = TinySettings with { Epochs = 2 };
        var folder = dir.File("run");
        var steps = 0;
        Assert.Throws<OperationCanceledException>(() =>
            PurifierTraining.Train(setup.Classifier, setup.Layers, setup.Trainee(), setup.Train, setup.Validation, settings with { Epochs = 2 }, folder,
                progress: (_, _) => { if (++steps == 3) throw new OperationCanceledException("killed in epoch 2"); }));
        // The saved settings as an older version wrote them: without FreeBits (a later setting).
        var statePath = Directory.GetFiles(folder, "*.json").Single();
        var state = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(statePath))!;
        var saved = state["settings"]!.AsObject();
        Assert.True(saved.Remove("freeBits"));
        File.WriteAllText(statePath, state.ToJsonString());
        Assert.True(PurifierTraining.Train(setup.Classifier, setup.Layers, setup.Trainee(), setup.Train, setup.Validation, settings, folder).Resumed);
        // Away from its default, the new setting is a change of the run.
        Assert.Throws<ResumeMismatchException>(() => PurifierTraining.Train(setup.Classifier, setup.Layers, setup.Trainee(), setup.Train,
            setup.Validation, settings with { Epochs = 3, FreeBits = 0.5 }, folder));
    }

    [Theory]
    [InlineData(32, 0.5, 0.5, 1.0)]
    [InlineData(13, 0.4, 0.5, 1.0)]   // unequal parts: 5 adversarial rows cut 1, 1, 1, 2
    [InlineData(24, 1.0, 2.0, 4.0)]
    public void TheBatchedMixedBatchIsTheFourSeparateAttacksWithTheSameRandomStarts(int b, double fraction, double low, double high)
    {
        using var setup = new TinySetup();
        using var scope = NewDisposeScope();
        setup.Classifier.eval();
        using var data = new Generator(21);
        var x = rand([b, 1, 28, 28], generator: data);
        var y = randint(10, [b], generator: data);
        var settings = TinySettings with { Threat = Threat.Linf(0.05), AdversarialFraction = fraction, PgdSteps = 10, AttackEpsLow = low, AttackEpsHigh = high };
        using var g1 = new Generator(9);
        var batched = PurifierTraining.MixedBatch(setup.Classifier.call, x, y, settings, g1);
        using var g2 = new Generator(9);
        var separate = PurifierTraining.MixedBatchSeparate(setup.Classifier.call, x, y, settings, g2);
        var diff = (batched - separate).abs().max().item<float>();
        Assert.True(diff <= 1e-5, $"batched vs the four separate calls: max |diff| {diff}");
        // Both generators drew the same numbers: the next draw agrees.
        Assert.True(rand([4], generator: g1).eq(rand([4], generator: g2)).all().item<bool>(), "same number of draws");
    }

    [Fact]
    public void TheAdversarialSetIsTheSeparateAttacksBatchByBatch()
    {
        using var setup = new TinySetup();
        setup.Classifier.eval();   // as Train has it
        var settings = TinySettings with { AdversarialFraction = 0.5, PgdSteps = 5 };
        using var set = PurifierTraining.AdversarialSet(setup.Classifier.call, setup.Train, settings, epoch: 1, CPU);
        using var order = Carso.Data.DatasetOps.Permutation(16, Carso.Runtime.Seeds.Derive(settings.Seed, "purifier-training/shuffle", 1));
        for (var b = 0; b < 2; b++)
        {
            using var scope = NewDisposeScope();
            var idx = order.narrow(0, b * 8, 8);
            using var generator = Carso.Runtime.Seeds.Generator(settings.Seed, "purifier-training/mixed-batch", CPU, 1, b);
            var separate = PurifierTraining.MixedBatchSeparate(setup.Classifier.call, setup.Train.Images.index_select(0, idx),
                setup.Train.Labels.index_select(0, idx), settings, generator);
            var diff = (set.index_select(0, idx) - separate).abs().max().item<float>();
            Assert.True(diff <= 1e-5, $"batch {b}: max |diff| {diff}");
        }
    }

    [Fact]
    public void TheAdversarialSetIsTheEpochsBatchesEachAMixedBatchAndOtherPointsStayClean()
    {
        using var setup = new TinySetup();
        var settings = TinySettings with { AdversarialFraction = 0.5, PgdSteps = 2 };
        using var set = PurifierTraining.AdversarialSet(setup.Classifier.call, setup.Train, settings, epoch: 1, CPU);
        using var again = PurifierTraining.AdversarialSet(setup.Classifier.call, setup.Train, settings, epoch: 1, CPU);
        Assert.True(set.eq(again).all().item<bool>(), "the set depends on the seed and the epoch only");
        using var other = PurifierTraining.AdversarialSet(setup.Classifier.call, setup.Train, settings, epoch: 2, CPU);
        Assert.False(set.eq(other).all().item<bool>());
        // Batch b of epoch 1's order is MixedBatch of those points with the generator (seed, mixed-batch, 1, b).
        using var order = Carso.Data.DatasetOps.Permutation(16, Carso.Runtime.Seeds.Derive(settings.Seed, "purifier-training/shuffle", 1));
        for (var b = 0; b < 2; b++)
        {
            var idx = order.narrow(0, b * 8, 8);
            using var generator = Carso.Runtime.Seeds.Generator(settings.Seed, "purifier-training/mixed-batch", CPU, 1, b);
            var expected = PurifierTraining.MixedBatch(setup.Classifier.call, setup.Train.Images.index_select(0, idx),
                setup.Train.Labels.index_select(0, idx), settings, generator);
            Assert.True(set.index_select(0, idx).eq(expected).all().item<bool>(), $"batch {b}");
            var moved = (set.index_select(0, idx) - setup.Train.Images.index_select(0, idx)).abs().flatten(1).amax(1).gt(0).sum().item<long>();
            Assert.Equal(4, moved); // half of the batch perturbed (the random images are far from the box edges only on average)
        }
    }

    [Fact]
    public void AResumeInsideARefreshRoundRemakesTheRoundsSetAndGivesTheUninterruptedWeights()
    {
        using var setup = new TinySetup();
        using var dir = new TempFolder();
        var settings = TinySettings with { Epochs = 3, AdversarialRefreshEpochs = 2 };
        var uninterrupted = setup.Trainee();
        var expected = PurifierTraining.Train(setup.Classifier, setup.Layers, uninterrupted, setup.Train, setup.Validation, settings, dir.File("a"));
        Assert.True(expected.History[0].AdversarialSeconds > 0 && expected.History[1].AdversarialSeconds == 0 && expected.History[2].AdversarialSeconds > 0,
            "the set is made at epochs 1 and 3 only");
        var steps = 0;
        Assert.Throws<OperationCanceledException>(() =>
            PurifierTraining.Train(setup.Classifier, setup.Layers, setup.Trainee(), setup.Train, setup.Validation, settings, dir.File("b"),
                progress: (_, _) => { if (++steps == 3) throw new OperationCanceledException("killed in epoch 2, inside round 1"); }));
        var resumed = setup.Trainee();
        var result = PurifierTraining.Train(setup.Classifier, setup.Layers, resumed, setup.Train, setup.Validation, settings, dir.File("b"));
        Assert.True(result.Resumed);
        Assert.Equal(expected.History.Select(h => h with { Seconds = 0, AdversarialSeconds = 0 }),
            result.History.Select(h => h with { Seconds = 0, AdversarialSeconds = 0 }));
        Assert.True(Same(Weights(uninterrupted), Weights(resumed)), "resumed weights differ from the uninterrupted run");
    }

    [Fact]
    public void TheTrainingStepGivesTheEncoderTheClassifiersOwnInputNotTheCleanTarget()
    {
        using var setup = new TinySetup();
        var (classifier, layers, purifier) = (setup.Classifier, setup.Layers, setup.Trainee());
        var encoder = (nn.Module<Tensor, Tensor>)purifier.named_modules().Single(m => m.name == "encoder").module;
        Tensor? classifierInput = null, encoderInput = null;
        var classifierHook = classifier.register_forward_pre_hook((_, x) => { classifierInput ??= x.detach().clone().DetachFromDisposeScope(); return x; });
        var encoderHook = encoder.register_forward_pre_hook((_, x) => { encoderInput = x.detach().clone().DetachFromDisposeScope(); return x; });
        var clean = setup.Validation.Images;
        var mixed = (clean + 0.1 * rand(4, 1, 28, 28, generator: new Generator(2))).clamp(0, 1);
        using var optimizer = new Lookahead(optim.Adam(purifier.parameters(), 1e-3), purifier.parameters(), new Lookahead.Settings(6, 0.8));
        PurifierTraining.Step(classifier, layers, purifier, optimizer, clean, mixed, 1.0, new Generator(3));
        Assert.NotNull(classifierInput);
        Assert.NotNull(encoderInput);
        classifierHook.remove();
        encoderHook.remove();
        static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();
        Assert.True(Same(encoderInput!, classifierInput!), "the encoder and the representation capture must see the same tensor");
        Assert.True(Same(encoderInput!, mixed));
        Assert.False(Same(encoderInput!, clean));
    }

    [Fact]
    public void ActiveUnitsCountLatentDimensionsThatVaryAcrossInputsAndTheSpreadIsTheStdOverSamples()
    {
        using var scope = NewDisposeScope();
        // Dimension 0 varies across the 4 inputs (variance 1.67), dimension 1 barely (variance 1.7e-5), dimension 2 not at all.
        var mu = tensor(new float[] { 0, 0.001f, 5, 1, 0.002f, 5, 2, 0.003f, 5, 3, 0.008f, 5 }).view(4, 3);
        Assert.Equal(1, PurifierTraining.ActiveUnits(mu));
        // Two points, two samples each: the samples of point 0 differ by 2 at every pixel (std 1.414), of point 1 not at all.
        var samples = stack([stack([zeros(1, 2, 2), full(1, 2, 2, 2f)]), stack([ones(1, 2, 2), ones(1, 2, 2)])]); // [2, 2, 1, 2, 2]
        Assert.Equal(Math.Sqrt(2) / 2, PurifierTraining.SampleSpread(samples), 5);
        Assert.Equal(0, PurifierTraining.SampleSpread(samples.narrow(1, 0, 1)));
    }

    [Fact]
    public void TheSchedulesAdvanceEveryStepWithoutAProgressCallback()
    {
        // Regression: the step counter was incremented inside progress?.Invoke(++step, ...), so without a callback
        // the learning rate stayed at its warm-up start and beta at 0 for the whole training.
        manual_seed(2);
        var classifier = new Carso.Models.SmallCnn();
        string[] layers = ["conv1", "relu3"];
        var purifier = Purifier.Build(new PurifierSettings(ConditioningSize: 16, LatentSize: 4, DecoderChannels: 16),
            PurifierCheckpoint.LayerShapes(classifier, layers, [1, 28, 28]), [1, 28, 28]);
        string[] classes = [.. Enumerable.Range(0, 10).Select(i => $"c{i}")];
        using var train = Carso.Data.Dataset.Create("train", rand(16, 1, 28, 28), randint(10, [16]), classes);
        using var validation = Carso.Data.Dataset.Create("validation", rand(4, 1, 28, 28), randint(10, [4]), classes);
        var settings = new PurifierTrainingSettings { Epochs = 2, BatchSize = 8, PgdSteps = 1, EvalPoints = 4, EvalPgdSteps = 1,
            Defence = new CarsoSettings(Samples: 1) };
        var history = PurifierTraining.Train(classifier, layers, purifier, train, validation, settings).History;
        // 2 steps per epoch, 4 in all: the last step of epoch 1 is at t = 1/4, of epoch 2 at t = 3/4; beta is counted in epochs.
        Assert.Equal(settings.LearningRateAt(0.25), history[0].LearningRate, 12);
        Assert.Equal(settings.LearningRateAt(0.75), history[1].LearningRate, 12);
        Assert.Equal(settings.BetaAt(1), history[1].Beta, 12);
        // The latent's health is logged every epoch.
        Assert.All(history, h => Assert.Equal(purifier.Settings.LatentSize, h.LatentSize));
        Assert.All(history, h => Assert.InRange(h.ActiveUnits, 0, h.LatentSize));
        Assert.All(history, h => Assert.True(h.SampleSpread > 0, "sampled reconstructions of a fresh purifier differ"));
    }

    /// <summary>A tiny CARSO setting: SmallCnn, a small purifier, 16 training and 4 held-out random images.</summary>
    sealed class TinySetup : IDisposable
    {
        public readonly Carso.Models.SmallCnn Classifier;
        public readonly string[] Layers = ["conv1", "relu3"];
        public readonly Carso.Data.Dataset Train, Validation;
        readonly Purifier initial;

        public TinySetup()
        {
            manual_seed(2); // initialisation and data are the caller's
            Classifier = new Carso.Models.SmallCnn();
            initial = NewPurifier();
            string[] classes = [.. Enumerable.Range(0, 10).Select(i => $"c{i}")];
            Train = Carso.Data.Dataset.Create("train", rand(16, 1, 28, 28), randint(10, [16]), classes);
            Validation = Carso.Data.Dataset.Create("validation", rand(4, 1, 28, 28), randint(10, [4]), classes);
        }

        Purifier NewPurifier() => Purifier.Build(new PurifierSettings(ConditioningSize: 16, LatentSize: 4, DecoderChannels: 16),
            PurifierCheckpoint.LayerShapes(Classifier, Layers, [1, 28, 28]), [1, 28, 28]);

        /// <summary>A purifier with the same initial weights as every other one of this setup.</summary>
        public Purifier Trainee()
        {
            var p = NewPurifier();
            p.load_state_dict(initial.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone()));
            return p;
        }

        public void Dispose() { Train.Dispose(); Validation.Dispose(); }
    }

    // Samples 2: the held-out CARSO evaluation draws latents too.
    static PurifierTrainingSettings TinySettings => new()
    {
        Epochs = 2, BatchSize = 8, PgdSteps = 1, EvalPoints = 4, EvalPgdSteps = 1, Defence = new CarsoSettings(Samples: 2), Seed = 4,
    };

    static Tensor[] Weights(TorchSharp.torch.nn.Module m) => m.parameters().Select(p => p.detach().clone()).ToArray();
    static bool Same(Tensor[] a, Tensor[] b) => a.Zip(b).All(p => p.First.eq(p.Second).all().item<bool>());

    [Fact]
    public void TheSameSeedGivesTheSameTrainingWhateverTheGlobalGeneratorDoes()
    {
        using var setup = new TinySetup();
        (Tensor[] Weights, PurifierEpochMetrics[] History) Run(PurifierTrainingSettings s, Action<int, int>? progress = null)
        {
            var purifier = setup.Trainee();
            var result = GlobalGenerator.LeftAlone(
                () => PurifierTraining.Train(setup.Classifier, setup.Layers, purifier, setup.Train, setup.Validation, s, progress: progress), progress is null);
            return (Weights(purifier), result.History.Select(h => h with { Seconds = 0 }).ToArray());
        }

        var first = Run(TinySettings);
        GlobalGenerator.Disturb(0);
        // and again during training, after every step
        var second = Run(TinySettings, (step, _) => GlobalGenerator.Disturb(step));
        Assert.Equal(first.History.Select(h => h with { AdversarialSeconds = 0 }), second.History.Select(h => h with { AdversarialSeconds = 0 }));
        Assert.True(Same(first.Weights, second.Weights), "the same seed gave other weights");

        // The seed matters (else the equality above would prove little): another seed trains differently.
        var other = Run(TinySettings with { Seed = TinySettings.Seed + 1 });
        Assert.False(Same(first.Weights, other.Weights), "another seed gave the same weights");
    }

    [Fact]
    public void KillAndResumeGivesTheSameFinalWeightsAsAnUninterruptedRun()
    {
        using var setup = new TinySetup();
        using var dir = new TempFolder();
        var uninterrupted = setup.Trainee();
        var expected = PurifierTraining.Train(setup.Classifier, setup.Layers, uninterrupted, setup.Train, setup.Validation, TinySettings, dir.File("a"));

        var steps = 0;
        Assert.Throws<OperationCanceledException>(() =>
            PurifierTraining.Train(setup.Classifier, setup.Layers, setup.Trainee(), setup.Train, setup.Validation, TinySettings, dir.File("b"),
                progress: (_, _) => { if (++steps == 3) throw new OperationCanceledException("killed mid epoch 2"); }));

        manual_seed(99); // unrelated global draws, and a different initialisation: everything must come from the checkpoint
        var resumed = Purifier.Build(new PurifierSettings(ConditioningSize: 16, LatentSize: 4, DecoderChannels: 16),
            PurifierCheckpoint.LayerShapes(setup.Classifier, setup.Layers, [1, 28, 28]), [1, 28, 28]);
        var result = PurifierTraining.Train(setup.Classifier, setup.Layers, resumed, setup.Train, setup.Validation, TinySettings, dir.File("b"));
        Assert.True(result.Resumed);
        Assert.Equal(expected.History.Select(h => h with { Seconds = 0, AdversarialSeconds = 0 }),
            result.History.Select(h => h with { Seconds = 0, AdversarialSeconds = 0 }));
        Assert.True(Same(Weights(uninterrupted), Weights(resumed)), "resumed weights differ from the uninterrupted run");
    }

    [Fact]
    public void LearningRateWarmsUpStaysFlatThenAnnealsAndBetaRampsAfterItsZeroPhase()
    {
        var s = new PurifierTrainingSettings { LearningRate = 1.0 };
        Assert.True(s.LearningRateAt(0.0) < 0.01);
        Assert.Equal((0.0625 + 1e-3) / 0.125, s.LearningRateAt(0.0625), 12); // linear warm-up, never exactly 0
        Assert.Equal(1.0, s.LearningRateAt(0.2), 12);
        Assert.Equal(0.5, s.LearningRateAt(0.625), 12);
        Assert.Equal(0.0, s.LearningRateAt(1.0), 12);
    }

    [Fact]
    public void BetaIsCountedInEpochsZeroThenALinearRampAndThe2023RecipeKeepsItAtOne()
    {
        // 100 epochs: beta 0 for the first 12 (floor(0.125 * 100)), then a 4-epoch ramp, then BetaMax.
        var s = new PurifierTrainingSettings { Epochs = 100, BetaMax = 1.0 };
        Assert.Equal(0.0, s.BetaAt(0), 12);
        Assert.Equal(0.0, s.BetaAt(11), 12);
        Assert.Equal(0.25, s.BetaAt(12), 12);
        Assert.Equal(0.75, s.BetaAt(14), 12);
        Assert.Equal(1.0, s.BetaAt(15), 12);
        Assert.Equal(1.0, s.BetaAt(99), 12);
        var published = PurifierTrainingSettings.Published2023(epochs: 150, batchSize: 1536);
        Assert.All(new[] { 0, 1, 75, 149 }, e => Assert.Equal(1.0, published.BetaAt(e), 12));
    }

    [Fact]
    public void TheTriangularScheduleRisesOverAThirdOfTheEpochsThenFallsAsTheReferenceCyclicLr()
    {
        // train_a_carso.py: CyclicLR(base 0.5e-8, max 3e-5 * 1536, up 50 epochs, down 100), stepped once per epoch.
        var s = PurifierTrainingSettings.Published2023(epochs: 150, batchSize: 1536);
        var (min, max) = (5e-9, 3e-5 * 1536);
        Assert.Equal(min, s.LearningRateAt(0, 0.0), 15);
        Assert.Equal(min + (max - min) * 25 / 50, s.LearningRateAt(25, 0.5), 12);
        Assert.Equal(max, s.LearningRateAt(50, 0.9), 12);
        Assert.Equal(max - (max - min) * 50 / 100, s.LearningRateAt(100, 0.1), 12);
        Assert.Equal(max - (max - min) * 99 / 100, s.LearningRateAt(149, 1.0), 12);
    }
}
