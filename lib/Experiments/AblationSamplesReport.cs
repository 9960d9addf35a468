using Carso.IO;
using Carso.Evaluation;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>One ensemble size: clean accuracy (many points), robustness (fewer, attacked points), inference speed.</summary>
public sealed record SamplesPoint(int Samples, Accuracy Clean, Robustness Robust, double ImagesPerSecond, IReadOnlyList<double> RepeatSeconds);

public sealed record AblationSamplesMetrics(int CleanPoints, int RobustPoints, int TimingPoints, int TimingRepeats, string Attack,
    string ReducedFrom, string LoadAverageStart, string LoadAverageEnd, IReadOnlyList<SamplesPoint> Points);

/// <summary>Table and figures of scripts/ablation-samples.cs, from its run record only.</summary>
public static class AblationSamplesReport
{
    public static IReadOnlyList<ResultRow> Rows(RunRecord record) =>
        Ablation.Rows(Ablation.Read<AblationSamplesMetrics>(record).Points.Select(p =>
            new VariantResult($"N={p.Samples}", $"{p.Samples} samples", p.Clean, p.Robust)));

    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record)
    {
        var m = Ablation.Read<AblationSamplesMetrics>(record);
        var n = m.Points.Select(p => (double)p.Samples).ToArray();
        var accuracy = Ablation.Curves(n,
        [
            ($"clean (n={m.CleanPoints})", m.Points.Select(p => p.Clean).ToArray(), "#1f77b4", "rgba(31,119,180,0.2)"),
            ($"robust, worst case (n={m.RobustPoints})", m.Points.Select(p => p.Robust.WorstCase).ToArray(), "#d62728", "rgba(214,39,40,0.2)"),
        ], $"CARSO accuracy vs ensemble size N (reduced attack{(record.Smoke ? ", SMOKE" : "")})", "samples N (log scale)", logX: true);
        var speedLayout = Charts.Layout($"CARSO inference speed vs N ({record.Threads} CPU threads, no_grad, median of {m.TimingRepeats})",
            "samples N (log scale)", "images per second");
        speedLayout["xaxis"]!["type"] = "log";
        var speed = Charts.Figure([Charts.Line(n, m.Points.Select(p => p.ImagesPerSecond), "images/s", "#2ca02c")], speedLayout);
        return [("accuracy-vs-samples", accuracy), ("speed-vs-samples", speed)];
    }
}
