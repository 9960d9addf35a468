using Carso.Data;
using Carso.Defence;
using Carso.IO;
using Carso.Models;
using Carso.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Experiments;

/// <summary>
/// The committed artefacts of the reference runs, in one place: the PGD-AT classifier (scripts/train-classifier.cs),
/// its CARSO purifier (scripts/train-carso.cs; its spec says which layers it reads), the test points and the
/// classifier's AutoAttack transfer set (scripts/eval-autoattack.cs). A script names what it varies and takes the
/// rest from here. Paths are relative to the repository root.
/// </summary>
public static class Committed
{
    public const string ClassifierPath = "results/train-classifier/smallcnn-fmnist-pgdat.safetensors";
    public const string PurifierPath = "results/train-carso/purifier-smallcnn-fmnist.safetensors";
    public const string TransferSetPath = "results/eval-autoattack/transfer.safetensors";

    /// <summary>The architecture of the committed classifier (SmallCnn, 32 and 64 channels, 256 hidden).</summary>
    public static SmallCnn.Settings ClassifierSettings { get; } = new(Channels1: 32, Channels2: 64, Hidden: 256);

    public static string PathOf(string relative) => Path.Combine(Paths.RepoRoot() ?? Directory.GetCurrentDirectory(), relative);

    /// <summary>The committed classifier, frozen (eval mode, no parameter gradients) on the device.</summary>
    public static SmallCnn Classifier(Device device, string path = ClassifierPath) =>
        StateDicts.ImportFrozen(new SmallCnn(ClassifierSettings), PathOf(path), device);

    /// <summary>A purifier checkpoint for this classifier, frozen on the classifier's device; its layers come from its spec.</summary>
    public static (Purifier Purifier, PurifierSpec Spec) Purifier(nn.Module<Tensor, Tensor> classifier, Device device, string path = PurifierPath)
    {
        var (purifier, spec) = PurifierCheckpoint.Load(PathOf(path), classifier);
        purifier.to(device).eval();
        foreach (var p in purifier.parameters()) p.requires_grad_(false);
        return (purifier, spec);
    }

    /// <summary>CARSO over the committed classifier and a purifier (default: the committed one), with these settings, and
    /// with bfloat16 copies of both networks, so that <c>With(settings)</c> may switch to any <see cref="CarsoPrecision"/>.</summary>
    public static CarsoModel Carso(Device device, CarsoSettings settings, string purifierPath = PurifierPath)
    {
        var classifier = Classifier(device);
        var (purifier, spec) = Purifier(classifier, device, purifierPath);
        return new CarsoModel(classifier, purifier, spec.LayerNames).WithBFloat16(new SmallCnn(ClassifierSettings)).With(settings);
    }

    /// <summary>The first <paramref name="count"/> Fashion-MNIST test points (the points every reference evaluation uses).</summary>
    public static Dataset TestPoints(long count)
    {
        using var test = FashionMnist.Load(Split.Test);
        return test.Take(count);
    }

    /// <summary>The classifier's committed AutoAttack transfer set (checked against an evaluation when it is used).</summary>
    public static TransferSet TransferSet(string path = TransferSetPath) => IO.TransferSet.Load(PathOf(path));
}
