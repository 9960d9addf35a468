using Carso.Training;
using TorchSharp;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Carso.Tests.Training;

/// <summary>
/// RAdam against torch.optim.RAdam, step by step, on the fixed least-squares problem of scripts/radam-reference.py
/// (its trajectories are hard-coded in RAdamReference.cs, so these tests need no Python).
/// </summary>
public class RAdamTests(ITestOutputHelper output)
{
    const int Steps = 50;
    const double Lr = 1e-3;

    /// <summary>The reference problem: A [10, 5], b [10], w0 [5], loss mean((A w - b)^2); no random numbers.</summary>
    static (Tensor A, Tensor B, double[] W0) Problem(ScalarType dtype)
    {
        var a = Enumerable.Range(0, 50).Select(k => Math.Sin(0.7 * (5 * (k / 5) + k % 5) + 0.3)).ToArray();
        var b = Enumerable.Range(0, 10).Select(i => Math.Cos(1.3 * i)).ToArray();
        var w0 = Enumerable.Range(0, 5).Select(j => 0.25 * (j + 1) - 0.8).ToArray();
        return (tensor(a).reshape(10, 5).to(dtype), tensor(b).to(dtype), w0);
    }

    /// <summary>
    /// w after each step of the optimiser <paramref name="make"/> builds; optionally inside Lookahead, with the learning
    /// rate set from the purifier schedule before every step (as PurifierTraining.Train does), and saved and reloaded
    /// into a fresh optimiser (and Lookahead) after step <paramref name="resumeAfter"/> (as a resumed training is).
    /// </summary>
    static double[][] Trajectory(Func<Parameter, optim.Optimizer> make, ScalarType dtype = ScalarType.Float64,
        Lookahead.Settings? lookahead = null, bool scheduled = false, int? resumeAfter = null)
    {
        using var scope = NewDisposeScope();
        var (a, b, w0) = Problem(dtype);
        var w = new Parameter(tensor(w0).to(dtype));
        var schedule = new PurifierTrainingSettings { LearningRate = Lr };
        var (inner, outer) = Build(make, w, lookahead);
        var trajectory = new double[Steps][];
        for (var step = 0; step < Steps; step++)
        {
            if (scheduled) Optimizers.SetLearningRate(inner, schedule.LearningRateAt(step / (double)Steps));
            inner.zero_grad();
            (a.matmul(w) - b).pow(2).mean().backward();
            if (outer is null) inner.step(); else outer.step();
            trajectory[step] = w.detach().to(ScalarType.Float64).data<double>().ToArray();
            if (step + 1 == resumeAfter) (inner, outer) = Resume(make, w, lookahead, inner, outer);
        }
        inner.Dispose();
        outer?.Dispose();
        return trajectory;
    }

    static (optim.Optimizer, Lookahead?) Build(Func<Parameter, optim.Optimizer> make, Parameter w, Lookahead.Settings? lookahead)
    {
        var inner = make(w);
        return (inner, lookahead is null ? null : new Lookahead(inner, [w], lookahead));
    }

    /// <summary>A fresh optimiser (and Lookahead) loaded from the state of the old ones, saved as PurifierTraining saves it.</summary>
    static (optim.Optimizer, Lookahead?) Resume(Func<Parameter, optim.Optimizer> make, Parameter w, Lookahead.Settings? lookahead,
        optim.Optimizer inner, Lookahead? outer)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            ((OptimizerHelper)inner).save_state_dict(writer);
            outer?.Save(writer);
        }
        inner.Dispose();
        outer?.Dispose();
        var (freshInner, freshOuter) = Build(make, w, lookahead);
        stream.Position = 0;
        using var reader = new BinaryReader(stream);
        ((OptimizerHelper)freshInner).load_state_dict(reader);
        freshOuter?.Load(reader);
        return (freshInner, freshOuter);
    }

    static double MaxRelativeDifference(double[][] actual, double[][] expected) =>
        actual.Zip(expected).SelectMany(p => p.First.Zip(p.Second, (x, y) => Math.Abs(x - y) / Math.Abs(y))).Max();

    /// <summary>The same on the displacements w_t - w_0, which the optimiser alone makes (stricter: they are small).</summary>
    static double MaxRelativeDisplacementDifference(double[][] actual, double[][] expected, double[] w0) =>
        actual.Zip(expected).SelectMany(p => p.First.Zip(p.Second, (x, y) => (x, y)).Select((q, j) =>
            Math.Abs(q.x - q.y) / Math.Abs(q.y - w0[j]))).Max();

    double Compare(string name, double[][] actual, double[][] expected)
    {
        var relative = MaxRelativeDifference(actual, expected);
        var displacement = MaxRelativeDisplacementDifference(actual, expected, Problem(ScalarType.Float64).W0);
        output.WriteLine($"{name}: max relative difference {relative:E2} (parameters), {displacement:E2} (displacements from w0), {expected.Length} steps");
        return relative;
    }

    static readonly Func<Parameter, optim.Optimizer> Ours = w => new Carso.Training.RAdam([w], Lr);

    [Fact]
    public void TorchSharpRAdamMatchesPyTorchForFiveStepsThenItsRectifiedStepIsLrTimesTooShort()
    {
        // Why TorchSharp 0.107's RAdam "did not train the purifier": while rho_t <= 5 (steps 1-5 with beta2 0.999) it
        // takes PyTorch's momentum-SGD step; from step 6 on its rectified step is bias_corrected_exp_avg * lr * lr *
        // adaptive_lr * rect, PyTorch's times lr. From the same state after step 5, step 6 is exactly lr times PyTorch's.
        var torchSharp = Trajectory(w => optim.RAdam([w], Lr));
        var reference = RAdamReference.Plain;
        Assert.True(Compare("TorchSharp RAdam, steps 1-5", torchSharp[..5], reference[..5]) < 1e-12);
        Compare("TorchSharp RAdam, steps 1-50", torchSharp, reference);
        var ratios = torchSharp[5].Zip(torchSharp[4], (x, y) => x - y).Zip(reference[5].Zip(reference[4], (x, y) => x - y), (s, r) => s / r).ToArray();
        output.WriteLine($"step 6, TorchSharp's update / PyTorch's: {string.Join(", ", ratios.Select(r => r.ToString("E6")))}");
        Assert.All(ratios, r => Assert.Equal(Lr, r, Lr * 1e-8));
        Assert.All(Enumerable.Range(0, 5), j => Assert.True(Math.Abs(torchSharp[^1][j] - reference[^1][j]) > 1e-3 * Math.Abs(reference[^1][j])));
    }

    [Fact]
    public void TorchSharpRAdamIsAsFarOffWithWeightDecayAndInLookaheadWithTheSchedule()
    {
        // Our usage (Lookahead, the schedule written into the param groups, weight decay) adds nothing to the error:
        // with Carso's RAdam the same usage matches PyTorch exactly (the tests below).
        Assert.True(Compare("TorchSharp RAdam, weight decay 0.1",
            Trajectory(w => optim.RAdam([w], Lr, weight_decay: 0.1)), RAdamReference.WeightDecay) > 1e-2);
        Assert.True(Compare("TorchSharp RAdam in Lookahead (k 6, alpha 0.8), purifier LR schedule",
            Trajectory(w => optim.RAdam([w], Lr), lookahead: new Lookahead.Settings(K: 6, Alpha: 0.8), scheduled: true), RAdamReference.LookaheadSchedule) > 1e-3);
    }

    [Fact]
    public void RAdamMatchesPyTorchStepByStep() =>
        Assert.True(Compare("Carso RAdam, plain", Trajectory(Ours), RAdamReference.Plain) < 1e-5);

    [Fact]
    public void RAdamWithWeightDecayMatchesPyTorchStepByStep() =>
        Assert.True(Compare("Carso RAdam, weight decay 0.1",
            Trajectory(w => new Carso.Training.RAdam([w], Lr, weightDecay: 0.1)), RAdamReference.WeightDecay) < 1e-5);

    [Fact]
    public void RAdamInFloat32MatchesPyTorchStepByStep() =>
        Assert.True(Compare("Carso RAdam, float32", Trajectory(Ours, ScalarType.Float32), RAdamReference.PlainFloat32) < 1e-5);

    [Fact]
    public void RAdamInLookaheadWithThePurifierScheduleMatchesPyTorch() =>
        Assert.True(Compare("Carso RAdam in Lookahead (k 6, alpha 0.8), purifier LR schedule",
            Trajectory(Ours, lookahead: new Lookahead.Settings(K: 6, Alpha: 0.8), scheduled: true), RAdamReference.LookaheadSchedule) < 1e-5);

    [Fact]
    public void RAdamInLookaheadResumedFromSavedStateMatchesPyTorch() =>
        // Saved after step 20 (not a multiple of K: Lookahead's counter and slow weights must survive) and reloaded.
        Assert.True(Compare("Carso RAdam in Lookahead, resumed after step 20",
            Trajectory(Ours, lookahead: new Lookahead.Settings(K: 6, Alpha: 0.8), scheduled: true, resumeAfter: 20), RAdamReference.LookaheadSchedule) < 1e-5);

    [Fact]
    public void RectificationSwitchesOnAtStepSixWithBeta2Of0999()
    {
        Assert.True(Carso.Training.RAdam.Rectification(0.999, 5).RhoT <= 5);
        var (rho6, rect6) = Carso.Training.RAdam.Rectification(0.999, 6);
        Assert.True(rho6 > 5);
        Assert.InRange(rect6, 0, 1);
        Assert.InRange(Carso.Training.RAdam.Rectification(0.999, 100_000).Rect, 0.999, 1);   // r_t -> 1
    }

    [Fact]
    public void PurifierTrainingUsesCarsoRAdamWhenAskedAndAdamByDefault()
    {
        using var w = new Parameter(zeros(3));
        using var radam = PurifierTraining.CreateOptimizer([w], new PurifierTrainingSettings { Optimizer = PurifierOptimizer.RAdam });
        using var adam = PurifierTraining.CreateOptimizer([w], new PurifierTrainingSettings());
        Assert.IsType<Carso.Training.RAdam>(radam);
        Assert.IsType<TorchSharp.Modules.Adam>(adam);
    }
}
