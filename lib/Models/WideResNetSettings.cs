namespace Carso.Models;

/// <summary>
/// Settings of the DeepMind / RobustBench WideResNet (<see cref="WideResNet"/>). The defaults are those of
/// RobustBench's <c>DMWideResNet</c> constructor: WRN-28-10, ReLU, 10 classes, CIFAR-10 mean/std, no input
/// padding, 3 input channels. Use the presets to match a published checkpoint.
/// </summary>
/// <param name="Depth">6n + 4 with n >= 1 (n blocks per group): 10, 16, 22, 28, 34, 40, 70, ...</param>
/// <param name="Width">Widening factor k: the groups have 16k, 32k and 64k channels.</param>
/// <param name="Activation">Activation after every batch norm.</param>
/// <param name="NumClasses">Number of logits.</param>
/// <param name="Mean">Per-channel input mean; CIFAR-10's when null.</param>
/// <param name="Std">Per-channel input std; CIFAR-10's when null.</param>
/// <param name="Padding">Zero padding added on every side of the input before anything else (e.g. 2 for 28x28 images).</param>
/// <param name="InputChannels">Channels of the input images.</param>
public sealed record WideResNetSettings(
    int Depth = 28,
    int Width = 10,
    Activation Activation = Activation.ReLU,
    int NumClasses = 10,
    IReadOnlyList<double>? Mean = null,
    IReadOnlyList<double>? Std = null,
    int Padding = 0,
    int InputChannels = 3)
{
    public IReadOnlyList<double> Mean { get; init; } = Mean ?? InputNormalization.Cifar10Mean;
    public IReadOnlyList<double> Std { get; init; } = Std ?? InputNormalization.Cifar10Std;

    /// <summary>
    /// WRN-28-10 with SiLU, the architecture of RobustBench's CIFAR-10 Linf entry Cui2023Decoupled_WRN-28-10
    /// (robustbench/model_zoo/cifar10.py builds it as DMWideResNet(depth=28, width=10, activation_fn=nn.SiLU,
    /// CIFAR-10 mean/std)); Wang2023Better_WRN-28-10 and Xu2023Exploring_WRN-28-10 are the same.
    /// </summary>
    public static WideResNetSettings Wrn28_10 => new(Depth: 28, Width: 10, Activation: Activation.SiLU);

    /// <summary>
    /// WRN-70-16 with Swish (= SiLU), as in Gowal et al. 2020 and RobustBench's Gowal2020Uncovering_70_16,
    /// Rebuffi2021Fixing_70_16_* and Wang2023Better_WRN-70-16 entries.
    /// </summary>
    public static WideResNetSettings Wrn70_16 => new(Depth: 70, Width: 16, Activation: Activation.SiLU);

    /// <summary>Blocks per group: (Depth - 4) / 6.</summary>
    public int BlocksPerGroup => (Depth - 4) / 6;

    /// <summary>Channels after init_conv and after each of the three groups: 16, 16k, 32k, 64k.</summary>
    public int[] Channels => [16, 16 * Width, 32 * Width, 64 * Width];

    /// <summary>Returns these settings, or throws an ArgumentException naming the setting that is wrong.</summary>
    public WideResNetSettings Validate()
    {
        if (Depth < 10 || (Depth - 4) % 6 != 0)
            throw new ArgumentException(
                $"WideResNetSettings.Depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, 70, ...), got {Depth}",
                nameof(Depth));
        if (Width < 1) throw new ArgumentException($"WideResNetSettings.Width must be >= 1, got {Width}", nameof(Width));
        if (NumClasses < 1)
            throw new ArgumentException($"WideResNetSettings.NumClasses must be >= 1, got {NumClasses}", nameof(NumClasses));
        if (Padding < 0) throw new ArgumentException($"WideResNetSettings.Padding must be >= 0, got {Padding}", nameof(Padding));
        if (InputChannels < 1)
            throw new ArgumentException($"WideResNetSettings.InputChannels must be >= 1, got {InputChannels}", nameof(InputChannels));
        InputNormalization.Validate(Mean, Std, InputChannels, nameof(WideResNetSettings));
        return this;
    }
}
