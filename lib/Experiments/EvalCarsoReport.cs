using Carso.IO;
using System.Text.Json;
using Carso.Evaluation;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>The table and figures of scripts/eval-carso.cs, built only from its run record (so scripts/figures.cs
/// can regenerate them without attacking anything).</summary>
public static class EvalCarsoReport
{
    /// <summary>The row groups of the verdict: the paper's own attacks, and the adaptive ones.</summary>
    public const string PaperStyle = "CARSO, paper-style", Adaptive = "CARSO, adaptive", Overall = "CARSO, every attack", WorstCase = "worst case";

    /// <summary>Per attack family, what its attacks met: the judge's non-finite (saturated) outputs, non-finite and zero
    /// input gradients among all gradient evaluations, and the attacked points whose iterate never moved — the
    /// numbers that say whether a family's robust accuracy measures the defence or an attack that could not move.</summary>
    public static string FamilyDiagnostics(RunRecord record)
    {
        var groups = record.Metric<List<FamilyResult>>("groups");
        static string Share(long part, long all) => all == 0 ? "-" : $"{part} ({100.0 * part / all:F1}%)";
        var text = new System.Text.StringBuilder();
        text.AppendLine("| family | robust | non-finite outputs | non-finite gradients | zero gradients | stalled points |");
        text.AppendLine("|---|---:|---:|---:|---:|---:|");
        foreach (var g in groups)
            text.AppendLine($"| {g.Name} | {ResultTable.Percent(g.Robust)} | {g.NonFiniteOutputs} | " +
                            $"{Share(g.Monitor.NonFiniteGradients, g.Monitor.GradientEvaluations)} | {Share(g.Monitor.ZeroGradients, g.Monitor.GradientEvaluations)} | " +
                            $"{Share(g.Monitor.StalledPoints, g.Monitor.AttackedPoints)} |");
        return text.ToString();
    }

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
                $"Classifier vs CARSO, Fashion-MNIST, Linf eps {eps}, n={n}: the paper's attacks vs adaptive ones")),
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
