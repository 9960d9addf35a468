using System.Text.Json;
using System.Text.Json.Nodes;
using Carso.IO;

namespace Carso.Runtime;

/// <summary>The options every script shares, parsed (pure: bad input is a <see cref="UsageException"/>).</summary>
public sealed record CommandLine(
    bool Smoke, string? OutDir, long? Seed, string? Device, bool Verbose, bool Help, IReadOnlyList<string> ExtraArgs)
{
    /// <summary>--shard K/N (evaluating scripts only): evaluate shard K of N and write its shard record.</summary>
    public Shard? Shard { get; init; }

    /// <summary>--merge (evaluating scripts only): merge the shard records of the output folder into the run's record.</summary>
    public bool Merge { get; init; }

    /// <summary>The options of evaluating scripts, as --help lists them.</summary>
    public static readonly IReadOnlyList<(string Option, string Meaning)> ShardOptions =
    [
        ("--shard K/N", "evaluate only shard K of N (K from 0: whole blocks of points) into <out>/shard-K-of-N/; resumable"),
        ("--merge", "merge the N shard records of the output folder into the record the unsharded run writes"),
    ];

    /// <summary>The common options and what they do, as --help lists them.</summary>
    public static readonly IReadOnlyList<(string Option, string Meaning)> Options =
    [
        ("--smoke", "tiny data, a few steps, seconds; writes to a temporary folder, never over results/"),
        ("--out DIR", "output folder (default: results/<script>/)"),
        ("--seed N", "overrides the settings' seed (an integer)"),
        ("--device D", $"auto|cpu|cuda[:N] (default: ${Devices.EnvironmentVariable}, else auto: CUDA when available)"),
        ("--verbose", "print the stack trace of errors in files and settings too"),
        ("--help, -h", "this help"),
    ];

    /// <summary>"--smoke | --out DIR | ...": the options in one line, for error messages.</summary>
    public static string OptionsLine => "--smoke | --out DIR | --seed N | --device auto|cpu|cuda[:N] | --verbose | --help";

    /// <summary>Parses the common options (with shardable, also --shard K/N and --merge: the scripts that evaluate); anything
    /// else goes to ExtraArgs when allowed, else is an error.</summary>
    public static CommandLine Parse(IReadOnlyList<string> args, bool allowExtraArgs = false, bool shardable = false)
    {
        var line = new CommandLine(false, null, null, null, false, false, []);
        var extra = new List<string>();
        for (var i = 0; i < args.Count; i++)
        {
            var option = args[i];
            string Value() => i + 1 < args.Count && !IsCommonOption(args[i + 1])
                ? args[++i]
                : throw new UsageException($"{option} needs a value: {option} {ValueOf(option)}");
            line = option switch
            {
                "--smoke" => line with { Smoke = true },
                "--verbose" => line with { Verbose = true },
                "--help" or "-h" => line with { Help = true },
                "--out" => line with { OutDir = Value() },
                "--device" => line with { Device = Value() },
                "--seed" => line with { Seed = ParseSeed(Value()) },
                "--shard" when shardable => line with { Shard = Runtime.Shard.Parse(Value()) },
                "--merge" when shardable => line with { Merge = true },
                _ when allowExtraArgs => Keep(line, extra, option),
                _ => throw new UsageException($"unknown option '{option}'; the options are {OptionsLine}"),
            };
        }
        if (line.Shard is not null && line.Merge)
            throw new UsageException("--shard and --merge go to different runs: run each shard with --shard K/N, then one --merge");
        return line with { ExtraArgs = extra };
    }

    static string ValueOf(string option) => option switch
    {
        "--out" => "DIR",
        "--seed" => "N (an integer)",
        "--shard" => "K/N (shard K of N, from 0)",
        _ => "auto|cpu|cuda[:N]",
    };

    static CommandLine Keep(CommandLine line, List<string> extra, string arg) { extra.Add(arg); return line; }

    static bool IsCommonOption(string arg) => arg is "--smoke" or "--verbose" or "--help" or "-h" or "--out" or "--device" or "--seed"
        or "--shard" or "--merge";

    static long ParseSeed(string text) => long.TryParse(text, out var seed)
        ? seed
        : throw new UsageException($"--seed needs an integer, got '{text}'");

    /// <summary>The --help text: purpose, usage, options, and the settings with their defaults.</summary>
    public static string HelpText(string script, string? purpose, object? settings, bool shardable = false)
    {
        var lines = new List<string>();
        if (!string.IsNullOrWhiteSpace(purpose)) lines.AddRange([.. Wrap($"{script}: {purpose.Trim()}", 100), ""]);
        lines.Add($"usage: dotnet run scripts/{script}.cs -- [OPTIONS]   (or ./scripts/{script}.cs -- [OPTIONS])");
        lines.Add("       the -- keeps dotnet run from taking options itself: without it, --help and --device go to dotnet run");
        lines.Add("");
        lines.Add("options:");
        lines.AddRange(Options.Concat(shardable ? ShardOptions : []).Select(o => $"  {o.Option,-12} {o.Meaning.Replace("<script>", script)}"));
        if (settings is not null)
        {
            lines.Add("");
            lines.Add($"settings (their values are at the top of scripts/{script}.cs: edit and re-run), with their defaults:");
            lines.AddRange(SettingLines(settings).Select(l => "  " + l));
        }
        lines.Add("");
        lines.AddRange(Wrap("exit codes: 0 done; 1 a bad file, folder or setting (one line says which and how to fix " +
                            "it); 2 a bad command line; anything else a bug (with its stack trace).", 100));
        return string.Join(Environment.NewLine, lines) + Environment.NewLine;
    }

    // Property names as the record spells them (Settings.X), values as the run record writes them.
    static readonly JsonSerializerOptions SettingsJson = new(RunRecord.Json) { PropertyNamingPolicy = null, WriteIndented = false };

    /// <summary>"Name = value" per setting, nested records flattened to dotted names ("Training.Epochs = 12");
    /// values are JSON (strings quoted, arrays inline).</summary>
    public static IEnumerable<string> SettingLines(object settings) =>
        Flatten("", JsonSerializer.SerializeToNode(settings, settings.GetType(), SettingsJson));

    static IEnumerable<string> Flatten(string prefix, JsonNode? node) => node switch
    {
        JsonObject o when o.Count > 0 => o.SelectMany(p => Flatten(prefix.Length == 0 ? p.Key : $"{prefix}.{p.Key}", p.Value)),
        _ => [$"{prefix} = {node?.ToJsonString(SettingsJson) ?? "null"}"],
    };

    /// <summary>Greedy word wrap at width characters.</summary>
    public static IEnumerable<string> Wrap(string text, int width)
    {
        var line = "";
        foreach (var word in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.Length > 0 && line.Length + 1 + word.Length > width) { yield return line; line = ""; }
            line = line.Length == 0 ? word : $"{line} {word}";
        }
        if (line.Length > 0) yield return line;
    }
}
