using Carso.Attacks;
using Carso.Data;
using static TorchSharp.torch;

namespace Carso.Evaluation;

/// <summary>Robust accuracy at one budget (eps, or attack iterations) of a sanity curve.</summary>
public sealed record CurvePoint(double Budget, Accuracy Robust);

/// <summary>
/// The checks that tell whether a robust accuracy can be trusted (Carlini et al. 2019; the AutoAttack
/// reference's warnings). Each flag comes with a plain-language warning in <see cref="Warnings"/>.
/// </summary>
public sealed record DiagnosticsReport(
    AttackMonitor.Counts Monitor,
    bool Stochastic,
    double MaxLogitDisagreement,
    double ZeroGradientFraction,
    double LargeEps,
    Accuracy LargeEpsAccuracy,
    double Chance,
    bool LargeEpsAtOrBelowChance,
    double SquareExtraPoints,
    bool SquareStrongerThanWhiteBox,
    IReadOnlyList<CurvePoint> EpsCurve,
    bool MonotoneInEps,
    IReadOnlyList<CurvePoint> IterationCurve,
    bool MonotoneInIterations,
    IReadOnlyList<string> Warnings)
{
    public bool AllClear => Warnings.Count == 0;
}

public static class Diagnostics
{
    /// <summary>Square's extra breaks above this many percentage points mean gradient masking (AutoAttack's rule).</summary>
    public const double SquareTolerancePoints = 0.2;

    /// <summary>Largest absolute difference between the logits of repeated forward passes on the same batch.
    /// Non-zero: the model is stochastic, and deterministic attacks must be replaced by EOT / AutoAttack "rand".</summary>
    public static double LogitDisagreement(Func<Tensor, Tensor> model, Tensor x, int passes = 5)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var outputs = Enumerable.Range(0, passes).Select(_ => model(x)).ToArray();
        return outputs.Skip(1).Select(o => (o - outputs[0]).abs().max().item<float>()).DefaultIfEmpty(0).Max();
    }

    /// <summary>Fraction of points whose cross-entropy input gradient is exactly zero everywhere (x: [B,C,H,W], y: [B]).</summary>
    public static double ZeroGradientFraction(Func<Tensor, Tensor> model, Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        var grad = Pgd.InputGradient(model, x, y);
        return grad.flatten(1).eq(0).all(1).to_type(ScalarType.Float32).mean().item<float>();
    }

    /// <summary>Robust accuracy of a single attack at each budget, on the same points.</summary>
    public static IReadOnlyList<CurvePoint> Curve(Func<Tensor, Tensor> model, Dataset data, IEnumerable<double> budgets,
        Func<double, NamedAttack> attackAt, long seed, int batchSize, Device? device = null) =>
        budgets.Select(budget =>
        {
            var attack = attackAt(budget);
            var batch = 0;
            var correct = Evaluate.PerPointCorrect(model, data, batchSize, (m, x, y) =>
            {
                using var generator = new Generator((ulong)RobustEvaluation.BatchSeed(seed, 99, batch++), x.device);
                return attack.Run(m, x, y, generator);
            }, device);
            var accuracy = Evaluate.ToAccuracy(correct);
            correct.Dispose();
            return new CurvePoint(budget, accuracy);
        }).ToArray();

    /// <summary>True when robust accuracy never rises as the budget grows.</summary>
    public static bool NonIncreasing(IReadOnlyList<CurvePoint> curve) =>
        curve.Zip(curve.Skip(1)).All(p => p.Second.Robust.Correct <= p.First.Robust.Correct);

    /// <summary>
    /// Runs every check. data: the evaluated points; result: the evaluation (for Square's extra breaks);
    /// attackAt(threat, iterations): a strong white-box attack (APGD-CE) used for the eps and iteration curves
    /// and the large-eps check.
    /// </summary>
    public static DiagnosticsReport Run(
        Func<Tensor, Tensor> model, Dataset data, EvaluationResult result, Func<Threat, int, NamedAttack> attackAt,
        string? squareName = "square", double largeEps = 0.5, int checkPoints = 200, long seed = 0, int batchSize = 500,
        Device? device = null, int iterations = 100)
    {
        device ??= CPU;
        using var subset = data.Take(checkPoints);
        using var scope = NewDisposeScope();
        var x = subset.Images.to(device);
        var y = subset.Labels.to(device);
        var warnings = new List<string>();
        var m = result.Monitor;
        if (m.NonFiniteLogits > 0 || m.NonFiniteGradients > 0)
            warnings.Add($"non-finite values met during the attacks: {m.NonFiniteLogits} logits, {m.NonFiniteGradients} gradients " +
                         "(attacks may have been blinded: check the model's numerics, e.g. saturating outputs)");
        if (result.NonFiniteAdversarialValues > 0)
            warnings.Add($"{result.NonFiniteAdversarialValues} non-finite values in the adversarial images");

        var disagreement = LogitDisagreement(model, x);
        var stochastic = disagreement > 1e-6;
        if (stochastic)
            warnings.Add($"the model is stochastic (logits of repeated passes differ by up to {disagreement:G3}): " +
                         "evaluate with EOT / AutoAttack \"rand\", not the deterministic attacks");

        var zeroFraction = ZeroGradientFraction(model, x, y);
        if (zeroFraction > 0)
            warnings.Add($"{100 * zeroFraction:F1}% of points have an exactly zero input gradient: gradient masking " +
                         "(e.g. quantisation or saturation); trust black-box results (Square) over white-box ones");

        var classes = data.Classes.Count;
        var chance = 1.0 / classes;
        var large = Curve(model, subset, [largeEps], e => attackAt(result.Threat with { Eps = e }, iterations), seed, batchSize, device)[0];
        var largeOk = large.Robust.Value <= chance;
        if (!largeOk)
            warnings.Add($"at eps {largeEps} robust accuracy is {large.Robust}, above chance ({100 * chance:F1}%): " +
                         "the attack is failing, not the model succeeding");

        var squareStage = result.Stages.FirstOrDefault(s => s.Attack == squareName);
        var squareExtra = squareStage is null ? 0 : 100.0 * squareStage.PointsBroken / Math.Max(1, result.Points.Count);
        var squareStronger = squareExtra > SquareTolerancePoints;
        if (squareStronger)
            warnings.Add($"Square broke {squareExtra:F2} points (%) that the white-box attacks could not (> {SquareTolerancePoints}): gradient masking");

        var eps = result.Threat.Eps;
        var epsCurve = Curve(model, subset, [0, eps / 4, eps / 2, eps, 2 * eps],
            e => attackAt(result.Threat with { Eps = e }, iterations), seed, batchSize, device);
        var monotoneEps = NonIncreasing(epsCurve);
        if (!monotoneEps)
            warnings.Add("robust accuracy rises with eps somewhere: " + string.Join(", ", epsCurve.Select(p => $"eps {p.Budget:G3}: {100 * p.Robust.Value:F1}%")));

        var iterationCurve = Curve(model, subset, [1, 10, iterations],
            k => attackAt(result.Threat, (int)k), seed, batchSize, device);
        var monotoneIterations = NonIncreasing(iterationCurve);
        if (!monotoneIterations)
            warnings.Add("robust accuracy rises with attack iterations somewhere: " +
                         string.Join(", ", iterationCurve.Select(p => $"{p.Budget} iterations: {100 * p.Robust.Value:F1}%")));

        return new DiagnosticsReport(m, stochastic, disagreement, zeroFraction, largeEps, large.Robust, chance, largeOk,
            squareExtra, squareStronger, epsCurve, monotoneEps, iterationCurve, monotoneIterations, warnings);
    }
}
