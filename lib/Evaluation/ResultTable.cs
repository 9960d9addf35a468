using System.Text;
using Carso.Reporting;

namespace Carso.Evaluation;

/// <summary>One line of a results table: a model, what it was evaluated against, the accuracy (with its
/// interval and n), and the command that reproduces the number.</summary>
public sealed record ResultRow(string Model, string Evaluation, Accuracy Accuracy, string? Command = null);

/// <summary>Results tables as Markdown and as a bar figure with 95% intervals.</summary>
public static class ResultTable
{
    public static string Percent(Accuracy a) => $"{100 * a.Value:F2}%";
    public static string Interval(Accuracy a) => $"[{100 * a.Lower:F2}, {100 * a.Upper:F2}]";

    /// <summary>A Markdown table: model | evaluation | accuracy | 95% interval | n (| command when any row has one).</summary>
    public static string Markdown(IReadOnlyList<ResultRow> rows)
    {
        var withCommand = rows.Any(r => r.Command is not null);
        var text = new StringBuilder();
        text.AppendLine("| model | evaluation | accuracy | 95% interval | n |" + (withCommand ? " reproduce |" : ""));
        text.AppendLine("|---|---|---:|---|---:|" + (withCommand ? "---|" : ""));
        foreach (var r in rows)
            text.AppendLine($"| {r.Model} | {r.Evaluation} | {Percent(r.Accuracy)} | {Interval(r.Accuracy)} | {r.Accuracy.N} |" +
                            (withCommand ? $" {(r.Command is null ? "" : $"`{r.Command}`")} |" : ""));
        return text.ToString();
    }

    /// <summary>Plain text for the console: aligned columns.</summary>
    public static string Text(IReadOnlyList<ResultRow> rows)
    {
        var modelWidth = Math.Max(5, rows.Max(r => r.Model.Length));
        var evalWidth = Math.Max(10, rows.Max(r => r.Evaluation.Length));
        var text = new StringBuilder();
        text.AppendLine($"{"model".PadRight(modelWidth)}  {"evaluation".PadRight(evalWidth)}  {"accuracy",8}  {"95% interval",-16}  {"n",6}");
        foreach (var r in rows)
            text.AppendLine($"{r.Model.PadRight(modelWidth)}  {r.Evaluation.PadRight(evalWidth)}  {Percent(r.Accuracy),8}  {Interval(r.Accuracy),-16}  {r.Accuracy.N,6}");
        return text.ToString();
    }

    /// <summary>Bars per row (grouped by model, one colour each) with 95% interval error bars.</summary>
    public static Figure Figure(IReadOnlyList<ResultRow> rows, string title, int width = 1000, int height = 540)
    {
        string[] palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
        var traces = rows.GroupBy(r => r.Model).Select((g, i) => Charts.Bars(
            g.Select(r => $"{r.Model}: {r.Evaluation}").ToArray(),
            g.Select(r => 100 * r.Accuracy.Value).ToArray(), g.Select(r => 100 * r.Accuracy.Lower).ToArray(),
            g.Select(r => 100 * r.Accuracy.Upper).ToArray(), g.Key, palette[i % palette.Length]));
        var layout = Charts.Layout(title, "", "accuracy (%), 95% Wilson interval");
        layout["yaxis"]!["range"] = new System.Text.Json.Nodes.JsonArray(0, 100);
        layout["xaxis"]!["tickangle"] = -30;
        layout["margin"]!["b"] = 200;
        layout["margin"]!["t"] = 90;
        layout["legend"] = new System.Text.Json.Nodes.JsonObject
        {
            ["orientation"] = "h", ["x"] = 1, ["xanchor"] = "right", ["y"] = 1.0, ["yanchor"] = "bottom",
        };
        return Charts.Figure(traces, layout, width, height);
    }
}
