using Carso.Attacks;
using Carso.Data;
using Carso.Models;
using Carso.Training;
using static TorchSharp.torch;

namespace Carso.Tests.Training;

public class AdversarialTrainingTests
{
    /// <summary>A tiny separable problem: class k images are bright in their k-th horizontal band (4 classes, 1x8x8).</summary>
    static Dataset Bands(int n, long seed) => TestData.Bands(n, seed);

    sealed class Tiny : nn.Module<Tensor, Tensor>
    {
        readonly TorchSharp.Modules.Flatten flatten = nn.Flatten();
        readonly TorchSharp.Modules.Linear fc1 = nn.Linear(64, 16), fc2 = nn.Linear(16, 4);
        readonly TorchSharp.Modules.ReLU relu = nn.ReLU();
        public Tiny() : base("tiny") { RegisterComponents(); }
        public override Tensor forward(Tensor x) => fc2.call(relu.call(fc1.call(flatten.call(x))));
    }

    static AdversarialTrainingSettings Settings(int epochs) => new()
    {
        Threat = Threat.Linf(0.05), AttackSteps = 3, Epochs = epochs, BatchSize = 32,
        Optimizer = new OptimizerSettings(OptimizerKind.Sgd, 0.1), Schedule = new ScheduleSettings(ScheduleKind.Cosine),
        EvalPgdSteps = 3, EvalPoints = 64, EvalBatchSize = 64, Seed = 11,
    };

    static Tensor[] Weights(nn.Module m) => m.parameters().Select(p => p.detach().clone()).ToArray();

    [Fact]
    public void KillAndResumeGivesTheSameFinalWeightsAsAnUninterruptedRun()
    {
        using var dir = new TempFolder();
        using var train = Bands(160, 1);
        using var validation = Bands(64, 2);
        var settings = Settings(epochs: 3);

        // Same initial weights for both runs, copied rather than re-drawn from the shared global generator.
        var uninterrupted = new Tiny();
        var killed = new Tiny();
        killed.load_state_dict(uninterrupted.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone()));
        AdversarialTraining.Train(uninterrupted, train, validation, settings, dir.File("a"));

        var steps = 0;
        Assert.Throws<OperationCanceledException>(() =>
            AdversarialTraining.Train(killed, train, validation, settings, dir.File("b"),
                progress: (_, _) => { if (++steps == 8) throw new OperationCanceledException("killed mid epoch 2"); }));

        manual_seed(99); // a different initialisation: everything must come from the checkpoint
        var resumed = new Tiny();
        var result = AdversarialTraining.Train(resumed, train, validation, settings, dir.File("b"));
        Assert.True(result.Resumed);
        Assert.Equal(3, result.History.Count);
        foreach (var (a, b) in Weights(uninterrupted).Zip(Weights(resumed)))
            Assert.True(a.eq(b).all().item<bool>(), "resumed weights differ from the uninterrupted run");
    }

    [Theory]
    [InlineData(TrainingMethod.PgdAt)]
    [InlineData(TrainingMethod.FgsmRs)]
    public void TheSameSeedGivesTheSameTrainingWhateverTheGlobalGeneratorDoes(TrainingMethod method)
    {
        using var train = Bands(96, 1);
        using var validation = Bands(32, 2);
        var settings = Settings(epochs: 2) with { Method = method, Threat = Threat.Linf(0.1), EvalPoints = 32, EvalBatchSize = 32 };
        var initial = new Tiny(); // initialisation is the caller's: every run starts from copies of these weights
        (Tensor[] Weights, EpochMetrics[] History) Run(AdversarialTrainingSettings s, Action<int, int>? progress = null)
        {
            var model = new Tiny();
            model.load_state_dict(initial.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone()));
            var result = GlobalGenerator.LeftAlone(() => AdversarialTraining.Train(model, train, validation, s, progress: progress), progress is null);
            return (Weights(model), result.History.Select(h => h with { Seconds = 0 }).ToArray());
        }

        var first = Run(settings);
        GlobalGenerator.Disturb(0);
        // and again during training, after every step
        var second = Run(settings, (step, _) => GlobalGenerator.Disturb(step));
        Assert.Equal(first.History, second.History);
        foreach (var (a, b) in first.Weights.Zip(second.Weights))
            Assert.True(a.eq(b).all().item<bool>(), "the same seed gave other weights");

        // The seed matters (else the equality above would prove little): another seed trains differently.
        var other = Run(settings with { Seed = settings.Seed + 1 });
        Assert.False(first.Weights.Zip(other.Weights).All(p => p.First.eq(p.Second).all().item<bool>()),
            "another seed gave the same weights");
    }

    /// <summary>
    /// A robust feature and a non-robust shortcut (Tsipras et al. 2019, in miniature), 4 classes of 1x8x8 images: a
    /// bright band (0.5) in rows 2k..2k+1, right for 70% of the points (else another class's band), plus a fixed
    /// per-class +-0.08 sign pattern over every pixel, always right; offset 0.2, noise U(0, 0.1). Clean training
    /// learns the shortcut (held-out clean accuracy near 100%) and an eps 0.1 attack reverses it; PGD-AT learns the
    /// band (about 75%, the same under attack).
    /// </summary>
    static Dataset BandsWithShortcut(int n, long seed)
    {
        using var scope = NewDisposeScope();
        using var patternGenerator = new Generator(0); // the same patterns in every split
        var patterns = rand([4, 1, 8, 8], generator: patternGenerator).lt(0.5).to_type(ScalarType.Float32) * 2 - 1;
        using var generator = new Generator((ulong)seed);
        var labels = randint(0, 4, [n], generator: generator, dtype: ScalarType.Int64);
        var misleading = rand([n], generator: generator).lt(0.3);
        var band = where(misleading, (labels + randint(1, 4, [n], generator: generator, dtype: ScalarType.Int64)).remainder(4), labels);
        var rows = arange(8).div(2, rounding_mode: RoundingMode.floor).view(1, 1, 8, 1);
        var images = rows.eq(band.view(n, 1, 1, 1)).to_type(ScalarType.Float32).expand(n, 1, 8, 8) * 0.5
                     + 0.08 * patterns.index_select(0, labels) + 0.2 + rand([n, 1, 8, 8], generator: generator) * 0.1;
        return Dataset.Create("bands-with-shortcut", images.contiguous().MoveToOuterDisposeScope(), labels.MoveToOuterDisposeScope(), ["0", "1", "2", "3"]);
    }

    [Fact]
    public void PgdTrainingMakesTheModelMoreRobustThanCleanTraining()
    {
        // On plain bands clean training is about as robust as PGD-AT (the best clean classifier averages the band,
        // which is the robust one), so the outcome was a matter of the random stream; the shortcut makes the
        // difference one of the method. Checked over 12 (initialisation, seed) pairs: PGD-AT 73-75% in 11, 22% in
        // one (stuck at chance); clean training 0-30%.
        using var train = BandsWithShortcut(256, 3);
        using var validation = BandsWithShortcut(128, 4);
        AdversarialTrainingSettings Make(TrainingMethod method) => Settings(epochs: 20) with
        {
            Method = method, Threat = Threat.Linf(0.1), AttackSteps = 5, EvalPoints = 128, EvalPgdSteps = 10,
            Optimizer = new OptimizerSettings(OptimizerKind.Adam, 0.01, WeightDecay: 0), StopOnCatastrophicOverfitting = false,
        };
        manual_seed(6);
        var clean = AdversarialTraining.Train(new Tiny(), train, validation, Make(TrainingMethod.Clean));
        manual_seed(6);
        var robust = AdversarialTraining.Train(new Tiny(), train, validation, Make(TrainingMethod.PgdAt));
        Console.WriteLine($"PGD-AT {robust.History[^1].ValidationPgd} clean {robust.History[^1].ValidationClean}; clean training: PGD {clean.History[^1].ValidationPgd} clean {clean.History[^1].ValidationClean}");
        Assert.True(clean.History[^1].ValidationClean.Value > 0.85, $"clean training did not learn the shortcut: {clean.History[^1].ValidationClean}");
        Assert.True(robust.History[^1].ValidationPgd.Value > clean.History[^1].ValidationPgd.Value + 0.1,
            $"PGD-AT {robust.History[^1].ValidationPgd} vs clean training {clean.History[^1].ValidationPgd}");
    }

    [Fact]
    public void ResumingWithOtherSettingsIsRefused()
    {
        using var dir = new TempFolder();
        using var train = Bands(64, 1);
        using var validation = Bands(32, 2);
        AdversarialTraining.Train(new Tiny(), train, validation, Settings(epochs: 1), dir.Path);
        var e = Assert.Throws<Carso.IO.ResumeMismatchException>(() =>
            AdversarialTraining.Train(new Tiny(), train, validation, Settings(epochs: 1) with { AttackSteps = 7 }, dir.Path));
        Assert.Contains("holds a training run with other settings", e.Message);
        Assert.Contains(dir.Path, e.Message);
    }

    [Fact]
    public void ACorruptEpochFileIsAnErrorNamingIt()
    {
        using var dir = new TempFolder();
        using var train = Bands(64, 1);
        using var validation = Bands(32, 2);
        AdversarialTraining.Train(new Tiny(), train, validation, Settings(epochs: 1), dir.Path);
        var modelFile = Directory.GetFiles(dir.Path, "model-epoch*.bin").Single();
        File.WriteAllBytes(modelFile, new byte[100]); // a truncated or foreign file
        var e = Assert.Throws<InvalidDataException>(() =>
            AdversarialTraining.Train(new Tiny(), train, validation, Settings(epochs: 1), dir.Path));
        Assert.Contains(modelFile, e.Message);
        Assert.Contains("delete the folder", e.Message);
    }

    [Fact]
    public void TheL2RecipeIsTheLinfOneAtL2Eps15With10StepsOf25EpsOver10()
    {
        var linf = AdversarialTrainingSettings.FashionMnistPgdAt;
        var l2 = AdversarialTrainingSettings.FashionMnistPgdAtL2;
        Assert.Equal(Threat.L2(1.5), l2.Threat);
        Assert.Equal(10, l2.AttackSteps);
        Assert.Equal(0.375, l2.TrainingPgd.Alpha, 12);
        Assert.Equal(Norm.L2, l2.EvalPgd.Threat.Norm);
        // Everything else is the Linf recipe's.
        Assert.Equal(linf with { Threat = l2.Threat, AttackSteps = l2.AttackSteps }, l2);
        Assert.Equal(0.05, linf.TrainingPgd.Alpha, 12); // 2.5 * 0.1 / 5, unchanged
    }

    [Fact]
    public void CatastrophicOverfittingIsAPgdAccuracyCollapseBelowTheBest()
    {
        Assert.False(AdversarialTraining.IsCatastrophicOverfitting([], 0.0, 20));
        Assert.False(AdversarialTraining.IsCatastrophicOverfitting([0.5, 0.6], 0.45, 20));
        Assert.True(AdversarialTraining.IsCatastrophicOverfitting([0.5, 0.6], 0.05, 20));
    }

    [Fact]
    public void SchedulesFollowTheirDefinitions()
    {
        var piecewise = Schedules.Create(new ScheduleSettings(ScheduleKind.Piecewise, [0.5, 0.75], 0.1), 1.0);
        Assert.Equal(1.0, piecewise(0.49), 12);
        Assert.Equal(0.1, piecewise(0.5), 12);
        Assert.Equal(0.01, piecewise(0.8), 12);
        var cosine = Schedules.Create(new ScheduleSettings(ScheduleKind.Cosine), 2.0);
        Assert.Equal(2.0, cosine(0), 12);
        Assert.Equal(1.0, cosine(0.5), 12);
        Assert.Equal(0.0, cosine(1), 12);
        var oneCycle = Schedules.Create(new ScheduleSettings(ScheduleKind.OneCycle, PeakAt: 0.4), 0.2);
        Assert.Equal(0.0, oneCycle(0), 12);
        Assert.Equal(0.2, oneCycle(0.4), 12);
        Assert.Equal(0.1, oneCycle(0.7), 12);
    }

    [Fact]
    public void PgdAndFgsmStayInTheBallAndTheBox()
    {
        using var scope = NewDisposeScope();
        manual_seed(7);
        var model = new SmallCnn();
        var x = rand(8, 1, 28, 28);
        var y = randint(0, 10, [8]);
        foreach (var threat in new[] { Threat.Linf(0.1), Threat.L2(1.5) })
        {
            var advs = new[]
            {
                Pgd.Attack(model.call, x, y, new PgdSettings(threat, 5)),
                Fgsm.Attack(model.call, x, y, new FgsmSettings(threat)),
            };
            foreach (var adv in advs)
            {
                Assert.True(Projection.NormOf(adv - x, threat.Norm).max().item<float>() <= threat.Eps + 1e-5);
                Assert.True(adv.min().item<float>() >= 0 && adv.max().item<float>() <= 1);
            }
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => Threat.Linf(-0.1));
    }
}
