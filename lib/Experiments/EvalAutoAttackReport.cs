using Carso.IO;
using System.Text.Json;
using Carso.Evaluation;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>The figure of scripts/eval-autoattack.cs and scripts/eval-autoattack-l2.cs (accuracy after each attack), built only
/// from its run record.</summary>
public static class EvalAutoAttackReport
{
    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record)
    {
        var clean = record.Metric<Accuracy>("clean");
        var stages = record.Metric<List<AttackStage>>("stages");
        var names = new[] { "clean" }.Concat(stages.Select(s => "+ " + s.Attack)).ToArray();
        var accuracies = new[] { clean }.Concat(stages.Select(s => s.RobustAfter)).ToArray();
        var eps = record.Settings?["eps"]?.GetValue<double>();
        var norm = record.Settings?["norm"]?.GetValue<string>() ?? "Linf"; // records made before the Norm setting were Linf
        return
        [
            ("robust-accuracy-by-attack", Charts.Figure(
                [Charts.LineWithErrors(names, accuracies.Select(a => 100 * a.Value).ToArray(), accuracies.Select(a => 100 * a.Lower).ToArray(),
                    accuracies.Select(a => 100 * a.Upper).ToArray(), "accuracy (95% Wilson interval)", "#d62728")],
                Charts.Layout($"AutoAttack standard on SmallCnn (Fashion-MNIST PGD-AT), {norm} eps={eps}, n={clean.N}", "after attack", "accuracy (%)"),
                width: 800, height: 480)),
        ];
    }
}
