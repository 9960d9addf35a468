using Carso.IO;
using System.Text.Json;
using System.Text.Json.Nodes;
using Carso.Attacks;
using Carso.Data;
using Carso.Evaluation;
using Carso.Reporting;
using static TorchSharp.torch;

namespace Carso.Experiments;

/// <summary>One attack family's result: robust accuracy on its own (clean-correct and not broken), its time, and
/// the gradient diagnostics of its attacks (zero gradients reveal an aggregation that masks them).</summary>
public sealed record FamilyAccuracy(string Name, string Description, Accuracy Robust, double Seconds, AttackMonitor.Counts Monitor);

/// <summary>Clean accuracy and robust accuracy per attack family on the same points, and the per-point worst case.</summary>
public sealed record Robustness(Accuracy Clean, IReadOnlyList<FamilyAccuracy> Families, Accuracy WorstCase);

/// <summary>One variant of an ablation (an aggregation, z = 0 or sampled, a training fraction): clean accuracy on the
/// clean points, and robustness on the (fewer) attacked points.</summary>
public sealed record VariantResult(string Name, string Description, Accuracy Clean, Robustness Robust);

/// <summary>An attack family to run: every point attacked by the attack Attack makes (aimed at whatever surrogate it
/// wraps), judged by the model under evaluation. Attack takes the family's monitor, which counts zero and non-finite
/// gradients (a zero gradient everywhere means the attack saw nothing, not that the model is robust).</summary>
public sealed record AttackFamily(string Name, string Description, Func<AttackMonitor, NamedAttack> Attack);

/// <summary>
/// The small evaluation the ablations share: a reduced version of the CARSO protocol (CarsoEvaluation) where the
/// caller picks the families. Each family runs on its own over all points; a point is robust when the judge
/// classifies it correctly clean, on its transfer image, and after every family (per-point worst case).
/// </summary>
public static class Ablation
{
    public const string TransferName = "transfer";

    public static Robustness Evaluate(Func<Tensor, Tensor> judge, Dataset data, Threat threat, Tensor? transfer,
        IReadOnlyList<AttackFamily> families, long seed, int batchSize, Device device, Action<string>? log = null)
    {
        log ??= _ => { };
        var n = (int)data.Count;
        manual_seed(seed);
        bool[] clean;
        using (var cleanCorrect = Carso.Evaluation.Evaluate.PerPointCorrect(judge, data, batchSize, device: device))
            clean = cleanCorrect.data<bool>().ToArray();
        var robust = clean.ToArray();
        var results = new List<FamilyAccuracy>();
        if (transfer is not null)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var transferSet = data with { Images = transfer }; // shares tensors: not disposed
            manual_seed(seed + 1);
            using var correct = Carso.Evaluation.Evaluate.PerPointCorrect(judge, transferSet, batchSize, device: device);
            var survived = correct.data<bool>().ToArray().Zip(clean, (a, b) => a && b).ToArray();
            for (var i = 0; i < n; i++) robust[i] &= survived[i];
            results.Add(new FamilyAccuracy(TransferName, "transfer of the classifier's adversarial examples",
                Accuracy.Of(survived.Count(s => s), n), clock.Elapsed.TotalSeconds, new AttackMonitor.Counts(0, 0, 0, 0)));
            log($"  {TransferName}: {results[^1].Robust}");
        }
        for (var f = 0; f < families.Count; f++)
        {
            var family = families[f];
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var familySeed = unchecked(seed * 7919 + f + 2);
            manual_seed(familySeed);
            var monitor = new AttackMonitor();
            var result = RobustEvaluation.Run(judge, data, threat, [family.Attack(monitor)], batchSize, familySeed, monitor: monitor, device: device);
            var survived = result.Points.Select((p, i) => clean[i] && p.CleanCorrect && p.BrokenBy is null).ToArray();
            for (var i = 0; i < n; i++) robust[i] &= survived[i];
            results.Add(new FamilyAccuracy(family.Name, family.Description, Accuracy.Of(survived.Count(s => s), n),
                clock.Elapsed.TotalSeconds, monitor.Snapshot()));
            log($"  {family.Name}: {results[^1].Robust} ({results[^1].Seconds:F0} s)");
        }
        return new Robustness(Accuracy.Of(clean.Count(c => c), n), results, Accuracy.Of(robust.Count(r => r), n));
    }

    /// <summary>Clean accuracy of a (possibly stochastic) model, seeded.</summary>
    public static Accuracy Clean(Func<Tensor, Tensor> model, Dataset data, long seed, int batchSize, Device device)
    {
        manual_seed(seed);
        using var correct = Carso.Evaluation.Evaluate.PerPointCorrect(model, data, batchSize, device: device);
        return Carso.Evaluation.Evaluate.ToAccuracy(correct);
    }

    /// <summary>APGD-CE with EOT (eotIter gradient samples per step), the reduced end-to-end attack of the ablations.</summary>
    public static NamedAttack ApgdCeEot(Threat threat, int iterations, int eotIter, AttackMonitor? monitor = null) =>
        AutoAttack.ApgdCe(threat, new AutoAttackSettings(ApgdIterations: iterations, EotIter: eotIter), monitor, eotIter: eotIter);

    /// <summary>Rows for a results table: per variant, clean, each family and the worst case.</summary>
    public static IReadOnlyList<ResultRow> Rows(IEnumerable<VariantResult> variants) =>
        variants.SelectMany(v => new[] { new ResultRow(v.Name, $"clean (n={v.Clean.N})", v.Clean),
                new ResultRow(v.Name, $"clean, attacked points", v.Robust.Clean) }
            .Concat(v.Robust.Families.Select(f => new ResultRow(v.Name, f.Name, f.Robust)))
            .Append(new ResultRow(v.Name, "worst case", v.Robust.WorstCase)))
        .ToArray();

    /// <summary>Typed metrics back from a run record (the record is the single source of every figure).</summary>
    public static T Read<T>(RunRecord record) =>
        (record.Metrics ?? throw new InvalidDataException($"run record of {record.Script} has no metrics"))
        .Deserialize<T>(RunRecord.Json) ?? throw new InvalidDataException($"run record of {record.Script}: metrics are not {typeof(T).Name}");

    /// <summary>A bar figure of every variant: clean, each family, worst case, with 95% intervals.</summary>
    public static Figure VariantFigure(IReadOnlyList<VariantResult> variants, string title) =>
        ResultTable.Figure(Rows(variants), title, width: 1100, height: 600);

    /// <summary>Lines of clean and worst-case robust accuracy over a numeric setting, each with its 95% band.</summary>
    public static Figure Curves(IReadOnlyList<double> x, IReadOnlyList<(string Name, IReadOnlyList<Accuracy> Values, string Color, string Fill)> curves,
        string title, string xTitle, bool logX = false)
    {
        var traces = new List<JsonObject>();
        foreach (var (name, values, color, fill) in curves)
        {
            traces.Add(Charts.Band(x, values.Select(a => 100 * a.Lower).ToArray(), values.Select(a => 100 * a.Upper).ToArray(), name + " 95%", fill));
            traces.Add(Charts.Line(x, values.Select(a => 100 * a.Value), name, color));
        }
        var layout = Charts.Layout(title, xTitle, "accuracy (%), 95% Wilson band");
        layout["yaxis"]!["range"] = new JsonArray(0, 100);
        if (logX) layout["xaxis"]!["type"] = "log";
        return Charts.Figure(traces, layout);
    }
}
