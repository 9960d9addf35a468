using Carso.IO;
using Carso.Attacks;
using Carso.Data;
using Carso.Defence;
using Carso.Evaluation;
using Carso.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Tests.Evaluation;

public class CarsoProtocolTests
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
        var carso = new CarsoModel(classifier, purifier, Layers, new CarsoSettings(Samples: 4, Aggregation: AggregationKind.Lexsemble));
        var images = rand(12, 1, 28, 28, generator: new Generator(11));
        Tensor labels;
        using (no_grad()) labels = carso.With(carso.Settings with { Deterministic = true }).Forward(images).argmax(1);
        return (carso, Dataset.Create("tiny", images, labels, Enumerable.Range(0, 10).Select(i => $"c{i}").ToArray()));
    }

    static readonly CarsoProtocolSettings Tiny = CarsoProtocolSettings.Smoke with { SquareQueries = 3 };

    static ProtocolResult Evaluate(CarsoModel carso, Dataset data, CarsoProtocolSettings settings, TransferSet? transfer = null,
        string? stateDir = null, long seed = 3, int batchSize = 5) =>
        ProtocolEvaluation.Run(carso.AsModel(), data, CarsoProtocol.Build(carso, Eps, settings, transfer),
            new EvaluationOptions(seed, batchSize, StateDir: stateDir));

    static TransferSet Transfer(Dataset data, Tensor images, double eps = 0.1) => new("(test transfer set)",
        new TransferSetSpec("Linf", eps, data.Name, (int)data.Count, "SmallCnn", "sha256:test", "a test"), images, data.Labels);

    [Fact]
    public void TheWorstCaseIsThePerPointConjunctionOfEveryFamily()
    {
        var (carso, data) = Setup();
        using var transfer = Transfer(data, (data.Images + 0.1 * sign(randn(data.Images.shape, generator: new Generator(2)))).clamp(0, 1));
        var result = Evaluate(carso, data, Tiny, transfer);
        var diagnostics = CarsoProtocol.Diagnose(carso, data, result, Tiny, new EvaluationOptions(3, 5));

        Assert.Equal(new[] { "transfer", "autoattack-rand", "pgd-eot", "surrogate-expshare", "representation-path", "square" },
            result.Families.Select(g => g.Name));
        // The worst case over every family is the protocol's; over the paper's families alone it can only be higher.
        Assert.Equal(result.WorstCase, result.WorstCaseOver(result.Families.Select(f => f.Name)));
        var paper = result.WorstCaseOver(CarsoProtocol.PaperStyle);
        Assert.True(paper.Correct >= result.WorstCase.Correct);
        Assert.True(Math.Min(result.Family("autoattack-rand").Robust.Correct, result.Family("pgd-eot").Robust.Correct) >= paper.Correct);
        Assert.All(result.Families, f => Assert.Equal(result.Clean.Correct - f.Robust.Correct, f.Broken!.Count));
        Assert.Equal(result.Points.Count(p => p.CleanCorrect && p.BrokenBy is null), result.WorstCase.Correct);
        Assert.Equal(data.Count, result.WorstCase.N);
        Assert.All(result.Families, g => Assert.True(result.WorstCase.Correct <= g.Robust.Correct, $"{g.Name}: {g.Robust} < worst case {result.WorstCase}"));
        Assert.True(result.WorstCase.Correct <= result.Clean.Correct);
        Assert.All(result.Points.Where(p => p.BrokenBy is not null), p => Assert.Contains(p.BrokenBy, result.Families.Select(g => g.Name)));
        Assert.All(result.Families, g => Assert.True(g.MaxPerturbationNorm <= 0.1 + 1e-6, $"{g.Name}: norm {g.MaxPerturbationNorm}"));
        Assert.Equal(0, diagnostics.Monitor.NonFiniteGradients);
        Assert.True(diagnostics.LogitDisagreement > 0, "the sampled defence must differ between generators");
    }

    [Fact]
    public void TheSameSeedGivesTheSameResultAndAResumedRunEqualsAFreshOne()
    {
        var (carso, data) = Setup();
        using var folder = new TempFolder();
        var settings = Tiny with { SquareQueries = 0 };
        var fresh = Evaluate(carso, data, settings, seed: 4, batchSize: 6);
        var saved = Evaluate(carso, data, settings, stateDir: folder.Path, seed: 4, batchSize: 6);
        var resumed = Evaluate(carso, data, settings, stateDir: folder.Path, seed: 4, batchSize: 6);
        Assert.True(resumed.Resumed);
        foreach (var other in new[] { saved, resumed })
        {
            Assert.Equal(fresh.Clean, other.Clean);
            Assert.Equal(fresh.WorstCase, other.WorstCase);
            Assert.Equal(fresh.Families.Select(g => g.Robust), other.Families.Select(g => g.Robust));
            Assert.Equal(fresh.Points, other.Points);
        }
    }

    [Fact]
    public void ATransferSetForOtherPointsOrAnotherEpsIsRefused()
    {
        var (carso, data) = Setup();
        using var shuffled = Transfer(data, data.Images.flip(0)); // the right images in the wrong order
        var error = Assert.Throws<TransferSetMismatchException>(() => Evaluate(carso, data, Tiny, shuffled));
        Assert.Contains("not within Linf eps=0.1 of the evaluated points", error.Message);
        using var otherEps = Transfer(data, data.Images.clone(), eps: 0.05);
        error = Assert.Throws<TransferSetMismatchException>(() => Evaluate(carso, data, Tiny, otherEps));
        Assert.Contains("made for Linf eps=0.05, the evaluation is at Linf eps=0.1", error.Message);
        Assert.Contains("re-run scripts/eval-autoattack.cs with Eps = 0.1", error.Message);
    }

    [Fact]
    public void FamiliesFollowTheSettings()
    {
        var (carso, _) = Setup();
        string[] Names(CarsoProtocolSettings s, CarsoModel m) => CarsoProtocol.Build(m, Eps, s).Families.Select(f => f.Name).ToArray();
        Assert.Equal(["autoattack-rand", "pgd-eot", "surrogate-expshare", "representation-path", "square"], Names(new CarsoProtocolSettings(), carso));
        Assert.Equal(["autoattack-rand", "pgd-eot", "square"],
            Names(new CarsoProtocolSettings(Surrogate: null, RepresentationPath: false, SquareQueries: 10), carso));
        Assert.Equal(["autoattack-rand"], Names(new CarsoProtocolSettings(RandAttacks: ["apgd-ce"], PgdSteps: 0, Surrogate: null,
            RepresentationPath: false, SquareQueries: 0), carso));
        // A surrogate equal to the defence's own aggregation is no surrogate.
        var expShareDefence = carso.With(carso.Settings with { Aggregation = AggregationKind.ExpShare });
        Assert.DoesNotContain("surrogate-expshare", Names(new CarsoProtocolSettings(), expShareDefence));
    }
}
