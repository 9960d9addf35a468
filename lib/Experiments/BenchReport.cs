using Carso.IO;
using System.Text.Json.Nodes;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>
/// The figures of a scripts/bench.cs run, built from its run record's metrics alone (so they can be redrawn from
/// results/bench/run.json without rerunning): throughput of Carso and PyTorch per operation and batch size,
/// their ratio, and the resident memory of the long attack loop.
/// The metrics it reads: operations[] = { name, batch, ours { medianImagesPerSecond, minImagesPerSecond,
/// maxImagesPerSecond }, pytorch (same, or null), ratio (or null) }, and memory { rssMiB: [{ iteration, rssMiB }] }.
/// </summary>
public static class BenchReport
{
    const string OursColor = "#1f77b4", PyTorchColor = "#ff7f0e";

    /// <summary>The figures (name, figure) of a bench run record; a figure whose data the record lacks is left out.</summary>
    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record)
    {
        var metrics = record.Metrics ?? throw new ArgumentException("the run record has no metrics", nameof(record));
        var figures = new List<(string, Figure)>();
        var operations = metrics["operations"]?.AsArray().Select(o => o!.AsObject()).ToArray() ?? [];
        if (operations.Length > 0)
        {
            figures.Add(("throughput", Throughput(operations, record.Threads)));
            if (operations.Any(o => o["ratio"] is not null))
                figures.Add(("ratio", Ratio(operations)));
        }
        if (metrics["memory"]?["rssMiB"]?.AsArray() is { Count: > 0 } rss)
            figures.Add(("memory", Memory(rss, metrics["memory"]!)));
        return figures;
    }

    static string Label(JsonObject op) => $"{(string)op["name"]!} b{(int)op["batch"]!}";

    static (double Median, double Min, double Max) Stats(JsonNode timing) =>
        ((double)timing["medianImagesPerSecond"]!, (double)timing["minImagesPerSecond"]!, (double)timing["maxImagesPerSecond"]!);

    static Figure Throughput(JsonObject[] operations, int threads)
    {
        var traces = new List<JsonObject>();
        var labels = operations.Select(Label).ToArray();
        var ours = operations.Select(o => Stats(o["ours"]!)).ToArray();
        traces.Add(Charts.Bars(labels, ours.Select(s => s.Median).ToArray(), ours.Select(s => s.Min).ToArray(),
            ours.Select(s => s.Max).ToArray(), "Carso (TorchSharp)", OursColor));
        var withTorch = operations.Where(o => o["pytorch"] is not null).ToArray();
        if (withTorch.Length > 0)
        {
            var torch = withTorch.Select(o => Stats(o["pytorch"]!)).ToArray();
            traces.Add(Charts.Bars(withTorch.Select(Label).ToArray(), torch.Select(s => s.Median).ToArray(),
                torch.Select(s => s.Min).ToArray(), torch.Select(s => s.Max).ToArray(), "PyTorch", PyTorchColor));
        }
        var layout = Charts.Layout($"Throughput per operation (median, bars min-max; {threads} threads, CPU)",
            "operation, batch size", "images per second (log scale)");
        layout["yaxis"]!["type"] = "log";
        layout["barmode"] = "group";
        layout["xaxis"]!["tickangle"] = -40;
        layout["margin"]!["b"] = 170;
        return Charts.Figure(traces, layout, width: 1200, height: 650);
    }

    static Figure Ratio(JsonObject[] operations)
    {
        var withRatio = operations.Where(o => o["ratio"] is not null).ToArray();
        var labels = withRatio.Select(Label).ToArray();
        var ratios = withRatio.Select(o => (double)o["ratio"]!).ToArray();
        var bars = new JsonObject
        {
            ["type"] = "bar", ["name"] = "Carso / PyTorch",
            ["x"] = new JsonArray(labels.Select(l => (JsonNode?)JsonValue.Create(l)).ToArray()),
            ["y"] = new JsonArray(ratios.Select(r => (JsonNode?)JsonValue.Create(r)).ToArray()),
            ["text"] = new JsonArray(ratios.Select(r => (JsonNode?)JsonValue.Create($"{r:F2}")).ToArray()),
            ["textposition"] = "outside",
            ["marker"] = new JsonObject
            {
                ["color"] = new JsonArray(ratios.Select(r => (JsonNode?)JsonValue.Create(r >= 1 ? "#2ca02c" : "#d62728")).ToArray()),
            },
        };
        var layout = Charts.Layout("Throughput ratio Carso / PyTorch (median; >= 1: Carso at least as fast)",
            "operation, batch size", "ratio of images per second");
        layout["shapes"] = new JsonArray(new JsonObject
        {
            ["type"] = "line", ["xref"] = "paper", ["x0"] = 0, ["x1"] = 1, ["y0"] = 1, ["y1"] = 1,
            ["line"] = new JsonObject { ["color"] = "black", ["dash"] = "dash", ["width"] = 1 },
        });
        layout["xaxis"]!["tickangle"] = -40;
        layout["margin"]!["b"] = 170;
        layout["showlegend"] = false;
        return Charts.Figure([bars], layout, width: 1200, height: 600);
    }

    static Figure Memory(JsonArray rss, JsonNode memory)
    {
        var points = rss.Select(p => ((double)p!["iteration"]!, (double)p["rssMiB"]!)).ToArray();
        var growth = memory["growthPercent"] is { } g ? $", growth {(double)g:F2}% from iteration {(int)memory["firstCheck"]!}" : "";
        return Charts.Figure(
            [Charts.Line(points.Select(p => p.Item1), points.Select(p => p.Item2), "resident memory (VmRSS)", OursColor)],
            Charts.Layout($"Resident memory in the CARSO APGD-EOT loop{growth}", "iteration", "MiB"));
    }

    /// <summary>
    /// The README's table of a bench run, from its record alone: one row per operation with its batch sizes side by side
    /// ("128 / 512"), Carso's and PyTorch's median images/s and their ratio (every ratio, those below 1 too; "not timed"
    /// where PyTorch did not run the call), then the memory line and the BLAS PyTorch multiplied on.
    /// </summary>
    public static string MarkdownTable(RunRecord record)
    {
        var metrics = record.Metrics ?? throw new ArgumentException("the run record has no metrics", nameof(record));
        var operations = metrics["operations"]?.AsArray().Select(o => o!.AsObject()).ToArray() ?? [];
        static string Median(JsonNode? timing) => timing is null ? "not timed" : $"{(double)timing["medianImagesPerSecond"]!:F0}";
        static string RatioOf(JsonObject op) => op["ratio"] is { } r ? $"{(double)r:F2}" : "-";
        var lines = new List<string>
        {
            "| operation | batch | Carso | PyTorch | Carso / PyTorch |",
            "|---|---:|---:|---:|---:|",
        };
        foreach (var group in operations.GroupBy(o => (string)o["name"]!))
        {
            var ops = group.ToArray();
            string Joined(Func<JsonObject, string> cell) => string.Join(" / ", ops.Select(cell));
            lines.Add($"| {group.Key} ({(string)ops[0]["work"]!}) | {Joined(o => $"{(int)o["batch"]!}")} | {Joined(o => Median(o["ours"]))} | " +
                      $"{Joined(o => Median(o["pytorch"]))} | {Joined(RatioOf)} |");
        }
        var text = string.Join("\n", lines) + "\n";
        if (metrics["memory"] is JsonObject memory)
            text += $"\nMemory: {(int)memory["iterations"]!} iterations of the APGD hot loop on differentiable CARSO (N = {(int)memory["samples"]!}, " +
                    $"EOT {(int)memory["eotIter"]!}): RSS {(double)memory["rssAtFirstCheck"]!:F0} MiB at iteration {(int)memory["firstCheck"]!}, " +
                    $"{(double)memory["rssAtLast"]!:F0} MiB at the end ({(double)memory["growthPercent"]!:+0.0;-0.0}%), peak {(double)memory["peakRssMiB"]!:F0} MiB.\n";
        if (metrics["pytorch"] is JsonObject torch && torch["blas"] is { } blas)
            text += $"\nPyTorch {(string?)torch["torchVersion"]} multiplied on: {(string)blas!}.\n";
        return text;
    }
}
