using System.Text.Json;
using static TorchSharp.torch;

namespace Carso.IO;

/// <summary>
/// The resumable state of an evaluation on disk: a JSON file per attack family (any record type) and its adversarial
/// images as raw float32 beside it (path + ".adv"). Images are written first, then the state that points into them,
/// each atomically: a kill between the two loses at most one step. Private to the evaluation driver's resume: other
/// code reads published artefacts (run records, transfer sets), not these.
/// </summary>
public static class EvaluationStateFiles
{
    /// <summary>The saved state, or null when there is none. A state of another evaluation (fingerprint differs) or a
    /// corrupt file is refused with the file, what is wrong and the fix.</summary>
    public static T? Load<T>(string path, string fingerprint, Func<T, string> fingerprintOf, Tensor imagesInto) where T : class
    {
        if (!File.Exists(path)) return null;
        T state;
        try { state = JsonSerializer.Deserialize<T>(File.ReadAllText(path), RunRecord.Json) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a valid evaluation state ({e.Message}); delete it to start over", e); }
        if (fingerprintOf(state) != fingerprint)
            throw new EvaluationStateMismatchException(
                $"{path} belongs to another evaluation (saved: {fingerprintOf(state)}; current: {fingerprint}); " +
                "use another output folder (--out), or delete it to start over");
        ReadImages(path + ".adv", imagesInto);
        return state;
    }

    public static void Save<T>(string path, T state, Tensor images)
    {
        var floats = images.contiguous().cpu().data<float>().ToArray();
        var bytes = new byte[floats.Length * sizeof(float)];
        Buffer.BlockCopy(floats, 0, bytes, 0, bytes.Length);
        AtomicFile.WriteAllBytes(path + ".adv", bytes);
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(state, RunRecord.Json));
    }

    static void ReadImages(string path, Tensor into)
    {
        if (!File.Exists(path)) throw new InvalidDataException($"{path}: missing (its state file exists); delete the state to start over");
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length != into.numel() * sizeof(float))
            throw new InvalidDataException($"{path}: {bytes.Length} bytes, expected {into.numel() * sizeof(float)} for images [{string.Join(", ", into.shape)}]; delete it to start over");
        var floats = new float[into.numel()];
        Buffer.BlockCopy(bytes, 0, floats, 0, bytes.Length);
        using var loaded = tensor(floats, into.shape);
        into.copy_(loaded);
    }
}

/// <summary>A saved evaluation state belongs to another evaluation.</summary>
public sealed class EvaluationStateMismatchException(string message) : InvalidOperationException(message), IUserError;
