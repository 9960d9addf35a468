using Carso.IO;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Carso.Reporting;

/// <summary>
/// An image grid stored in a run record, so the figure can be redrawn from the record alone: the images as
/// 8-bit grey/RGB levels (what a PNG shows anyway) in base64, their shape, the columns, row labels and title.
/// </summary>
public sealed record Gallery(string Images, long[] Shape, int Columns, IReadOnlyList<string> RowLabels, string Title, int CellPixels)
{
    /// <summary>images: [rows * columns, C, H, W] in [0, 1], row-major (as <see cref="ImageGrid.Create"/>).</summary>
    public static Gallery Of(Tensor images, int columns, IReadOnlyList<string> rowLabels, string title, int cellPixels = 40)
    {
        using var scope = NewDisposeScope();
        var levels = images.to(CPU).clamp(0, 1).mul(255).round().to_type(ScalarType.Byte).contiguous().data<byte>().ToArray();
        return new Gallery(Convert.ToBase64String(levels), images.shape, columns, rowLabels.ToArray(), title, cellPixels);
    }

    public Figure Figure()
    {
        var levels = Convert.FromBase64String(Images);
        if (levels.LongLength != Shape.Aggregate(1L, (a, b) => a * b))
            throw new InvalidDataException($"gallery '{Title}': {levels.Length} image bytes for shape [{string.Join(", ", Shape)}]");
        using var scope = NewDisposeScope();
        var images = tensor(levels, Shape).to_type(ScalarType.Float32).div(255);
        return ImageGrid.Create(images, Columns, RowLabels, Title, CellPixels);
    }

    /// <summary>The galleries of a record's metrics: metrics.galleries = { name: gallery }.</summary>
    public static IReadOnlyList<(string Name, Figure Figure)> FiguresOf(RunRecord record) =>
        record.Metrics?["galleries"] is JsonObject galleries
            ? galleries.Select(g => (g.Key, System.Text.Json.JsonSerializer.Deserialize<Gallery>(g.Value, RunRecord.Json)!.Figure())).ToArray()
            : [];
}
