using Carso.IO;
using System.Text.Json;
using Carso.Evaluation;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>The table and figures of scripts/eval-carso.cs, built only from its run record (so scripts/figures.cs
/// can regenerate them without attacking anything).</summary>
public static class EvalCarsoReport
{
    /// <summary>The results table: classifier and CARSO rows (metrics.rows).</summary>
    public static IReadOnlyList<ResultRow> Rows(RunRecord record) =>
        record.Metric<List<ResultRow>>("rows");

    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record)
    {
        var rows = Rows(record);
        var n = rows.Max(r => r.Accuracy.N);
        var eps = record.Settings?["eps"]?.GetValue<double>() ?? double.NaN;
        var figures = new List<(string, Figure)>
        {
            ("robust-accuracy", ResultTable.Figure(rows,
                $"Classifier vs CARSO on Fashion-MNIST, Linf eps {eps}, n={n} (each attack family alone, and the per-point worst case)")),
        };
        // Cumulative robust accuracy inside each attack family (e.g. APGD-CE, then + APGD-DLR).
        var groups = record.Metrics?["groups"]?.AsArray() ?? [];
        var traces = new List<System.Text.Json.Nodes.JsonObject>();
        string[] palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
        var i = 0;
        foreach (var group in groups)
        {
            var stages = group?["stages"]?.Deserialize<List<AttackStage>>(RunRecord.Json) ?? [];
            if (stages.Count == 0) continue;
            var names = stages.Select((s, k) => (k == 0 ? "" : "+ ") + s.Attack).ToArray();
            traces.Add(Charts.LineWithErrors(names, stages.Select(s => 100 * s.RobustAfter.Value).ToArray(),
                stages.Select(s => 100 * s.RobustAfter.Lower).ToArray(), stages.Select(s => 100 * s.RobustAfter.Upper).ToArray(),
                group!["name"]!.GetValue<string>(), palette[i++ % palette.Length]));
        }
        if (traces.Count > 0)
            figures.Add(("attack-families", Charts.Figure(traces,
                Charts.Layout($"CARSO: robust accuracy within each attack family, n={n}", "after attack", "accuracy (%)"), 900, 500)));
        return figures;
    }
}
