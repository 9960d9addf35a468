using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Carso.Models;

/// <summary>
/// A small CNN for 1x28x28 images (Fashion-MNIST, MNIST), sized so that PGD adversarial training takes
/// minutes per epoch on 2 CPU cores:
///   conv1 3x3 (1 -> C1) pool1 relu1 -> [C1, 14, 14]
///   conv2 3x3 (C1 -> C2) pool2 relu2 -> [C2, 7, 7]
///   flatten, fc1 (C2*49 -> Hidden) relu3, logits (Hidden -> classes).
/// Each ReLU comes after its max-pool: ReLU is monotone, so relu(maxpool(h)) = maxpool(relu(h)) and both send the
/// gradient to the same first maximum of each window (or nowhere, where the window's maximum is &lt;= 0) — the same
/// values and gradients bit for bit (tests/Models) — and the ReLU runs on a quarter of the elements: forward+backward on
/// 850 images 0.88x the time of the other order (one thread, paired). So relu1/relu2 are the pooled activations and
/// pool1/pool2 the pooled pre-activations.
/// Input: images [B, 1, 28, 28] in [0, 1]; output: logits [B, classes]. No input normalisation
/// (the data are already in [0, 1] and the network learns its own scale).
/// Every stage is a named module, so representation capture can read any of them.
/// </summary>
public sealed class SmallCnn : Module<Tensor, Tensor>
{
    public sealed record Settings(int Channels1 = 32, int Channels2 = 64, int Hidden = 128, int Classes = 10);

    public Settings Config { get; }

    readonly Conv3x3 conv1;
    readonly Conv2d conv2;
    readonly ReLU relu1, relu2, relu3;
    readonly FastMaxPool pool1, pool2;
    readonly Flatten flatten;
    readonly Linear fc1, logits;

    public SmallCnn(Settings? settings = null) : base(nameof(SmallCnn))
    {
        Config = settings ?? new Settings();
        conv1 = new Conv3x3(1, Config.Channels1);   // nn.Conv2d(1, C1, 3, padding: 1), its input gradient computed faster
        relu1 = ReLU();
        pool1 = new FastMaxPool(2);
        conv2 = Conv2d(Config.Channels1, Config.Channels2, 3, padding: 1);
        relu2 = ReLU();
        pool2 = new FastMaxPool(2);
        flatten = Flatten();
        fc1 = Linear(Config.Channels2 * 7 * 7, Config.Hidden);
        relu3 = ReLU();
        logits = Linear(Config.Hidden, Config.Classes);
        RegisterComponents();
    }

    /// <summary>images [B, 1, 28, 28] in [0, 1] -> logits [B, classes].</summary>
    public override Tensor forward(Tensor images)
    {
        using var scope = NewDisposeScope();
        var h = relu1.call(pool1.call(conv1.call(images)));
        h = relu2.call(pool2.call(conv2.call(h)));
        h = relu3.call(fc1.call(flatten.call(h)));
        return logits.call(h).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Max pooling (kernel = stride = Size, no padding) with the same values, argmax positions (first maximum of each window)
/// and gradients as nn.MaxPool2d, bit for bit, computed faster on CPU: libtorch's NCHW max-pool kernel walks one window
/// at a time (20-40% of an attack's time on the committed classifier, perf). Size 2 in float32 on an AVX-512 CPU goes
/// through <see cref="MaxPool2x2"/>'s managed vectorised kernel (one pass for maxima and positions, a dense backward).
/// Otherwise the channels-last route: without a gradient the pooling runs on a channels-last copy (4-7x faster than NCHW
/// on [20, 32, 28, 28] with both layout copies counted); with one, the channels-last kernel only finds the argmax positions
/// and the output gathers them from the input (the channels-last backward is slower than the NCHW one; the gather's
/// backward, a scatter to distinct positions, is fast and gives max pooling's gradient).
/// </summary>
public sealed class FastMaxPool(long size) : Module<Tensor, Tensor>(nameof(FastMaxPool))
{
    public long Size { get; } = size;

    /// <summary>[B, C, H, W] -> [B, C, H / Size, W / Size] (floor), contiguous.</summary>
    public override Tensor forward(Tensor input)
    {
        if (Size == 2 && MaxPool2x2.IsSupported(input)) return MaxPool2x2.Apply(input);
        return ChannelsLast(input, Size);
    }

    /// <summary>The channels-last route (any size, dtype and device).</summary>
    public static Tensor ChannelsLast(Tensor input, long size)
    {
        using var scope = NewDisposeScope();
        Tensor Copy() => input.detach().permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);
        if (!(input.requires_grad && is_grad_enabled()))
            return nn.functional.max_pool2d(Copy(), size).contiguous().MoveToOuterDisposeScope();
        Tensor positions;
        using (no_grad()) positions = nn.functional.max_pool2d_with_indices(Copy(), [size, size]).indices.contiguous();
        return input.flatten(2).gather(2, positions.flatten(2)).view(positions.shape).MoveToOuterDisposeScope();
    }
}
