using static TorchSharp.torch;

namespace Carso.Data;

/// <summary>MNIST-style datasets: a pair of IDX files (images [N, H, W] bytes, labels [N] bytes).</summary>
public static class IdxDataset
{
    public static readonly IReadOnlyList<string> FashionMnistClasses =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    public static readonly IReadOnlyList<string> MnistClasses =
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    /// <summary>File stems of the two splits, as published.</summary>
    public static (string Images, string Labels) FileStems(Split split) => split == Split.Train
        ? ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
        : ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");

    /// <summary>Loads images [N, 1, H, W] float32 in [0, 1] and labels [N] int64 from two IDX files.</summary>
    public static Dataset Load(string name, string imagesPath, string labelsPath, IReadOnlyList<string> classes)
    {
        var images = Idx.ReadImages(imagesPath);
        var labels = Idx.ReadLabels(labelsPath);
        if (images.Dims[0] != labels.Dims[0])
            throw new DatasetException(
                $"{imagesPath} has {images.Dims[0]} images but {labelsPath} has {labels.Dims[0]} labels; " +
                "the two files must come from the same split");
        var badLabel = Array.FindIndex(labels.Data, l => l >= classes.Count);
        if (badLabel >= 0)
            throw new DatasetException(
                $"{labelsPath}: label {labels.Data[badLabel]} at index {badLabel} is out of range for {classes.Count} classes");
        var (n, h, w) = (images.Dims[0], images.Dims[1], images.Dims[2]);
        using var scope = NewDisposeScope();
        var x = tensor(images.Data, [n, 1, h, w]).to_type(ScalarType.Float32).div_(255f);
        var y = tensor(labels.Data, [n]).to_type(ScalarType.Int64);
        return Dataset.Create(name, x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope(), classes);
    }

    /// <summary>Loads one split from a folder holding the published file names, gzipped (.gz) or raw.</summary>
    public static Dataset LoadFolder(string name, string folder, Split split, IReadOnlyList<string> classes)
    {
        var (imagesStem, labelsStem) = FileStems(split);
        return Load($"{name}/{split.ToString().ToLowerInvariant()}",
            FindFile(folder, imagesStem), FindFile(folder, labelsStem), classes);
    }

    /// <summary>The .gz file if present, else the raw file; an error listing both when neither exists.</summary>
    public static string FindFile(string folder, string stem)
    {
        string[] candidates = [Path.Combine(folder, stem + ".gz"), Path.Combine(folder, stem)];
        return candidates.FirstOrDefault(File.Exists)
            ?? throw new DatasetException($"missing dataset file: tried {string.Join(" and ", candidates)}");
    }

    /// <summary>True when the folder holds all four files (gzipped or raw).</summary>
    public static bool HasAllFiles(string folder) =>
        new[] { Split.Train, Split.Test }
            .SelectMany(s => { var (i, l) = FileStems(s); return new[] { i, l }; })
            .All(stem => File.Exists(Path.Combine(folder, stem + ".gz")) || File.Exists(Path.Combine(folder, stem)));
}

public enum Split { Train, Test }
