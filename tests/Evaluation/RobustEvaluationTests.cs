using Carso.Attacks;
using Carso.Data;
using Carso.Evaluation;
using static TorchSharp.torch;

namespace Carso.Tests.Evaluation;

public class RobustEvaluationTests
{
    /// <summary>A fixed random MLP on 1x6x6 images and data labelled by its own predictions (clean accuracy 100%),
    /// except the last 5 points, which get a wrong label.</summary>
    static (Func<Tensor, Tensor> Model, Dataset Data) Setup(int n = 60)
    {
        manual_seed(21);
        var w1 = randn(36, 24) * 0.5;
        var w2 = randn(24, 4);
        Func<Tensor, Tensor> model = x => x.flatten(1).matmul(w1).tanh().matmul(w2);
        var images = rand(n, 1, 6, 6);
        Tensor labels;
        using (no_grad()) labels = model(images).argmax(1);
        labels[TensorIndex.Slice(n - 5)] = (labels[TensorIndex.Slice(n - 5)] + 1).remainder(4);
        return (model, Dataset.Create("mlp-labelled", images, labels, ["a", "b", "c", "d"]));
    }

    static readonly Threat Eps = Threat.Linf(0.05);

    static NamedAttack Fgsm(double eps) => new("fgsm", (m, x, y, g) => Carso.Attacks.Fgsm.Attack(m, x, y, new FgsmSettings(Threat.Linf(eps)), g));
    static NamedAttack Pgd(double eps) => new("pgd", (m, x, y, g) => Carso.Attacks.Pgd.Attack(m, x, y, new PgdSettings(Threat.Linf(eps), 10), g));

    [Fact]
    public void RobustAccuracyIsThePerPointWorstCaseAndStagesOnlyFall()
    {
        var (model, data) = Setup();
        using var _ = data;
        var result = RobustEvaluation.Run(model, data, Eps, [Fgsm(0.05), Pgd(0.05)], batchSize: 16, seed: 3);
        Assert.Equal(55, result.Clean.Correct);
        var survivors = result.Points.Count(p => p.CleanCorrect && p.BrokenBy is null);
        Assert.Equal(survivors, result.Robust.Correct);
        Assert.True(result.Stages[0].RobustAfter.Correct >= result.Stages[1].RobustAfter.Correct);
        Assert.Equal(result.Stages[1].RobustAfter, result.Robust);
        Assert.True(result.Stages[0].PointsBroken > 0 || result.Stages[1].PointsBroken > 0, "the attacks should break some points");
        // the second attack only ran on points the first left robust
        Assert.Equal(result.Stages[0].PointsAttacked - result.Stages[0].PointsBroken, result.Stages[1].PointsAttacked);
        Assert.All(result.Points.Where(p => p.BrokenBy is not null), p => Assert.InRange(p.PerturbationNorm!.Value, 0, 0.05 + 1e-6));
        Assert.InRange(result.MaxPerturbationNorm, 0, 0.05 + 1e-6);
        Assert.InRange(result.AdversarialMin, 0, 1);
        Assert.InRange(result.AdversarialMax, 0, 1);
        Assert.Equal(0, result.NonFiniteAdversarialValues);
    }

    [Fact]
    public void AResumedEvaluationGivesTheSameResultAsAnUninterruptedOne()
    {
        var (model, data) = Setup();
        using var _ = data;
        using var dir = new TempFolder();
        var uninterrupted = RobustEvaluation.Run(model, data, Eps, [Fgsm(0.05), Pgd(0.05)], 16, seed: 5, stateFile: dir.File("a.json"));

        var calls = 0;
        var dying = new NamedAttack("pgd", (m, x, y, g) =>
            ++calls == 2 ? throw new OperationCanceledException("killed") : Pgd(0.05).Run(m, x, y, g));
        Assert.Throws<OperationCanceledException>(() =>
            RobustEvaluation.Run(model, data, Eps, [Fgsm(0.05), dying], 16, seed: 5, stateFile: dir.File("b.json")));
        var resumed = RobustEvaluation.Run(model, data, Eps, [Fgsm(0.05), Pgd(0.05)], 16, seed: 5, stateFile: dir.File("b.json"));

        Assert.True(resumed.Resumed);
        Assert.Equal(uninterrupted.Robust, resumed.Robust);
        Assert.Equal(uninterrupted.Points, resumed.Points);
        Assert.Equal(uninterrupted.Stages.Select(s => (s.Attack, s.PointsAttacked, s.PointsBroken, s.RobustAfter)),
                     resumed.Stages.Select(s => (s.Attack, s.PointsAttacked, s.PointsBroken, s.RobustAfter)));
        using var advA = RobustEvaluation.LoadAdversarial(dir.File("a.json"), data);
        using var advB = RobustEvaluation.LoadAdversarial(dir.File("b.json"), data);
        Assert.True(advA.eq(advB).all().item<bool>());
    }

    [Fact]
    public void AStateFileOfAnotherEvaluationIsRefused()
    {
        var (model, data) = Setup(20);
        using var _ = data;
        using var dir = new TempFolder();
        RobustEvaluation.Run(model, data, Eps, [Fgsm(0.05)], 16, seed: 1, stateFile: dir.File("s.json"));
        var e = Assert.Throws<InvalidOperationException>(() =>
            RobustEvaluation.Run(model, data, Threat.Linf(0.1), [Fgsm(0.1)], 16, seed: 1, stateFile: dir.File("s.json")));
        Assert.Contains("belongs to another evaluation", e.Message);
        Assert.Contains("eps=0.1", e.Message);
    }

    [Fact]
    public void SameSeedSameResult()
    {
        var (model, data) = Setup();
        using var _ = data;
        var a = RobustEvaluation.Run(model, data, Eps, [Pgd(0.05)], 16, seed: 9);
        var b = RobustEvaluation.Run(model, data, Eps, [Pgd(0.05)], 16, seed: 9);
        Assert.Equal(a.Points, b.Points);
    }
}
