using Carso.IO;
using Carso.Attacks;
using Carso.Data;
using Carso.Defence;
using Carso.Evaluation;
using Carso.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Tests.Evaluation;

public class CarsoEvaluationTests
{
    static readonly string[] Layers = ["conv1", "relu2", "relu3"];
    static readonly Threat Eps = Threat.Linf(0.1);

    /// <summary>CARSO over a seeded SmallCnn and a small untrained purifier, and 12 images labelled with the
    /// deterministic defence's own predictions (so most points start correct and the attacks have work to do).</summary>
    static (CarsoModel Carso, Dataset Data) Setup()
    {
        manual_seed(5);
        var classifier = new SmallCnn();
        var purifier = Purifier.Build(new PurifierSettings(ConditioningSize: 32, LatentSize: 8, DecoderChannels: 32),
            PurifierCheckpoint.LayerShapes(classifier, Layers, [1, 28, 28]), [1, 28, 28]);
        var carso = new CarsoModel(classifier, purifier, Layers, new CarsoSettings(Samples: 4));
        var images = rand(12, 1, 28, 28, generator: new Generator(11));
        Tensor labels;
        using (no_grad()) labels = carso.With(carso.Settings with { Deterministic = true }).Forward(images).argmax(1);
        return (carso, Dataset.Create("tiny", images, labels, Enumerable.Range(0, 10).Select(i => $"c{i}").ToArray()));
    }

    static readonly CarsoProtocolSettings Tiny = CarsoProtocolSettings.Smoke with { SquareQueries = 3 };

    [Fact]
    public void TheWorstCaseIsThePerPointConjunctionOfEveryFamily()
    {
        var (carso, data) = Setup();
        using var transfer = (data.Images + 0.1 * sign(randn(data.Images.shape, generator: new Generator(2)))).clamp(0, 1);
        var result = CarsoEvaluation.Run(carso, data, Eps, Tiny, transfer, seed: 3, batchSize: 5);

        Assert.Equal(new[] { "transfer", "autoattack-rand", "pgd-eot", "surrogate-logit", "representation-path", "square" },
            result.Groups.Select(g => g.Name));
        var robust = result.Points.Count(p => p.CleanCorrect && p.BrokenBy is null);
        Assert.Equal(robust, result.WorstCase.Correct);
        Assert.Equal(data.Count, result.WorstCase.N);
        Assert.All(result.Groups, g => Assert.True(result.WorstCase.Correct <= g.Robust.Correct, $"{g.Name}: {g.Robust} < worst case {result.WorstCase}"));
        Assert.True(result.WorstCase.Correct <= result.Clean.Correct);
        Assert.All(result.Points.Where(p => p.BrokenBy is not null), p => Assert.Contains(p.BrokenBy, result.Groups.Select(g => g.Name)));
        Assert.All(result.Groups, g => Assert.True(g.MaxPerturbationNorm <= 0.1 + 1e-6, $"{g.Name}: norm {g.MaxPerturbationNorm}"));
        Assert.Equal(0, result.Diagnostics.Monitor.NonFiniteGradients);
        Assert.True(result.Diagnostics.LogitDisagreement > 0, "the sampled defence must differ between passes");
    }

    [Fact]
    public void TheSameSeedGivesTheSameResultAndAResumedRunEqualsAFreshOne()
    {
        var (carso, data) = Setup();
        var folder = Directory.CreateTempSubdirectory("carso-eval-").FullName;
        try
        {
            var settings = Tiny with { SquareQueries = 0 };
            var fresh = CarsoEvaluation.Run(carso, data, Eps, settings, seed: 4, batchSize: 6);
            var saved = CarsoEvaluation.Run(carso, data, Eps, settings, stateDir: folder, seed: 4, batchSize: 6);
            var resumed = CarsoEvaluation.Run(carso, data, Eps, settings, stateDir: folder, seed: 4, batchSize: 6);
            foreach (var other in new[] { saved, resumed })
            {
                Assert.Equal(fresh.Clean, other.Clean);
                Assert.Equal(fresh.WorstCase, other.WorstCase);
                Assert.Equal(fresh.Groups.Select(g => g.Robust), other.Groups.Select(g => g.Robust));
                Assert.Equal(fresh.Points, other.Points);
            }
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    [Fact]
    public void TransferImagesThatAreNotPerturbationsOfThePointsAreRejected()
    {
        var (carso, data) = Setup();
        using var shuffled = data.Images.flip(0); // the right images in the wrong order
        var error = Assert.Throws<ArgumentException>(() => CarsoEvaluation.Run(carso, data, Eps, Tiny, shuffled));
        Assert.Contains("not perturbations of these test points", error.Message);
        using var small = data.Images.narrow(0, 0, 5);
        Assert.Contains("do not match", Assert.Throws<ArgumentException>(() => CarsoEvaluation.Run(carso, data, Eps, Tiny, small)).Message);
    }

    [Fact]
    public void FamiliesFollowTheSettings()
    {
        var (carso, _) = Setup();
        string[] Names(CarsoProtocolSettings s, CarsoModel m) => CarsoEvaluation.Families(m, Eps, s).Select(f => f.Name).ToArray();
        Assert.Equal(["autoattack-rand", "pgd-eot", "surrogate-logit", "representation-path"], Names(new CarsoProtocolSettings(), carso));
        Assert.Equal(["autoattack-rand", "pgd-eot", "square"],
            Names(new CarsoProtocolSettings(Surrogate: null, RepresentationPath: false, SquareQueries: 10), carso));
        // A surrogate equal to the defence's own aggregation is no surrogate.
        var logitDefence = carso.With(carso.Settings with { Aggregation = AggregationKind.Logit });
        Assert.DoesNotContain("surrogate-logit", Names(new CarsoProtocolSettings(), logitDefence));
    }

    [Fact]
    public void ThroughHandsTheAttackTheSurrogateNotTheJudge()
    {
        Func<Tensor, Tensor> judge = x => x.flatten(1).narrow(1, 0, 10);
        Func<Tensor, Tensor> surrogate = x => -x.flatten(1).narrow(1, 0, 10);
        Func<Tensor, Tensor>? seen = null;
        var probe = new NamedAttack("probe", (m, x, y, g) => { seen = m; return x; });
        CarsoEvaluation.Through(surrogate, probe).Run(judge, zeros(1, 1, 4, 4), zeros(1, ScalarType.Int64), new Generator(0));
        Assert.Same(surrogate, seen);
    }
}
