using Carso.Runtime;
using static TorchSharp.torch;

namespace Carso.Data;

/// <summary>
/// CIFAR-10 and CIFAR-100 in the published binary format. Each record is the label byte(s) followed by
/// 3072 pixel bytes: 1024 red, 1024 green, 1024 blue, each plane 32x32 row-major.
/// CIFAR-10: 1 label byte, files data_batch_1..5.bin (train) and test_batch.bin (test).
/// CIFAR-100: 2 label bytes (coarse, then fine), files train.bin and test.bin.
/// </summary>
public static class Cifar
{
    public const int PixelBytes = 3 * 32 * 32;
    public const int Cifar10RecordBytes = 1 + PixelBytes;
    public const int Cifar100RecordBytes = 2 + PixelBytes;

    public static readonly IReadOnlyList<string> Cifar10Classes =
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

    public static readonly IReadOnlyList<string> Cifar100CoarseClasses =
    [
        "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
        "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
        "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
        "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
        "vehicles_1", "vehicles_2",
    ];

    public static readonly IReadOnlyList<string> Cifar100FineClasses =
    [
        "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
        "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
        "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
        "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
        "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
        "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
        "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
        "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
        "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
        "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
    ];

    public enum Cifar100Labels { Fine, Coarse }

    public static string DefaultCifar10Folder() => Path.Combine(Paths.DataRoot(), "cifar-10-batches-bin");
    public static string DefaultCifar100Folder() => Path.Combine(Paths.DataRoot(), "cifar-100-binary");

    public static IReadOnlyList<string> Cifar10Files(Split split) => split == Split.Train
        ? Enumerable.Range(1, 5).Select(i => $"data_batch_{i}.bin").ToArray()
        : ["test_batch.bin"];

    public static Dataset LoadCifar10(Split split, string? folder = null)
    {
        folder ??= DefaultCifar10Folder();
        var files = Cifar10Files(split).Select(f => Path.Combine(folder, f)).ToArray();
        RequireAll(files, "CIFAR-10",
            "Download the binary version (cifar-10-binary.tar.gz) and extract it under data/, or pass its folder.");
        var parts = files.Select(f => ReadRecords(f, labelLimits: [10], labelIndex: 0)).ToArray();
        return FromRecords($"cifar10/{split.ToString().ToLowerInvariant()}", parts, Cifar10Classes);
    }

    public static Dataset LoadCifar100(Split split, Cifar100Labels labels = Cifar100Labels.Fine, string? folder = null)
    {
        folder ??= DefaultCifar100Folder();
        var file = Path.Combine(folder, split == Split.Train ? "train.bin" : "test.bin");
        RequireAll([file], "CIFAR-100",
            "Download the binary version (cifar-100-binary.tar.gz) and extract it under data/, or pass its folder.");
        var (labelIndex, classes) = labels == Cifar100Labels.Fine ? (1, Cifar100FineClasses) : (0, Cifar100CoarseClasses);
        var part = ReadRecords(file, labelLimits: [20, 100], labelIndex: labelIndex);
        return FromRecords($"cifar100-{labels.ToString().ToLowerInvariant()}/{split.ToString().ToLowerInvariant()}", [part], classes);
    }

    static void RequireAll(string[] files, string name, string fix)
    {
        var missing = files.Where(f => !File.Exists(f)).ToArray();
        if (missing.Length > 0)
            throw new DatasetException($"{name} not found: missing {string.Join(", ", missing)}. {fix}");
    }

    /// <summary>
    /// Pixels [N * 3072] and the labels [N] at <paramref name="labelIndex"/> of one file, after checking its size
    /// and that each label byte b is below labelLimits[b] (CIFAR-10: [10]; CIFAR-100: [20 coarse, 100 fine]).
    /// </summary>
    public static (byte[] Pixels, byte[] Labels) ReadRecords(string path, int[] labelLimits, int labelIndex)
    {
        var labelBytes = labelLimits.Length;
        var bytes = File.ReadAllBytes(path);
        var recordBytes = labelBytes + PixelBytes;
        if (bytes.Length == 0)
            throw new DatasetException($"{path}: empty file");
        if (bytes.Length % recordBytes != 0)
        {
            var other = labelBytes == 1 ? Cifar100RecordBytes : Cifar10RecordBytes;
            var hint = bytes.Length % other == 0
                ? $" It divides into {other}-byte records: is it a {(labelBytes == 1 ? "CIFAR-100" : "CIFAR-10")} file?"
                : " The file is truncated or its images are not 3x32x32.";
            throw new DatasetException(
                $"{path}: wrong record size: {bytes.Length} bytes is not a whole number of {recordBytes}-byte records " +
                $"({labelBytes} label byte{(labelBytes == 1 ? "" : "s")} + 3x32x32 pixels).{hint}");
        }
        var n = bytes.Length / recordBytes;
        var pixels = new byte[(long)n * PixelBytes];
        var labels = new byte[n];
        for (var i = 0; i < n; i++)
        {
            var record = bytes.AsSpan(i * recordBytes, recordBytes);
            for (var b = 0; b < labelBytes; b++)
                if (record[b] >= labelLimits[b])
                    throw new DatasetException(
                        $"{path}: record {i} has label {record[b]}, out of range for {labelLimits[b]} classes; " +
                        "the file is corrupt or its records are not 3x32x32 images");
            labels[i] = record[labelIndex];
            record[labelBytes..].CopyTo(pixels.AsSpan(i * PixelBytes));
        }
        return (pixels, labels);
    }

    static Dataset FromRecords(string name, (byte[] Pixels, byte[] Labels)[] parts, IReadOnlyList<string> classes)
    {
        var n = parts.Sum(p => (long)p.Labels.Length);
        var pixels = Concat(parts.Select(p => p.Pixels));
        var labels = Concat(parts.Select(p => p.Labels));
        using var scope = NewDisposeScope();
        var x = tensor(pixels, [n, 3, 32, 32]).to_type(ScalarType.Float32).div_(255f);
        var y = tensor(labels, [n]).to_type(ScalarType.Int64);
        return Dataset.Create(name, x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope(), classes);
    }

    static byte[] Concat(IEnumerable<byte[]> arrays)
    {
        var all = arrays.ToArray();
        var result = new byte[all.Sum(a => (long)a.Length)];
        long offset = 0;
        foreach (var a in all) { Array.Copy(a, 0, result, offset, a.Length); offset += a.Length; }
        return result;
    }
}
