using Carso.Attacks;
using Carso.Data;
using Carso.Evaluation;
using Carso.IO;
using Carso.Models;
using static TorchSharp.torch;

namespace Carso.Tests.Evaluation;

public class ProtocolEvaluationTests
{
    /// <summary>A fixed random MLP on 1x6x6 images and data labelled by its own predictions (clean accuracy 100%),
    /// except the last 5 points, which get a wrong label.</summary>
    internal static (Func<Tensor, Tensor> Model, Dataset Data) Setup(int n = 60)
    {
        var g = new Generator(21);
        var w1 = randn(36, 24, generator: g) * 0.5;
        var w2 = randn(24, 4, generator: g);
        Func<Tensor, Tensor> model = x => x.flatten(1).matmul(w1).tanh().matmul(w2);
        var images = rand(n, 1, 6, 6, generator: g);
        Tensor labels;
        using (no_grad()) labels = model(images).argmax(1);
        labels[TensorIndex.Slice(n - 5)] = (labels[TensorIndex.Slice(n - 5)] + 1).remainder(4);
        return (model, Dataset.Create("mlp-labelled", images, labels, ["a", "b", "c", "d"]));
    }

    static readonly Threat Eps = Threat.Linf(0.05);

    static NamedAttack Fgsm(double eps) => new("fgsm", (m, x, y, g) => Carso.Attacks.Fgsm.Attack(m, x, y, new FgsmSettings(Threat.Linf(eps)), g));
    static NamedAttack Pgd(double eps) => new("pgd", (m, x, y, g) => Carso.Attacks.Pgd.Attack(m, x, y, new PgdSettings(Threat.Linf(eps), 10), g));
    static Protocol TwoAttacks(double eps = 0.05) => Protocol.Of("test", Threat.Linf(eps), _ => [Fgsm(eps), Pgd(eps)]);

    /// <summary>A stochastic model: the MLP on inputs with noise drawn from the batch's generator.</summary>
    internal static StochasticModel Noisy(Func<Tensor, Tensor> model) => (x, g) => model(x + 0.02 * randn(x.shape, generator: g));

    [Fact]
    public void RobustAccuracyIsThePerPointWorstCaseAndStagesOnlyFall()
    {
        var (model, data) = Setup();
        using var _ = data;
        var result = ProtocolEvaluation.Run(model, data, TwoAttacks(), new EvaluationOptions(Seed: 3, BatchSize: 16));
        using var images = result.WorstCaseImages!;
        var stages = result.Families[0].Stages;
        Assert.Equal(55, result.Clean.Correct);
        Assert.Equal(result.Points.Count(p => p.CleanCorrect && p.BrokenBy is null), result.WorstCase.Correct);
        Assert.True(stages[0].RobustAfter.Correct >= stages[1].RobustAfter.Correct);
        Assert.Equal(stages[1].RobustAfter, result.WorstCase);
        Assert.True(stages[0].PointsBroken + stages[1].PointsBroken > 0, "the attacks should break some points");
        // the second attack only ran on points the first left robust
        Assert.Equal(stages[0].PointsAttacked - stages[0].PointsBroken, stages[1].PointsAttacked);
        Assert.All(result.Points.Where(p => p.BrokenBy is not null), p => Assert.InRange(p.PerturbationNorm!.Value, 0, 0.05 + 1e-6));
        // The published images: broken points carry their adversarial image (which fools the model), the rest the clean one.
        using var predicted = model(images).argmax(1);
        foreach (var p in result.Points.Where(p => p.CleanCorrect))
            Assert.Equal(p.BrokenBy is not null, predicted[p.Index].item<long>() != p.Label);
        Assert.True(Projection.NormOf(images - data.Images, Norm.Linf).max().item<float>() <= 0.05 + 1e-6);
    }

    [Fact]
    public void AResumedEvaluationGivesTheSameResultAsAnUninterruptedOne()
    {
        var (model, data) = Setup();
        using var _ = data;
        using var dir = new TempFolder();
        var uninterrupted = ProtocolEvaluation.Run(Noisy(model), data, TwoAttacks(), new EvaluationOptions(Seed: 5, BatchSize: 16, StateDir: dir.File("a")));

        var calls = 0;
        var dying = Protocol.Of("test", Eps, _ => [Fgsm(0.05), new NamedAttack("pgd", (m, x, y, g) =>
            ++calls == 2 ? throw new OperationCanceledException("killed") : Pgd(0.05).Run(m, x, y, g))]);
        Assert.Throws<OperationCanceledException>(() =>
            ProtocolEvaluation.Run(Noisy(model), data, dying, new EvaluationOptions(Seed: 5, BatchSize: 16, StateDir: dir.File("b"))));
        var resumed = ProtocolEvaluation.Run(Noisy(model), data, TwoAttacks(), new EvaluationOptions(Seed: 5, BatchSize: 16, StateDir: dir.File("b")));

        Assert.True(resumed.Resumed);
        Assert.Equal(uninterrupted.WorstCase, resumed.WorstCase);
        Assert.Equal(uninterrupted.Points, resumed.Points);
        Assert.Equal(uninterrupted.Families[0].Stages.Select(s => (s.Attack, s.PointsAttacked, s.PointsBroken, s.RobustAfter)),
                     resumed.Families[0].Stages.Select(s => (s.Attack, s.PointsAttacked, s.PointsBroken, s.RobustAfter)));
        Assert.True(uninterrupted.WorstCaseImages!.eq(resumed.WorstCaseImages!).all().item<bool>());
    }

    [Fact]
    public void AStateOfAnotherEvaluationIsRefused()
    {
        var (model, data) = Setup(20);
        using var _ = data;
        using var dir = new TempFolder();
        ProtocolEvaluation.Run(model, data, TwoAttacks(), new EvaluationOptions(Seed: 1, BatchSize: 16, StateDir: dir.Path));
        var e = Assert.Throws<EvaluationStateMismatchException>(() =>
            ProtocolEvaluation.Run(model, data, TwoAttacks(0.1), new EvaluationOptions(Seed: 1, BatchSize: 16, StateDir: dir.Path)));
        Assert.Contains("belongs to another evaluation", e.Message);
        Assert.Contains("eps=0.1", e.Message);
        Assert.IsAssignableFrom<IUserError>(e);
    }

    [Fact]
    public void SameSeedSameRecordsWhateverOtherRandomWorkHappensInBetween()
    {
        var (model, data) = Setup();
        using var _ = data;
        var options = new EvaluationOptions(Seed: 9, BatchSize: 16);
        var a = ProtocolEvaluation.Run(Noisy(model), data, TwoAttacks(), options);
        // Other random work on torch's global generator, and a reseed of it, must not matter.
        manual_seed(12345);
        using (var noise = rand(1000)) Assert.True(noise.sum().item<float>() > 0);
        var b = ProtocolEvaluation.Run(Noisy(model), data, TwoAttacks(), options);
        Assert.Equal(a.Points, b.Points);
        Assert.Equal(a.Families[0].Stages.Select(s => s.RobustAfter), b.Families[0].Stages.Select(s => s.RobustAfter));
        Assert.True(a.WorstCaseImages!.eq(b.WorstCaseImages!).all().item<bool>());
        // A different seed draws different noise (the model is stochastic, so something must differ).
        var c = ProtocolEvaluation.Run(Noisy(model), data, TwoAttacks(), options with { Seed = 10 });
        Assert.False(a.WorstCaseImages!.eq(c.WorstCaseImages!).all().item<bool>());
    }

    [Fact]
    public void APointsFateDependsOnItsBlockOnlyNotOnOtherBlocks()
    {
        // Blocks are fixed ranges of points with their own generators: evaluating the first block alone gives its
        // points the same fate as evaluating everything (the basis of sharding).
        var (model, data) = Setup(48);
        using var _ = data;
        using var firstBlock = data.Take(16);
        var options = new EvaluationOptions(Seed: 2, BatchSize: 16);
        var all = ProtocolEvaluation.Run(Noisy(model), data, TwoAttacks(), options);
        var part = ProtocolEvaluation.Run(Noisy(model), firstBlock with { Name = data.Name }, TwoAttacks(), options);
        Assert.Equal(all.Points.Take(16), part.Points);
    }

    [Fact]
    public void AStepReturnsANewStateAndLeavesTheOldOneAlone()
    {
        var start = ProtocolEvaluation.FamilyState.Start("f", 4) with { Queue = [0, 1, 2, 3] };
        var outcome = new ProtocolEvaluation.BlockOutcome([0, 1], [true, false], [0.05, 0.01], 0, new AttackMonitor.Counts(0, 0, 1, 2), 1.5);
        var next = ProtocolEvaluation.Step(start, outcome, blocks: 2, "fgsm");
        Assert.Equal([-1, -1, -1, -1], start.BrokenBy.ToArray());
        Assert.Equal([0, -1, -1, -1], next.BrokenBy.ToArray());
        Assert.Equal(1, next.BlocksDone);
        var last = ProtocolEvaluation.Step(next, null, blocks: 2, "fgsm");
        Assert.Equal(1, last.Attack);
        var stage = Assert.Single(last.Stages);
        Assert.Equal(("fgsm", 4, 1, 3L), (stage.Attack, stage.PointsAttacked, stage.PointsBroken, stage.RobustAfter.Correct));
        Assert.Equal(new AttackMonitor.Counts(0, 0, 1, 2), last.Monitor);
        Assert.Empty(next.Stages);
    }

    [Fact]
    public void AFamilyAimedAtASurrogateGetsItsGradientsFromTheSurrogateAndIsJudgedByTheModel()
    {
        var (model, data) = Setup(16);
        using var _ = data;
        var seen = new List<Tensor>();
        StochasticModel surrogate = (x, g) => { seen.Add(x); return -model(x); }; // an attacker misled by it moves the wrong way
        var probe = new NamedAttack("probe", (m, x, y, g) => { m(x); return x; });
        var protocol = new Protocol("p", Eps, [new AttackFamily("via-surrogate", "probe", _ => [probe], surrogate)]);
        var result = ProtocolEvaluation.Run(model, data, protocol, new EvaluationOptions(BatchSize: 16));
        Assert.Single(seen);                         // the attack saw the surrogate
        Assert.Equal(result.Clean, result.WorstCase); // the judge (the model) saw unperturbed images
    }
}
