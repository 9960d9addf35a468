using System.Reflection;
using System.Runtime.InteropServices;

namespace Carso.Runtime;

/// <summary>Versions recorded with every run.</summary>
public static class Versions
{
    public static string TorchSharp => InformationalVersion(typeof(TorchSharp.torch).Assembly);
    public static string Carso => InformationalVersion(typeof(Versions).Assembly);

    static string InformationalVersion(Assembly assembly) =>
        (assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
         ?? assembly.GetName().Version?.ToString() ?? "unknown").Split('+')[0];

    /// <summary>Name to version of everything a result depends on.</summary>
    public static IReadOnlyDictionary<string, string> All() => new SortedDictionary<string, string>
    {
        ["carso"] = Carso,
        ["carsoCommit"] = GitCommit() ?? "unknown",
        ["torchSharp"] = TorchSharp,
        ["dotnet"] = RuntimeInformation.FrameworkDescription,
        ["os"] = RuntimeInformation.OSDescription,
        ["processor"] = RuntimeInformation.ProcessArchitecture.ToString(),
    };

    /// <summary>
    /// "sha256:..." over the code a script runs: every .cs, .csproj and .props file under lib/ (not bin/, obj/), the
    /// repository's Directory.Build.props and scripts/&lt;script&gt;.cs — names and contents, in ordinal path order. Null
    /// outside a clone. Unlike the commit, it ignores commits of data (results, saved state) and sees uncommitted edits.
    /// </summary>
    public static string? CodeHash(string script)
    {
        var root = Paths.RepoRoot();
        if (root is null) return null;
        var lib = Path.Combine(root, "lib");
        var files = Directory.EnumerateFiles(lib, "*", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".cs") || f.EndsWith(".csproj") || f.EndsWith(".props"))
            .Where(f => !Path.GetRelativePath(lib, f).Split(Path.DirectorySeparatorChar).Any(d => d is "bin" or "obj"))
            .Append(Path.Combine(root, "Directory.Build.props"))
            .Append(Path.Combine(root, "scripts", script + ".cs"))
            .Where(File.Exists)
            .Select(f => Path.GetRelativePath(root, f).Replace('\\', '/'))
            .Distinct().Order(StringComparer.Ordinal);
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var file in files)
        {
            hash.AppendData(System.Text.Encoding.UTF8.GetBytes(file + "\n"));
            hash.AppendData(File.ReadAllBytes(Path.Combine(root, file)));
        }
        return "sha256:" + Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>The repository's HEAD commit, read from .git without running git (null outside a clone).</summary>
    public static string? GitCommit()
    {
        try
        {
            var root = Paths.RepoRoot();
            if (root is null) return null;
            var git = Path.Combine(root, ".git");
            var head = File.ReadAllText(Path.Combine(git, "HEAD")).Trim();
            if (!head.StartsWith("ref: ")) return head;
            var reference = head[5..];
            var loose = Path.Combine(git, reference);
            if (File.Exists(loose)) return File.ReadAllText(loose).Trim();
            var packed = Path.Combine(git, "packed-refs");
            return File.Exists(packed)
                ? File.ReadLines(packed).Where(l => l.EndsWith(" " + reference)).Select(l => l.Split(' ')[0]).FirstOrDefault()
                : null;
        }
        catch (IOException) { return null; }
    }
}
