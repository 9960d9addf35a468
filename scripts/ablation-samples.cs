#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Ablation: CARSO's ensemble size N (reconstructions sampled, classified and aggregated per input) in {1, 2, 4, 8, 16},
// with the committed Fashion-MNIST classifier and purifier (peel aggregation): clean accuracy on 1000 test points,
// robust accuracy on the first 200 (the same points for every N) and inference speed (images/s, no_grad, median).
// Robust = per-point worst case of: transfer of the classifier's committed AutoAttack examples (eps 0.1), and
// APGD-CE with EOT end to end through the defence with that N.
// REDUCED budgets relative to the full protocol (scripts/eval-carso.cs: AutoAttack rand + PGD+EOT, APGD 100
// iterations, EOT 20, PGD 200 steps, surrogate and representation-path attacks, 1000 points): here APGD-CE only,
// 10 iterations (10x fewer), EOT 2 (10x fewer), no PGD+EOT / DLR / surrogate / representation path, 200 points (5x
// fewer). Robust numbers are therefore upper bounds. Figures come from the run record only
// (lib/Experiments/AblationSamplesReport.cs).
//   dotnet run scripts/ablation-samples.cs            -> results/ablation-samples/
//   dotnet run scripts/ablation-samples.cs --smoke    -> a temporary folder, seconds
using Carso.IO;
using Carso.Attacks;
using Carso.Data;
using Carso.Defence;
using Carso.Evaluation;
using Carso.Experiments;
using Carso.Models;
using Carso.Runtime;
using Carso.Training;
using TorchSharp;
using static TorchSharp.torch;

// ---- settings -------------------------------------------------------------------------------
var run = ScriptRun.Start("ablation-samples", args);
var settings = new Settings();
if (run.Smoke)
    settings = settings with { Samples = [1, 2, 4], CleanPoints = 24, RobustPoints = 12, TimingPoints = 24, TimingRepeats = 2,
        ApgdIterations = 2, EotIter = 1, BatchSize = 12 };
settings.Validate();
var seed = run.SeedOverride ?? settings.Seed;
var root = Paths.RepoRoot() ?? ".";
var threat = Threat.Linf(settings.Eps);
var attackDescription = $"transfer of the classifier's AutoAttack examples + APGD-CE end to end ({settings.ApgdIterations} iterations, " +
                        $"EOT {settings.EotIter}), {threat}";
Console.WriteLine($"REDUCED attack: {attackDescription}; N in {{{string.Join(", ", settings.Samples)}}}; clean on {settings.CleanPoints} points, " +
                  $"robust on {settings.RobustPoints}");
var loadStart = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "unknown";

// ---- data and models --------------------------------------------------------------------------
using var test = FashionMnist.Load(Split.Test).Take(settings.TransferSavedPoints);
using var adversarialAll = RobustEvaluation.LoadAdversarial(Path.Combine(root, settings.Transfer), test);
using var clean = test.Take(settings.CleanPoints);
using var attacked = test.Take(settings.RobustPoints);
using var transfer = adversarialAll.narrow(0, 0, attacked.Count).clone();
var classifier = StateDicts.ImportFrozen(new SmallCnn(settings.Model), Path.Combine(root, settings.Classifier), run.Device);
var (purifier, _) = PurifierCheckpoint.Load(Path.Combine(root, settings.Purifier), classifier, settings.Layers);
var baseDefence = new CarsoModel(classifier, purifier, settings.Layers, new CarsoSettings(Aggregation: settings.Aggregation));

// ---- every N ------------------------------------------------------------------------------------
var points = new List<SamplesPoint>();
foreach (var samples in settings.Samples)
{
    Console.WriteLine($"---- N = {samples} ----");
    var carso = baseDefence.With(new CarsoSettings(samples, settings.Aggregation));
    var judge = carso.AsModel();
    var cleanAccuracy = Ablation.Clean(judge, clean, seed, settings.BatchSize, run.Device);
    Console.WriteLine($"clean {cleanAccuracy}");
    var endToEnd = carso.With(carso.Settings with { Differentiable = true }).AsModel();
    var robust = Ablation.Evaluate(judge, attacked, threat, transfer,
        [new AttackFamily("apgd-ce-eot", $"APGD-CE ({settings.ApgdIterations} iterations, EOT {settings.EotIter}) end to end, N = {samples}",
            m => CarsoEvaluation.Through(endToEnd, Ablation.ApgdCeEot(threat, settings.ApgdIterations, settings.EotIter, m)))],
        seed, settings.BatchSize, run.Device, Console.WriteLine);
    var seconds = Timing(judge, clean.Images, settings.TimingPoints, settings.TimingRepeats, settings.BatchSize, run.Device);
    var median = seconds.Order().ElementAt(seconds.Length / 2);
    var point = new SamplesPoint(samples, cleanAccuracy, robust, Math.Min(settings.TimingPoints, clean.Count) / median, seconds);
    points.Add(point);
    Console.WriteLine($"N = {samples}: clean {point.Clean}, robust {point.Robust.WorstCase}, {point.ImagesPerSecond:F0} images/s");
}

// ---- record, table, figures -----------------------------------------------------------------------
var loadEnd = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "unknown";
var metrics = new AblationSamplesMetrics((int)clean.Count, (int)attacked.Count, (int)Math.Min(settings.TimingPoints, clean.Count),
    settings.TimingRepeats, attackDescription,
    "full protocol (scripts/eval-carso.cs): AutoAttack rand + PGD+EOT (APGD 100 iterations, EOT 20, PGD 200 steps), surrogate and " +
    "representation path, 1000 points; here APGD-CE only, 10x fewer iterations, EOT 10x fewer, 200 points",
    loadStart, loadEnd, points);
var record = run.Finish(settings, seed, metrics);
var rows = AblationSamplesReport.Rows(record);
File.WriteAllText(run.Output("table.md"), ResultTable.Markdown(rows));
Console.Write(ResultTable.Text(rows));
foreach (var (name, figure) in AblationSamplesReport.Figures(record)) run.SaveFigure(figure, name);

// Seconds of each repeat of one no_grad pass over the first `count` images (after one warm-up pass).
static double[] Timing(Func<Tensor, Tensor> model, Tensor images, int count, int repeats, int batchSize, Device device)
{
    var n = Math.Min(count, images.shape[0]);
    double Pass()
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var noGrad = no_grad();
        for (long start = 0; start < n; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var x = images.narrow(0, start, Math.Min(batchSize, n - start)).to(device);
            model(x).cpu(); // .cpu(): wait for the device
        }
        return clock.Elapsed.TotalSeconds;
    }
    Pass();
    return Enumerable.Range(0, repeats).Select(_ => Pass()).ToArray();
}

/// <summary>Settings: edit and re-run.</summary>
record Settings
{
    public string Classifier { get; init; } = "results/train-classifier/smallcnn-fmnist-pgdat.safetensors";
    public SmallCnn.Settings Model { get; init; } = new(Channels1: 32, Channels2: 64, Hidden: 256);
    public string Purifier { get; init; } = "results/train-carso/purifier-smallcnn-fmnist.safetensors";
    public string[] Layers { get; init; } = ["conv1", "conv2", "fc1"];
    /// <summary>The classifier's AutoAttack state (eps 0.1) and the number of points it was saved with.</summary>
    public string Transfer { get; init; } = "results/eval-autoattack/state.json";
    public int TransferSavedPoints { get; init; } = 1000;
    public int[] Samples { get; init; } = [1, 2, 4, 8, 16];
    public AggregationKind Aggregation { get; init; } = AggregationKind.Peel;
    public double Eps { get; init; } = 0.1;
    public int CleanPoints { get; init; } = 1000;
    /// <summary>The first RobustPoints test images are attacked (the same for every N). REDUCED (full: 1000: 5x fewer).</summary>
    public int RobustPoints { get; init; } = 200;
    /// <summary>REDUCED (full: 100 iterations, EOT 20).</summary>
    public int ApgdIterations { get; init; } = 10;
    public int EotIter { get; init; } = 2;
    public int TimingPoints { get; init; } = 200;
    public int TimingRepeats { get; init; } = 3;
    public int BatchSize { get; init; } = 100;
    public long Seed { get; init; } = 0;

    public void Validate()
    {
        if (Samples.Length == 0 || Samples.Any(s => s < 1))
            throw new ArgumentException($"Settings.Samples (N) must be non-empty and every N >= 1, got [{string.Join(", ", Samples)}]");
        if (RobustPoints < 1 || RobustPoints > TransferSavedPoints)
            throw new ArgumentException($"Settings.RobustPoints must be in [1, {TransferSavedPoints}] (the transfer examples saved), got {RobustPoints}");
        if (CleanPoints < 1 || CleanPoints > TransferSavedPoints)
            throw new ArgumentException($"Settings.CleanPoints must be in [1, {TransferSavedPoints}], got {CleanPoints}");
        if (ApgdIterations < 1 || EotIter < 1)
            throw new ArgumentException($"Settings.ApgdIterations and Settings.EotIter must be >= 1, got {ApgdIterations} and {EotIter}");
        if (TimingRepeats < 1 || TimingPoints < 1)
            throw new ArgumentException($"Settings.TimingRepeats and Settings.TimingPoints must be >= 1, got {TimingRepeats} and {TimingPoints}");
    }
}
