using Carso.IO;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>The function that draws a record's figures from the record alone (scripts/figures.cs): by the record's shape
/// for ablations and sweeps (<see cref="VariantReport"/>), else by script.</summary>
public static class Reports
{
    public static Func<RunRecord, IReadOnlyList<(string Name, Figure Figure)>>? For(RunRecord record) =>
        VariantReport.Reads(record) ? VariantReport.Figures : ByScript.GetValueOrDefault(record.Script);

    public static IReadOnlyDictionary<string, Func<RunRecord, IReadOnlyList<(string Name, Figure Figure)>>> ByScript { get; } =
        new Dictionary<string, Func<RunRecord, IReadOnlyList<(string Name, Figure Figure)>>>
        {
            ["datasets"] = Gallery.FiguresOf,
            ["train-classifier"] = TrainingReports.Classifier,
            ["train-classifier-l2"] = TrainingReports.Classifier,
            ["train-carso"] = r => [.. TrainingReports.Purifier(r), .. Gallery.FiguresOf(r)],
            ["eval-autoattack"] = EvalAutoAttackReport.Figures,
            ["eval-autoattack-l2"] = EvalAutoAttackReport.Figures,
            ["eval-carso"] = EvalCarsoReport.Figures,
            ["quickstart"] = r => [.. QuickstartReport.Figures(r), .. Gallery.FiguresOf(r)],
            ["bench"] = BenchReport.Figures,
            ["bench-carso-grad"] = CarsoSpeedReport.Figures,
        };
}
