using Carso.Attacks;
using Carso.Data;
using Carso.Defence;
using Carso.IO;
using Carso.Models;
using Carso.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Experiments;

/// <summary>
/// The committed artefacts of the reference runs, in one place: the PGD-AT classifier (scripts/train-classifier.cs), the
/// L2 PGD-AT classifier (scripts/train-classifier-l2.cs), the Linf one's CARSO purifier (scripts/train-carso.cs; its spec says which layers it reads), the test points and the
/// classifier's AutoAttack transfer set (scripts/eval-autoattack.cs). A script names what it varies and takes the
/// rest from here. Paths are relative to the repository root. An artefact that is not there is one clear error naming the
/// file and the command that makes it (<see cref="Require"/>).
/// </summary>
public static class Committed
{
    public const string ClassifierPath = "results/train-classifier/smallcnn-fmnist-pgdat.safetensors";
    /// <summary>The SmallCnn trained with PGD-AT at L2 eps 1.5 (scripts/train-classifier-l2.cs), same architecture.</summary>
    public const string ClassifierL2Path = "results/train-classifier-l2/smallcnn-fmnist-pgdat-l2.safetensors";
    public const string PurifierPath = "results/train-carso/purifier-smallcnn-fmnist.safetensors";
    public const string TransferSetPath = "results/eval-autoattack/transfer.safetensors";

    /// <summary>The architecture of the committed classifier (SmallCnn, 32 and 64 channels, 256 hidden).</summary>
    public static SmallCnn.Settings ClassifierSettings { get; } = new(Channels1: 32, Channels2: 64, Hidden: 256);

    public static string PathOf(string relative) => Path.Combine(Paths.RepoRoot() ?? Directory.GetCurrentDirectory(), relative);

    /// <summary>The classifier trained against a norm's threat: Linf <see cref="ClassifierPath"/>, L2 <see cref="ClassifierL2Path"/>
    /// (there is no L1-trained one; a SettingsException names the setting).</summary>
    public static string ClassifierPathFor(Norm norm, string setting = "Norm") => norm switch
    {
        Norm.Linf => ClassifierPath,
        Norm.L2 => ClassifierL2Path,
        _ => throw new SettingsException(setting, $"no classifier is trained against {norm} (Linf: {ClassifierPath}, L2: {ClassifierL2Path})"),
    };

    /// <summary>The command that makes a results file: results/&lt;script&gt;/... is written by scripts/&lt;script&gt;.cs
    /// (null for a path elsewhere).</summary>
    public static string? CommandThatMakes(string relative)
    {
        var parts = relative.Replace('\\', '/').Split('/', StringSplitOptions.RemoveEmptyEntries);
        return parts.Length >= 3 && parts[0] == "results" ? $"dotnet run scripts/{parts[1]}.cs" : null;
    }

    /// <summary>The full path of a file the caller reads; when it is not there, a FileNotFoundException (a user error: one line
    /// from a script) naming the file and the command that makes it.</summary>
    public static string Require(string relative, string what)
    {
        var path = PathOf(relative);
        if (File.Exists(path)) return path;
        var maker = CommandThatMakes(relative);
        throw new FileNotFoundException($"{path}: no such file ({what}); " +
            (maker is null ? "check the path in the settings" : $"make it with `{maker}`, or point the settings at another file"), path);
    }

    /// <summary>The committed classifier (or another SmallCnn of its architecture: the L2 one at <see cref="ClassifierL2Path"/>),
    /// frozen (eval mode, no parameter gradients) on the device.</summary>
    public static SmallCnn Classifier(Device device, string path = ClassifierPath) =>
        StateDicts.ImportFrozen(new SmallCnn(ClassifierSettings), Require(path, "classifier weights"), device);

    /// <summary>A purifier checkpoint for this classifier, frozen on the classifier's device; its layers come from its spec.</summary>
    public static (Purifier Purifier, PurifierSpec Spec) Purifier(nn.Module<Tensor, Tensor> classifier, Device device, string path = PurifierPath)
    {
        var (purifier, spec) = PurifierCheckpoint.Load(Require(path, "purifier checkpoint"), classifier);
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
    public static TransferSet TransferSet(string path = TransferSetPath) => IO.TransferSet.Load(Require(path, "transfer set"));
}
