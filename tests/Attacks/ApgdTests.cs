using Carso.Attacks;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Carso.Tests.Attacks;

public class ApgdTests(ITestOutputHelper output)
{
    // ---------- a small undefended model, trained once for the whole class ----------

    /// <summary>10 classes of 1x8x8 images: noisy copies (sigma 0.15, clipped to [0, 1]) of one random prototype each.</summary>
    static (Tensor X, Tensor Y) Blobs(Tensor prototypes, int n, Generator generator)
    {
        var y = randint(0, 10, [n], generator: generator, dtype: ScalarType.Int64);
        var x = (prototypes.index_select(0, y) + 0.15 * randn([n, 1, 8, 8], generator: generator)).clamp(0, 1);
        return (x, y);
    }

    sealed class Mlp : nn.Module<Tensor, Tensor>
    {
        readonly TorchSharp.Modules.Flatten flatten = nn.Flatten();
        readonly TorchSharp.Modules.Linear fc1 = nn.Linear(64, 32), fc2 = nn.Linear(32, 10);
        readonly TorchSharp.Modules.ReLU relu = nn.ReLU();

        public Mlp(Generator generator) : base("mlp")
        {
            RegisterComponents();
            // Initialised from the test's generator, not the global one other test classes may be drawing from.
            using var noGrad = no_grad();
            foreach (var p in parameters()) p.copy_((rand(p.shape, generator: generator) * 2 - 1) * 0.2);
        }

        public override Tensor forward(Tensor x) => fc2.call(relu.call(fc1.call(flatten.call(x))));
    }

    sealed record Trained(Mlp Net, Tensor X, Tensor Y)
    {
        public Tensor Logits(Tensor x) => Net.call(x);
    }

    static readonly Lazy<Trained> Fixture = new(() =>
    {
        using var generator = new Generator(2024);
        Tensor prototypes, xTrain, yTrain, xTest, yTest;
        using (var data = NewDisposeScope())
        {
            prototypes = rand([10, 1, 8, 8], generator: generator);
            (xTrain, yTrain) = Blobs(prototypes, 2000, generator);
            (xTest, yTest) = Blobs(prototypes, 200, generator);
            // The fixture outlives whichever test happens to build it.
            foreach (var t in new[] { xTrain, yTrain, xTest, yTest }) t.DetachFromDisposeScope();
        }
        var net = new Mlp(generator);
        var optimizer = optim.Adam(net.parameters(), lr: 0.01);
        for (var step = 0; step < 300; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            nn.functional.cross_entropy(net.call(xTrain), yTrain).backward();
            optimizer.step();
        }
        net.eval();
        foreach (var p in net.parameters()) p.requires_grad_(false);   // attacks need input gradients only
        return new Trained(net, xTest, yTest);
    });

    static double AccuracyOf(Func<Tensor, Tensor> model, Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return model(x).argmax(1).eq(y).to_type(ScalarType.Float64).mean().item<double>();
    }

    static Threat ThreatOf(Norm norm, double eps) => new(norm, eps);

    // ---------- schedule and rules as pure functions ----------

    [Fact]
    public void CheckpointsForOneHundredIterationsAreThePublishedOnes()
    {
        Assert.Equal(new[] { 22, 41, 57, 70, 80, 87, 93, 99 }, Apgd.Checkpoints(100));
        // The reference's integer interval lengths: floor(2.2) = 2, then shrinking by max(floor(0.3), 1) = 1 to a
        // minimum of 1, so every iteration from the second on is a checkpoint.
        Assert.Equal(new[] { 2, 3, 4, 5, 6, 7, 8, 9, 10 }, Apgd.Checkpoints(10));
        Assert.Equal(new[] { 1 }, Apgd.Checkpoints(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Apgd.Checkpoints(0));
    }

    [Fact]
    public void StepSizeIsHalvedOnOscillationOrOnStallAfterAnUnreducedCheckpoint()
    {
        using var scope = NewDisposeScope();
        // k = 22, rho = 0.75: condition (a) fires for at most 16.5 increases.
        //   0: rose 10 times                                  -> (a) halve
        //   1: rose 20 times, not halved last time, improved  -> keep
        //   2: rose 20 times, not halved last time, no better -> (b) halve
        //   3: rose 20 times, halved last time, no better     -> keep ((b) needs an unreduced previous check)
        //   4: rose 16 times (<= 16.5)                        -> (a) halve
        //   5: rose 17 times, first checkpoint (reduced = true), no better -> keep
        var increases = tensor(new float[] { 10, 20, 20, 20, 16, 17 });
        var reduced = tensor(new[] { true, false, false, true, true, true });
        var bestAtLastCheck = tensor(new float[] { 1, 1, 2, 2, 1, 3 });
        var best = tensor(new float[] { 1, 2, 2, 2, 2, 3 });
        var halve = Apgd.ShouldHalveStep(increases, 22, 0.75, reduced, bestAtLastCheck, best);
        Assert.Equal(new[] { true, false, true, false, true, false }, halve.data<bool>().ToArray());

        // At an interval of 16 the threshold rho * k = 12 is an integer: the reference's comparison is "<=".
        var atThreshold = Apgd.ShouldHalveStep(tensor(new float[] { 12, 13 }), 16, 0.75, tensor(new[] { true, true }),
            tensor(new float[] { 0, 0 }), tensor(new float[] { 1, 1 }));
        Assert.Equal(new[] { true, false }, atThreshold.data<bool>().ToArray());
    }

    [Fact]
    public void MomentumStepIsTheFirstPlainStepThenMixesInThePreviousMove()
    {
        using var scope = NewDisposeScope();
        var x = full(new long[] { 1, 1, 1, 2 }, 0.5f);
        var xk = tensor(new[] { 0.5f, 0.5f }).view(1, 1, 1, 2);
        var xPrev = tensor(new[] { 0.4f, 0.6f }).view(1, 1, 1, 2);
        var grad = tensor(new[] { 3f, -2f }).view(1, 1, 1, 2);
        var eta = tensor(new[] { 0.1f });
        var wide = Threat.Linf(0.3);

        // a = 1: z = x_k + eta * sign(g) = (0.6, 0.4), no momentum.
        AssertClose([0.6f, 0.4f], Apgd.MomentumStep(xk, xPrev, grad, eta, 1.0, x, wide));
        // a = 0.75: x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1}) = 0.5 + 0.075 + 0.025, 0.5 - 0.075 - 0.025.
        AssertClose([0.6f, 0.4f], Apgd.MomentumStep(xk, xPrev, grad, eta, 0.75, x, wide));
        // Momentum against the step: x_{k-1} = (0.6, 0.4) gives 0.5 + 0.075 - 0.025 = 0.55 and 0.45.
        AssertClose([0.55f, 0.45f], Apgd.MomentumStep(xk, tensor(new[] { 0.6f, 0.4f }).view(1, 1, 1, 2), grad, eta, 0.75, x, wide));
        // Both points are projected: with eps 0.02 the step stops at x +- 0.02.
        AssertClose([0.52f, 0.48f], Apgd.MomentumStep(xk, xPrev, grad, eta, 0.75, x, Threat.Linf(0.02)));
        // L2: the step is along g / ||g||_2 = (3, -2) / sqrt(13).
        var s = 0.1f / MathF.Sqrt(13);
        AssertClose([0.5f + 3 * s, 0.5f - 2 * s], Apgd.MomentumStep(xk, xPrev, grad, eta, 1.0, x, Threat.L2(1.0)));
    }

    static void AssertClose(float[] expected, Tensor actual)
    {
        var values = actual.flatten().data<float>().ToArray();
        Assert.Equal(expected.Length, values.Length);
        for (var i = 0; i < values.Length; i++) Assert.Equal(expected[i], values[i], 5);
    }

    [Theory]
    [InlineData(Norm.Linf, 8 / 255.0)]
    [InlineData(Norm.L2, 0.5)]
    public void RandomStartLiesOnTheSphereBeforeClipping(Norm norm, double eps)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(3);
        var x = full(new long[] { 4, 1, 8, 8 }, 0.5f);   // far enough from 0 and 1 that nothing is clipped
        var start = Apgd.RandomStart(x, ThreatOf(norm, eps), generator);
        var norms = Projection.NormOf(start - x, norm).data<float>().ToArray();
        Assert.All(norms, n => Assert.Equal(eps, n, 5));
    }

    // ---------- the attacks ----------

    [Theory]
    [InlineData(Norm.Linf, 0.1, ApgdLoss.Ce)]
    [InlineData(Norm.Linf, 0.1, ApgdLoss.Dlr)]
    [InlineData(Norm.L2, 0.5, ApgdLoss.Ce)]
    [InlineData(Norm.L2, 0.5, ApgdLoss.Dlr)]
    public void AdversarialPointsStayInTheBallAndTheBox(Norm norm, double eps, ApgdLoss loss)
    {
        var f = Fixture.Value;
        using var scope = NewDisposeScope();
        using var generator = new Generator(1);
        var x = f.X[..64];
        var y = f.Y[..64];
        var xAdv = Apgd.Attack(f.Logits, x, y, new ApgdSettings(ThreatOf(norm, eps), loss), generator);
        Assert.Equal(x.shape, xAdv.shape);
        Assert.False(xAdv.requires_grad);
        var maxNorm = Projection.NormOf(xAdv - x, norm).max().item<float>();
        Assert.True(maxNorm <= eps + 1e-6, $"perturbation norm {maxNorm} exceeds eps {eps}");
        Assert.True(xAdv.min().item<float>() >= 0 && xAdv.max().item<float>() <= 1, "xAdv leaves [0, 1]");
    }

    [Fact]
    public void AtALargeEpsTheUndefendedModelHasNoRobustAccuracyLeft()
    {
        var f = Fixture.Value;
        using var scope = NewDisposeScope();
        var threat = Threat.Linf(0.5);
        var clean = AccuracyOf(f.Logits, f.X, f.Y);
        Assert.True(clean > 0.9, $"the fixture model should be accurate, clean accuracy {clean}");
        using var g1 = new Generator(1);
        using var g2 = new Generator(1);
        using var g3 = new Generator(1);
        var ce = AccuracyOf(f.Logits, Apgd.Attack(f.Logits, f.X, f.Y, new ApgdSettings(threat, ApgdLoss.Ce), g1), f.Y);
        var dlr = AccuracyOf(f.Logits, Apgd.Attack(f.Logits, f.X, f.Y, new ApgdSettings(threat, ApgdLoss.Dlr), g2), f.Y);
        var t = AccuracyOf(f.Logits, ApgdTargeted.Attack(f.Logits, f.X, f.Y, new ApgdTargetedSettings(threat), g3), f.Y);
        output.WriteLine($"clean {clean:P1}; Linf 0.5 robust: APGD-CE {ce:P1}, APGD-DLR {dlr:P1}, APGD-T {t:P1}");
        Assert.True(ce <= 0.01, $"APGD-CE robust accuracy {ce}");
        Assert.True(dlr <= 0.01, $"APGD-DLR robust accuracy {dlr}");
        Assert.True(t <= 0.01, $"APGD-T robust accuracy {t}");
    }

    [Fact]
    public void ApgdIsAtLeastAsStrongAsPgdWithTheSameBudget()
    {
        var f = Fixture.Value;
        using var scope = NewDisposeScope();
        // Linf 0.2 sits on this model's slope (PGD-100 leaves about 30%, 0.15 leaves 95%, 0.25 leaves 1%), where
        // the two attacks can differ.
        var threat = Threat.Linf(0.2);
        using var g1 = new Generator(5);
        using var g2 = new Generator(5);
        var pgd = AccuracyOf(f.Logits, Pgd.Attack(f.Logits, f.X, f.Y, new PgdSettings(threat, Steps: 100), g1), f.Y);
        var apgd = AccuracyOf(f.Logits, Apgd.Attack(f.Logits, f.X, f.Y, new ApgdSettings(threat, ApgdLoss.Ce, NIter: 100), g2), f.Y);
        output.WriteLine($"Linf 0.2 robust accuracy on {f.X.shape[0]} points: PGD-100 (step 2.5 eps / 100) {pgd:P1}, APGD-CE-100 {apgd:P1}");
        Assert.True(pgd is > 0.05 and < 0.95, $"eps should leave PGD a partial success for the comparison to mean something, got {pgd}");
        Assert.True(apgd <= pgd, $"APGD robust accuracy {apgd} above PGD's {pgd}");
    }

    [Fact]
    public void TheSameGeneratorSeedGivesTheSameAdversarialPoints()
    {
        var f = Fixture.Value;
        using var scope = NewDisposeScope();
        var x = f.X[..32];
        var y = f.Y[..32];
        Tensor Run(ulong seed)
        {
            using var generator = new Generator(seed);
            return Apgd.Attack(f.Logits, x, y, new ApgdSettings(Threat.L2(0.5), NIter: 20, NRestarts: 2), generator);
        }
        Tensor RunT(ulong seed)
        {
            using var generator = new Generator(seed);
            return ApgdTargeted.Attack(f.Logits, x, y, new ApgdTargetedSettings(Threat.Linf(0.05), NIter: 20, NTargetClasses: 3), generator);
        }
        Assert.True(Run(7).eq(Run(7)).all().item<bool>(), "APGD differs between two runs with the same seed");
        Assert.False(Run(7).eq(Run(8)).all().item<bool>(), "APGD ignores the generator");
        Assert.True(RunT(7).eq(RunT(7)).all().item<bool>(), "APGD-T differs between two runs with the same seed");
    }

    [Fact]
    public void MoreRestartsOnlyAddFooledPoints()
    {
        var f = Fixture.Value;
        using var scope = NewDisposeScope();
        Tensor Fooled(int restarts)
        {
            using var generator = new Generator(11);
            var xAdv = Apgd.Attack(f.Logits, f.X, f.Y, new ApgdSettings(Threat.Linf(0.18), NIter: 20, NRestarts: restarts), generator);
            using var noGrad = no_grad();
            return f.Logits(xAdv).argmax(1).ne(f.Y);
        }
        var one = Fooled(1);
        var three = Fooled(3);
        // The first restart draws the same start, so every point fooled once is fooled with three restarts.
        Assert.True(one.any().item<bool>(), "eps too small for this check: nothing fooled");
        Assert.False(one.logical_and(three.logical_not()).any().item<bool>(), "a point fooled by one restart survived three");
        output.WriteLine($"fooled: 1 restart {one.sum().item<long>()}, 3 restarts {three.sum().item<long>()}");
    }

    [Fact]
    public void PointsNotFooledComeBackAtTheirHighestLossNotAtTheCleanImage()
    {
        var f = Fixture.Value;
        using var scope = NewDisposeScope();
        using var generator = new Generator(2);
        var xAdv = Apgd.Attack(f.Logits, f.X, f.Y, new ApgdSettings(Threat.Linf(0.15)), generator);
        using var noGrad = no_grad();
        var robust = f.Logits(xAdv).argmax(1).eq(f.Y);
        Assert.True(robust.sum().item<long>() > 0, "eps too large for this check: no point survives");
        Assert.True(robust.logical_not().sum().item<long>() > 0, "eps too small for this check: no point is fooled");
        var lossAdv = Losses.CrossEntropy(f.Logits(xAdv), f.Y).masked_select(robust);
        var lossClean = Losses.CrossEntropy(f.Logits(f.X), f.Y).masked_select(robust);
        Assert.True(lossAdv.gt(lossClean).all().item<bool>(), "a surviving point's loss is not above its clean loss");
        Assert.True(Projection.NormOf(xAdv - f.X, Norm.Linf).masked_select(robust).gt(0).all().item<bool>());
    }

    [Fact]
    public void TheMonitorSeesOneGradientPerIterationAndEpsZeroLeavesTheImagesAlone()
    {
        var f = Fixture.Value;
        using var scope = NewDisposeScope();
        var monitor = new AttackMonitor();
        var correct = (long)Math.Round(AccuracyOf(f.Logits, f.X, f.Y) * f.X.shape[0]);
        var xAdv = Apgd.Attack(f.Logits, f.X, f.Y, new ApgdSettings(Threat.Linf(0), NIter: 7, NRestarts: 2, EotIter: 3), monitor: monitor);
        Assert.True(xAdv.eq(f.X).all().item<bool>());
        // Only correctly classified points are attacked; with eps 0 none is fooled, so both restarts run on all of
        // them: (1 start + 7 iterations) gradients each, whatever EotIter is.
        Assert.Equal(2 * correct * 8, monitor.GradientEvaluations);
        Assert.Equal(0, monitor.NonFiniteGradients);
        Assert.Equal(0, monitor.NonFiniteLogits);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TensorsDoNotPileUpOverTheIterations(bool targeted)
    {
        var f = Fixture.Value;
        using var scope = NewDisposeScope();
        var x = f.X[..16];
        var y = f.Y[..16];
        // The live tensors on this thread each time the attack calls the model: the carried state is a fixed set of
        // tensors, so the count must not grow with the iterations.
        var live = new List<long>();
        Tensor Model(Tensor input)
        {
            live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
            return f.Logits(input);
        }
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using var generator = new Generator(3);
        using (var attack = NewDisposeScope())
        {
            _ = targeted
                ? ApgdTargeted.Attack(Model, x, y, new ApgdTargetedSettings(Threat.Linf(0.02), NIter: 40, NTargetClasses: 1), generator)
                : Apgd.Attack(Model, x, y, new ApgdSettings(Threat.Linf(0.02), NIter: 40), generator);
        }
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        // Calls: the clean pass, the start, then one per iteration; compare the iterations after the first few.
        Assert.Equal(42, live.Count);
        var steady = live.Skip(4).ToArray();
        output.WriteLine($"live tensors at the model calls: {string.Join(" ", live)}");
        Assert.True(steady.Max() - steady.Min() <= 4, $"live tensors grow over the iterations: {string.Join(" ", live)}");
    }

    // ---------- EOT ----------

    /// <summary>A stochastic linear model: logits = flatten(x) (W + N)^T with fresh N ~ N(0, I) [10, 64] per call.</summary>
    static Func<Tensor, Tensor> NoisyLinear(Tensor w, Generator noise) =>
        x => x.flatten(1).matmul((w + randn([10, 64], generator: noise)).t());

    /// <summary>z_y: its input gradient for point b is row y_b of the weights of that pass.</summary>
    static Tensor TrueLogit(Tensor logits, Tensor y) => logits.gather(1, y.unsqueeze(1)).squeeze(1);

    [Fact]
    public void EotGradientIsTheMeanOfSinglePassGradients()
    {
        using var scope = NewDisposeScope();
        using var setup = new Generator(4);
        var w = randn([10, 64], generator: setup);
        var x = rand([5, 1, 8, 8], generator: setup);
        var y = tensor(new long[] { 0, 3, 3, 7, 9 });
        const int k = 4;

        var (gradient, loss, logits) = Apgd.EotGradient(NoisyLinear(w, new Generator(99)), x, y, TrueLogit, k);

        // By hand: the mean of (W + N_j)[y] over the k noise draws the model made.
        var noise = new Generator(99);
        var draws = Enumerable.Range(0, k).Select(_ => w + randn([10, 64], generator: noise)).ToArray();
        var meanWeights = stack(draws).mean([0]);
        Assert.True(gradient.flatten(1).allclose(meanWeights.index_select(0, y), rtol: 1e-5, atol: 1e-5));
        var expectedLoss = stack(draws.Select(d => x.flatten(1).matmul(d.t()).gather(1, y.unsqueeze(1)).squeeze(1)).ToArray()).mean([0]);
        Assert.True(loss.allclose(expectedLoss, rtol: 1e-5, atol: 1e-5));
        Assert.Equal(new long[] { 5, 10 }, logits.shape);

        // The same as averaging k single-pass estimates drawn from the same noise stream, none of which alone is it.
        var again = new Generator(99);
        var model = NoisyLinear(w, again);
        var singles = Enumerable.Range(0, k).Select(_ => Apgd.EotGradient(model, x, y, TrueLogit, 1).Gradient).ToArray();
        Assert.True(gradient.allclose(stack(singles).mean([0]), rtol: 1e-5, atol: 1e-5));
        Assert.All(singles, s => Assert.False(s.allclose(gradient, rtol: 1e-3, atol: 1e-3)));
    }

    [Fact]
    public void ApgdRunsWithEotOnAStochasticModel()
    {
        using var scope = NewDisposeScope();
        using var setup = new Generator(6);
        var w = randn([10, 64], generator: setup);
        var x = rand([16, 1, 8, 8], generator: setup);
        var noise = new Generator(7);
        var model = NoisyLinear(w, noise);
        var y = x.flatten(1).matmul(w.t()).argmax(1);
        var monitor = new AttackMonitor();
        var xAdv = Apgd.Attack(model, x, y, new ApgdSettings(Threat.Linf(0.05), NIter: 10, EotIter: 4), new Generator(8), monitor);
        Assert.True(Projection.NormOf(xAdv - x, Norm.Linf).max().item<float>() <= 0.05 + 1e-6);
        Assert.True(monitor.GradientEvaluations > 0);
        Assert.Equal(0, monitor.NonFiniteGradients);
    }

    // ---------- guard rails ----------

    [Fact]
    public void BadSettingsAndTooFewClassesFailClearly()
    {
        var f = Fixture.Value;
        using var scope = NewDisposeScope();
        var x = f.X[..4];
        var y = f.Y[..4];
        var eps = Assert.Throws<ArgumentOutOfRangeException>(() => Apgd.Attack(f.Logits, x, y, new ApgdSettings(new Threat(Norm.Linf, -0.1))));
        Assert.Contains("Eps", eps.ParamName);
        var iterations = Assert.Throws<ArgumentOutOfRangeException>(() => Apgd.Attack(f.Logits, x, y, new ApgdSettings(Threat.Linf(0.1), NIter: 0)));
        Assert.Equal("NIter", iterations.ParamName);
        var targetedIterations = Assert.Throws<ArgumentOutOfRangeException>(() =>
            ApgdTargeted.Attack(f.Logits, x, y, new ApgdTargetedSettings(Threat.Linf(0.1), NIter: 0)));
        Assert.Equal("NIter", targetedIterations.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => Apgd.Attack(f.Logits, x, y, new ApgdSettings(Threat.Linf(0.1), EotIter: 0)));
        Assert.Throws<ArgumentException>(() => Apgd.Attack(f.Logits, x, y, new ApgdSettings(Threat.Linf(0.1), ApgdLoss.TargetedDlr)));
        var targets = Assert.Throws<ArgumentOutOfRangeException>(() =>
            ApgdTargeted.Attack(f.Logits, x, y, new ApgdTargetedSettings(Threat.Linf(0.1), NTargetClasses: 10)));
        Assert.Equal("NTargetClasses", targets.ParamName);

        var twoClasses = randn([64, 2]);
        var threeClasses = randn([64, 3]);
        Tensor TwoClass(Tensor input) => input.flatten(1).matmul(twoClasses);
        Tensor ThreeClass(Tensor input) => input.flatten(1).matmul(threeClasses);
        var labels = zeros([4], dtype: ScalarType.Int64);
        var dlr = Assert.Throws<ArgumentException>(() => Apgd.Attack(TwoClass, x, labels, new ApgdSettings(Threat.Linf(0.1), ApgdLoss.Dlr)));
        Assert.Contains("at least 3 classes", dlr.Message);
        var targeted = Assert.Throws<ArgumentException>(() => ApgdTargeted.Attack(ThreeClass, x, labels, new ApgdTargetedSettings(Threat.Linf(0.1))));
        Assert.Contains("at least 4 classes", targeted.Message);
    }
}
