using Carso.IO;
using Carso.Defence;
using Carso.Models;
using Carso.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Tests.Defence;

public class PurifierCheckpointTests
{
    static readonly string[] Layers = ["conv1", "relu2", "relu3"];
    static readonly PurifierSettings Small = new(ConditioningSize: 32, LatentSize: 8, DecoderChannels: 32);

    static SmallCnn Classifier(int seed)
    {
        manual_seed(seed);
        return new SmallCnn();
    }

    /// <summary>Saves a purifier for classifier (seed 1) in a temporary folder; returns the path.</summary>
    static (string Path, Purifier Purifier, PurifierSpec Spec) Saved(TempFolder folder, nn.Module<Tensor, Tensor> classifier)
    {
        var spec = PurifierSpec.For(classifier, Layers, [1, 28, 28], Small);
        var purifier = spec.Build();
        var path = folder.File("purifier.safetensors");
        PurifierCheckpoint.Save(path, purifier, spec);
        return (path, purifier, spec);
    }

    [Fact]
    public void APurifierLoadsBackForItsOwnClassifierWithItsSpec()
    {
        using var scope = NewDisposeScope();
        using var folder = new TempFolder();
        var classifier = Classifier(1);
        var (path, purifier, spec) = Saved(folder, classifier);
        Assert.True(File.Exists(PurifierCheckpoint.SpecPath(path)));
        Assert.StartsWith("sha256:", spec.ClassifierFingerprint);
        Assert.Equal("SmallCnn", spec.ClassifierArchitecture);
        Assert.Equal(new long[] { 64, 7, 7 }, spec.LayerShapes[1]); // relu2: pooled (SmallCnn pools before its ReLU)

        // The same weights in another instance, loaded from the classifier's checkpoint, are accepted.
        StateDicts.Export(classifier, folder.File("classifier.safetensors"));
        var sameWeights = new SmallCnn();
        StateDicts.Import(sameWeights, folder.File("classifier.safetensors"));
        var (loaded, loadedSpec) = PurifierCheckpoint.Load(path, sameWeights, Layers);
        Assert.Equal(spec.Settings, loadedSpec.Settings);
        Assert.Equal(spec.LayerNames, loadedSpec.LayerNames);
        Assert.Equal(spec.ClassifierFingerprint, loadedSpec.ClassifierFingerprint);
        Assert.False(loaded.training);
        using var noGrad = no_grad();
        var z = randn(2, 8);
        var c = randn(2, 32);
        Assert.True(loaded.Decode(z, c).eq(purifier.Decode(z, c)).all().item<bool>());
    }

    [Fact]
    public void APurifierForAClassifierWithOtherWeightsOfTheSameArchitectureIsRejected()
    {
        using var scope = NewDisposeScope();
        using var folder = new TempFolder();
        var (path, _, spec) = Saved(folder, Classifier(1));
        var other = Classifier(2);
        var e = Assert.Throws<PurifierClassifierMismatchException>(() => PurifierCheckpoint.Load(path, other));
        Assert.Contains(path, e.Message);
        Assert.Contains($"SmallCnn ({spec.ClassifierFingerprint})", e.Message);            // the one it was trained for
        Assert.Contains($"SmallCnn ({PurifierCheckpoint.Fingerprint(other)})", e.Message); // the one given
        Assert.Contains("same architecture, other weights", e.Message);
    }

    [Fact]
    public void OneChangedWeightIsEnoughToReject()
    {
        using var scope = NewDisposeScope();
        using var folder = new TempFolder();
        var classifier = Classifier(1);
        var (path, _, _) = Saved(folder, classifier);
        using (no_grad()) classifier.state_dict()["fc1.bias"][0].add_(1e-3f);
        Assert.Throws<PurifierClassifierMismatchException>(() => PurifierCheckpoint.Load(path, classifier));
    }

    [Fact]
    public void APurifierForAnotherArchitectureIsRejectedNamingBoth()
    {
        using var scope = NewDisposeScope();
        using var folder = new TempFolder();
        var (path, _, _) = Saved(folder, Classifier(1));
        var e = Assert.Throws<PurifierClassifierMismatchException>(() => PurifierCheckpoint.Load(path, new PreActResNet18()));
        Assert.Contains("purifier for the classifier SmallCnn (sha256:", e.Message);
        Assert.Contains("loaded for the classifier PreActResNet18 (sha256:", e.Message);
        Assert.DoesNotContain("same architecture", e.Message);
    }

    [Fact]
    public void OtherLayerNamesAMissingSpecOrAMismatchedSpecAreErrors()
    {
        using var scope = NewDisposeScope();
        using var folder = new TempFolder();
        var classifier = Classifier(1);
        var (path, purifier, spec) = Saved(folder, classifier);

        var names = Assert.Throws<ArgumentException>(() => PurifierCheckpoint.Load(path, classifier, ["conv1", "relu2", "fc1"]));
        Assert.Contains("conv1, relu2, relu3", names.Message);
        Assert.Contains("conv1, relu2, fc1", names.Message);

        File.Delete(PurifierCheckpoint.SpecPath(path));
        var missing = Assert.Throws<FileNotFoundException>(() => PurifierCheckpoint.Load(path, classifier));
        Assert.Contains(".spec.json", missing.Message);

        var otherSpec = spec with { Settings = spec.Settings with { LatentSize = 9 } };
        Assert.Throws<ArgumentException>(() => PurifierCheckpoint.Save(path, purifier, otherSpec));

        // Weights that do not fit the spec fail in the strict import.
        var wrong = (spec with { Settings = spec.Settings with { LatentSize = 9 } }).Build();
        PurifierCheckpoint.Save(path, wrong, spec with { Settings = spec.Settings with { LatentSize = 9 } });
        File.WriteAllText(PurifierCheckpoint.SpecPath(path), File.ReadAllText(PurifierCheckpoint.SpecPath(path)).Replace("\"latentSize\": 9", "\"latentSize\": 8"));
        Assert.Throws<CheckpointMismatchException>(() => PurifierCheckpoint.Load(path, classifier));
    }
}
