using Carso.IO;
using Carso.Evaluation;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>Metrics of an ablation over named variants (aggregation, deterministic, adversarial fraction): each
/// variant's clean and robust accuracy, what attacked it, and what was reduced.</summary>
public sealed record VariantAblationMetrics(int CleanPoints, int RobustPoints, string Attack, string ReducedFrom,
    IReadOnlyList<VariantResult> Variants, IReadOnlyList<string> Notes);

/// <summary>Table and figure of the variant ablations (scripts/ablation-aggregation.cs, ablation-deterministic.cs),
/// from the run record only.</summary>
public static class VariantAblationReport
{
    public static IReadOnlyList<ResultRow> Rows(RunRecord record) => Ablation.Rows(Ablation.Read<VariantAblationMetrics>(record).Variants);

    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record, string title)
    {
        var m = Ablation.Read<VariantAblationMetrics>(record);
        return [("accuracy", Ablation.VariantFigure(m.Variants,
            $"{title}: clean (n={m.CleanPoints}) and robust (n={m.RobustPoints}), reduced attacks{(record.Smoke ? ", SMOKE" : "")}"))];
    }
}

/// <summary>scripts/ablation-aggregation.cs.</summary>
public static class AblationAggregationReport
{
    public static IReadOnlyList<ResultRow> Rows(RunRecord record) => VariantAblationReport.Rows(record);
    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record) =>
        VariantAblationReport.Figures(record, "CARSO aggregation (N=8)");
}

/// <summary>scripts/ablation-deterministic.cs.</summary>
public static class AblationDeterministicReport
{
    public static IReadOnlyList<ResultRow> Rows(RunRecord record) => VariantAblationReport.Rows(record);
    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record) =>
        VariantAblationReport.Figures(record, "CARSO latent: z = 0 vs z ~ N(0, I)");
}
