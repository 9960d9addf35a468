using System.Text.Json.Nodes;
using Carso.IO;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>
/// The figures of a scripts/bench-carso-grad.cs run, from its record alone: each variant's speed-up over the first
/// (median of the per-round ratios, bars min-max) by CPU time and by wall clock, and, when the attack check ran, the
/// robust accuracy of the fixed attack in each precision (judged by float32 and by the attacked defence).
/// The metrics it reads: variants { cpu, wall: [{ name, ratioMedian, ratioMin, ratioMax }] }, eot, and attackCheck
/// { attack, precisions: [{ precision, robustAccuracyFloat32Judge, robustAccuracyOwnJudge }] } (or null).
/// </summary>
public static class CarsoSpeedReport
{
    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record)
    {
        var metrics = record.Metrics ?? throw new ArgumentException("the run record has no metrics", nameof(record));
        var figures = new List<(string, Figure)>();
        if (metrics["variants"] is JsonObject variants)
        {
            var traces = new[] { ("cpu", "CPU time", "#1f77b4"), ("wall", "wall clock", "#ff7f0e") }
                .Where(m => variants[m.Item1] is JsonArray { Count: > 0 })
                .Select(m =>
                {
                    var rows = variants[m.Item1]!.AsArray().Select(r => r!.AsObject()).ToArray();
                    return Charts.Bars(rows.Select(r => (string)r["name"]!).ToArray(), rows.Select(r => (double)r["ratioMedian"]!).ToArray(),
                        rows.Select(r => (double)r["ratioMin"]!).ToArray(), rows.Select(r => (double)r["ratioMax"]!).ToArray(), m.Item2, m.Item3);
                }).ToArray();
            var layout = Charts.Layout($"CARSO end-to-end gradient (EOT {metrics["eot"]?.GetValue<int>() ?? 1}): speed-up over the first variant " +
                                       "(median of per-round ratios, bars min-max)", "variant", "images/s ratio");
            layout["barmode"] = "group";
            figures.Add(("speedup", Charts.Figure(traces, layout, width: 1000)));
        }
        if (metrics["attackCheck"] is JsonObject check && check["precisions"] is JsonArray { Count: > 0 } precisions)
        {
            var rows = precisions.Select(r => r!.AsObject()).ToArray();
            var names = rows.Select(r => (string)r["precision"]!).ToArray();
            JsonObject Trace(string key, string name, string color)
            {
                var values = rows.Select(r => 100 * (double)r[key]!).ToArray();
                return Charts.Bars(names, values, values, values, name, color);
            }
            var layout = Charts.Layout($"Robust accuracy per precision: {(string)check["attack"]!}", "precision", "robust accuracy (%)");
            layout["barmode"] = "group";
            figures.Add(("precision", Charts.Figure([Trace("robustAccuracyFloat32Judge", "judged by float32", "#1f77b4"),
                Trace("robustAccuracyOwnJudge", "judged by the attacked defence", "#2ca02c")], layout, width: 900)));
        }
        return figures;
    }
}
