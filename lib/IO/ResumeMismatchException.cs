namespace Carso.IO;

/// <summary>
/// Saved state that a resumable run would continue from, made by a run with other settings (continuing it would
/// mix two experiments). The message names the file or folder, shows both settings and says how to go on
/// (another output folder, or delete the old state). A user error to the scripts, not a bug.
/// </summary>
public sealed class ResumeMismatchException(string path, string message) : InvalidOperationException(message)
{
    /// <summary>The state file or checkpoint folder that belongs to the other run.</summary>
    public string Path { get; } = path;
}
