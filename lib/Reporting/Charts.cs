using System.Text.Json.Nodes;

namespace Carso.Reporting;

/// <summary>Small builders of Plotly traces and layouts, composed into a <see cref="Figure"/>.</summary>
public static class Charts
{
    static JsonArray Array(IEnumerable<double> values) => new(values.Select(v => (JsonNode?)JsonValue.Create(v)).ToArray());

    /// <summary>A line with markers.</summary>
    public static JsonObject Line(IEnumerable<double> x, IEnumerable<double> y, string name, string? color = null, string? dash = null, string yAxis = "y") => new()
    {
        ["type"] = "scatter", ["mode"] = "lines+markers", ["name"] = name, ["x"] = Array(x), ["y"] = Array(y), ["yaxis"] = yAxis,
        ["line"] = new JsonObject { ["color"] = color, ["dash"] = dash ?? "solid" },
    };

    /// <summary>Points joined by a line, each with an asymmetric error bar (e.g. a 95% interval).</summary>
    public static JsonObject LineWithErrors(IReadOnlyList<string> x, IReadOnlyList<double> y, IReadOnlyList<double> lower, IReadOnlyList<double> upper,
        string name, string? color = null) => new()
    {
        ["type"] = "scatter", ["mode"] = "lines+markers+text", ["name"] = name,
        ["x"] = new JsonArray(x.Select(v => (JsonNode?)JsonValue.Create(v)).ToArray()), ["y"] = Array(y),
        ["text"] = new JsonArray(y.Select(v => (JsonNode?)JsonValue.Create($"{v:F1}")).ToArray()), ["textposition"] = "top right",
        ["error_y"] = new JsonObject
        {
            ["type"] = "data", ["symmetric"] = false,
            ["array"] = Array(upper.Zip(y, (u, v) => u - v)), ["arrayminus"] = Array(y.Zip(lower, (v, l) => v - l)),
        },
        ["line"] = new JsonObject { ["color"] = color },
    };

    /// <summary>Bars with asymmetric error bars (e.g. accuracies with their 95% intervals), one per category.</summary>
    public static JsonObject Bars(IReadOnlyList<string> x, IReadOnlyList<double> y, IReadOnlyList<double> lower, IReadOnlyList<double> upper,
        string name, string? color = null) => new()
    {
        ["type"] = "bar", ["name"] = name,
        ["x"] = new JsonArray(x.Select(v => (JsonNode?)JsonValue.Create(v)).ToArray()), ["y"] = Array(y),
        ["text"] = new JsonArray(y.Select(v => (JsonNode?)JsonValue.Create($"{v:F1}")).ToArray()),
        ["textposition"] = "inside", ["insidetextanchor"] = "start", // at the bar's foot: clear of the error bar
        ["error_y"] = new JsonObject
        {
            ["type"] = "data", ["symmetric"] = false,
            ["array"] = Array(upper.Zip(y, (u, v) => u - v)), ["arrayminus"] = Array(y.Zip(lower, (v, l) => v - l)),
        },
        ["marker"] = new JsonObject { ["color"] = color },
    };

    /// <summary>A shaded band between lower and upper (e.g. a 95% interval), drawn as one closed polygon.</summary>
    public static JsonObject Band(IReadOnlyList<double> x, IReadOnlyList<double> lower, IReadOnlyList<double> upper, string name, string fill = "rgba(31,119,180,0.2)") => new()
    {
        ["type"] = "scatter", ["mode"] = "lines", ["name"] = name, ["hoverinfo"] = "skip", ["showlegend"] = false,
        ["x"] = Array(x.Concat(x.Reverse())), ["y"] = Array(upper.Concat(lower.Reverse())),
        ["fill"] = "toself", ["fillcolor"] = fill, ["line"] = new JsonObject { ["width"] = 0 },
    };

    public static JsonObject Layout(string title, string xTitle, string yTitle, string? y2Title = null)
    {
        var layout = new JsonObject
        {
            ["title"] = new JsonObject { ["text"] = title },
            ["xaxis"] = new JsonObject { ["title"] = new JsonObject { ["text"] = xTitle } },
            ["yaxis"] = new JsonObject { ["title"] = new JsonObject { ["text"] = yTitle } },
            ["legend"] = new JsonObject { ["orientation"] = "h", ["y"] = -0.2 },
            ["margin"] = new JsonObject { ["l"] = 70, ["r"] = 70, ["t"] = 60, ["b"] = 90 },
        };
        if (y2Title is not null)
            layout["yaxis2"] = new JsonObject { ["title"] = new JsonObject { ["text"] = y2Title }, ["overlaying"] = "y", ["side"] = "right" };
        return layout;
    }

    public static Figure Figure(IEnumerable<JsonObject> traces, JsonObject layout, int width = 800, int height = 500) =>
        new(new JsonArray(traces.Select(t => (JsonNode)t).ToArray()), layout, width, height);
}
