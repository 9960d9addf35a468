#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// Focused benchmark of CARSO's end-to-end gradient (issue 14, item 3): images/s of one forward + backward to the input
// (summed CE through the aggregation) on the committed classifier and purifier, N = 8, batch 128, for several
// implementations of the pipeline, timed INTERLEAVED in one process (round by round, the order alternating), so a
// busy machine slows every variant alike. "baseline" is a verbatim copy of CarsoModel's pass at commit 1ec876c on today's
// classifier; "baseline-1ec876c" runs that pass on the classifier's pass of that commit too (ReLU, then libtorch's NCHW
// max-pool), the same weights: the commit issue 14 measures against.
// Every variant's gradient is compared with the baseline's for the same latents first. With --eot E each call is the EOT
// gradient of E passes (the attacks' loop, or CARSO's own shared one: the "shared*" variants).
// --attack-check: also the robust accuracy of one fixed end-to-end attack (APGD-CE with EOT) on CARSO in each
// CarsoPrecision, on the same points with the same randomness (random starts and latents from the same per-block
// generators); each adversarial set judged by the float32 defence and by the attacked one.
//   OMP_NUM_THREADS=1 taskset -c 1 dotnet run scripts/bench-carso-grad.cs -- --out /tmp/bench-carso-grad [--eot 20] [--attack-check]
using System.Diagnostics;

var settings = new Settings();
var run = ScriptRun.Start(settings, args, allowExtraArgs: true);
for (var i = 0; i < run.ExtraArgs.Count; i++)
{
    string Value() => i + 1 < run.ExtraArgs.Count ? run.ExtraArgs[++i] : throw new UsageException($"{run.ExtraArgs[i]} needs a value");
    settings = run.ExtraArgs[i] switch
    {
        "--variants" => settings with { Variants = Value().Split(',') },
        "--rounds" => settings with { Rounds = int.Parse(Value()) },
        "--batch" => settings with { Batch = int.Parse(Value()) },
        "--breakdown" => settings with { Breakdown = true },
        "--eot" => settings with { Eot = int.Parse(Value()) },
        "--attack-check" => settings with { AttackCheck = true },
        var o => throw new UsageException($"unknown option '{o}'; the options are {CommandLine.OptionsLine} | --variants a,b | --rounds N | --batch N | --eot E | --breakdown | --attack-check"),
    };
}
if (run.Smoke)
    settings = settings with { Batch = 8, Rounds = 1, Variants = ["baseline-1ec876c", "shared", "shared-bf16"], Eot = 2, AttackCheck = true, AttackPoints = 4,
        AttackBatch = 2, AttackIterations = 2, AttackEot = 2 };
var seed = run.SeedOverride ?? settings.Seed;
Console.WriteLine($"threads {get_num_threads()}, load average {File.ReadAllText("/proc/loadavg").Trim()}");

var carso = Committed.Carso(run.Device, new CarsoSettings(Samples: settings.Samples, Differentiable: true));
var low = Committed.Carso(run.Device, new CarsoSettings(Samples: settings.Samples, Differentiable: true));
low.Classifier.to(ScalarType.BFloat16);
low.Purifier.to(ScalarType.BFloat16);
using var points = Committed.TestPoints(settings.Batch);
var (x, y) = (points.Images.to(run.Device), points.Labels.to(run.Device));
using var generator = Seeds.Generator(seed, "bench-carso-grad/latents", run.Device);

var all = Candidates.All(carso, low, settings.Samples);
var chosen = settings.Variants.Select(name => all.TryGetValue(name, out var f) || name.StartsWith("shared") ? (name, f)
    : throw new ArgumentException($"unknown variant {name}; known: {string.Join(", ", all.Keys)}")).ToArray();

if (settings.Breakdown) Candidates.Breakdown(carso, low, x, settings.Rounds);

// ---- the operation: the EOT gradient (EOT passes of forward + backward) at x, latents from the generator ----
// Pipeline variants run the attacks' plain loop of passes; "shared*" variants are the library's CARSO as attacks get it
// (AsModel().Bind), whose own EOT gradient shares the representation pass (at EOT 1 the same as "lib").
Tensor Op(string name, Candidates.Pipeline? f, Generator g) => name.StartsWith("shared")
    ? Apgd.EotGradient(carso.With(carso.Settings with { Precision = Candidates.PrecisionOf(name) }).AsModel().Bind(g), x, y, Losses.CrossEntropy, settings.Eot).Gradient
    : Apgd.EotGradient(xx => Aggregation.Aggregate(AggregationKind.ExpShare, f!(xx, carso.Latents(xx.shape[0], g, xx.device))), x, y, Losses.CrossEntropy, settings.Eot).Gradient;

// ---- numerics: each variant's gradient against the baseline's, same latents (same generator seed) ----
var reference = Op("baseline", all["baseline"], Seeds.Generator(seed, "bench-carso-grad/check", run.Device));
var checks = new Dictionary<string, double>();
foreach (var (name, f) in chosen)
{
    using var scope = NewDisposeScope();
    var g = Op(name, f, Seeds.Generator(seed, "bench-carso-grad/check", run.Device));
    var rel = ((g - reference).abs().max() / reference.abs().max()).item<float>();
    checks[name] = rel;
    Console.WriteLine($"{name,-28} max |grad - baseline| / max |baseline| = {rel:E2}");
}

// ---- timing: rounds of every variant, order alternating ----
// Wall and CPU seconds of one call (CPU: this process's user + system time, the measure that contention from other
// processes on the same core does not inflate, though they still share its caches).
(double Wall, double Cpu) TimeOnce(string name, Candidates.Pipeline? f)
{
    using var scope = NewDisposeScope();
    var process = Process.GetCurrentProcess();
    var cpu0 = process.TotalProcessorTime;
    var clock = Stopwatch.StartNew();
    Op(name, f, generator);
    var wall = clock.Elapsed.TotalSeconds;
    process.Refresh();
    return (wall, (process.TotalProcessorTime - cpu0).TotalSeconds);
}
foreach (var (name, f) in chosen) TimeOnce(name, f);  // warm-up
var images = settings.Batch * settings.Eot;   // forward + backward image passes per call (per EOT pass: the batch)
var seconds = chosen.ToDictionary(c => c.name, _ => new List<double>());
var cpuSeconds = chosen.ToDictionary(c => c.name, _ => new List<double>());
for (var r = 0; r < settings.Rounds; r++)
{
    var order = r % 2 == 0 ? chosen : chosen.Reverse().ToArray();
    foreach (var (name, f) in order)
    {
        var (wall, cpu) = TimeOnce(name, f);
        seconds[name].Add(wall);
        cpuSeconds[name].Add(cpu);
    }
    Console.WriteLine($"round {r + 1} (wall/cpu img/s): " + string.Join(", ", chosen.Select(c => $"{c.name} {images / seconds[c.name][^1]:F0}/{images / cpuSeconds[c.name][^1]:F0}")));
}
static double Median(IEnumerable<double> v) { var s = v.Order().ToArray(); return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2; }
object Summary(Dictionary<string, List<double>> times, string what)
{
    var baseSeconds = times[chosen[0].name];
    Console.WriteLine($"\n{what}: images/s (median, min-max over {settings.Rounds} rounds) and ratio to {chosen[0].name} (median of per-round ratios, min-max)");
    return chosen.Select(c =>
    {
        var rates = times[c.name].Select(s => images / s).ToArray();
        var ratios = times[c.name].Select((s, i) => baseSeconds[i] / s).ToArray();
        Console.WriteLine($"{c.name,-28} {Median(rates),7:F0} ({rates.Min():F0}-{rates.Max():F0})   x{Median(ratios):F2} ({ratios.Min():F2}-{ratios.Max():F2})   grad rel diff {checks[c.name]:E1}");
        return new { name = c.name, imagesPerSecondMedian = Median(rates), min = rates.Min(), max = rates.Max(), ratioMedian = Median(ratios),
            ratioMin = ratios.Min(), ratioMax = ratios.Max(), gradientRelativeDifference = checks[c.name], seconds = times[c.name] };
    }).ToArray();
}
var rows = new { wall = Summary(seconds, "wall clock"), cpu = Summary(cpuSeconds, "CPU time of this process") };

// ---- what the published CARSO protocol costs at the rate of what attacks run ("shared"), when timed at its EOT ----
// Its end-to-end attacks take (|AutoAttack rand| x APGD iterations + PGD steps) x EOT gradient passes per attacked point,
// each pass one point's N reconstructions forward and backward: the "images" counted above.
var published = CarsoProtocolSettings.Published;
object? projection = null;
if ((settings.Eot == published.EotIter || run.Smoke) && seconds.ContainsKey("shared"))
{
    var passes = (published.Rand.Count * published.ApgdIterations + published.PgdSteps) * published.EotIter;
    double Rate(List<double> s) => Median(s.Select(t => images / t));
    var (wallRate, cpuRate) = (Rate(seconds["shared"]), Rate(cpuSeconds["shared"]));
    double Hours(double rate, double processes) => 1000 * passes / rate / processes / 3600;
    projection = new
    {
        passesPerAttackedPoint = passes,
        protocol = $"AutoAttack rand ({string.Join(", ", published.Rand)}, {published.ApgdIterations} iterations) and PGD+EOT " +
                   $"({published.PgdSteps} steps), EOT {published.EotIter}, N = {settings.Samples}: the paper's end-to-end families at published budgets",
        secondsPerAttackedPoint = passes / wallRate,
        hoursPer1000AttackedPointsOneProcess = Hours(wallRate, 1),
        hoursPer1000AttackedPointsTwoSingleThreadShards = Hours(cpuRate, 2),
        threads = get_num_threads(),
        note = "one process at this run's thread count (wall rate); two shards of one thread each on two idle cores (this process's " +
               "CPU-time rate per core, twice). Attacked points are the clean-correct ones; no GPU figure exists on this machine.",
    };
    Console.WriteLine($"\nprojection: {passes} EOT gradient passes per attacked point, {passes / wallRate:F1} s each at {wallRate:F0} images/s: " +
                      $"{Hours(wallRate, 1):F1} h per 1000 attacked points in one process of {get_num_threads()} threads, " +
                      $"{Hours(cpuRate, 2):F1} h on two single-thread shards");
}
var attackCheck = settings.AttackCheck ? Check.Precisions(carso, settings, seed, run.Device) : null;
var record = run.Finish(settings, seed, new { threads = get_num_threads(), loadAverageAtEnd = File.ReadAllText("/proc/loadavg").Trim(), eot = settings.Eot,
    imagesPerCall = images, variants = rows, projection, attackCheck });
foreach (var (name, figure) in CarsoSpeedReport.Figures(record)) run.SaveFigure(figure, name);

record Settings
{
    public int Batch { get; init; } = 128;
    public int Samples { get; init; } = 8;
    public int Rounds { get; init; } = 7;
    /// <summary>EOT passes per call (1: one forward + backward); images/s counts Batch x Eot images per call.</summary>
    public int Eot { get; init; } = 1;
    public string[] Variants { get; init; } = ["baseline", "chunk64", "chunk32", "chunk16", "split", "channels-last", "bf16-recon", "bf16-all"];
    public long Seed { get; init; } = 0;
    /// <summary>Also run the attack check (--attack-check): APGD-CE, AttackIterations iterations, EOT AttackEot, on the first
    /// AttackPoints test points in blocks of AttackBatch, eps Eps, against CARSO in each of Precisions.</summary>
    public bool AttackCheck { get; init; } = false;
    public long AttackPoints { get; init; } = 200;
    public long AttackBatch { get; init; } = 100;
    public int AttackIterations { get; init; } = 20;
    public int AttackEot { get; init; } = 4;
    public double Eps { get; init; } = 0.1;
    public CarsoPrecision[] Precisions { get; init; } = [CarsoPrecision.Float32, CarsoPrecision.BFloat16Classifier, CarsoPrecision.BFloat16];
    /// <summary>Also time the stages of the baseline pass alone (CPU time, forward and forward + backward).</summary>
    public bool Breakdown { get; init; } = false;
}

static class Candidates
{
    /// <summary>x [B, C, H, W], latents [B * N, L] -> sample logits [B, K, N].</summary>
    public delegate Tensor Pipeline(Tensor x, Tensor latents);

    public static CarsoPrecision PrecisionOf(string name) =>
        name.EndsWith("bf16-classifier") ? CarsoPrecision.BFloat16Classifier : name.EndsWith("bf16") ? CarsoPrecision.BFloat16 : CarsoPrecision.Float32;

    public sealed record Options(int PointsPerPass = 128, bool Split = false, bool DecodeCl = false, bool ClassifyCl = false,
        bool Bf16Decode = false, bool Bf16Classify = false, bool Bf16Repr = false);

    public static Dictionary<string, Pipeline> All(CarsoModel m, CarsoModel low, int n) => new()
    {
        ["baseline"] = (x, z) => Baseline(m, x, z),
        ["baseline-1ec876c"] = BaselineAt1ec876c(m),
        ["lib"] = (x, z) => m.SampleLogits(x, z),
        ["lib-bf16-classifier"] = (x, z) => m.With(m.Settings with { Precision = CarsoPrecision.BFloat16Classifier }).SampleLogits(x, z),
        ["lib-bf16"] = (x, z) => m.With(m.Settings with { Precision = CarsoPrecision.BFloat16 }).SampleLogits(x, z),
        ["generic"] = Generic(m, low, n, new()),
        ["chunk64"] = Generic(m, low, n, new(PointsPerPass: 64)),
        ["chunk32"] = Generic(m, low, n, new(PointsPerPass: 32)),
        ["chunk16"] = Generic(m, low, n, new(PointsPerPass: 16)),
        ["split"] = Generic(m, low, n, new(Split: true)),
        ["channels-last"] = Generic(m, low, n, new(DecodeCl: true, ClassifyCl: true)),
        ["decode-cl"] = Generic(m, low, n, new(DecodeCl: true)),
        ["decode-cl-split"] = Generic(m, low, n, new(DecodeCl: true, Split: true)),
        ["cl-split"] = Generic(m, low, n, new(DecodeCl: true, ClassifyCl: true, Split: true)),
        ["bf16-classify"] = Generic(m, low, n, new(Bf16Classify: true)),
        ["bf16-classify-cl"] = Generic(m, low, n, new(Bf16Classify: true, ClassifyCl: true)),
        ["bf16-classify-cl-decode-cl-split"] = Generic(m, low, n, new(Bf16Classify: true, ClassifyCl: true, DecodeCl: true, Split: true)),
        ["bf16-classify-decode-cl-split"] = Generic(m, low, n, new(Bf16Classify: true, DecodeCl: true, Split: true)),
        ["bf16-recon-cl-split"] = Generic(m, low, n, new(Bf16Classify: true, Bf16Decode: true, ClassifyCl: true, DecodeCl: true, Split: true)),
        ["bf16-all-cl-split"] = Generic(m, low, n, new(Bf16Classify: true, Bf16Decode: true, Bf16Repr: true, ClassifyCl: true, DecodeCl: true, Split: true)),
        ["dcs-chunk64"] = Generic(m, low, n, new(PointsPerPass: 64, DecodeCl: true, Split: true)),
        ["dcs-chunk32"] = Generic(m, low, n, new(PointsPerPass: 32, DecodeCl: true, Split: true)),
        ["dcs-chunk16"] = Generic(m, low, n, new(PointsPerPass: 16, DecodeCl: true, Split: true)),
        ["dcs-chunk8"] = Generic(m, low, n, new(PointsPerPass: 8, DecodeCl: true, Split: true)),
        ["dcs-chunk4"] = Generic(m, low, n, new(PointsPerPass: 4, DecodeCl: true, Split: true)),
        ["bf16c-dcs-chunk16"] = Generic(m, low, n, new(PointsPerPass: 16, Bf16Classify: true, ClassifyCl: true, DecodeCl: true, Split: true)),
    };

    // ---- verbatim: CarsoModel.SampleLogits / Reconstruct / Decode at commit 1ec876c (Differentiable, MaxReconstructions 1024) ----
    static Tensor Baseline(CarsoModel m, Tensor x, Tensor latents) => Baseline(m, m.Classifier, x, latents);

    static Pipeline BaselineAt1ec876c(CarsoModel m)
    {
        var classifier = new SmallCnnAt1ec876c((SmallCnn)m.Classifier);
        return (x, z) =>
        {
            using var libtorch = NarrowConv3x3.LibtorchOnly();   // the purifier's last layer as that commit ran it
            return Baseline(m, classifier, x, z);
        };
    }

    static Tensor Baseline(CarsoModel m, nn.Module<Tensor, Tensor> classifier, Tensor x, Tensor latents)
    {
        var (b, n) = (x.shape[0], (long)m.Settings.Samples);
        using var scope = NewDisposeScope();
        var chunk = Math.Max(1, m.Settings.MaxReconstructions / n);
        if (b <= chunk) return BaseReconstruct(m, classifier, x, latents, n).MoveToOuterDisposeScope();
        var parts = new List<Tensor>();
        for (long start = 0; start < b; start += chunk)
        {
            var size = Math.Min(chunk, b - start);
            parts.Add(BaseReconstruct(m, classifier, x.narrow(0, start, size), latents.narrow(0, start * n, size * n), n));
        }
        return cat(parts, 0).MoveToOuterDisposeScope();
    }

    static Tensor BaseReconstruct(CarsoModel m, nn.Module<Tensor, Tensor> classifier, Tensor x, Tensor latents, long n)
    {
        var (_, layers) = Representation.Capture(classifier, m.LayerNames, x);
        var c = m.Purifier.Condition(layers).repeat_interleave(n, dim: 0);
        var decoded = m.Purifier.Decode(latents.to(c.dtype, c.device), c);
        var logits = classifier.call(decoded);
        return logits.view(x.shape[0], n, -1).transpose(1, 2);
    }

    // ---- candidates ----
    static Pipeline Generic(CarsoModel m, CarsoModel low, int n, Options o) => (x, latents) =>
    {
        using var scope = NewDisposeScope();
        var b = x.shape[0];
        var parts = new List<Tensor>();
        for (long start = 0; start < b; start += o.PointsPerPass)
        {
            var size = Math.Min(o.PointsPerPass, b - start);
            parts.Add(Pass(m, low, n, o, x.narrow(0, start, size), latents.narrow(0, start * n, size * n)));
        }
        return (parts.Count == 1 ? parts[0] : cat(parts, 0)).MoveToOuterDisposeScope();
    };

    static Tensor ChannelsLast(Tensor t) => t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);

    static Tensor Pass(CarsoModel m, CarsoModel low, long n, Options o, Tensor x, Tensor latents)
    {
        var repr = o.Bf16Repr ? low : m;
        var dec = o.Bf16Decode ? low : m;
        var cls = o.Bf16Classify ? low : m;
        var xr = o.Bf16Repr ? x.to(ScalarType.BFloat16) : x;
        var (_, layers) = Representation.Capture(repr.Classifier, repr.LayerNames, xr);
        var c = repr.Purifier.Condition(layers);                                       // [b, Cond]
        var dtype = o.Bf16Decode ? ScalarType.BFloat16 : ScalarType.Float32;
        c = c.to(dtype);
        var z = latents.to(dtype);
        var children = dec.Purifier.named_children().ToDictionary(kv => kv.name, kv => kv.module);
        var linear = (TorchSharp.Modules.Linear)children["decoder_input"];
        var act = (nn.Module<Tensor, Tensor>)children["decoder_input_act"];
        var decoder = (nn.Module<Tensor, Tensor>)children["decoder"];
        var output = (nn.Module<Tensor, Tensor>)children["output"];
        var latentSize = dec.Purifier.Settings.LatentSize;
        Tensor h;
        if (o.Split)
        {
            var w = linear.weight!;
            var perPoint = nn.functional.linear(c, w.narrow(1, latentSize, w.shape[1] - latentSize), linear.bias);      // [b, F]
            h = nn.functional.linear(z, w.narrow(1, 0, latentSize)).view(x.shape[0], n, -1) + perPoint.unsqueeze(1);
            h = act.call(h.view(x.shape[0] * n, -1));
        }
        else h = act.call(linear.call(cat([z, c.repeat_interleave(n, dim: 0)], 1)));
        var shape = DecoderBase(dec.Purifier, latentSize, linear);
        h = h.view(x.shape[0] * n, shape[0], shape[1], shape[2]);
        if (o.DecodeCl) h = ChannelsLast(h);
        var reconstructions = output.call(decoder.call(h));
        reconstructions = o.ClassifyCl ? ChannelsLast(reconstructions) : Canonical(reconstructions);
        if (o.Bf16Classify) reconstructions = reconstructions.to(ScalarType.BFloat16);
        var logits = cls.Classifier.call(reconstructions).to(ScalarType.Float32);
        return logits.view(x.shape[0], n, -1).transpose(1, 2);
    }

    /// <summary>The same values with NCHW-contiguous strides (a channels-last tensor of one channel has the same memory).</summary>
    static Tensor Canonical(Tensor t) => t.shape[1] == 1 ? t.as_strided(t.shape, [t.shape[1] * t.shape[2] * t.shape[3], t.shape[2] * t.shape[3], t.shape[3], 1]) : t.contiguous();

    /// <summary>CPU time of each stage of one baseline pass, forward only and forward + backward to its input.</summary>
    public static void Breakdown(CarsoModel m, CarsoModel low, Tensor x, int rounds)
    {
        var n = (long)m.Settings.Samples;
        var b = x.shape[0];
        using var scope0 = NewDisposeScope();
        Tensor c, recon;
        using (no_grad())
        {
            var (_, layers) = Representation.Capture(m.Classifier, m.LayerNames, x);
            c = m.Purifier.Condition(layers).repeat_interleave(n, dim: 0).detach();
            recon = m.Purifier.Decode(m.Latents(b, new Generator(1)), c).detach();
        }
        var z = m.Latents(b, new Generator(2));
        var h1 = Block(m, ["conv1", "pool1", "relu1"], recon).detach();
        var h2 = Block(m, ["conv2", "pool2", "relu2"], h1).detach();
        var stages = new (string Name, Func<Tensor> Input, Func<Tensor, Tensor> F)[]
        {
            ("representation+condition (B)", () => x, t => m.Purifier.Condition(Representation.Capture(m.Classifier, m.LayerNames, t).Layers)),
            ("decode (B*N)", () => c, t => m.Purifier.Decode(z, t)),
            ("classify (B*N)", () => recon, t => m.Classifier.call(t)),
            ("classify bf16 (B*N)", () => recon.to(ScalarType.BFloat16), t => low.Classifier.call(t)),
            ("decode bf16 (B*N)", () => c.to(ScalarType.BFloat16), t => low.Purifier.Decode(z.to(ScalarType.BFloat16), t)),
            ("classify channels-last (B*N)", () => ChannelsLast(recon), t => m.Classifier.call(t)),
            ("decode channels-last (B*N)", () => c, t => DecodeChannelsLast(m, z, t)),
            ("conv1 block", () => recon, t => Block(m, ["conv1", "pool1", "relu1"], t)),
            ("conv1 block CL", () => ChannelsLast(recon), t => Block(m, ["conv1", "pool1", "relu1"], t)),
            ("conv2 block", () => h1, t => Block(m, ["conv2", "pool2", "relu2"], t)),
            ("conv2 block CL", () => ChannelsLast(h1), t => Block(m, ["conv2", "pool2", "relu2"], t)),
            ("conv2 only", () => h1, t => Block(m, ["conv2"], t)),
            ("conv2 only CL", () => ChannelsLast(h1), t => Block(m, ["conv2"], t)),
            ("fc block", () => h2, t => Block(m, ["flatten", "fc1", "relu3", "logits"], t)),
            ("fc block CL", () => ChannelsLast(h2), t => Block(m, ["flatten", "fc1", "relu3", "logits"], t)),
            ("conv2 block bf16", () => h1.to(ScalarType.BFloat16), t => Block(low, ["conv2", "pool2", "relu2"], t)),
            ("conv2 block bf16 CL", () => ChannelsLast(h1.to(ScalarType.BFloat16)), t => Block(low, ["conv2", "pool2", "relu2"], t)),
        };
        double Cpu(Action a)
        {
            using var scope = NewDisposeScope();
            var p = Process.GetCurrentProcess();
            var t0 = p.TotalProcessorTime;
            a();
            p.Refresh();
            return (p.TotalProcessorTime - t0).TotalSeconds;
        }
        foreach (var (name, input, f) in stages)
        {
            var fwd = new List<double>();
            var both = new List<double>();
            for (var r = 0; r <= rounds; r++)
            {
                var tf = Cpu(() => { using var ng = no_grad(); f(input()); });
                var tb = Cpu(() =>
                {
                    var i = input().detach().requires_grad_(true);
                    using var eg = enable_grad();
                    autograd.grad([f(i).to(ScalarType.Float32).square().sum()], [i]);
                });
                if (r > 0) { fwd.Add(tf); both.Add(tb); }
            }
            Console.WriteLine($"breakdown {name,-32} forward {1000 * fwd.Order().ElementAt(fwd.Count / 2),7:F1} ms, forward+backward {1000 * both.Order().ElementAt(both.Count / 2),7:F1} ms (CPU, median)");
        }
    }

    static Tensor Block(CarsoModel m, string[] names, Tensor t)
    {
        var children = m.Classifier.named_children().ToDictionary(kv => kv.name, kv => kv.module);
        foreach (var name in names) t = ((nn.Module<Tensor, Tensor>)children[name]).call(t);
        return t;
    }

    static Tensor DecodeChannelsLast(CarsoModel m, Tensor z, Tensor c)
    {
        var children = m.Purifier.named_children().ToDictionary(kv => kv.name, kv => kv.module);
        var linear = (TorchSharp.Modules.Linear)children["decoder_input"];
        var h = ((nn.Module<Tensor, Tensor>)children["decoder_input_act"]).call(linear.call(cat([z, c], 1)));
        var shape = DecoderBase(m.Purifier, m.Purifier.Settings.LatentSize, linear);
        h = ChannelsLast(h.view(z.shape[0], shape[0], shape[1], shape[2]));
        return ((nn.Module<Tensor, Tensor>)children["output"]).call(((nn.Module<Tensor, Tensor>)children["decoder"]).call(h));
    }

    static long[] DecoderBase(Purifier p, int latentSize, TorchSharp.Modules.Linear linear)
    {
        var channels = p.Settings.DecoderChannels;
        var side = (long)Math.Round(Math.Sqrt(linear.weight!.shape[0] / channels));
        return [channels, side, side];
    }
}

/// <summary>SmallCnn's pass at commit 1ec876c on a SmallCnn's own layers (shared, frozen): ReLU before libtorch's max-pool
/// (NCHW kernel). The same logits as today's pass bit for bit, computed the way that commit computed them; its layers keep
/// their names, so representation capture reads the same tensors.</summary>
sealed class SmallCnnAt1ec876c : nn.Module<Tensor, Tensor>
{
    readonly nn.Module<Tensor, Tensor> conv1, conv2, fc1, logits;

    public SmallCnnAt1ec876c(SmallCnn today) : base(nameof(SmallCnn))
    {
        var layers = today.named_children().ToDictionary(kv => kv.name, kv => (nn.Module<Tensor, Tensor>)kv.module);
        (conv1, conv2, fc1, logits) = (layers["conv1"], layers["conv2"], layers["fc1"], layers["logits"]);
        RegisterComponents();
    }

    public override Tensor forward(Tensor images)
    {
        using var scope = NewDisposeScope();
        using var libtorch = NarrowConv3x3.LibtorchOnly();   // conv1's input gradient as nn.Conv2d's
        var h = nn.functional.max_pool2d(nn.functional.relu(conv1.call(images)), 2);
        h = nn.functional.max_pool2d(nn.functional.relu(conv2.call(h)), 2);
        h = nn.functional.relu(fc1.call(h.flatten(1)));
        return logits.call(h).MoveToOuterDisposeScope();
    }
}

static class Check
{
    public sealed record PrecisionResult(string Precision, double RobustAccuracyFloat32Judge, double RobustAccuracyOwnJudge,
        int PointsFooledDifferentlyFromFloat32, double Seconds, bool[] FooledFloat32Judge);

    public sealed record Result(string Attack, long Points, PrecisionResult[] Precisions);

    /// <summary>The fixed attack against CARSO in each precision; each adversarial set judged by float32 and by itself.</summary>
    public static Result Precisions(CarsoModel carso, Settings settings, long seed, Device device)
    {
        using var points = Committed.TestPoints(settings.AttackPoints);
        var threat = Threat.Linf(settings.Eps);
        var attack = new ApgdSettings(threat, NIter: settings.AttackIterations, EotIter: settings.AttackEot);
        var name = $"APGD-CE {settings.AttackIterations} iterations, EOT {settings.AttackEot}, {threat}, N = {settings.Samples}, first {settings.AttackPoints} test points";
        Console.WriteLine($"\nattack check: {name}");
        var judge32 = carso.With(carso.Settings with { Differentiable = false, Precision = CarsoPrecision.Float32 }).AsModel();
        var results = new List<PrecisionResult>();
        foreach (var precision in settings.Precisions)
        {
            var attacked = carso.With(carso.Settings with { Differentiable = true, Precision = precision });
            var judgeOwn = attacked.With(attacked.Settings with { Differentiable = false }).AsModel();
            var clock = Stopwatch.StartNew();
            var (fooled32, fooledOwn) = (new List<bool>(), new List<bool>());
            for (var (start, block) = (0L, 0L); start < settings.AttackPoints; start += settings.AttackBatch, block++)
            {
                using var scope = NewDisposeScope();
                var size = Math.Min(settings.AttackBatch, settings.AttackPoints - start);
                var (x, y) = (points.Images.narrow(0, start, size).to(device), points.Labels.narrow(0, start, size).to(device));
                using var attackGenerator = Seeds.Generator(seed, "bench-carso-grad/attack", device, block);
                var xAdv = Apgd.Attack(attacked.AsModel().Bind(attackGenerator), x, y, attack, attackGenerator);
                using var noGrad = no_grad();
                bool[] Fooled(StochasticModel judge)
                {
                    using var judgeGenerator = Seeds.Generator(seed, "bench-carso-grad/judge", device, block);
                    return judge(xAdv, judgeGenerator).argmax(1).ne(y).cpu().data<bool>().ToArray();
                }
                fooled32.AddRange(Fooled(judge32));
                fooledOwn.AddRange(Fooled(judgeOwn));
            }
            var reference = results.FirstOrDefault(r => r.Precision == nameof(CarsoPrecision.Float32))?.FooledFloat32Judge;
            var result = new PrecisionResult(precision.ToString(), fooled32.Count(f => !f) / (double)settings.AttackPoints,
                fooledOwn.Count(f => !f) / (double)settings.AttackPoints, reference is null ? 0 : fooled32.Where((f, i) => f != reference[i]).Count(),
                clock.Elapsed.TotalSeconds, fooled32.ToArray());
            Console.WriteLine($"{precision,-20} robust accuracy judged by float32 {100 * result.RobustAccuracyFloat32Judge:F2}%, by itself " +
                              $"{100 * result.RobustAccuracyOwnJudge:F2}%, {result.PointsFooledDifferentlyFromFloat32} points fooled differently from " +
                              $"float32's attack, {result.Seconds:F0} s");
            results.Add(result);
        }
        return new Result(name, settings.AttackPoints, results.ToArray());
    }
}
