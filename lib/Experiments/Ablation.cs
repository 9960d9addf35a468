using Carso.Attacks;
using Carso.Data;
using Carso.Defence;
using Carso.Evaluation;
using Carso.IO;
using Carso.Models;
using Carso.Reporting;
using Carso.Runtime;
using static TorchSharp.torch;

namespace Carso.Experiments;

/// <summary>
/// The budget every ablation and sweep shares. Each variant is judged clean on the first CleanPoints test points and
/// attacked on the first RobustPoints with the CARSO protocol (Protocol), after transfer of the classifier's committed
/// AutoAttack examples when Transfer. The defaults are the published protocol on 1000 points: a script states only what
/// it reduces, and <see cref="Budget.Describe"/> turns that into the "reduced" text of its header, record and README row.
/// </summary>
public sealed record AblationBudget(
    int CleanPoints = 1000,
    int RobustPoints = 1000,
    double Eps = 0.1,
    CarsoProtocolSettings? Protocol = null,
    bool Transfer = true,
    int BatchSize = 100,
    long Seed = 0)
{
    public CarsoProtocolSettings Attacks => Protocol ?? CarsoProtocolSettings.Published;
    public Threat Threat => Threat.Linf(Eps);

    public static AblationBudget Published => new();

    /// <summary>Seconds-long budgets for --smoke (blocks of 4 points, so that a smoke run can be split into 2 shards).</summary>
    public AblationBudget Smoke() => this with { CleanPoints = 16, RobustPoints = 8, BatchSize = 4, Protocol = Attacks with
    {
        // The same families, each with a token budget.
        ApgdIterations = 2, EotIter = 1, PgdSteps = Math.Min(Attacks.PgdSteps, 2), PgdStepSize = 0.03,
        SquareQueries = Math.Min(Attacks.SquareQueries, 5), LargeEpsIterations = 2,
    } };

    /// <summary>Every departure from the published budget, generated.</summary>
    public string Describe() => Budget.Describe(this with { Protocol = Attacks }, Published with { Protocol = CarsoProtocolSettings.Published });

    public AblationBudget Validated() =>
        CleanPoints < 1 ? throw new SettingsException("CleanPoints", $"must be >= 1, got {CleanPoints}")
        : RobustPoints < 1 || RobustPoints > CleanPoints ? throw new SettingsException("RobustPoints", $"must be in [1, CleanPoints = {CleanPoints}], got {RobustPoints}")
        : BatchSize < 1 ? throw new SettingsException("BatchSize", $"must be >= 1, got {BatchSize}")
        : !(Eps > 0) || !double.IsFinite(Eps) ? throw new SettingsException("Eps", $"must be finite and > 0, got {Eps}")
        : this;
}

/// <summary>What a variant's Make sees: the clean and attacked points, the budget, the classifier's transfer set (or
/// null), the results of the variants before it (by name, prefixed "series/" outside the CARSO series), the device and
/// the log.</summary>
public sealed record VariantContext(Dataset Clean, Dataset Attacked, AblationBudget Budget, TransferSet? Transfer,
    IReadOnlyDictionary<string, ProtocolResult> Prior, Device Device, Action<string> Log);

/// <summary>A variant ready to evaluate: the model judged, its protocol, and numbers of its own (e.g. images/s).</summary>
public sealed record VariantModel(StochasticModel Model, Protocol Protocol, IReadOnlyDictionary<string, double>? Extra = null);

/// <summary>One variant of an ablation: its name, the series it belongs to (one line per series when X is numeric),
/// its value of the varied setting, a description, and how to build it.</summary>
public sealed record Variant(string Name, string Description, Func<VariantContext, VariantModel> Make, double? X = null, string Series = "CARSO");

/// <summary>A family's result in an ablation record.</summary>
public sealed record FamilySummary(string Name, string Description, Accuracy Robust, double Seconds, AttackMonitor.Counts Monitor, long NonFiniteOutputs);

/// <summary>One variant's outcome: clean accuracy (CleanPoints), each family and the per-point worst case (RobustPoints).</summary>
public sealed record VariantResult(string Name, string Series, double? X, string Description, Accuracy Clean, Accuracy AttackedClean,
    IReadOnlyList<FamilySummary> Families, Accuracy WorstCase, IReadOnlyList<string> Warnings, IReadOnlyDictionary<string, double> Extra);

/// <summary>Whether a series' worst case never rises with X (e.g. eps).</summary>
public sealed record MonotonicityCheck(string Series, bool NonIncreasing, IReadOnlyList<string> Violations);

/// <summary>The record of any ablation or sweep: what was varied, the budget (described), every variant.</summary>
public sealed record AblationMetrics(string Title, string Varied, int CleanPoints, int RobustPoints, string Threat, string Budget,
    IReadOnlyList<VariantResult> Variants, IReadOnlyList<MonotonicityCheck> Checks, IReadOnlyList<string> Notes);

/// <summary>
/// Runs an ablation: every variant through the one evaluation driver (<see cref="ProtocolEvaluation"/>) on the same
/// points, then the record, table and figures (<see cref="VariantReport"/>). A script says what it varies and calls this.
/// </summary>
public static class Ablation
{
    /// <summary>CARSO with the budget's protocol and the transfer set: the usual VariantModel.</summary>
    public static VariantModel Carso(VariantContext context, CarsoModel carso, IReadOnlyDictionary<string, double>? extra = null) =>
        new(carso.AsModel(), CarsoProtocol.Build(carso, context.Budget.Threat, context.Budget.Attacks, context.Transfer), extra);

    /// <summary>Evaluates every variant (or, with --shard, the shard's points of each; with --merge, merges the shards'),
    /// then writes the record, table and figures; null after a shard (its record is written, the merge does the rest).
    /// ownPurifiers: the variants train their own purifiers, so the committed one is not an input of the run (replacing it
    /// must not invalidate the attack state).</summary>
    public static RunRecord? Run(ScriptRun run, object settings, long seed, string title, string varied, AblationBudget budget,
        IReadOnlyList<Variant> variants, bool monotoneInX = false, IReadOnlyList<string>? notes = null, bool ownPurifiers = false)
    {
        budget = budget.Validated() with { Seed = seed };
        var description = budget.Describe();
        Console.WriteLine($"{title}: {description}");
        // Resumable from the attack state (one folder per variant; guarded by the run's identity: settings, inputs, code).
        var options = new EvaluationOptions(seed, budget.BatchSize, run.Device, run.Output("attacks"),
            Log: line => run.Log("  " + line), Progress: run.Progress);
        string[] inputs = [Committed.ClassifierPath, .. ownPurifiers ? Array.Empty<string>() : [Committed.PurifierPath], .. budget.Transfer ? [Committed.TransferSetPath] : Array.Empty<string>()];
        var parts = Sharding.Parts(run, settings, seed, inputs, options, o => Evaluate(run, budget, variants, o));
        if (parts is null) return null;

        var byName = parts.ToDictionary(p => p.Name);
        var results = variants.Select(variant =>
        {
            var (clean, attacked) = (byName[Key(variant) + "/clean"], byName[Key(variant) + "/attacked"]);
            var result = attacked.Result;
            var monitor = AttackMonitor.Counts.Sum(result.Families.Select(f => f.Monitor));
            var warnings = new[] { Diagnostics.NonFiniteDuringAttacks(monitor), Diagnostics.ZeroGradients(monitor),
                    Diagnostics.StalledAttacks(monitor), Diagnostics.NonFiniteOutputs(result) }
                .OfType<string>().ToArray();
            Console.WriteLine($"{variant.Name}: clean {clean.Result.Clean}, worst case {result.WorstCase}" +
                              string.Concat(warnings.Select(w => $"\n  WARNING: {w}")));
            return new VariantResult(variant.Name, variant.Series, variant.X, variant.Description, clean.Result.Clean, result.Clean,
                result.Families.Select(f => new FamilySummary(f.Name, f.Description, f.Robust, f.Seconds, f.Monitor, f.NonFiniteOutputs)).ToArray(),
                result.WorstCase, warnings, attacked.Extra ?? new Dictionary<string, double>());
        }).ToArray();
        foreach (var p in parts) p.Result.WorstCaseImages?.Dispose();
        var threats = variants.Select(v => byName[Key(v) + "/attacked"].Result.Threat.ToString()).Distinct();

        var checks = monotoneInX ? VariantReport.Monotonicity(results) : [];
        var metrics = new AblationMetrics(title, varied, budget.CleanPoints, budget.RobustPoints, string.Join(", ", threats), description,
            results, checks, notes ?? []);
        var record = run.Finish(settings, seed, metrics);
        var rows = VariantReport.Rows(record);
        File.WriteAllText(run.Output("table.md"), ResultTable.Markdown(rows));
        Console.Write(ResultTable.Text(rows));
        foreach (var c in checks)
            Console.WriteLine($"monotonicity ({c.Series}): {(c.NonIncreasing ? "non-increasing" : "VIOLATED: " + string.Join("; ", c.Violations))}");
        foreach (var (name, figure) in VariantReport.Figures(record)) run.SaveFigure(figure, name);
        return record;
    }

    /// <summary>A variant's name among the results (prefixed "series/" outside the CARSO series), as Prior spells it.</summary>
    static string Key(Variant v) => v.Series == "CARSO" ? v.Name : $"{v.Series}/{v.Name}";

    /// <summary>Every variant through the driver with these options (a shard's, or all points): its clean judgement on the
    /// clean points ("name/clean") and its protocol on the attacked points ("name/attacked", with the variant's own numbers).</summary>
    static IReadOnlyList<ShardPart> Evaluate(ScriptRun run, AblationBudget budget, IReadOnlyList<Variant> variants, EvaluationOptions options)
    {
        using var clean = Committed.TestPoints(budget.CleanPoints);
        using var attacked = clean.Take(budget.RobustPoints);
        using var transfer = budget.Transfer ? Committed.TransferSet() : null;
        var prior = new Dictionary<string, ProtocolResult>();
        var parts = new List<ShardPart>();
        foreach (var variant in variants)
        {
            run.Log($"---- {variant.Name}: {variant.Description} ----");
            var made = variant.Make(new VariantContext(clean, attacked, budget, transfer, prior, run.Device, run.Log));
            // Clean accuracy: the driver's clean judgement (keys "clean", per block) on the clean points, no attack.
            var cleanResult = ProtocolEvaluation.Run(made.Model, clean, new Protocol("clean", made.Protocol.Threat, []), options with { StateDir = null });
            cleanResult.WorstCaseImages?.Dispose();
            var result = ProtocolEvaluation.Run(made.Model, attacked, made.Protocol,
                options with { StateDir = options.StateDir is null ? null : Path.Combine(options.StateDir, FolderName(Key(variant))) });
            prior[Key(variant)] = result;
            parts.Add(new ShardPart(Key(variant) + "/clean", cleanResult with { WorstCaseImages = null }));
            parts.Add(new ShardPart(Key(variant) + "/attacked", result with { WorstCaseImages = null }, made.Extra)); // its images: Prior's
        }
        foreach (var r in prior.Values) r.WorstCaseImages?.Dispose();
        return parts;
    }

    static string FolderName(string name) => string.Concat(name.Select(c => char.IsLetterOrDigit(c) || c is '.' or '-' or '=' ? c : '_'));
}
