using System.Text.Json;
using Carso.Attacks;
using Carso.Data;
using static TorchSharp.torch;

namespace Carso.IO;

/// <summary>What a transfer set was made for: the threat, the dataset and its first Points points, the model
/// attacked (its architecture and state-dict fingerprint) and the evaluation that made it.</summary>
public sealed record TransferSetSpec(string Norm, double Eps, string Dataset, int Points, string Model, string ModelFingerprint, string MadeBy);

/// <summary>A transfer set does not fit the evaluation that loads it (another eps, points or model).</summary>
public sealed class TransferSetMismatchException(string message) : Exception(message), IUserError;

/// <summary>
/// Adversarial images made against one model, published for transfer to another: Images [Points, C, H, W] in [0, 1],
/// Labels [Points], one per point of the dataset's first Points points, in order (the clean image where the attack
/// found nothing). Written by scripts/eval-autoattack.cs as a .safetensors file (tensors "images", "labels") with its
/// spec beside it (path + ".spec.json"); checked once, on load, against the evaluation that uses it.
/// </summary>
public sealed record TransferSet(string Path, TransferSetSpec Spec, Tensor Images, Tensor Labels) : IDisposable
{
    public Threat Threat => new(Enum.Parse<Norm>(Spec.Norm), Spec.Eps);

    public static string SpecPath(string path) => path + ".spec.json";

    /// <summary>Writes the images, labels and spec (each file atomically; the spec last, so a spec always has its images).</summary>
    public static void Save(string path, Tensor images, Tensor labels, TransferSetSpec spec)
    {
        if (images.shape[0] != spec.Points || labels.shape[0] != spec.Points)
            throw new ArgumentException($"{path}: {images.shape[0]} images and {labels.shape[0]} labels for a spec of {spec.Points} points");
        StateDicts.ExportTensors(new Dictionary<string, Tensor> { ["images"] = images, ["labels"] = labels }, path);
        AtomicFile.WriteAllText(SpecPath(path), JsonSerializer.Serialize(spec, RunRecord.Json));
    }

    public static TransferSet Load(string path)
    {
        var specPath = SpecPath(path);
        if (!File.Exists(specPath))
            throw new FileNotFoundException($"{specPath}: transfer-set spec not found (written by scripts/eval-autoattack.cs next to {path})", specPath);
        TransferSetSpec spec;
        try { spec = JsonSerializer.Deserialize<TransferSetSpec>(File.ReadAllText(specPath), RunRecord.Json) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{specPath}: not a transfer-set spec ({e.Message}); re-run scripts/eval-autoattack.cs", e); }
        var tensors = StateDicts.Read(path);
        if (!tensors.TryGetValue("images", out var images) || !tensors.TryGetValue("labels", out var labels)
            || images.dim() != 4 || images.shape[0] != spec.Points || labels.shape[0] != spec.Points)
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw new InvalidDataException($"{path}: expected tensors images [{spec.Points}, C, H, W] and labels [{spec.Points}] as its spec says; re-run scripts/eval-autoattack.cs");
        }
        return new TransferSet(path, spec, images, labels);
    }

    /// <summary>
    /// The transfer images for the evaluation of <paramref name="data"/> (the dataset's first data.Count points) under
    /// <paramref name="threat"/>: [N, C, H, W], a copy the caller owns. Refuses, naming the file, a set made for another
    /// threat, dataset, model (when <paramref name="modelFingerprint"/> is given) or fewer points, and images that are not
    /// within eps of these points (another order).
    /// </summary>
    public Tensor For(Dataset data, Threat threat, string? modelFingerprint = null)
    {
        void Refuse(string what, string fix) => throw new TransferSetMismatchException($"{Path}: {what}; {fix}");
        if (Threat.Norm != threat.Norm || Math.Abs(Threat.Eps - threat.Eps) > 1e-12)
            Refuse($"made for {Threat}, the evaluation is at {threat}",
                $"re-run scripts/eval-autoattack.cs with Eps = {threat.Eps} to make a matching set, or evaluate without transfer (Transfer = null)");
        if (!string.Equals(Spec.Dataset, data.Name, StringComparison.Ordinal))
            Refuse($"made for dataset '{Spec.Dataset}', the evaluation uses '{data.Name}'", "use a transfer set made on the same data");
        if (modelFingerprint is not null && modelFingerprint != Spec.ModelFingerprint)
            Refuse($"made against model {Spec.Model} ({Spec.ModelFingerprint[..Math.Min(19, Spec.ModelFingerprint.Length)]}…), not the evaluated model's classifier",
                "re-run scripts/eval-autoattack.cs on this classifier");
        if (data.Count > Spec.Points)
            Refuse($"holds the first {Spec.Points} points, the evaluation uses {data.Count}", $"evaluate at most {Spec.Points} points or make a larger set");
        using var scope = NewDisposeScope();
        var n = data.Count;
        var images = Images.narrow(0, 0, n);
        if (!Labels.narrow(0, 0, n).eq(data.Labels.cpu()).all().item<bool>())
            Refuse("its labels differ from the evaluated points' (other points, or another order)", "make the set on the same points");
        var worst = Projection.NormOf(images - data.Images.cpu(), threat.Norm).max().item<float>();
        // Float32 rounding tolerance, relative for the large eps of L1 and L2 (an L1 distance sums hundreds of rounded pixels).
        if (worst > threat.Eps + 1e-5 * Math.Max(1, threat.Eps))
            Refuse($"its images are not within {threat} of the evaluated points (largest distance {worst:G4})", "make the set on the same points");
        return images.clone().MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        Images.Dispose();
        Labels.Dispose();
    }
}
