using System.Text.Json;
using System.Text.Json.Nodes;
using Carso.Evaluation;
using Carso.IO;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>
/// Table, figures and README rows of ANY ablation or sweep, from its run record alone (metrics of shape
/// <see cref="AblationMetrics"/>): a new ablation needs no report of its own. Variants with a numeric X are drawn as
/// lines over X (one per series, with 95% bands; extra numbers such as images/s get a figure each); others as bars.
/// </summary>
public static class VariantReport
{
    /// <summary>Whether the record is an ablation record (the shape this report reads).</summary>
    public static bool Reads(RunRecord record) => record.Metrics?["variants"] is JsonArray && record.Metrics?["varied"] is not null;

    public static AblationMetrics Read(RunRecord record) =>
        (record.Metrics ?? throw new InvalidDataException($"run record of {record.Script} has no metrics"))
        .Deserialize<AblationMetrics>(RunRecord.Json) ?? throw new InvalidDataException($"run record of {record.Script}: metrics are not an ablation's");

    static string Label(VariantResult v) => v.Series == "CARSO" ? v.Name : $"{v.Series}: {v.Name}";

    /// <summary>Per variant: clean (CleanPoints), each family and the worst case (RobustPoints).</summary>
    public static IReadOnlyList<ResultRow> Rows(RunRecord record)
    {
        var m = Read(record);
        return m.Variants.SelectMany(v => new[] { new ResultRow(Label(v), $"clean (n={v.Clean.N})", v.Clean) }
                .Concat(v.Families.Select(f => new ResultRow(Label(v), f.Name, f.Robust)))
                .Append(new ResultRow(Label(v), "worst case", v.WorstCase)))
            .ToArray();
    }

    /// <summary>The README's compact rows: per variant its clean accuracy and its worst case (a sweep over eps: the worst
    /// case only; its eps-0 point is the clean accuracy).</summary>
    public static IReadOnlyList<ResultRow> ReadmeRows(RunRecord record, string command)
    {
        var m = Read(record);
        return m.Variants.SelectMany(v => (m.Varied == "eps" ? [] : new[] { new ResultRow($"{record.Script}: {Label(v)}", $"clean (n={v.Clean.N})", v.Clean, command) })
            .Append(new ResultRow($"{record.Script}: {Label(v)}", "worst case", v.WorstCase, command))).ToArray();
    }

    public static IReadOnlyList<MonotonicityCheck> Monotonicity(IReadOnlyList<VariantResult> variants) =>
        variants.Where(v => v.X is not null).GroupBy(v => v.Series).Select(series =>
        {
            var points = series.OrderBy(v => v.X).ToArray();
            var violations = points.Zip(points.Skip(1))
                .Where(p => p.Second.WorstCase.Correct > p.First.WorstCase.Correct)
                .Select(p => $"{p.First.X} -> {p.Second.X}: {100 * p.First.WorstCase.Value:F1}% -> {100 * p.Second.WorstCase.Value:F1}%")
                .ToArray();
            return new MonotonicityCheck(series.Key, violations.Length == 0, violations);
        }).ToArray();

    static readonly string[] Colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
    static readonly string[] Fills = ["rgba(31,119,180,0.2)", "rgba(214,39,40,0.2)", "rgba(44,160,44,0.2)", "rgba(148,103,189,0.2)"];

    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record)
    {
        var m = Read(record);
        var smoke = record.Smoke ? ", SMOKE" : "";
        var figures = new List<(string, Figure)>
        {
            ("accuracy", ResultTable.Figure(Rows(record), $"{m.Title}: clean (n={m.CleanPoints}) and robust (n={m.RobustPoints}), {m.Threat}{smoke}",
                width: 1100, height: 600)),
        };
        var numeric = m.Variants.Where(v => v.X is not null).ToArray();
        if (numeric.Length < 2) return figures;
        var traces = new List<JsonObject>();
        var k = 0;
        foreach (var series in numeric.GroupBy(v => v.Series))
        {
            var points = series.OrderBy(v => v.X).ToArray();
            var x = points.Select(v => v.X!.Value).ToArray();
            foreach (var (what, values) in new[] { ("clean", points.Select(v => v.Clean).ToArray()), ("worst case", points.Select(v => v.WorstCase).ToArray()) })
            {
                if (what == "clean" && m.Varied == "eps") continue; // a sweep over eps: clean is its eps-0 point
                var name = $"{series.Key} {what} (n={values[0].N})";
                traces.Add(Charts.Band(x, values.Select(a => 100 * a.Lower).ToArray(), values.Select(a => 100 * a.Upper).ToArray(), name + " 95%", Fills[k % Fills.Length]));
                traces.Add(Charts.Line(x, values.Select(a => 100 * a.Value), name, Colors[k % Colors.Length], what == "clean" ? "dash" : null));
                k++;
            }
        }
        var layout = Charts.Layout($"{m.Title}: accuracy vs {m.Varied}{smoke}", m.Varied, "accuracy (%), 95% Wilson band");
        layout["yaxis"]!["range"] = new JsonArray(0, 100);
        figures.Add(("accuracy-vs-" + Slug(m.Varied), Charts.Figure(traces, layout, 900, 520)));
        foreach (var extra in numeric.SelectMany(v => v.Extra.Keys).Distinct())
        {
            var points = numeric.Where(v => v.Extra.ContainsKey(extra)).OrderBy(v => v.X).ToArray();
            figures.Add(($"{Slug(extra)}-vs-{Slug(m.Varied)}", Charts.Figure(
                [Charts.Line(points.Select(v => v.X!.Value), points.Select(v => v.Extra[extra]), extra, Colors[2])],
                Charts.Layout($"{m.Title}: {extra} vs {m.Varied} ({record.Threads} threads{smoke})", m.Varied, extra))));
        }
        return figures;
    }

    static string Slug(string text) => new string(text.ToLowerInvariant().Select(c => char.IsLetterOrDigit(c) ? c : '-').ToArray()).Trim('-');
}
