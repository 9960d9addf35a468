using Carso.IO;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>For each script, the function that draws its figures from its run record alone (scripts/figures.cs).</summary>
public static class Reports
{
    public static IReadOnlyDictionary<string, Func<RunRecord, IReadOnlyList<(string Name, Figure Figure)>>> ByScript { get; } =
        new Dictionary<string, Func<RunRecord, IReadOnlyList<(string Name, Figure Figure)>>>
        {
            ["datasets"] = Gallery.FiguresOf,
            ["train-classifier"] = TrainClassifierReport.Figures,
            ["train-carso"] = r => [.. TrainCarsoReport.Figures(r), .. Gallery.FiguresOf(r)],
            ["eval-autoattack"] = EvalAutoAttackReport.Figures,
            ["eval-carso"] = EvalCarsoReport.Figures,
            ["quickstart"] = r => [.. QuickstartReport.Figures(r), .. Gallery.FiguresOf(r)],
            ["eps-sweep"] = EpsSweepReport.Figures,
            ["bench"] = BenchReport.Figures,
            ["ablation-samples"] = AblationSamplesReport.Figures,
            ["ablation-aggregation"] = AblationAggregationReport.Figures,
            ["ablation-deterministic"] = AblationDeterministicReport.Figures,
            ["ablation-adversarial-fraction"] = AblationAdversarialFractionReport.Figures,
        };
}
