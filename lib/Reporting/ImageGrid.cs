using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Carso.Reporting;

/// <summary>A grid of images as a Plotly figure: one row per label (e.g. per class), images side by side.</summary>
public static class ImageGrid
{
    /// <summary>
    /// images: [rows * columns, C, H, W] in [0, 1], row-major (row r holds images r*columns .. r*columns+columns-1);
    /// C = 1 draws a grey heatmap, C = 3 an RGB image. rowLabels label the rows on the y axis.
    /// </summary>
    public static Figure Create(Tensor images, int columns, IReadOnlyList<string> rowLabels, string title, int cellPixels = 40)
    {
        var (n, c, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3]);
        var rows = rowLabels.Count;
        if (n != (long)rows * columns)
            throw new ArgumentException($"image grid: {n} images for {rows} rows x {columns} columns");
        if (c != 1 && c != 3)
            throw new ArgumentException($"image grid: images must have 1 or 3 channels, got {c}");
        const int pad = 2; // white gutter between images
        var (cellH, cellW) = (h + pad, w + pad);
        using var scope = NewDisposeScope();
        // [rows, columns, C, H, W] -> padded -> [C, rows*cellH, columns*cellW]
        var padded = nn.functional.pad(images.to(CPU).clamp(0, 1), [0, pad, 0, pad], value: 1.0)
            .reshape(rows, columns, c, cellH, cellW)
            .permute(2, 0, 3, 1, 4)
            .reshape(c, rows * cellH, columns * cellW);
        var mosaicH = (int)(rows * cellH);
        var mosaicW = (int)(columns * cellW);
        JsonObject trace;
        if (c == 1)
        {
            var values = padded[0].mul(1000).round().div(1000).to_type(ScalarType.Float32).data<float>().ToArray();
            var z = new JsonArray(Enumerable.Range(0, mosaicH)
                .Select(r => (JsonNode)new JsonArray(values.Skip(r * mosaicW).Take(mosaicW).Select(v => (JsonNode)JsonValue.Create(v)).ToArray()))
                .ToArray());
            trace = new JsonObject
            {
                ["type"] = "heatmap", ["z"] = z, ["zmin"] = 0, ["zmax"] = 1, ["showscale"] = false,
                ["colorscale"] = new JsonArray(new JsonArray(0, "black"), new JsonArray(1, "white")),
                ["hoverinfo"] = "skip",
            };
        }
        else
        {
            var rgb = padded.permute(1, 2, 0).mul(255).round().to_type(ScalarType.Int32).data<int>().ToArray();
            var z = new JsonArray(Enumerable.Range(0, mosaicH)
                .Select(r => (JsonNode)new JsonArray(Enumerable.Range(0, mosaicW)
                    .Select(col => (JsonNode)new JsonArray(Enumerable.Range(0, 3).Select(k => (JsonNode)JsonValue.Create(rgb[(r * mosaicW + col) * 3 + k])).ToArray()))
                    .ToArray()))
                .ToArray());
            trace = new JsonObject { ["type"] = "image", ["z"] = z, ["hoverinfo"] = "skip" };
        }
        var tickValues = new JsonArray(Enumerable.Range(0, rows).Select(r => (JsonNode)JsonValue.Create(r * cellH + h / 2.0)).ToArray());
        var tickText = new JsonArray(rowLabels.Select(l => (JsonNode)JsonValue.Create(l)).ToArray());
        var layout = new JsonObject
        {
            ["title"] = new JsonObject { ["text"] = title },
            ["xaxis"] = new JsonObject { ["visible"] = false, ["constrain"] = "domain" },
            ["yaxis"] = new JsonObject
            {
                ["autorange"] = "reversed", ["scaleanchor"] = "x", ["constrain"] = "domain",
                ["tickvals"] = tickValues, ["ticktext"] = tickText, ["showgrid"] = false, ["zeroline"] = false,
            },
            ["margin"] = new JsonObject { ["l"] = LeftMargin(rowLabels), ["r"] = 20, ["t"] = 50, ["b"] = 20 },
            ["plot_bgcolor"] = "white",
        };
        var width = Math.Max(520, LeftMargin(rowLabels) + 20 + columns * cellPixels);
        var height = 70 + rows * cellPixels;
        return new Figure([trace], layout, width, height);
    }

    /// <summary>Room for the row labels (about 7 px per character at Plotly's default font).</summary>
    static int LeftMargin(IReadOnlyList<string> rowLabels) => Math.Max(130, 20 + 7 * rowLabels.Max(l => l.Length));
}
