namespace Carso.IO;

/// <summary>
/// A state-dict file that does not fit a model: tensors the model has and the file lacks (missing), tensors
/// the file has and the model lacks (unexpected), or tensors whose shape or dtype differ (mismatched).
/// Thrown before anything is copied, so the model is left as it was. The message names the file and every
/// offending tensor; the four lists are also kept as properties for code that wants to react to them.
/// </summary>
public sealed class CheckpointMismatchException : Exception
{
    /// <summary>The state-dict file that was being imported.</summary>
    public string Path { get; }

    /// <summary>Names the model has and the file lacks (empty when they were allowed, strict = false).</summary>
    public IReadOnlyList<string> Missing { get; }

    /// <summary>Names the file has and the model lacks (empty when they were allowed, strict = false).</summary>
    public IReadOnlyList<string> Unexpected { get; }

    /// <summary>One entry per tensor present on both sides with another shape, e.g.
    /// "fc.weight file [10, 64] vs model [10, 128]".</summary>
    public IReadOnlyList<string> ShapeMismatches { get; }

    /// <summary>One entry per tensor of the same shape but another element type, e.g.
    /// "fc.weight file Float64 vs model Float32".</summary>
    public IReadOnlyList<string> DtypeMismatches { get; }

    public CheckpointMismatchException(string path, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected,
        IReadOnlyList<string> shapeMismatches, IReadOnlyList<string> dtypeMismatches)
        : base(Describe(path, missing, unexpected, shapeMismatches, dtypeMismatches))
    {
        Path = path;
        Missing = missing;
        Unexpected = unexpected;
        ShapeMismatches = shapeMismatches;
        DtypeMismatches = dtypeMismatches;
    }

    static string Describe(string path, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected,
        IReadOnlyList<string> shapeMismatches, IReadOnlyList<string> dtypeMismatches)
    {
        var parts = new List<string>();
        if (missing.Count > 0) parts.Add("missing: " + string.Join(", ", missing));
        if (unexpected.Count > 0) parts.Add("unexpected: " + string.Join(", ", unexpected));
        if (shapeMismatches.Count > 0) parts.Add("shape mismatch: " + string.Join(", ", shapeMismatches));
        if (dtypeMismatches.Count > 0) parts.Add("dtype mismatch: " + string.Join(", ", dtypeMismatches));
        return $"{path} does not fit the model ({string.Join("; ", parts)}). It is probably a checkpoint for " +
               "another architecture (other layer names, widths or depth); nothing was loaded and the model is unchanged.";
    }
}
