using Carso.Training;
using Carso.IO;
using System.Text.Json;
using Carso.Defence;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>The loss curves of scripts/train-carso.cs, built only from its run record. (Its reconstruction gallery
/// needs the models: the script draws it.)</summary>
public static class TrainCarsoReport
{
    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record)
    {
        var history = record.Metric<List<PurifierEpochMetrics>>("epochs");
        var epochs = history.Select(h => (double)h.Epoch).ToArray();
        return
        [
            ("loss-curves", Charts.Figure(
            [
                Charts.Line(epochs, history.Select(h => h.Bce).ToArray(), "BCE per image", "#1f77b4"),
                Charts.Line(epochs, history.Select(h => h.Kl).ToArray(), "KL per image", "#d62728", yAxis: "y2"),
            ], Charts.Layout("CARSO purifier training (Fashion-MNIST)", "epoch", "BCE (sum over pixels)", "KL"))),
        ];
    }
}
