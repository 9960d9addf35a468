using Carso.Data;
using MathNet.Numerics.Distributions;
using static TorchSharp.torch;

namespace Carso.Evaluation;

/// <summary>An accuracy with its 95% Wilson score interval and the number of points it rests on.</summary>
public sealed record Accuracy(long Correct, long N, double Lower, double Upper)
{
    public double Value => N == 0 ? double.NaN : (double)Correct / N;

    /// <summary>Wilson score interval (Wilson 1927) at the given confidence; well behaved near 0 and 1, unlike the normal approximation.</summary>
    public static Accuracy Of(long correct, long n, double confidence = 0.95)
    {
        if (n < 0 || correct < 0 || correct > n)
            throw new ArgumentOutOfRangeException(nameof(correct), $"need 0 <= correct <= n, got {correct} of {n}");
        if (n == 0) return new Accuracy(0, 0, 0, 1);
        var z = Normal.InvCDF(0, 1, 1 - (1 - confidence) / 2);
        var p = (double)correct / n;
        var denominator = 1 + z * z / n;
        var centre = (p + z * z / (2.0 * n)) / denominator;
        var half = z * Math.Sqrt(p * (1 - p) / n + z * z / (4.0 * n * n)) / denominator;
        return new Accuracy(correct, n, Math.Max(0, centre - half), Math.Min(1, centre + half));
    }

    public override string ToString() => $"{100 * Value:F2}% [{100 * Lower:F2}, {100 * Upper:F2}] (n={N})";
}

/// <summary>Per-point correctness of a model, clean or under an attack, batched.</summary>
public static class Evaluate
{
    /// <summary>
    /// For every point of the dataset, whether model(attack(x)) predicts its label: bool [N] on the CPU.
    /// model: images [B, C, H, W] -> logits [B, K]; attack: (model, x, y) -> xAdv, or null for clean accuracy.
    /// </summary>
    public static Tensor PerPointCorrect(Func<Tensor, Tensor> model, Dataset data, int batchSize,
        Func<Func<Tensor, Tensor>, Tensor, Tensor, Tensor>? attack = null, Device? device = null)
    {
        var parts = new List<Tensor>();
        foreach (var (images, labels) in data.Batches(batchSize))
        {
            using var scope = NewDisposeScope();
            using var batchImages = images;  // made outside this scope: free it with the batch
            using var batchLabels = labels;
            var x = device is null ? images : images.to(device);
            var y = device is null ? labels : labels.to(device);
            var input = attack is null ? x : attack(model, x, y);
            using (no_grad())
                parts.Add(model(input).argmax(1).eq(y).cpu().MoveToOuterDisposeScope());
        }
        using var _ = NewDisposeScope();
        var all = cat(parts).MoveToOuterDisposeScope();
        foreach (var p in parts) p.Dispose();
        return all;
    }

    public static Accuracy ToAccuracy(Tensor perPointCorrect) =>
        Accuracy.Of(perPointCorrect.sum().item<long>(), perPointCorrect.numel());
}
