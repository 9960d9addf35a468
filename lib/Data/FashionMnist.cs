using Carso.Runtime;

namespace Carso.Data;

/// <summary>
/// Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test images, 1x28x28, 10 classes.
/// Search order for its folder (the first that holds all four files wins):
///   1. $CARSO_FASHION_MNIST_DIR, when set (and then only it: a wrong override is an error, not a fallback);
///   2. /usr/share/datasets/fashion-mnist (Debian: apt-get install -y dataset-fashion-mnist);
///   3. data/fashion-mnist/ in the repository.
/// Files: {train,t10k}-{images-idx3,labels-idx1}-ubyte, gzipped (.gz) or raw.
/// </summary>
public static class FashionMnist
{
    public const string EnvironmentVariable = "CARSO_FASHION_MNIST_DIR";
    public const string DebianPath = "/usr/share/datasets/fashion-mnist";
    public const string InstallCommand = "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist";

    /// <summary>The folders searched, in order, given the override (the environment variable by default).</summary>
    public static IReadOnlyList<string> SearchPath(string? overrideDir = null)
    {
        overrideDir ??= Environment.GetEnvironmentVariable(EnvironmentVariable);
        return string.IsNullOrWhiteSpace(overrideDir)
            ? [DebianPath, Path.Combine(Paths.DataRoot(), "fashion-mnist")]
            : [overrideDir];
    }

    /// <summary>The first folder of the search path that holds all four files, or an error listing what was tried.</summary>
    public static string Locate(string? overrideDir = null, IReadOnlyList<string>? searchPath = null)
    {
        var tried = searchPath ?? SearchPath(overrideDir);
        var found = tried.FirstOrDefault(IdxDataset.HasAllFiles);
        if (found is not null) return found;
        var fromEnv = overrideDir ?? Environment.GetEnvironmentVariable(EnvironmentVariable);
        var why = string.IsNullOrWhiteSpace(fromEnv)
            ? $"Install it with `{InstallCommand}`, or put the files under data/fashion-mnist/, or set {EnvironmentVariable}."
            : $"{EnvironmentVariable} is set to '{fromEnv}', which does not hold them; fix or unset it.";
        throw new DatasetException(
            "Fashion-MNIST not found: no folder holds all of " +
            "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]. Tried: " +
            string.Join(", ", tried) + ". " + why);
    }

    /// <summary>One split, from the located folder (or the given one).</summary>
    public static Dataset Load(Split split, string? folder = null) =>
        IdxDataset.LoadFolder("fashion-mnist", folder ?? Locate(), split, IdxDataset.FashionMnistClasses);

    /// <summary>
    /// The three sets a training script needs: the first trainPoints of the training split after holding out
    /// validationCount points chosen by the seed, the held-out points, and the first testPoints test images; their sizes
    /// go to <paramref name="log"/> when given.
    /// </summary>
    public static (Dataset Train, Dataset Validation, Dataset Test) Splits(long validationCount, long seed,
        long trainPoints = long.MaxValue, long testPoints = long.MaxValue, Action<string>? log = null)
    {
        using var fullTrain = Load(Split.Train);
        var (trainAll, validation) = fullTrain.SplitValidation(validationCount, seed);
        using (trainAll)
        using (var fullTest = Load(Split.Test))
        {
            var (train, test) = (trainAll.Take(trainPoints), fullTest.Take(testPoints));
            log?.Invoke($"data: {train.Count} training, {validation.Count} held-out, {test.Count} test images");
            return (train, validation, test);
        }
    }
}

/// <summary>MNIST digits from a folder with the published file names (none is installed system-wide here).</summary>
public static class Mnist
{
    public static string DefaultFolder() => Path.Combine(Paths.DataRoot(), "mnist");

    public static Dataset Load(Split split, string? folder = null) =>
        IdxDataset.LoadFolder("mnist", folder ?? DefaultFolder(), split, IdxDataset.MnistClasses);
}
