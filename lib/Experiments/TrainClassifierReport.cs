using Carso.IO;
using System.Text.Json;
using System.Text.Json.Nodes;
using Carso.Reporting;
using Carso.Training;

namespace Carso.Experiments;

/// <summary>The figure of scripts/train-classifier.cs, built only from its run record.</summary>
public static class TrainClassifierReport
{
    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record)
    {
        var history = record.Metric<List<EpochMetrics>>("epochs");
        var training = record.Settings?["training"];
        var title = $"SmallCnn on Fashion-MNIST, {training?["method"]} {ThreatText(training?["threat"])}";
        var pgdSteps = training?["evalPgdSteps"]?.GetValue<int>() ?? 20;
        var epochs = history.Select(h => (double)h.Epoch).ToArray();
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
            ], Charts.Layout(title, "epoch", "accuracy (%)", "loss"))),
        ];
    }

    /// <summary>"Linf eps=0.1" from a serialised Threat.</summary>
    public static string ThreatText(JsonNode? threat) =>
        threat is null ? "" : $"{threat["norm"]} eps={threat["eps"]}";
}
