using Carso.Attacks;
using Carso.Data;
using Carso.Defence;
using Carso.Evaluation;
using static TorchSharp.torch;

namespace Carso.Tests.Evaluation;

/// <summary>An attack through the published (saturating) aggregation cannot move; the monitor and the diagnostics must
/// say so instead of reporting the stalled points as robust.</summary>
public class MaskingFlagsTests
{
    /// <summary>A linear classifier on 1x4x4 images whose two "samples" are aggregated by the given kind: logits of a few
    /// units, moderate for a softmax, but their summed exponentials differ by far more than the ~17 that makes the
    /// published lexsemble's softmax over them exactly one-hot in float32.</summary>
    static Func<Tensor, Tensor> Aggregated(AggregationKind kind)
    {
        var w = randn(16, 3, generator: new Generator(3));
        return x =>
        {
            var logits = x.flatten(1).matmul(w);                       // [B, K]
            return Aggregation.Aggregate(kind, stack([logits, logits * 0.9], 2)); // [B, K, N = 2]
        };
    }

    static Dataset Points()
    {
        var images = rand(12, 1, 4, 4, generator: new Generator(4));
        Tensor labels;
        using (no_grad()) labels = Aggregated(AggregationKind.ExpShare)(images).argmax(1); // correct clean
        return Dataset.Create("toy", images, labels, ["a", "b", "c"]);
    }

    [Fact]
    public void TheMonitorFlagsNaNGradientsAndAStalledAttackThroughThePublishedAggregation()
    {
        using var data = Points();
        var threat = Threat.Linf(0.3);
        var masked = new AttackMonitor();
        Pgd.Attack(Aggregated(AggregationKind.Lexsemble), data.Images, data.Labels, new PgdSettings(threat, 10), new Generator(1), masked);
        var m = masked.Snapshot();
        Assert.True(m.NonFiniteGradients > 0, $"NaN gradients expected, counts {m}");
        Assert.Equal(12, m.AttackedPoints);
        Assert.True(m.NonFiniteGradients > m.GradientEvaluations / 2, $"most gradients should be NaN, counts {m}");
        Assert.True(m.StalledPoints >= 2, $"points whose every gradient was NaN never move (sign(NaN) = 0), counts {m}");
        Assert.NotNull(Diagnostics.NonFiniteDuringAttacks(m));
        Assert.Contains("never moved", Diagnostics.StalledAttacks(m));

        // The same attack through the stable surrogate moves and meets no NaN.
        var clear = new AttackMonitor();
        Pgd.Attack(Aggregated(AggregationKind.ExpShare), data.Images, data.Labels, new PgdSettings(threat, 10), new Generator(1), clear);
        var c = clear.Snapshot();
        Assert.Equal(0, c.NonFiniteGradients);
        Assert.Equal(0, c.StalledPoints);
        Assert.Null(Diagnostics.StalledAttacks(c));
    }

    [Fact]
    public void AnEvaluationThroughThePublishedAggregationCarriesTheFlagsInItsResult()
    {
        using var data = Points();
        var threat = Threat.Linf(0.3);
        var protocol = Protocol.Of("apgd", threat, m => [AutoAttack.ApgdCe(threat, new AutoAttackSettings(ApgdIterations: 10), m)]);
        var result = ProtocolEvaluation.Run(Aggregated(AggregationKind.Lexsemble), data, protocol, new EvaluationOptions(BatchSize: 6));
        var family = result.Families[0];
        Assert.True(family.Monitor.NonFiniteGradients > 0);
        Assert.True(family.Monitor.StalledPoints > 0);
        Assert.True(result.NonFiniteCleanOutputs > 0, "the saturated outputs of the aggregation used are counted");
        Assert.NotNull(Diagnostics.NonFiniteOutputs(result));
    }
}
