namespace Carso.Runtime;

/// <summary>Memory figures of this process, read from /proc (Linux); null elsewhere.</summary>
public static class ProcessStats
{
    /// <summary>Peak resident set size (VmHWM) in MiB.</summary>
    public static double? PeakRssMiB() => ReadKiB("VmHWM") / 1024.0;

    /// <summary>Current resident set size (VmRSS) in MiB.</summary>
    public static double? RssMiB() => ReadKiB("VmRSS") / 1024.0;

    static long? ReadKiB(string field)
    {
        const string path = "/proc/self/status";
        if (!File.Exists(path)) return null;
        var line = File.ReadLines(path).FirstOrDefault(l => l.StartsWith(field + ":"));
        return line is null ? null : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
    }
}
