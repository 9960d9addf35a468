using System.Diagnostics;
using static TorchSharp.torch;

namespace Carso.Runtime;

/// <summary>
/// How many libtorch CPU threads a script runs when OMP_NUM_THREADS does not say: one per core that other processes
/// leave idle, at least 1. libtorch's OpenMP threads spin while they wait for each other, so a thread on a core that
/// another job keeps busy slows every operation of the script (measured here: a SmallCnn forward pass of 100 images took
/// 249 ms with 2 threads under load, 93 ms with 1). The load is read from /proc/stat over a short window at the start,
/// less this process's own CPU time; Environment.ProcessorCount already honours a CPU affinity (taskset).
/// </summary>
public static class CpuThreads
{
    public const string EnvironmentVariable = "OMP_NUM_THREADS";

    /// <summary>Threads for <paramref name="cores"/> usable cores when other processes keep <paramref name="busyCores"/>
    /// of them busy: the idle ones, rounded, between 1 and cores.</summary>
    public static int Choose(int cores, double busyCores) =>
        Math.Clamp((int)Math.Round(cores - Math.Max(0, busyCores), MidpointRounding.AwayFromZero), 1, Math.Max(1, cores));

    /// <summary>Cores' worth of CPU time spent between two readings of /proc/stat's first line ("cpu user nice system idle
    /// iowait irq softirq steal ..."): the non-idle jiffies over the elapsed jiffies, times the machine's cores.</summary>
    public static double BusyCores(string before, string after, int machineCores)
    {
        static long[] Fields(string line) =>
            line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Take(8).Select(long.Parse).ToArray();
        var (a, b) = (Fields(before), Fields(after));
        var total = b.Sum() - a.Sum();
        var idle = (b[3] + b[4]) - (a[3] + a[4]);
        return total <= 0 ? 0 : machineCores * (double)(total - idle) / total;
    }

    /// <summary>Sets libtorch's thread count unless OMP_NUM_THREADS is set; returns the count and, when chosen here, why.</summary>
    public static (int Threads, string? Reason) Apply(TimeSpan? window = null)
    {
        if (!string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(EnvironmentVariable)) || !File.Exists("/proc/stat"))
            return (get_num_threads(), null);
        var cores = Math.Min(Environment.ProcessorCount, get_num_threads());
        using var self = Process.GetCurrentProcess();
        var ownBefore = self.TotalProcessorTime;
        var before = File.ReadLines("/proc/stat").First();
        var clock = Stopwatch.StartNew();
        Thread.Sleep(window ?? TimeSpan.FromMilliseconds(300));
        var after = File.ReadLines("/proc/stat").First();
        self.Refresh();
        var own = (self.TotalProcessorTime - ownBefore).TotalSeconds / clock.Elapsed.TotalSeconds;
        var others = Math.Max(0, BusyCores(before, after, Environment.ProcessorCount) - own);
        var threads = Choose(cores, others);
        set_num_threads(threads);
        return (threads, $"{threads} CPU thread{(threads == 1 ? "" : "s")}: other processes kept {others:F1} of {cores} cores busy " +
                         $"(set {EnvironmentVariable} to choose)");
    }
}
