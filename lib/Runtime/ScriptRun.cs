using System.Runtime.CompilerServices;
using Carso.IO;
using System.Diagnostics;
using Carso.Reporting;
using static TorchSharp.torch;

namespace Carso.Runtime;

/// <summary>
/// What every experiment script shares: its command line (--smoke, --out DIR, --seed N, --device D, --verbose,
/// --help), where it writes (results/&lt;script&gt;/, or a fresh temporary folder in smoke mode so committed reference
/// results are never overwritten), the device, the clock, progress display, and the run record written at the end.
/// Failures end cleanly: a bad command line is one line on stderr and exit code 2; a bad file, folder or setting
/// (<see cref="ScriptErrors.IsUserError"/>) one line and exit code 1; anything else is a bug: its full stack trace
/// and exit code 70.
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
        "--device auto|cpu|cuda[:N] | --verbose | --help";

    /// <summary>Progress bars on a terminal, plain periodic lines otherwise (<see cref="Runtime.Progress"/>).</summary>
    public Progress Progress { get; init; } = Progress.None;

    /// <summary>--verbose: stack traces for user errors too.</summary>
    public bool Verbose { get; init; }

    /// <summary>--shard K/N: this run evaluates shard K of N only (scripts started with shardable: true).</summary>
    public Shard? Shard { get; init; }

    /// <summary>--merge: this run merges the output folder's shard records instead of evaluating.</summary>
    public bool Merge { get; init; }

    /// <summary>Prints a line to standard output without breaking live progress bars; also a log callback
    /// (<c>log: run.Log</c>).</summary>
    public void Log(string line) => Progress.Log(line);

    /// <summary>Figures under one root share one copy of plotly.js: the parent of the output folder.</summary>
    public string PlotlyRoot => Path.GetDirectoryName(Path.GetFullPath(OutputDir))!;

    /// <summary>A path inside the output folder.</summary>
    public string Output(string file) => Path.Combine(OutputDir, file);

    /// <summary>Parses the common options (others are kept in ExtraArgs when allowed), creates the output folder,
    /// picks the device and prints the header line. --help prints the purpose, the options and the settings with
    /// their defaults, then exits 0. From here on, an exception that ends the script is reported as one line
    /// (see the type's summary).</summary>
    /// <param name="settings">The settings record with its values, listed by --help.</param>
    /// <param name="args">The command line.</param>
    /// <param name="allowExtraArgs">Keep options other than the common ones in ExtraArgs (the script parses them).</param>
    /// <param name="shardable">The script evaluates and takes --shard K/N and --merge (Carso.Experiments.Sharding).</param>
    /// <param name="scriptFile">Filled in by the compiler: the script's source file. Its name (without .cs) names the run
    /// and its default output folder; its header comment is the purpose --help prints (one text, never typed twice).</param>
    public static ScriptRun Start(object settings, string[] args, bool allowExtraArgs = false, bool shardable = false,
        [CallerFilePath] string scriptFile = "") =>
        StartRun(Path.GetFileNameWithoutExtension(scriptFile), Purpose(scriptFile), settings, args, allowExtraArgs, shardable);

    /// <summary>A script's purpose: its header comment (the // lines after the #! and #: lines, up to the usage lines
    /// "//   dotnet run ..."), as one paragraph; null when the source is not there (a moved build).</summary>
    public static string? Purpose(string scriptFile)
    {
        if (!File.Exists(scriptFile)) return null;
        var lines = File.ReadLines(scriptFile).SkipWhile(l => l.StartsWith("#", StringComparison.Ordinal))
            .TakeWhile(l => l.StartsWith("//", StringComparison.Ordinal) && !l.TrimStart('/', ' ').StartsWith("dotnet run", StringComparison.Ordinal))
            .Select(l => l.TrimStart('/').Trim()).ToArray();
        return lines.Length == 0 ? null : string.Join(" ", lines);
    }

    /// <summary>The form without a purpose and settings (--help then lists the options only).</summary>
    public static ScriptRun Start(string script, string[] args, bool allowExtraArgs = false, bool shardable = false) =>
        StartRun(script, null, null, args, allowExtraArgs, shardable);

    static ScriptRun StartRun(string script, string? purpose, object? settings, string[] args, bool allowExtraArgs, bool shardable)
    {
        ReportFailuresCleanly(script, verbose: args.Contains("--verbose"));
        var line = CommandLine.Parse(args, allowExtraArgs, shardable);
        if (line.Help)
        {
            Console.Write(CommandLine.HelpText(script, purpose, settings, shardable));
            Environment.Exit(0);
        }
        if (line.Smoke && (line.Shard is not null || line.Merge) && line.OutDir is null)
            throw new UsageException($"{(line.Merge ? "--merge" : "--shard")} with --smoke needs --out DIR (a smoke run otherwise writes to a new " +
                                     "temporary folder, where the other shards and the merge cannot find it)");
        NativeMemory.Tune();
        var outDir = line.OutDir ?? (line.Smoke
            ? Path.Combine(Directory.CreateTempSubdirectory("carso-smoke-").FullName, script)
            : Path.Combine(Paths.ResultsRoot(), script));
        Device picked;
        try { picked = Devices.Pick(line.Device); }
        catch (UsageException e) when (line.Device is not null) { throw new UsageException($"--device: {e.Message}"); }
        Directory.CreateDirectory(outDir);
        LibTorchSettings.DisableNnpack(); // libtorch is loaded now
        var (_, threadsReason) = picked.type == TorchSharp.DeviceType.CPU ? CpuThreads.Apply() : (0, null);
        var run = new ScriptRun(script, line.Smoke, Path.GetFullPath(outDir), picked, line.Seed, line.ExtraArgs,
            DateTimeOffset.UtcNow, Stopwatch.StartNew())
        {
            Progress = Progress.ForConsole(),
            Verbose = line.Verbose,
            Shard = line.Shard,
            Merge = line.Merge,
        };
        Console.WriteLine($"{script}{(line.Smoke ? " (smoke mode)" : "")}{(line.Shard is { } s ? $" | shard {s}" : line.Merge ? " | merge" : "")} | {Devices.Describe(picked)}");
        if (threadsReason is not null) Console.WriteLine(threadsReason);
        Console.WriteLine($"output: {run.OutputDir}");
        return run;
    }

    static int handlerInstalled;

    /// <summary>
    /// Reports an exception that reaches the top of the script as <see cref="ScriptErrors.Classify"/> says, and
    /// exits with its code. The UnhandledException event runs before the runtime prints its own crash report, and
    /// exiting from it suppresses that report and the abort (exit code 134): measured for a top-level-statement
    /// program, with the exception thrown on the main thread, after an await, and on another thread.
    /// </summary>
    static void ReportFailuresCleanly(string script, bool verbose)
    {
        if (Interlocked.Exchange(ref handlerInstalled, 1) == 1) return;
        AppDomain.CurrentDomain.UnhandledException += (_, e) =>
        {
            var exception = e.ExceptionObject as Exception ?? new Exception(e.ExceptionObject?.ToString());
            var failure = ScriptErrors.Classify(script, exception, verbose);
            try
            {
                Progress.CloseLiveDisplays(); // restore the cursor and Console.Out before writing
                Console.Out.Flush();
                Console.Error.WriteLine(failure.Line);
                if (failure.StackTrace) Console.Error.WriteLine(exception.ToString());
                Console.Error.Flush();
            }
            finally { Environment.Exit(failure.ExitCode); }
        };
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
