using System.Text.Json.Nodes;
using Carso.IO;
using Carso.Reporting;
using Carso.Training;

namespace Carso.Experiments;

/// <summary>The training curves of scripts/train-classifier.cs and scripts/train-carso.cs, from their run records
/// alone (metrics.epochs: one entry per epoch). Reconstruction galleries are stored in the records (Gallery).</summary>
public static class TrainingReports
{
    /// <summary>The per-epoch history of a training record and its epoch numbers as the x axis.</summary>
    static (List<T> History, double[] Epochs) History<T>(RunRecord record, Func<T, int> epoch)
    {
        var history = record.Metric<List<T>>("epochs");
        return (history, history.Select(h => (double)epoch(h)).ToArray());
    }

    /// <summary>scripts/train-classifier.cs: held-out clean and PGD accuracy with 95% bands, training accuracy and loss.</summary>
    public static IReadOnlyList<(string Name, Figure Figure)> Classifier(RunRecord record)
    {
        var (history, epochs) = History<EpochMetrics>(record, h => h.Epoch);
        var training = record.Settings?["training"];
        var pgdSteps = training?["evalPgdSteps"]?.GetValue<int>() ?? 20;
        double[] Pct(Func<EpochMetrics, double> f) => history.Select(h => 100 * f(h)).ToArray();
        return
        [
            ("training-curve", Charts.Figure(
            [
                Charts.Band(epochs, Pct(h => h.ValidationClean.Lower), Pct(h => h.ValidationClean.Upper), "clean 95%", "rgba(31,119,180,0.15)"),
                Charts.Band(epochs, Pct(h => h.ValidationPgd.Lower), Pct(h => h.ValidationPgd.Upper), "PGD 95%", "rgba(214,39,40,0.15)"),
                Charts.Line(epochs, Pct(h => h.ValidationClean.Value), "held-out clean accuracy", "#1f77b4"),
                Charts.Line(epochs, Pct(h => h.ValidationPgd.Value), $"held-out PGD-{pgdSteps} accuracy", "#d62728"),
                Charts.Line(epochs, Pct(h => h.TrainAccuracy), "training accuracy (adversarial)", "#7f7f7f", "dot"),
                Charts.Line(epochs, history.Select(h => h.TrainLoss).ToArray(), "training loss", "#2ca02c", "dash", "y2"),
            ], Charts.Layout($"SmallCnn on Fashion-MNIST, {training?["method"]} {ThreatText(training?["threat"])}", "epoch", "accuracy (%)", "loss"))),
        ];
    }

    /// <summary>scripts/train-carso.cs: the purifier's BCE and KL per image by epoch.</summary>
    public static IReadOnlyList<(string Name, Figure Figure)> Purifier(RunRecord record)
    {
        var (history, epochs) = History<PurifierEpochMetrics>(record, h => h.Epoch);
        return
        [
            ("loss-curves", Charts.Figure(
            [
                Charts.Line(epochs, history.Select(h => h.Bce).ToArray(), "BCE per image", "#1f77b4"),
                Charts.Line(epochs, history.Select(h => h.Kl).ToArray(), "KL per image", "#d62728", yAxis: "y2"),
            ], Charts.Layout("CARSO purifier training (Fashion-MNIST)", "epoch", "BCE (sum over pixels)", "KL"))),
        ];
    }

    /// <summary>"Linf eps=0.1" from a serialised Threat.</summary>
    public static string ThreatText(JsonNode? threat) =>
        threat is null ? "" : $"{threat["norm"]} eps={threat["eps"]}";
}
