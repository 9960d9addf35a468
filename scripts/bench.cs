#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Throughput of the hot operations of Carso on the committed Fashion-MNIST models, side by side with PyTorch
// (scripts/bench-pytorch.py under Debian's python3-torch: same architectures, weights, images and thread count,
// interleaved repeat by repeat), and the resident memory of a 2000-iteration APGD-EOT loop on CARSO. Writes the run
// record and throughput, ratio and memory figures to results/bench/. A shorter run on a busy machine:
// {Settings.BenchOptions} (recorded in the settings).
//   dotnet run scripts/bench.cs            -> results/bench/ (run.json, throughput/ratio/memory figures)
//   dotnet run scripts/bench.cs --smoke    -> a temporary folder, seconds
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;

// ---- settings -------------------------------------------------------------------------------
var settings = new Settings();
var run = ScriptRun.Start(settings, args, allowExtraArgs: true);
for (var i = 0; i < run.ExtraArgs.Count; i += 2)
{
    var option = run.ExtraArgs[i];
    if (option is not ("--batch-sizes" or "--apgd-points" or "--memory-iterations" or "--mixed-batch-pair" or "--autoattack" or "--autoattack-stages"
        or "--autoattack-reference"))
        throw new UsageException($"unknown option '{option}'; the options are {CommandLine.OptionsLine} | {Settings.BenchOptions}");
    if (i + 1 >= run.ExtraArgs.Count) throw new UsageException($"{option} needs a value");
    var value = run.ExtraArgs[i + 1];
    settings = option switch
    {
        "--batch-sizes" => settings with
        {
            BatchSizes = value.Split(',').Select(b => PositiveInt(option, b)).ToArray(),
            ApgdBatchSizes = [value.Split(',').Select(b => PositiveInt(option, b)).Max()],
            MixedBatchSizes = [value.Split(',').Select(b => PositiveInt(option, b)).Min()],
        },
        "--apgd-points" => settings with { ApgdPoints = PositiveInt(option, value) },
        "--mixed-batch-pair" => settings with { MixedBatchPairRounds = PositiveInt(option, value) },
        "--autoattack" => settings with { AutoAttackPoints = PositiveInt(option, value) },
        "--autoattack-stages" => settings with { AutoAttackStages = value.Split(',') },
        "--autoattack-reference" => settings with { AutoAttackReference = ExistingReference(option, value) },
        _ => settings with { MemoryIterations = PositiveInt(option, value) },
    };
}
static string ExistingReference(string option, string folder) =>
    File.Exists(Path.Combine(folder, "autoattack", "autoattack.py")) ? Path.GetFullPath(folder)
    : throw new UsageException($"{option} {folder}: no autoattack/autoattack.py there; give a checkout of https://github.com/fra31/auto-attack");
static int PositiveInt(string option, string text) =>
    int.TryParse(text, out var n) && n > 0 ? n : throw new UsageException($"{option} needs positive integers, got '{text}'");
if (run.Smoke)
    settings = settings with
    {
        BatchSizes = [8], ApgdBatchSizes = [8], MixedBatchSizes = [8], Repeats = 1, SlowRepeats = 1, ApgdRepeats = 1, ApgdPoints = 8, ApgdIterations = 2, InferenceSamples = [1, 2],
        GradSamples = 2, MixedBatchPgdSteps = 1, MemoryIterations = 6, MemoryFirstCheck = 2, MemorySampleEvery = 2, MemoryProgressEvery = 2, MemoryPoints = 2,
        MemoryEotIter = 1, CheckPoints = 2,
    };
var seed = run.SeedOverride ?? settings.Seed;
manual_seed(seed);
var root = Paths.RepoRoot() ?? ".";
var threads = get_num_threads();
var loadAtStart = Bench.LoadAverage();
Console.WriteLine($"load average (1, 5, 15 min): {loadAtStart} on {Environment.ProcessorCount} cores (other jobs share them)");
Console.WriteLine($"threads: {threads} (intra-op), PyTorch gets the same");

// ---- models and images -------------------------------------------------------------------------
var classifier = Committed.Classifier(run.Device, settings.Classifier);
var purifierPath = Committed.PathOf(settings.Purifier);
var (purifier, spec) = Committed.Purifier(classifier, run.Device, settings.Purifier);
var (trainee, _) = PurifierCheckpoint.Load(purifierPath, classifier); // trained by the step benchmarks
var layers = spec.LayerNames;
var carso = new CarsoModel(classifier, purifier, layers);
var points = settings.AutoAttackPoints > 0 ? settings.AutoAttackPoints : Math.Max(settings.BatchSizes.Max(), settings.ApgdPoints);
var dataFolder = FashionMnist.Locate();
Dataset test;
using (var fullTest = FashionMnist.Load(Split.Test, dataFolder)) test = fullTest.Take(points);
var images = test.Images.to(run.Device);
var labels = test.Labels.to(run.Device);
Console.WriteLine($"data: the first {points} Fashion-MNIST test images ({dataFolder})");

if (settings.AutoAttackPoints > 0)
{
    var ours = AutoAttackStages.Run(classifier, images, labels, settings, seed);
    if (settings.AutoAttackReference is { } reference)
        ReferenceAutoAttack.Compare(ours, reference, settings, root, classifier, dataFolder, points, threads, seed);
    return;
}
if (settings.MixedBatchPairRounds > 0)
{
    MixedBatchPair.Run(classifier, layers, trainee, images, labels, settings);
    return;
}

// ---- memory: the hot loop of APGD-EOT on end-to-end CARSO, first (so the peak is the loop's own) ----
using var latentGenerator = Seeds.Generator(seed, "bench/latents", run.Device); // CARSO's latents: explicit randomness
var memory = Bench.MemoryLoop(carso.With(new CarsoSettings(Samples: settings.GradSamples, Differentiable: true)).AsModel().Bind(latentGenerator),
    images.narrow(0, 0, settings.MemoryPoints), labels.narrow(0, 0, settings.MemoryPoints), settings);
Console.WriteLine($"memory: APGD-CE hot loop on CARSO (N {settings.GradSamples}, EOT {settings.MemoryEotIter}, {settings.MemoryPoints} points), " +
                  $"RSS {memory.RssAtFirstCheck:F0} MiB at iteration {memory.FirstCheck}, {memory.RssAtLast:F0} MiB at {memory.Iterations}: " +
                  $"growth {memory.GrowthPercent:F2}% ({(memory.GrowthPercent < 5 ? "< 5%, ok" : ">= 5%: LEAK")}), peak {memory.PeakRssMiB:F0} MiB");

// ---- the PyTorch reference process ---------------------------------------------------------------
var exportFolder = Directory.CreateTempSubdirectory("carso-bench-").FullName;
var (torchRef, skipped) = PyTorchReference.Start(settings, root, exportFolder, classifier, purifier, purifierPath, dataFolder, points, threads, seed);
if (skipped is not null) Console.WriteLine($"PyTorch comparison skipped: {skipped}");
var check = torchRef is null ? null : Bench.Check(classifier, carso, images, torchRef.Ready, settings.CheckPoints);
if (check is not null)
    Console.WriteLine($"numerics, first {settings.CheckPoints} images: max |logits ours - PyTorch| classifier {check.ClassifierMaxAbsDiff:E2}, " +
                      $"CARSO deterministic sample {check.CarsoMaxAbsDiff:E2}");

// ---- the operations ------------------------------------------------------------------------------
var threat = Threat.Linf(settings.Eps);
var training = new PurifierTrainingSettings { Threat = threat, PgdSteps = settings.MixedBatchPgdSteps };
using var optimizer = new Lookahead(optim.Adam(trainee.parameters(), training.LearningRate), trainee.parameters(), training.Lookahead);
var mixedBatches = new Dictionary<int, Tensor>();
Tensor MixedOnce(int b, Tensor x, Tensor y) => mixedBatches.TryGetValue(b, out var m) ? m
    : mixedBatches[b] = PurifierTraining.MixedBatch(classifier.call, x, y, training).DetachFromDisposeScope();

var operations = new List<Bench.Operation>();
foreach (var b in settings.BatchSizes)
{
    var (x, y) = (images.narrow(0, 0, b), labels.narrow(0, 0, b));
    operations.Add(new("classifier-grad", b, b, "SmallCnn forward + backward to the input (summed CE)",
        () => Pgd.InputGradient(classifier.call, x, y)));
    operations.Add(new("pgd-step", b, b, $"one PGD step, {threat}, step {settings.PgdStepSize}, no random start",
        () => Pgd.Attack(classifier.call, x, y, new PgdSettings(threat, Steps: 1, StepSize: settings.PgdStepSize, RandomStart: false))));
    if (settings.ApgdBatchSizes.Contains(b))
        operations.Add(new("apgd-ce", b, settings.ApgdPoints,
            $"APGD-CE {settings.ApgdIterations} iterations, 1 restart, on {settings.ApgdPoints} points in batches of {b} (correctly classified points attacked)",
            () => Bench.Chunks(settings.ApgdPoints, b).Select(c => Apgd.Attack(classifier.call, images.narrow(0, c.Start, c.Count),
                labels.narrow(0, c.Start, c.Count), new ApgdSettings(threat, NIter: settings.ApgdIterations))).ToArray(),
            Warmup: 0, Repeats: settings.ApgdRepeats, Extra: new() { ["points"] = settings.ApgdPoints, ["iterations"] = settings.ApgdIterations }));
    foreach (var n in settings.InferenceSamples)
    {
        var defended = carso.With(new CarsoSettings(Samples: n));
        operations.Add(new($"carso-infer-n{n}", b, b, $"CARSO inference, no_grad, N = {n}, {defended.Settings.Aggregation}", () => defended.Forward(x, generator: latentGenerator)));
    }
    var endToEnd = carso.With(new CarsoSettings(Samples: settings.GradSamples, Differentiable: true)).AsModel().Bind(latentGenerator);
    operations.Add(new($"carso-grad-n{settings.GradSamples}", b, b, $"CARSO end to end, forward + backward to the input, N = {settings.GradSamples}",
        () => Pgd.InputGradient(endToEnd, x, y)));
    operations.Add(new("purifier-step", b, b, "PurifierTraining.Step alone (Adam in Lookahead) on a precomputed mixed batch",
        () => { var mixed = MixedOnce(b, x, y); return PurifierTraining.Step(classifier, layers, trainee, optimizer, x, mixed, 1.0).Bce; }));
    if (settings.MixedBatchSizes.Contains(b))
        operations.Add(new("purifier-step-mixed", b, b,
            $"PurifierTraining.MixedBatch (FGSM eps/2, FGSM eps, PGD-{settings.MixedBatchPgdSteps} eps/2 and eps on half the batch) + Step",
            () => PurifierTraining.Step(classifier, layers, trainee, optimizer, x,
                PurifierTraining.MixedBatch(classifier.call, x, y, training), 1.0).Bce,
            Extra: new() { ["pgdSteps"] = settings.MixedBatchPgdSteps }));
}

var results = new List<Bench.OperationResult>();
foreach (var op in operations)
{
    var result = Bench.Measure(op, settings, torchRef);
    results.Add(result);
    Console.WriteLine(Bench.Describe(result));
}
torchRef?.Dispose();
foreach (var m in mixedBatches.Values) m.Dispose();
test.Dispose();
Directory.Delete(exportFolder, recursive: true);

// ---- summary, record and figures -----------------------------------------------------------------
Console.WriteLine();
Console.WriteLine($"{"operation",-22} {"batch",5} {"ours img/s (min-max)",-28} {"PyTorch img/s (min-max)",-28} ours/PyTorch");
foreach (var r in results) Console.WriteLine(Bench.Row(r));
var record = run.Finish(settings, seed, new
{
    threads,
    loadAverageAtStart = loadAtStart,
    loadAverageAtEnd = Bench.LoadAverage(),
    throughputUnit = "images per second: the images one call processes (APGD: the attacked set, all iterations) / its wall time",
    operations = results,
    pytorch = new
    {
        available = torchRef is not null,
        skippedReason = skipped,
        python = settings.Python,
        torchVersion = torchRef?.Ready["torch"]?.GetValue<string>(),
        blas = torchRef?.Ready["blas"]?.GetValue<string>(),
        blasBuildInfo = torchRef?.Ready["blasBuildInfo"]?.GetValue<string>(),
        openBlas = torchRef?.OpenBlas,
        threads = torchRef?.Ready["threads"]?.GetValue<int>(),
        numericsCheck = check,
        note = "PyTorch runs with glibc's default malloc settings (Carso's NativeMemory tuning is not applied to it): " +
               "that is what a PyTorch user runs. Operations are interleaved repeat by repeat, ours first.",
        apgd = "bench-pytorch.py ports lib/Attacks/Apgd.cs (CE, 1 restart, EOT 1) line by line; both attack only correctly classified points",
    },
    memory,
});
foreach (var (name, figure) in BenchReport.Figures(record)) run.SaveFigure(figure, name);
File.WriteAllText(run.Output("table.md"), BenchReport.MarkdownTable(record));
Console.Write("\n" + BenchReport.MarkdownTable(record));

/// <summary>
/// The purifier's training step with its attacks, before and after batching the attacks: variants timed in one process,
/// round by round, the order rotating each round (the machine is shared: only such paired figures compare). Per round and
/// variant: wall time and this process's CPU time; ratios are medians of per-round ratios to "separate".
/// </summary>
static class MixedBatchPair
{
    public static void Run(Carso.Models.SmallCnn classifier, IReadOnlyList<string> layers, Purifier trainee, Tensor images, Tensor labels, Settings settings)
    {
        var threat = Threat.Linf(settings.Eps);
        var training = new PurifierTrainingSettings { Threat = threat, PgdSteps = settings.MixedBatchPgdSteps };
        classifier.eval();
        using var optimizer = new Lookahead(optim.Adam(trainee.parameters(), training.LearningRate), trainee.parameters(), training.Lookahead);
        var process = Process.GetCurrentProcess();
        foreach (var b in settings.BatchSizes)
        {
            var (x, y) = (images.narrow(0, 0, b), labels.narrow(0, 0, b));
            var adversarial = (int)Math.Round(b * training.AdversarialFraction);
            using var allEps = full([adversarial], settings.Eps);
            var variants = new (string Name, Func<Generator, Tensor> Mixed)[]
            {
                ("separate (4 calls, a4f09db)", g => PurifierTraining.MixedBatchSeparate(classifier.call, x, y, training, g)),
                ("batched (2 calls)", g => PurifierTraining.MixedBatch(classifier.call, x, y, training, g)),
                ("one call, all rows PGD (timing only)", g => cat([Pgd.Attack(classifier.call, x.narrow(0, 0, adversarial), y.narrow(0, 0, adversarial),
                    new PgdSettings(threat, training.PgdSteps, training.PgdStepSize), g, eps: allEps), x.narrow(0, adversarial, b - adversarial)])),
            };
            var wall = variants.Select(_ => new List<double>()).ToArray();
            var cpu = variants.Select(_ => new List<double>()).ToArray();
            for (var round = -1; round < settings.MixedBatchPairRounds; round++) // round -1: warm-up, untimed
                for (var j = 0; j < variants.Length; j++)
                {
                    var v = (j + Math.Max(0, round)) % variants.Length;
                    using var scope = NewDisposeScope();
                    using var g = new Generator((ulong)(round + 1));
                    process.Refresh();
                    var cpu0 = process.TotalProcessorTime;
                    var clock = Stopwatch.StartNew();
                    PurifierTraining.Step(classifier, layers, trainee, optimizer, x, variants[v].Mixed(g), 1.0);
                    var seconds = clock.Elapsed.TotalSeconds;
                    process.Refresh();
                    if (round < 0) continue;
                    wall[v].Add(seconds);
                    cpu[v].Add((process.TotalProcessorTime - cpu0).TotalSeconds);
                }
            static double Median(IEnumerable<double> values) { var a = values.Order().ToArray(); return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2; }
            Console.WriteLine($"batch {b}, PGD-{training.PgdSteps}, adversarial fraction {training.AdversarialFraction}, {settings.MixedBatchPairRounds} rounds, threads {get_num_threads()}:");
            Console.WriteLine($"  {"variant",-38} {"img/s wall (min-max)",-22} {"img/s CPU",-10} {"ratio wall (min-max)",-22} ratio CPU");
            for (var v = 0; v < variants.Length; v++)
            {
                var rw = wall[v].Zip(wall[0], (s, s0) => s0 / s).ToArray();
                var rc = cpu[v].Zip(cpu[0], (s, s0) => s0 / s).ToArray();
                Console.WriteLine($"  {variants[v].Name,-38} {$"{b / Median(wall[v]):F0} ({b / wall[v].Max():F0}-{b / wall[v].Min():F0})",-22} " +
                                  $"{b / Median(cpu[v]),-10:F0} {$"{Median(rw):F2} ({rw.Min():F2}-{rw.Max():F2})",-22} {Median(rc):F2}");
            }
        }
    }
}

/// <summary>Settings: edit and re-run.</summary>
record Settings
{
    public const string BenchOptions = "--batch-sizes B[,B] | --apgd-points N | --memory-iterations N | --mixed-batch-pair ROUNDS | --autoattack N [--autoattack-stages a,b] [--autoattack-reference DIR]";
    /// <summary>--autoattack N: only AutoAttack standard (Linf, Eps) on the committed classifier and the first N test points,
    /// stage by stage, each stage on the points still robust (one block, generators from (seed, stage)); prints each stage's
    /// seconds and the per-point records (the stage that broke each point, the norms' sum) and writes nothing else. Run it as
    /// two builds in turn (e.g. this commit against an earlier one) to compare stages. 0: the full benchmark.</summary>
    public int AutoAttackPoints { get; init; } = 0;
    /// <summary>--autoattack-stages: the stages to run, in AutoAttack's order (default all four); a stage left out breaks nothing.</summary>
    public string[] AutoAttackStages { get; init; } = [AutoAttack.ApgdCeName, AutoAttack.ApgdTName, AutoAttack.FabTName, AutoAttack.SquareName];
    /// <summary>--autoattack-reference DIR: after our stages, the Python reference AutoAttack (a checkout of fra31/auto-attack
    /// in DIR, run unchanged by scripts/bench-autoattack-reference.py under Debian's torch) on the same model, points, eps,
    /// threads and seed; prints its per-stage seconds, the ratios ours / reference and whether the robust accuracy after
    /// each stage agrees. The reference is run on all four stages.</summary>
    public string? AutoAttackReference { get; init; }
    /// <summary>--mixed-batch-pair ROUNDS: only the purifier's training step with its attacks, the four separate attack calls
    /// (PurifierTraining.MixedBatchSeparate, commit a4f09db's MixedBatch) against the batched MixedBatch (and, timing only,
    /// one PGD call over all the adversarial rows), interleaved round by round in one process at each batch size; prints the
    /// table and writes nothing else. 0: the full benchmark.</summary>
    public int MixedBatchPairRounds { get; init; } = 0;
    public string Classifier { get; init; } = Committed.ClassifierPath;
    public string Purifier { get; init; } = Committed.PurifierPath;
    public int[] BatchSizes { get; init; } = [128, 512];
    /// <summary>Untimed calls before the timed ones (per side; APGD gets none: the other operations warm its kernels).</summary>
    public int Warmup { get; init; } = 1;
    public int Repeats { get; init; } = 3;
    /// <summary>Repeats of an operation whose warm-up call took more than SlowSeconds.</summary>
    public int SlowRepeats { get; init; } = 2;
    public double SlowSeconds { get; init; } = 1.0;
    public int ApgdRepeats { get; init; } = 1;
    /// <summary>Batch sizes APGD (on ApgdPoints points) and MixedBatch + Step are timed at: the expensive operations only
    /// at one size each, so that the whole run stays near 10 minutes on a shared 2-core machine.</summary>
    public int[] ApgdBatchSizes { get; init; } = [512];
    public int[] MixedBatchSizes { get; init; } = [128];
    public int ApgdPoints { get; init; } = 512;
    public int ApgdIterations { get; init; } = 100;
    public double Eps { get; init; } = 0.1;
    public double PgdStepSize { get; init; } = 0.01;
    public int[] InferenceSamples { get; init; } = [1, 8, 16];
    /// <summary>N of the end-to-end (differentiable) CARSO operations and of the memory loop.</summary>
    public int GradSamples { get; init; } = 8;
    public int MixedBatchPgdSteps { get; init; } = 40;
    public int MemoryIterations { get; init; } = 2000;
    public int MemoryFirstCheck { get; init; } = 100;
    public int MemoryPoints { get; init; } = 1;
    public int MemoryEotIter { get; init; } = 1;
    public int MemorySampleEvery { get; init; } = 50;
    public int MemoryProgressEvery { get; init; } = 250;
    public int CheckPoints { get; init; } = 8;
    /// <summary>Operations (name@batch) not timed in PyTorch when its BLAS is not OpenBLAS (the reference BLAS, Debian's
    /// default without libopenblas0-pthread): there these calls take 30-400 s each (measured in an earlier attempt of this
    /// run), beyond the 10-minute budget of a run on a shared machine, and the ratio would only measure that BLAS. On
    /// OpenBLAS (the fair baseline, README "Speed and memory") every operation is timed on both sides.</summary>
    public string[] PyTorchSkippedOnReferenceBlas { get; init; } =
        ["carso-infer-n8@512", "carso-infer-n16@512", "carso-grad-n8@512", "purifier-step@512"];
    /// <summary>Debian's python3-torch (the pyenv python3 on PATH has no torch).</summary>
    public string Python { get; init; } = "/usr/bin/python3";
    public long Seed { get; init; } = 0;
}

static class Bench
{
    /// <summary>One benchmarked call: name, batch size, the images one call processes, what it does, the call.</summary>
    public sealed record Operation(string Name, int Batch, int Images, string Work, Func<object> Call,
        int? Warmup = null, int? Repeats = null, Dictionary<string, int>? Extra = null);

    public sealed record Timing(double[] Seconds, double MedianImagesPerSecond, double MinImagesPerSecond, double MaxImagesPerSecond)
    {
        public static Timing Of(IReadOnlyList<double> seconds, int images)
        {
            var rates = seconds.Select(s => images / s).Order().ToArray();
            var median = rates.Length % 2 == 1 ? rates[rates.Length / 2] : (rates[rates.Length / 2 - 1] + rates[rates.Length / 2]) / 2;
            return new Timing(seconds.ToArray(), median, rates[0], rates[^1]);
        }
        public override string ToString() => $"{MedianImagesPerSecond:F0} ({MinImagesPerSecond:F0}-{MaxImagesPerSecond:F0})";
    }

    public sealed record OperationResult(string Name, int Batch, int Images, string Work, Timing Ours, Timing? Pytorch, double? Ratio, string? PytorchError);

    public sealed record Memory(int Points, int Samples, int EotIter, int Iterations, int FirstCheck, double RssAtFirstCheck,
        double RssAtLast, double GrowthPercent, double PeakRssMiB, double Seconds, IReadOnlyList<RssSample> RssMiB);

    public sealed record RssSample(int Iteration, double RssMiB);

    public sealed record NumericsCheck(int Points, double ClassifierMaxAbsDiff, double CarsoMaxAbsDiff);

    /// <summary>Wall time of one call, everything it made disposed afterwards.</summary>
    static double TimeOnce(Func<object> call)
    {
        using var scope = NewDisposeScope();
        var clock = Stopwatch.StartNew();
        call();
        return clock.Elapsed.TotalSeconds;
    }

    /// <summary>Warm-up on both sides, then ours and PyTorch's timed calls alternately.</summary>
    public static OperationResult Measure(Operation op, Settings s, PyTorchReference? torchRef)
    {
        var warmup = op.Warmup ?? s.Warmup;
        var warmupSeconds = 0.0;
        for (var i = 0; i < warmup; i++) warmupSeconds = TimeOnce(op.Call);
        string? error = null;
        if (torchRef is not null && !torchRef.OpenBlas && s.PyTorchSkippedOnReferenceBlas.Contains($"{op.Name}@{op.Batch}")) torchRef = null;
        // A call of seconds needs no warm-up to be timed fairly, and PyTorch's slowest calls here take half a minute.
        if (torchRef is not null && warmup > 0 && warmupSeconds <= s.SlowSeconds)
            error = torchRef.Time(op, warmup: warmup, repeats: 0).Error;
        var repeats = op.Repeats ?? (warmupSeconds > s.SlowSeconds ? s.SlowRepeats : s.Repeats);
        var ours = new List<double>();
        var theirs = new List<double>();
        for (var r = 0; r < repeats; r++)
        {
            ours.Add(TimeOnce(op.Call));
            if (torchRef is null || error is not null) continue;
            var (seconds, e) = torchRef.Time(op, warmup: 0, repeats: 1);
            if (e is not null) error = e; else theirs.AddRange(seconds);
        }
        var oursTiming = Timing.Of(ours, op.Images);
        var torchTiming = error is null && theirs.Count > 0 ? Timing.Of(theirs, op.Images) : null;
        return new OperationResult(op.Name, op.Batch, op.Images, op.Work, oursTiming, torchTiming,
            torchTiming is null ? null : oursTiming.MedianImagesPerSecond / torchTiming.MedianImagesPerSecond, error);
    }

    public static string Describe(OperationResult r) =>
        $"{r.Name} b{r.Batch}: ours {r.Ours} img/s" +
        (r.Pytorch is not null ? $" | PyTorch {r.Pytorch} img/s | ratio {r.Ratio:F2}" : r.PytorchError is not null ? $" | PyTorch failed: {r.PytorchError}" : " | PyTorch not timed");

    public static string Row(OperationResult r) =>
        $"{r.Name,-22} {r.Batch,5} {r.Ours,-28} {(r.Pytorch?.ToString() ?? "-"),-28} {(r.Ratio is double q ? q.ToString("F2") : "-")}";

    /// <summary>/proc/loadavg's 1, 5 and 15 minute load averages ("" elsewhere): the machine is shared.</summary>
    public static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "";

    /// <summary>Consecutive chunks (start, count) of at most size items covering total.</summary>
    public static IEnumerable<(int Start, int Count)> Chunks(int total, int size)
    {
        for (var start = 0; start < total; start += size) yield return (start, Math.Min(size, total - start));
    }

    /// <summary>
    /// The hot loop of APGD-EOT on a stochastic, differentiable model, as lib/Attacks/Apgd.cs runs it: per iteration
    /// the momentum step and the EOT gradient (EotIter forward/backward passes), in its own dispose scope; the
    /// iterate, the previous iterate and the gradient carried over. Resident memory sampled along the way.
    /// </summary>
    public static Memory MemoryLoop(Func<Tensor, Tensor> model, Tensor x, Tensor y, Settings s)
    {
        var threat = Threat.Linf(s.Eps);
        var clock = Stopwatch.StartNew();
        var samples = new List<RssSample>();
        using var loop = NewDisposeScope();
        var xAdv = Apgd.RandomStart(x, threat);
        var xPrev = xAdv;
        var grad = Apgd.EotGradient(model, xAdv, y, Losses.CrossEntropy, s.MemoryEotIter).Gradient;
        var stepSize = full([x.shape[0]], 2 * s.Eps);
        for (var i = 1; i <= s.MemoryIterations; i++)
        {
            using (var iteration = NewDisposeScope())
            {
                var next = Apgd.MomentumStep(xAdv, xPrev, grad, stepSize, i == 1 ? 1.0 : 0.75, x, threat);
                var estimate = Apgd.EotGradient(model, next, y, Losses.CrossEntropy, s.MemoryEotIter);
                next.MoveToOuterDisposeScope();
                estimate.Gradient.MoveToOuterDisposeScope();
                if (!ReferenceEquals(xPrev, xAdv)) xPrev.Dispose();
                grad.Dispose();
                (xPrev, xAdv, grad) = (xAdv, next, estimate.Gradient);
            }
            if (i % s.MemorySampleEvery == 0 || i == s.MemoryFirstCheck || i == s.MemoryIterations)
                samples.Add(new RssSample(i, ProcessStats.RssMiB() ?? double.NaN));
            if (i % s.MemoryProgressEvery == 0)
                Console.WriteLine($"  memory loop: iteration {i}/{s.MemoryIterations}, RSS {samples[^1].RssMiB:F0} MiB, {clock.Elapsed.TotalSeconds:F0} s");
        }
        var first = samples.First(p => p.Iteration == s.MemoryFirstCheck).RssMiB;
        var last = samples[^1].RssMiB;
        return new Memory(s.MemoryPoints, s.GradSamples, s.MemoryEotIter, s.MemoryIterations, s.MemoryFirstCheck, first, last,
            100 * (last - first) / first, ProcessStats.PeakRssMiB() ?? double.NaN, clock.Elapsed.TotalSeconds, samples);
    }

    /// <summary>Ours against PyTorch's check outputs: classifier logits and CARSO's deterministic (z = 0) sample logits, N = 1.</summary>
    public static NumericsCheck Check(SmallCnn classifier, CarsoModel carso, Tensor images, JsonObject ready, int points)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = images.narrow(0, 0, points);
        var logits = classifier.call(x);
        var carsoLogits = carso.With(new CarsoSettings(Samples: 1, Deterministic: true)).SampleLogits(x).select(2, 0);
        double MaxDiff(Tensor ours, JsonNode? theirs)
        {
            var values = theirs!.AsArray().Select(row => row!.AsArray().Select(v => (float)v!.GetValue<double>()).ToArray()).ToArray();
            var reference = tensor(values.SelectMany(v => v).ToArray(), [values.Length, values[0].Length]);
            return (ours.cpu() - reference).abs().max().item<float>();
        }
        return new NumericsCheck(points, MaxDiff(logits, ready["check"]!["classifierLogits"]),
            MaxDiff(carsoLogits, ready["check"]!["carsoDeterministicSampleLogits"]));
    }
}

/// <summary>scripts/bench-pytorch.py as a child process speaking line-delimited JSON (see its docstring).</summary>
sealed class PyTorchReference(Process process, JsonObject ready) : IDisposable
{
    public JsonObject Ready { get; } = ready;

    /// <summary>Whether the reference process multiplies on OpenBLAS (read by bench-pytorch.py from its own process).</summary>
    public bool OpenBlas => Ready["openBlas"]?.GetValue<bool>() == true;

    /// <summary>Exports the weights as .pt (StateDicts.Export), starts the reference and waits for its ready line;
    /// (null, why) when /usr/bin/python3 with torch is not there; throws when the reference, with torch there, does not start.</summary>
    public static (PyTorchReference? Reference, string? Skipped) Start(Settings s, string root, string exportFolder,
        SmallCnn classifier, Purifier purifier, string purifierPath, string dataFolder, int points, int threads, long seed)
    {
        var script = Path.Combine(root, "scripts", "bench-pytorch.py");
        if (!File.Exists(s.Python)) return (null, $"{s.Python} does not exist (Debian's python3-torch provides PyTorch there)");
        var probe = Run(s.Python, ["-c", "import torch, numpy; print(torch.__version__)"]);
        if (probe.ExitCode != 0)
            return (null, $"{s.Python} cannot import torch and numpy (apt-get install python3-torch): {probe.Output.Trim().Split('\n')[^1]}");
        var classifierPt = Path.Combine(exportFolder, "classifier.pt");
        var purifierPt = Path.Combine(exportFolder, "purifier.pt");
        StateDicts.Export(classifier, classifierPt);
        StateDicts.Export(purifier, purifierPt);
        var info = WithThreads(new ProcessStartInfo(s.Python)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        }, threads);
        foreach (var a in new[]
                 {
                     script, "--classifier", classifierPt, "--purifier", purifierPt, "--spec", PurifierCheckpoint.SpecPath(purifierPath),
                     "--images", IdxDataset.FindFile(dataFolder, IdxDataset.FileStems(Split.Test).Images),
                     "--labels", IdxDataset.FindFile(dataFolder, IdxDataset.FileStems(Split.Test).Labels),
                     "--points", points.ToString(), "--check-points", s.CheckPoints.ToString(), "--threads", threads.ToString(),
                     "--channels1", Committed.ClassifierSettings.Channels1.ToString(), "--channels2", Committed.ClassifierSettings.Channels2.ToString(),
                     "--hidden", Committed.ClassifierSettings.Hidden.ToString(), "--seed", seed.ToString(),
                 })
            info.ArgumentList.Add(a);
        var process = new Process { StartInfo = info };
        // Its errors pass through, except torch 1.13's warning on every convolution that NNPACK is unsupported here.
        process.ErrorDataReceived += (_, e) => { if (e.Data is { } l && !l.Contains("Could not initialize NNPACK")) Console.Error.WriteLine(l); };
        process.Start();
        process.BeginErrorReadLine();
        var line = process.StandardOutput.ReadLine();
        if (line is null || JsonNode.Parse(line) is not JsonObject ready || ready["ready"]?.GetValue<bool>() != true)
        {
            process.WaitForExit(10_000);
            // Python and torch are there (probed above): a reference that does not start is a bug in it, not a missing
            // dependency, so the bench fails instead of reporting a run without its baseline.
            throw new InvalidOperationException(
                $"{script} did not start (exit code {(process.HasExited ? process.ExitCode : -1)}; its error is above) although {s.Python} imports torch");
        }
        Console.WriteLine($"PyTorch reference: torch {ready["torch"]}, python {ready["python"]}, {ready["threads"]} threads, BLAS {ready["blas"]} (pid {process.Id})");
        if (ready["openBlas"]?.GetValue<bool>() != true)
            Console.WriteLine("  WARNING: PyTorch does not multiply on OpenBLAS here, a weak baseline; for the fair one: apt-get install libopenblas0-pthread");
        return (new PyTorchReference(process, ready), null);
    }

    /// <summary>A Python process with torch limited to <paramref name="threads"/> threads: torch's own (OpenMP) pool gets them,
    /// OpenBLAS one. torch's set_num_threads does not reach OpenBLAS when Debian's torch (built against the generic BLAS
    /// interface) multiplies on it; left alone, OpenBLAS's pthreads take every core and fight torch's spinning OpenMP
    /// threads. Measured (SmallCnn forward+backward, 2 threads, idle machine, images/s at batch 128 / 512): OpenBLAS 1
    /// thread 1183 / 1201, OpenBLAS 2 threads 963 / 719, OpenBLAS 2 with passive OpenMP waiting 1220 / 740, nothing set
    /// 1137 / 814 — one OpenBLAS thread is PyTorch's best here, so the bench gives it that.</summary>
    public static ProcessStartInfo WithThreads(ProcessStartInfo info, int threads)
    {
        info.Environment["OMP_NUM_THREADS"] = threads.ToString();
        info.Environment["MKL_NUM_THREADS"] = threads.ToString();
        info.Environment["OPENBLAS_NUM_THREADS"] = "1";
        return info;
    }

    /// <summary>Times warmup + repeats calls of the operation in the reference: (seconds of the timed calls, error).</summary>
    public (double[] Seconds, string? Error) Time(Bench.Operation op, int warmup, int repeats)
    {
        var request = new JsonObject { ["op"] = op.Name, ["batch"] = op.Batch, ["warmup"] = warmup, ["repeats"] = repeats };
        foreach (var (k, v) in op.Extra ?? []) request[k] = JsonValue.Create(v);
        process.StandardInput.WriteLine(request.ToJsonString());
        process.StandardInput.Flush();
        var line = process.StandardOutput.ReadLine() ?? throw new InvalidOperationException("the PyTorch reference exited");
        var reply = JsonNode.Parse(line)!;
        if (reply["error"] is { } error) return ([], error.GetValue<string>());
        return (reply["seconds"]!.AsArray().Select(v => v!.GetValue<double>()).ToArray(), null);
    }

    static (int ExitCode, string Output) Run(string file, string[] arguments)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in arguments) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        return (p.ExitCode, output.Result + error.Result);
    }

    public void Dispose()
    {
        try
        {
            process.StandardInput.WriteLine("{\"op\": \"quit\"}");
            process.StandardInput.Close();
            if (!process.WaitForExit(30_000)) process.Kill();
        }
        catch (InvalidOperationException) { }
        process.Dispose();
    }
}

/// <summary>--autoattack: AutoAttack standard stage by stage on the committed classifier, per-stage seconds and per-point records.</summary>
static class AutoAttackStages
{
    /// <summary>One stage: its name, seconds, and the robust accuracy after it (over all the points).</summary>
    public sealed record Stage(string Name, double Seconds, double RobustAfter);

    public static IReadOnlyList<Stage> Run(SmallCnn classifier, Tensor images, Tensor labels, Settings settings, long seed)
    {
        var stages = new List<Stage>();
        classifier.eval();
        Func<Tensor, Tensor> model = x => classifier.forward(x);
        var threat = new Threat(Norm.Linf, settings.Eps);
        var n = (int)images.shape[0];
        bool[] robust;
        using (no_grad()) robust = model(images).argmax(1).eq(labels).cpu().data<bool>().ToArray();
        var brokenBy = Enumerable.Repeat(-1, n).ToArray();
        var normSum = 0.0;
        Console.WriteLine($"autoattack: {n} points, {robust.Count(r => r)} clean-correct, Linf eps {settings.Eps}, threads {get_num_threads()}, " +
                          $"optimized build: {IsOptimized()}");
        var attacks = AutoAttack.Standard(threat);
        for (var stage = 0; stage < attacks.Count; stage++)
        {
            var attack = attacks[stage];
            if (!settings.AutoAttackStages.Contains(attack.Name)) continue;
            var points = Enumerable.Range(0, n).Where(i => robust[i]).ToArray();
            if (points.Length == 0) break;
            using var scope = NewDisposeScope();
            using var generator = Seeds.Generator(seed, "bench-autoattack/" + attack.Name, images.device, 0);
            var index = tensor(points.Select(i => (long)i).ToArray(), device: images.device);
            var x = images.index_select(0, index);
            var y = labels.index_select(0, index);
            var clock = Stopwatch.StartNew();
            var xAdv = attack.Run(model, x, y, generator).detach();
            var seconds = clock.Elapsed.TotalSeconds;
            bool[] fooled;
            using (no_grad()) fooled = model(xAdv).argmax(1).ne(y).cpu().data<bool>().ToArray();
            var norms = Projection.NormOf((xAdv - x).cpu(), threat.Norm).data<float>().ToArray();
            for (var k = 0; k < points.Length; k++)
                if (fooled[k]) { robust[points[k]] = false; brokenBy[points[k]] = stage; normSum += norms[k]; }
            Console.WriteLine($"stage {attack.Name}: {seconds:F2} s, {points.Length} attacked, {fooled.Count(f => f)} broken, " +
                              $"robust after {robust.Count(r => r)}/{n}");
            stages.Add(new Stage(attack.Name, seconds, robust.Count(r => r) / (double)n));
        }
        Console.WriteLine($"records: {string.Join("", brokenBy.Select(b => b < 0 ? "." : b.ToString()))} norm-sum {normSum:R}");
        return stages;
    }

    static bool IsOptimized() =>
        typeof(AutoAttack).Assembly.GetCustomAttributes(typeof(DebuggableAttribute), false).OfType<DebuggableAttribute>()
            .All(a => !a.IsJITOptimizerDisabled);
}

/// <summary>--autoattack-reference: the Python reference AutoAttack on the same model and points, and the ratios to ours.</summary>
static class ReferenceAutoAttack
{
    public static void Compare(IReadOnlyList<AutoAttackStages.Stage> ours, string reference, Settings s, string root, SmallCnn classifier,
        string dataFolder, int points, int threads, long seed)
    {
        var folder = Directory.CreateTempSubdirectory("carso-aa-reference-").FullName;
        try
        {
            var classifierPt = Path.Combine(folder, "classifier.pt");
            StateDicts.Export(classifier, classifierPt);
            var info = PyTorchReference.WithThreads(new ProcessStartInfo(s.Python) { RedirectStandardOutput = true, UseShellExecute = false }, threads);
            foreach (var a in new[]
                     {
                         Path.Combine(root, "scripts", "bench-autoattack-reference.py"), "--autoattack", reference, "--classifier", classifierPt,
                         "--images", IdxDataset.FindFile(dataFolder, IdxDataset.FileStems(Split.Test).Images),
                         "--labels", IdxDataset.FindFile(dataFolder, IdxDataset.FileStems(Split.Test).Labels),
                         "--points", points.ToString(), "--eps", s.Eps.ToString("R"), "--threads", threads.ToString(), "--seed", seed.ToString(),
                         "--channels1", Committed.ClassifierSettings.Channels1.ToString(), "--channels2", Committed.ClassifierSettings.Channels2.ToString(),
                         "--hidden", Committed.ClassifierSettings.Hidden.ToString(),
                     })
                info.ArgumentList.Add(a);
            Console.WriteLine($"reference AutoAttack ({reference}) on the same {points} points, {threads} thread(s): its log follows");
            using var process = Process.Start(info)!;
            var output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            var last = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault();
            if (process.ExitCode != 0 || last is null || JsonNode.Parse(last) is not JsonObject result)
            {
                Console.WriteLine($"reference AutoAttack failed (exit code {process.ExitCode}); its error is above");
                return;
            }
            Console.WriteLine($"reference: torch {result["torch"]}, {result["threads"]} thread(s), BLAS {result["blas"]}, batches of {result["autoattackBatchSize"]}");
            foreach (var stage in result["stages"]!.AsArray())
            {
                var name = stage!["name"]!.GetValue<string>();
                var (seconds, robustAfter) = (stage["seconds"]!.GetValue<double>(), stage["robustAfter"]!.GetValue<double>());
                var mine = ours.FirstOrDefault(o => o.Name == name);
                Console.WriteLine($"stage {name}: reference {seconds:F1} s, robust after {100 * robustAfter:F2}%" + (mine is null ? "" :
                    $"; ours {mine.Seconds:F1} s, robust after {100 * mine.RobustAfter:F2}%: ratio ours/reference {mine.Seconds / seconds:F2}, " +
                    $"robust accuracy {(Math.Abs(mine.RobustAfter - robustAfter) < 0.5 / points ? "agrees" : "DIFFERS")}"));
            }
        }
        finally { Directory.Delete(folder, recursive: true); }
    }
}
