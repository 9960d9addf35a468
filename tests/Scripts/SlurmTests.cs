using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Carso.Evaluation;
using Carso.Experiments;
using Carso.IO;
using Carso.Runtime;

namespace Carso.Tests.Scripts;

/// <summary>A [Fact] that needs a throw-away SLURM on this machine: root (slurmd and munged run as root here) and the
/// slurm-wlm and munge packages. Elsewhere it is skipped with one line saying why.</summary>
public sealed class SlurmFactAttribute : FactAttribute
{
    [DllImport("libc")] static extern uint geteuid();

    static readonly string[] Tools = ["munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel"];

    public SlurmFactAttribute()
    {
        var missing = Tools.Where(t => !(Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
            .Any(dir => File.Exists(Path.Combine(dir, t)))).ToArray();
        if (!OperatingSystem.IsLinux() || geteuid() != 0)
            Skip = "SLURM test skipped: it starts a single-node SLURM (munged, slurmctld, slurmd), which needs root on Linux (as .ci/run runs)";
        else if (missing.Length > 0)
            Skip = $"SLURM test skipped: {string.Join(", ", missing)} not installed (apt-get install -y slurm-wlm munge; .ci/run installs them)";
    }
}

/// <summary>
/// The scale-out for real: a throw-away single-node SLURM (slurm/local-cluster.sh: munged, slurmctld and slurmd with
/// their configs, state and sockets in a temporary folder), a 2-shard smoke evaluation submitted with the job scripts
/// of slurm/ (array and merge job, as a user submits them), and the merged record checked against an unsharded run.
/// </summary>
[Collection(ScriptCollections.Evaluation)]
public class SlurmTests
{
    static string Root => Paths.RepoRoot() ?? throw new InvalidOperationException("tests must run inside the repository");

    static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    static (int ExitCode, string Output) Run(string file, IEnumerable<string> args, IReadOnlyDictionary<string, string> env, TimeSpan timeout)
    {
        var info = new ProcessStartInfo(file) { WorkingDirectory = Root, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        foreach (var (k, v) in env) info.Environment[k] = v;
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            return (-1, $"{file} {string.Join(" ", args)}: timed out after {timeout}\n{stdout.Result}\n{stderr.Result}");
        }
        return (process.ExitCode, stdout.Result + "\n" + stderr.Result);
    }

    [SlurmFact]
    public void TwoShardsSubmittedToSlurmMergeIntoTheRecordOfTheUnshardedRun()
    {
        var cluster = Directory.CreateTempSubdirectory("carso-slurm-").FullName;
        using var work = new TempFolder();
        var env = new Dictionary<string, string>
        {
            ["SLURM_CONF"] = Path.Combine(cluster, "slurm.conf"),
            ["CARSO_SLURMCTLD_PORT"] = FreePort().ToString(),
            ["CARSO_SLURMD_PORT"] = FreePort().ToString(),
            ["OMP_NUM_THREADS"] = "1", // the shards' tasks get one CPU each, so one thread: the unsharded run matches it
            ["WAIT"] = "1",
        };
        try
        {
            var start = Run("bash", ["slurm/local-cluster.sh", "start", cluster, Environment.ProcessorCount.ToString()], env, TimeSpan.FromMinutes(1));
            Assert.True(start.ExitCode == 0, $"the local SLURM did not start:\n{start.Output}\n{Logs(cluster)}");

            var sharded = work.File("sharded");
            var submit = Run("bash", ["slurm/submit.sh", "eval-carso", "2", "--smoke", "--out", sharded], env, TimeSpan.FromMinutes(8));
            Assert.True(submit.ExitCode == 0, $"slurm/submit.sh failed:\n{submit.Output}\n{ShardLogs(submit.Output)}");
            Assert.Contains("merge job", submit.Output);
            Assert.True(File.Exists(Path.Combine(sharded, "shard-0-of-2", Shards.RecordFile)) && File.Exists(Path.Combine(sharded, "shard-1-of-2", Shards.RecordFile)));
            Assert.Contains("shard 0/2 of eval-carso", ShardLogs(submit.Output));
            Assert.Contains("1 thread(s)", ShardLogs(submit.Output));

            // The unsharded run, with the same build, seed, settings and thread count.
            var whole = work.File("whole");
            var direct = Run("dotnet", [Path.Combine("artifacts", "slurm", "eval-carso", "eval-carso.dll"), "--smoke", "--out", whole], env, TimeSpan.FromMinutes(5));
            Assert.True(direct.ExitCode == 0, $"the unsharded run failed:\n{direct.Output}");

            var (a, b) = (RunRecord.Load(Path.Combine(whole, "run.json")), RunRecord.Load(Path.Combine(sharded, "run.json")));
            foreach (var metric in new[] { "points", "rows", "clean", "worstCase", "diagnostics", "budget" })
                Assert.True(JsonNode.DeepEquals(a.Metrics![metric], b.Metrics![metric]), $"metrics.{metric} differ:\n{a.Metrics[metric]}\n{b.Metrics[metric]}");
            Assert.Equal(Timeless(a.Metrics!["groups"]!), Timeless(b.Metrics!["groups"]!));
            Assert.Equal(File.ReadAllText(Path.Combine(whole, "table.md")), File.ReadAllText(Path.Combine(sharded, "table.md")));
            static string[] FigureData(RunRecord r) => Reports.For(r)!(r).Select(f => f.Name + f.Figure.Data.ToJsonString()).ToArray();
            Assert.Equal(FigureData(a), FigureData(b));
        }
        finally
        {
            Run("bash", ["slurm/local-cluster.sh", "stop", cluster], env, TimeSpan.FromMinutes(1));
            foreach (var pidFile in Directory.GetFiles(cluster, "*.pid")) // whatever the script could not stop, by its pid
                if (int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid))
                    try { using var p = Process.GetProcessById(pid); p.Kill(); p.WaitForExit(5000); } catch (ArgumentException) { } catch (InvalidOperationException) { }
            try { Directory.Delete(cluster, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>The families without their seconds (timings differ from run to run).</summary>
    static string Timeless(JsonNode groups)
    {
        var copy = groups.DeepClone().AsArray();
        foreach (var g in copy.OfType<JsonObject>())
        {
            g.Remove("seconds");
            foreach (var s in g["stages"]!.AsArray().OfType<JsonObject>()) s.Remove("seconds");
        }
        return copy.ToJsonString();
    }

    /// <summary>The logs of the jobs submit.sh reported ("shards: job N ...; merge: job M").</summary>
    static string ShardLogs(string submitOutput)
    {
        var logs = Path.Combine(Root, "artifacts", "slurm", "logs");
        var ids = System.Text.RegularExpressions.Regex.Matches(submitOutput, @"job (\d+)").Select(m => m.Groups[1].Value).ToArray();
        return !Directory.Exists(logs) ? "" : string.Join("\n", Directory.GetFiles(logs)
            .Where(f => ids.Any(id => Path.GetFileName(f).Contains($"-{id}_") || Path.GetFileName(f).EndsWith($"-{id}.out")))
            .Order().Select(f => $"---- {f}\n{File.ReadAllText(f)}"));
    }

    static string Logs(string cluster) => string.Join("\n", Directory.Exists(Path.Combine(cluster, "logs"))
        ? Directory.GetFiles(Path.Combine(cluster, "logs")).Select(f => $"---- {f}\n{File.ReadAllText(f)}") : []);
}
