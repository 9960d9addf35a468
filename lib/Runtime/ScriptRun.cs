using Carso.IO;
using System.Diagnostics;
using Carso.Reporting;
using static TorchSharp.torch;

namespace Carso.Runtime;

/// <summary>
/// What every experiment script shares: its command line (--smoke, --out DIR, --seed N, --device D),
/// where it writes (results/&lt;script&gt;/, or a fresh temporary folder in smoke mode so committed reference
/// results are never overwritten), the device, the clock, and the run record written at the end.
/// </summary>
public sealed record ScriptRun(
    string Script,
    bool Smoke,
    string OutputDir,
    Device Device,
    long? SeedOverride,
    IReadOnlyList<string> ExtraArgs,
    DateTimeOffset StartedUtc,
    Stopwatch Clock)
{
    public const string Usage =
        "options: --smoke (tiny data, a few steps, writes to a temporary folder) | --out DIR | --seed N | " +
        "--device auto|cpu|cuda[:N]";

    /// <summary>Figures under one root share one copy of plotly.js: the parent of the output folder.</summary>
    public string PlotlyRoot => Path.GetDirectoryName(Path.GetFullPath(OutputDir))!;

    /// <summary>A path inside the output folder.</summary>
    public string Output(string file) => Path.Combine(OutputDir, file);

    /// <summary>As <see cref="Start(string, string[], bool)"/>, for a script that states its purpose and settings.</summary>
    public static ScriptRun Start(string script, string purpose, object settings, string[] args, bool allowExtraArgs = false) =>
        Start(script, args, allowExtraArgs);

    /// <summary>Parses the common options (others are kept in ExtraArgs when allowed), creates the output folder,
    /// picks the device and prints the header line.</summary>
    public static ScriptRun Start(string script, string[] args, bool allowExtraArgs = false)
    {
        bool smoke = false;
        string? outDir = null, device = null;
        long? seed = null;
        var extra = new List<string>();
        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{script}: {args[i]} needs a value. {Usage}");
            switch (args[i])
            {
                case "--smoke": smoke = true; break;
                case "--out": outDir = Next(); break;
                case "--device": device = Next(); break;
                case "--seed":
                    var text = Next();
                    seed = long.TryParse(text, out var s) ? s : throw new ArgumentException($"{script}: --seed must be an integer, got '{text}'");
                    break;
                case "--help" or "-h": Console.WriteLine($"{script}: {Usage}"); Environment.Exit(0); break;
                default:
                    if (!allowExtraArgs) throw new ArgumentException($"{script}: unknown option '{args[i]}'. {Usage}");
                    extra.Add(args[i]);
                    break;
            }
        }
        NativeMemory.Tune();
        outDir ??= smoke
            ? Path.Combine(Directory.CreateTempSubdirectory("carso-smoke-").FullName, script)
            : Path.Combine(Paths.ResultsRoot(), script);
        Directory.CreateDirectory(outDir);
        var picked = Devices.Pick(device);
        LibTorchSettings.DisableNnpack(); // libtorch is loaded now
        var run = new ScriptRun(script, smoke, Path.GetFullPath(outDir), picked, seed, extra, DateTimeOffset.UtcNow, Stopwatch.StartNew());
        Console.WriteLine($"{script}{(smoke ? " (smoke mode)" : "")} | {Devices.Describe(picked)}");
        Console.WriteLine($"output: {run.OutputDir}");
        return run;
    }

    /// <summary>Saves a figure in the output folder (HTML, and PNG where Chromium exists) and says where.</summary>
    public void SaveFigure(Figure figure, string name)
    {
        var (html, png, skipped) = Figures.Save(figure, Output(name + ".html"), PlotlyRoot);
        Console.WriteLine($"figure: {html}");
        Console.WriteLine(png is not null ? $"figure: {png}" : skipped);
    }

    /// <summary>Writes the run record (atomically) as run.json in the output folder and returns it.</summary>
    public RunRecord Finish(object settings, long seed, object metrics)
    {
        var record = new RunRecord(
            Script, Smoke, seed, RunRecord.ToJson(settings), Versions.All(),
            Device.ToString(), get_num_threads(), StartedUtc, Clock.Elapsed.TotalSeconds, RunRecord.ToJson(metrics));
        var path = Output("run.json");
        record.Save(path);
        Console.WriteLine($"run record: {path} ({record.WallSeconds:F1} s)");
        return record;
    }
}
