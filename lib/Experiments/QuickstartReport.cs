using Carso.IO;
using System.Text.Json;
using Carso.Evaluation;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>The accuracy figure of scripts/quickstart.cs, built only from its run record. (Its reconstruction
/// gallery needs the models: the script draws it.)</summary>
public static class QuickstartReport
{
    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record)
    {
        var rows = EvalCarsoReport.Rows(record); // the same table shape: classifier and CARSO rows
        return [("accuracy", ResultTable.Figure(rows,
            $"Quickstart (reduced budgets): classifier vs CARSO, Fashion-MNIST Linf eps 0.1, n={rows.Max(r => r.Accuracy.N)}"))];
    }
}
