using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Data;

/// <summary>
/// An image classification dataset held in memory.
/// Images: float32 [N, C, H, W] in [0, 1]. Labels: int64 [N] in [0, Classes.Count).
/// Owns its tensors; derived datasets (Take, Shuffled, Split) own new tensors.
/// </summary>
public sealed record Dataset(string Name, Tensor Images, Tensor Labels, IReadOnlyList<string> Classes) : IDisposable
{
    public long Count => Images.shape[0];
    public long Channels => Images.shape[1];
    public long Height => Images.shape[2];
    public long Width => Images.shape[3];
    public long[] ImageShape => [Channels, Height, Width];

    /// <summary>Checks the invariants (shapes, dtypes, label range) and returns the dataset.</summary>
    public static Dataset Create(string name, Tensor images, Tensor labels, IReadOnlyList<string> classes)
    {
        if (images.dim() != 4)
            throw new ArgumentException($"{name}: images must be [N, C, H, W], got shape [{string.Join(", ", images.shape)}]");
        if (images.dtype != ScalarType.Float32)
            throw new ArgumentException($"{name}: images must be float32, got {images.dtype}");
        if (labels.dim() != 1 || labels.dtype != ScalarType.Int64)
            throw new ArgumentException($"{name}: labels must be int64 [N], got {labels.dtype} [{string.Join(", ", labels.shape)}]");
        if (labels.shape[0] != images.shape[0])
            throw new ArgumentException($"{name}: {images.shape[0]} images but {labels.shape[0]} labels");
        if (labels.numel() > 0)
        {
            var (min, max) = (labels.min().item<long>(), labels.max().item<long>());
            if (min < 0 || max >= classes.Count)
                throw new ArgumentException($"{name}: labels span [{min}, {max}] but there are {classes.Count} classes");
        }
        return new Dataset(name, images, labels, classes);
    }

    public void Dispose()
    {
        Images.Dispose();
        Labels.Dispose();
    }
}

/// <summary>Pure operations on datasets: each returns a new dataset and leaves its argument intact.</summary>
public static class DatasetOps
{
    /// <summary>The first <paramref name="count"/> points (all of them when count exceeds the size).</summary>
    public static Dataset Take(this Dataset data, long count)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), $"count must be >= 0, got {count}");
        var n = Math.Min(count, data.Count);
        return data with
        {
            Images = data.Images.narrow(0, 0, n).clone(),
            Labels = data.Labels.narrow(0, 0, n).clone(),
        };
    }

    /// <summary>The <paramref name="count"/> points from <paramref name="start"/> on (same name: the same points of the same data).</summary>
    public static Dataset Range(this Dataset data, long start, long count)
    {
        if (start < 0 || count < 0 || start + count > data.Count)
            throw new ArgumentOutOfRangeException(nameof(start), $"{data.Name}: points [{start}, {start + count}) are not within [0, {data.Count})");
        return data with
        {
            Images = data.Images.narrow(0, start, count).clone(),
            Labels = data.Labels.narrow(0, start, count).clone(),
        };
    }

    /// <summary>The points at the given indices (int64 [M]), in that order.</summary>
    public static Dataset Select(this Dataset data, Tensor indices) => data with
    {
        Images = data.Images.index_select(0, indices),
        Labels = data.Labels.index_select(0, indices),
    };

    /// <summary>A permutation of 0..n-1 that depends only on the seed (CPU generator).</summary>
    public static Tensor Permutation(long n, long seed)
    {
        using var generator = new Generator((ulong)seed);
        return randperm(n, ScalarType.Int64, generator: generator);
    }

    /// <summary>All points in an order fixed by the seed.</summary>
    public static Dataset Shuffled(this Dataset data, long seed)
    {
        using var order = Permutation(data.Count, seed);
        return data.Select(order);
    }

    /// <summary>
    /// Splits off a held-out validation set of <paramref name="validationCount"/> points chosen by the seed;
    /// the rest (in their original order) is the training set. Disjoint, and together all points.
    /// </summary>
    public static (Dataset Train, Dataset Validation) SplitValidation(this Dataset data, long validationCount, long seed)
    {
        if (validationCount < 0 || validationCount >= data.Count)
            throw new ArgumentOutOfRangeException(nameof(validationCount),
                $"{data.Name}: validation count must be in [0, {data.Count}), got {validationCount}");
        using var order = Permutation(data.Count, seed);
        using var validationIdx = order.narrow(0, 0, validationCount).sort().Values;
        using var trainIdx = order.narrow(0, validationCount, data.Count - validationCount).sort().Values;
        return (data.Select(trainIdx) with { Name = data.Name + "/train-split" },
                data.Select(validationIdx) with { Name = data.Name + "/validation" });
    }

    /// <summary>
    /// Mini-batches (images [B, C, H, W], labels [B]) in order, or in an order fixed by <paramref name="shuffleSeed"/>.
    /// The last batch may be smaller. The caller owns (and disposes, e.g. through a dispose scope) each batch.
    /// </summary>
    public static IEnumerable<(Tensor Images, Tensor Labels)> Batches(this Dataset data, int batchSize, long? shuffleSeed = null)
    {
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), $"batch size must be > 0, got {batchSize}");
        var n = data.Count;
        Tensor? order = shuffleSeed is long s ? Permutation(n, s) : null;
        try
        {
            for (long start = 0; start < n; start += batchSize)
            {
                var size = Math.Min(batchSize, n - start);
                if (order is null)
                    yield return (data.Images.narrow(0, start, size), data.Labels.narrow(0, start, size));
                else
                {
                    using var idx = order.narrow(0, start, size);
                    yield return (data.Images.index_select(0, idx), data.Labels.index_select(0, idx));
                }
            }
        }
        finally { order?.Dispose(); }
    }

    /// <summary>Number of points per class, indexed by class.</summary>
    public static long[] ClassCounts(this Dataset data)
    {
        using var counts = data.Labels.bincount(null, data.Classes.Count);
        return counts.data<long>().ToArray();
    }
}
