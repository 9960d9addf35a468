#!/usr/bin/env -S dotnet run
#:project ../lib/Carso.csproj
// The robust accuracy of one fixed end-to-end attack on CARSO (committed classifier and purifier) in each
// CarsoPrecision, on the same points with the same randomness (random starts and latents from the same per-block
// generators): does opt-in bfloat16 change attack results? Each precision attacks its own defence; every adversarial
// set is judged by the float32 defence and by the attacked one (the same judge randomness). Also the wall time.
//   OMP_NUM_THREADS=1 taskset -c 1 dotnet run scripts/check-carso-precision.cs -- --out /tmp/check-carso-precision
using System.Diagnostics;

var settings = new Settings();
var run = ScriptRun.Start(settings, args);
if (run.Smoke) settings = settings with { Points = 4, Batch = 4, Iterations = 2, EotIter = 1 };
var seed = run.SeedOverride ?? settings.Seed;
var carso = Committed.Carso(run.Device, new CarsoSettings(Samples: settings.Samples, Differentiable: true));
using var points = Committed.TestPoints(settings.Points);
var threat = Threat.Linf(settings.Eps);
var attack = new ApgdSettings(threat, NIter: settings.Iterations, EotIter: settings.EotIter);
Console.WriteLine($"APGD-CE {settings.Iterations} iterations, EOT {settings.EotIter}, {threat}, N = {settings.Samples}, first {settings.Points} test points");

var judge32 = carso.With(new CarsoSettings(Samples: settings.Samples)).AsModel();
var results = new List<object>();
var fooledBy = new Dictionary<CarsoPrecision, bool[]>();
foreach (var precision in settings.Precisions)
{
    var attacked = carso.With(carso.Settings with { Precision = precision });
    var judgeOwn = attacked.With(attacked.Settings with { Differentiable = false }).AsModel();
    var clock = Stopwatch.StartNew();
    var (fooled32, fooledOwn) = (new List<bool>(), new List<bool>());
    for (var (start, block) = (0L, 0L); start < settings.Points; start += settings.Batch, block++)
    {
        using var scope = NewDisposeScope();
        var size = Math.Min(settings.Batch, settings.Points - start);
        var (x, y) = (points.Images.narrow(0, start, size).to(run.Device), points.Labels.narrow(0, start, size).to(run.Device));
        using var attackGenerator = Seeds.Generator(seed, "check-carso-precision/attack", run.Device, block);
        var xAdv = Apgd.Attack(attacked.AsModel().Bind(attackGenerator), x, y, attack, attackGenerator);
        using var noGrad = no_grad();
        bool[] Fooled(StochasticModel judge)
        {
            using var judgeGenerator = Seeds.Generator(seed, "check-carso-precision/judge", run.Device, block);
            return judge(xAdv, judgeGenerator).argmax(1).ne(y).cpu().data<bool>().ToArray();
        }
        fooled32.AddRange(Fooled(judge32));
        fooledOwn.AddRange(Fooled(judgeOwn));
    }
    var seconds = clock.Elapsed.TotalSeconds;
    fooledBy[precision] = fooled32.ToArray();
    var robust32 = fooled32.Count(f => !f) / (double)settings.Points;
    var robustOwn = fooledOwn.Count(f => !f) / (double)settings.Points;
    var disagree = fooledBy.TryGetValue(CarsoPrecision.Float32, out var reference) ? fooled32.Where((f, i) => f != reference[i]).Count() : 0;
    Console.WriteLine($"{precision,-20} robust accuracy judged by float32 {100 * robust32:F2}%, by itself {100 * robustOwn:F2}%, " +
                      $"{disagree} points fooled differently from float32's attack, {seconds:F0} s");
    results.Add(new { precision = precision.ToString(), robustAccuracyFloat32Judge = robust32, robustAccuracyOwnJudge = robustOwn,
        pointsFooledDifferentlyFromFloat32 = disagree, seconds, fooledFloat32Judge = fooled32 });
}
run.Finish(settings, seed, new { threads = get_num_threads(), attack = $"APGD-CE {settings.Iterations} iterations, EOT {settings.EotIter}, {threat}", results });

record Settings
{
    public long Points { get; init; } = 200;
    public long Batch { get; init; } = 100;
    public int Samples { get; init; } = 8;
    public double Eps { get; init; } = 0.1;
    public int Iterations { get; init; } = 20;
    public int EotIter { get; init; } = 4;
    public CarsoPrecision[] Precisions { get; init; } = [CarsoPrecision.Float32, CarsoPrecision.BFloat16Classifier, CarsoPrecision.BFloat16];
    public long Seed { get; init; } = 0;
}
