using static TorchSharp.torch;

namespace Carso.Models;

/// <summary>Per-channel input statistics for the standardisation done inside every <see cref="ImageClassifier"/>.</summary>
public static class InputNormalization
{
    public static readonly IReadOnlyList<double> Cifar10Mean = [0.4914, 0.4822, 0.4465];
    public static readonly IReadOnlyList<double> Cifar10Std = [0.2471, 0.2435, 0.2616];
    public static readonly IReadOnlyList<double> Cifar100Mean = [0.5071, 0.4865, 0.4409];
    public static readonly IReadOnlyList<double> Cifar100Std = [0.2673, 0.2564, 0.2762];

    /// <summary>Checks one mean and one positive std per input channel; names the setting that is wrong.</summary>
    public static void Validate(IReadOnlyList<double> mean, IReadOnlyList<double> std, int channels, string owner)
    {
        if (mean.Count != channels)
            throw new ArgumentException($"{owner}: Mean has {mean.Count} values but there are {channels} input channels", "Mean");
        if (std.Count != channels)
            throw new ArgumentException($"{owner}: Std has {std.Count} values but there are {channels} input channels", "Std");
        if (std.Any(s => !(s > 0)))
            throw new ArgumentException($"{owner}: every Std value must be > 0, got [{string.Join(", ", std)}]", "Std");
    }

    /// <summary>A float32 [C, 1, 1] tensor that broadcasts over [B, C, H, W].</summary>
    public static Tensor ChannelTensor(IReadOnlyList<double> values) =>
        tensor(values.Select(v => (float)v).ToArray()).view(values.Count, 1, 1);
}
