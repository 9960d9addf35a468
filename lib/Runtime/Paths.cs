namespace Carso.Runtime;

/// <summary>Where the repository, its data/ and results/ folders are, wherever a script or test runs from.</summary>
public static class Paths
{
    /// <summary>The marker of the repository root.</summary>
    public const string RootMarker = "Carso.slnx";

    /// <summary>
    /// The repository root: the first folder holding Carso.slnx above the running script's file
    /// (file-based programs record it), the current directory, or the program's own folder.
    /// Null when none is inside the repository.
    /// </summary>
    public static string? RepoRoot()
    {
        var starts = new[]
        {
            AppContext.GetData("EntryPointFileDirectoryPath") as string,
            Directory.GetCurrentDirectory(),
            AppContext.BaseDirectory,
        };
        return starts.OfType<string>().Select(FindUp).FirstOrDefault(r => r is not null);
    }

    static string? FindUp(string start)
    {
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, RootMarker))) return dir.FullName;
        return null;
    }

    /// <summary>The repository's data/ folder (or ./data outside the repository).</summary>
    public static string DataRoot() => Path.Combine(RepoRoot() ?? Directory.GetCurrentDirectory(), "data");

    /// <summary>The repository's results/ folder (or ./results outside the repository).</summary>
    public static string ResultsRoot() => Path.Combine(RepoRoot() ?? Directory.GetCurrentDirectory(), "results");
}
