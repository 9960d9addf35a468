using Carso.IO;
using Carso.Evaluation;
using Carso.Reporting;

namespace Carso.Experiments;

/// <summary>One attack family of the reduced CARSO protocol at one eps.</summary>
public sealed record EpsFamily(string Name, Accuracy Robust, double Seconds);

/// <summary>One eps of the sweep: robust accuracy of the classifier and of CARSO on the same points (at eps 0: clean),
/// CARSO's families, and the "envelope" (robust at every eps up to this one: an example within a smaller ball is
/// within this one too).</summary>
public sealed record EpsPoint(double Eps, Accuracy Classifier, Accuracy Carso, Accuracy ClassifierEnvelope, Accuracy CarsoEnvelope,
    Accuracy CarsoClean, IReadOnlyList<EpsFamily> CarsoFamilies, Accuracy? CarsoLargeEps, IReadOnlyList<string> CarsoWarnings,
    double ClassifierSeconds, double CarsoSeconds);

/// <summary>Whether a curve is non-increasing in eps (the raw per-eps numbers, each from its own attacks).</summary>
public sealed record MonotonicityCheck(string Model, bool NonIncreasing, IReadOnlyList<string> Violations);

public sealed record EpsSweepMetrics(int Points, string ClassifierAttack, string CarsoAttack, string ReducedFrom,
    IReadOnlyList<EpsPoint> Curve, IReadOnlyList<MonotonicityCheck> Checks);

/// <summary>Table and figure of scripts/eps-sweep.cs, from its run record only.</summary>
public static class EpsSweepReport
{
    public static MonotonicityCheck Check(string model, IReadOnlyList<double> eps, IReadOnlyList<Accuracy> accuracy)
    {
        var violations = new List<string>();
        for (var i = 1; i < eps.Count; i++)
            if (accuracy[i].Correct > accuracy[i - 1].Correct)
                violations.Add($"eps {eps[i - 1]} -> {eps[i]}: {100 * accuracy[i - 1].Value:F1}% -> {100 * accuracy[i].Value:F1}% " +
                               $"(+{accuracy[i].Correct - accuracy[i - 1].Correct} of {accuracy[i].N} points)");
        return new MonotonicityCheck(model, violations.Count == 0, violations);
    }

    public static IReadOnlyList<ResultRow> Rows(RunRecord record)
    {
        var m = Ablation.Read<EpsSweepMetrics>(record);
        return m.Curve.SelectMany(p => new[]
        {
            new ResultRow("classifier", $"eps {p.Eps}", p.Classifier),
            new ResultRow("CARSO", $"eps {p.Eps}", p.Carso),
        }).OrderBy(r => r.Model == "CARSO").ToArray();
    }

    public static IReadOnlyList<(string Name, Figure Figure)> Figures(RunRecord record)
    {
        var m = Ablation.Read<EpsSweepMetrics>(record);
        var eps = m.Curve.Select(p => p.Eps).ToArray();
        var figure = Ablation.Curves(eps,
        [
            ("classifier (APGD-CE + APGD-T)", m.Curve.Select(p => p.Classifier).ToArray(), "#1f77b4", "rgba(31,119,180,0.2)"),
            ("CARSO (reduced protocol, worst case)", m.Curve.Select(p => p.Carso).ToArray(), "#d62728", "rgba(214,39,40,0.2)"),
        ], $"Robust accuracy vs Linf eps, Fashion-MNIST, n={m.Points} (reduced budgets{(record.Smoke ? ", SMOKE" : "")})", "Linf eps");
        return [("robust-accuracy-vs-eps", figure)];
    }
}
