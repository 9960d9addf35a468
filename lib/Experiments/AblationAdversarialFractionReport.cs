using Carso.IO;
using Carso.Evaluation;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>The purifier trained with one adversarial fraction: its budget, last losses and held-out accuracies.</summary>
public sealed record FractionTraining(double Fraction, int Steps, double Seconds, double FinalBce, double FinalKl,
    Accuracy HeldOutDefendedClean, Accuracy HeldOutDefendedPgd, string Checkpoint);

public sealed record AblationAdversarialFractionMetrics(int CleanPoints, int RobustPoints, int TrainPoints, int Epochs, string Attack,
    string ReducedFrom, IReadOnlyList<double> Fractions, IReadOnlyList<VariantResult> Variants, IReadOnlyList<FractionTraining> Training,
    IReadOnlyList<string> Notes);

/// <summary>Table and figures of scripts/ablation-adversarial-fraction.cs, from its run record only.</summary>
public static class AblationAdversarialFractionReport
{
    public static IReadOnlyList<ResultRow> Rows(RunRecord record) => Ablation.Rows(Ablation.Read<AblationAdversarialFractionMetrics>(record).Variants);

    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record)
    {
        var m = Ablation.Read<AblationAdversarialFractionMetrics>(record);
        var smoke = record.Smoke ? ", SMOKE" : "";
        var curve = Ablation.Curves(m.Fractions,
        [
            ($"clean (n={m.CleanPoints})", m.Variants.Select(v => v.Clean).ToArray(), "#1f77b4", "rgba(31,119,180,0.2)"),
            ($"robust, worst case (n={m.RobustPoints})", m.Variants.Select(v => v.Robust.WorstCase).ToArray(), "#d62728", "rgba(214,39,40,0.2)"),
        ], $"CARSO vs the purifier's adversarial training fraction ({m.Epochs} epoch(s) on {m.TrainPoints} images{smoke})",
            "adversarial fraction of each training batch");
        return [("accuracy-vs-fraction", curve),
            ("accuracy", Ablation.VariantFigure(m.Variants, $"CARSO by adversarial training fraction: clean and robust (reduced){smoke}"))];
    }
}
