using Carso.Defence;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Carso.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Carso.IO;

/// <summary>
/// Everything a purifier checkpoint needs besides its weights: the settings and shapes to rebuild it, the
/// representation layers it reads, and the identity of the ONE classifier whose representation it learnt
/// (architecture = the classifier's .NET type name, and a fingerprint of its state dict). A purifier for another
/// classifier decodes nonsense without any error of its own, so loading checks the identity first.
/// Saved as JSON next to the weights (<see cref="PurifierCheckpoint.SpecPath"/>).
/// </summary>
/// <param name="Settings">The purifier's sizes.</param>
/// <param name="LayerNames">The classifier layers captured, in the order the purifier takes them.</param>
/// <param name="LayerShapes">Their output shapes without the batch dimension.</param>
/// <param name="InputShape">The image shape [C, H, W].</param>
/// <param name="ClassifierArchitecture">The classifier's type name, e.g. "SmallCnn".</param>
/// <param name="ClassifierFingerprint">See <see cref="PurifierCheckpoint.Fingerprint"/>.</param>
public sealed record PurifierSpec(
    PurifierSettings Settings,
    string[] LayerNames,
    long[][] LayerShapes,
    long[] InputShape,
    string ClassifierArchitecture,
    string ClassifierFingerprint)
{
    /// <summary>
    /// The spec of a purifier for <paramref name="classifier"/> reading <paramref name="layerNames"/> on images
    /// of shape <paramref name="inputShape"/> [C, H, W]: layer shapes from <c>Representation.Describe</c>
    /// (one forward pass of a zero image), identity from the classifier's current weights. Take it from the
    /// classifier as it will be used (trained, frozen): the fingerprint pins those weights.
    /// </summary>
    public static PurifierSpec For(nn.Module<Tensor, Tensor> classifier, IReadOnlyList<string> layerNames, long[] inputShape,
        PurifierSettings? settings = null) =>
        new(settings ?? new PurifierSettings(), layerNames.ToArray(), PurifierCheckpoint.LayerShapes(classifier, layerNames, inputShape),
            inputShape.ToArray(), PurifierCheckpoint.Architecture(classifier), PurifierCheckpoint.Fingerprint(classifier));

    /// <summary>A freshly initialised purifier of this spec (CPU, training mode).</summary>
    public Purifier Build() => Purifier.Build(Settings, LayerShapes, InputShape);

    /// <summary>"SmallCnn (sha256:0123abcd...)": the classifier identity, for messages.</summary>
    public string Classifier => $"{ClassifierArchitecture} ({ClassifierFingerprint})";
}

/// <summary>
/// A purifier checkpoint for a classifier other than the one it was trained for: the message names both
/// identities (architecture and state-dict fingerprint) and the checkpoint.
/// </summary>
public sealed class PurifierClassifierMismatchException(string path, PurifierSpec spec, string architecture, string fingerprint)
    : Exception(
        $"{path} is a purifier for the classifier {spec.Classifier}, but it is being loaded for the classifier " +
        $"{architecture} ({fingerprint}){(architecture == spec.ClassifierArchitecture ? " — same architecture, other weights" : "")}. " +
        "A purifier learns one classifier's representation and is meaningless for any other: load the classifier " +
        "it was trained for, or train a purifier for this one. Nothing was loaded.")
{
    public string Path { get; } = path;
    public PurifierSpec Spec { get; } = spec;
    public string Architecture { get; } = architecture;
    public string Fingerprint { get; } = fingerprint;
}

/// <summary>Saving and loading purifiers: weights with <see cref="StateDicts"/>, the <see cref="PurifierSpec"/> as JSON beside them.</summary>
public static class PurifierCheckpoint
{
    /// <summary>Where the spec of the weights at <paramref name="checkpointPath"/> lives: the same path plus
    /// ".spec.json" (purifier.safetensors -> purifier.safetensors.spec.json), so a .pt and a .safetensors
    /// checkpoint in one folder never share a spec.</summary>
    public static string SpecPath(string checkpointPath) => checkpointPath + ".spec.json";

    /// <summary>The identity recorded for a classifier: its .NET type name.</summary>
    public static string Architecture(nn.Module classifier) => classifier.GetType().Name;

    /// <summary>
    /// "sha256:" + hex SHA-256 over the classifier's whole state dict: for every entry in ordinal name order, its
    /// name, dtype, shape and raw bytes (parameters and persistent buffers such as batch-norm statistics). Any
    /// retraining, fine-tuning or other initialisation changes it; the same weights loaded from the same file give
    /// the same value on any device. Non-persistent buffers (input normalisation) are not part of it.
    /// Costs one pass over the weights (about 0.3 s for a WideResNet-28-10).
    /// </summary>
    public static string Fingerprint(nn.Module classifier)
    {
        using var scope = NewDisposeScope();
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, tensor) in classifier.state_dict().OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            hash.AppendData(Encoding.UTF8.GetBytes($"{name}\0{tensor.dtype}\0{string.Join(",", tensor.shape)}\0"));
            using var cpu = tensor.detach().cpu().contiguous();
            hash.AppendData(cpu.bytes);
        }
        return "sha256:" + Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>The output shapes (without batch) of the named layers for images [C, H, W], in the names' order.</summary>
    public static long[][] LayerShapes(nn.Module<Tensor, Tensor> classifier, IReadOnlyList<string> layerNames, long[] inputShape)
    {
        var described = Representation.Describe(classifier, inputShape).ToDictionary(l => l.Name);
        var unknown = layerNames.Where(n => !described.ContainsKey(n)).ToArray();
        if (unknown.Length > 0)
            throw new ArgumentException(
                $"unknown layer name{(unknown.Length > 1 ? "s" : "")} {string.Join(", ", unknown.Select(u => $"'{u}'"))} " +
                $"for {Architecture(classifier)}; available: {string.Join(", ", described.Keys)}", nameof(layerNames));
        return layerNames.Select(n => described[n].OutputShape[1..]).ToArray();
    }

    /// <summary>
    /// Writes the purifier's weights to <paramref name="path"/> (.safetensors, .pt or .pth; atomically, see
    /// <see cref="StateDicts.Export"/>) and the spec to <see cref="SpecPath"/>. The spec must describe this
    /// purifier (same settings, layer shapes and input shape), else an ArgumentException.
    /// </summary>
    public static void Save(string path, Purifier purifier, PurifierSpec spec)
    {
        if (purifier.Settings != spec.Settings || !SameShapes(purifier.LayerShapes, spec.LayerShapes)
            || !purifier.InputShape.SequenceEqual(spec.InputShape) || spec.LayerNames.Length != spec.LayerShapes.Length)
            throw new ArgumentException(
                "the spec does not describe this purifier: its settings, layer shapes or input shape differ " +
                $"(purifier {purifier.Settings}, layers {Shapes(purifier.LayerShapes)}, input [{string.Join(", ", purifier.InputShape)}]; " +
                $"spec {spec.Settings}, layers {Shapes(spec.LayerShapes)} named {string.Join(", ", spec.LayerNames)}, " +
                $"input [{string.Join(", ", spec.InputShape)}])", nameof(spec));
        StateDicts.FormatOf(path); // a bad extension fails before anything is written
        StateDicts.Export(purifier, path);
        AtomicFile.WriteAllText(SpecPath(path), JsonSerializer.Serialize(spec, RunRecord.Json) + "\n");
    }

    /// <summary>Reads the spec saved next to <paramref name="path"/>; a missing or unreadable spec is an error
    /// naming the spec file.</summary>
    public static PurifierSpec ReadSpec(string path)
    {
        var specPath = SpecPath(path);
        if (!File.Exists(specPath))
            throw new FileNotFoundException(
                $"{specPath}: purifier spec not found; PurifierCheckpoint.Save writes it next to the weights {path}, " +
                "and without it the classifier the purifier belongs to is unknown", specPath);
        try
        {
            return JsonSerializer.Deserialize<PurifierSpec>(File.ReadAllText(specPath), RunRecord.Json)
                   ?? throw new InvalidDataException($"{specPath}: empty purifier spec");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{specPath}: not a valid purifier spec ({e.Message})", e);
        }
    }

    /// <summary>
    /// Loads the purifier saved at <paramref name="path"/> for <paramref name="classifier"/>, checking in order:
    /// the classifier's architecture and state-dict fingerprint against the spec (else a
    /// <see cref="PurifierClassifierMismatchException"/> naming both classifiers), the layer names when given
    /// (else an ArgumentException naming both lists), the layers' output shapes on this classifier, and finally
    /// every weight by a strict import (<see cref="CheckpointMismatchException"/>). Returns the purifier in eval
    /// mode on the classifier's device, and its spec.
    /// </summary>
    public static (Purifier Purifier, PurifierSpec Spec) Load(string path, nn.Module<Tensor, Tensor> classifier,
        IReadOnlyList<string>? layerNames = null)
    {
        var spec = ReadSpec(path);
        var (architecture, fingerprint) = (Architecture(classifier), Fingerprint(classifier));
        if (architecture != spec.ClassifierArchitecture || fingerprint != spec.ClassifierFingerprint)
            throw new PurifierClassifierMismatchException(path, spec, architecture, fingerprint);
        if (layerNames is not null && !layerNames.SequenceEqual(spec.LayerNames))
            throw new ArgumentException(
                $"{path} is a purifier over the layers {string.Join(", ", spec.LayerNames)} of {spec.ClassifierArchitecture}, " +
                $"not over {string.Join(", ", layerNames)}", nameof(layerNames));
        // The same weights can run with another forward (e.g. WideResNet's input padding is not in the state dict).
        var shapes = LayerShapes(classifier, spec.LayerNames, spec.InputShape);
        if (!SameShapes(shapes, spec.LayerShapes))
            throw new InvalidOperationException(
                $"{path}: the layers {string.Join(", ", spec.LayerNames)} of this {architecture} have the output shapes " +
                $"{Shapes(shapes)} on [{string.Join(", ", spec.InputShape)}] images, but the purifier was trained on {Shapes(spec.LayerShapes)}");
        var purifier = spec.Build();
        StateDicts.Import(purifier, path);
        var device = classifier.parameters().FirstOrDefault()?.device;
        if (device is not null) purifier.to(device);
        purifier.eval();
        return (purifier, spec);
    }

    static bool SameShapes(IReadOnlyList<long[]> a, IReadOnlyList<long[]> b) =>
        a.Count == b.Count && a.Zip(b).All(p => p.First.SequenceEqual(p.Second));

    static string Shapes(IEnumerable<long[]> shapes) => string.Join(" ", shapes.Select(s => $"[{string.Join(", ", s)}]"));
}
