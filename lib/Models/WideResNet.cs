using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Carso.Models;

/// <summary>
/// The DeepMind WideResNet (Gowal et al. 2020) as RobustBench publishes it (<c>DMWideResNet</c> in
/// robustbench/model_zoo/architectures/dm_wide_resnet.py), with the same layout and parameter names, so
/// converted RobustBench checkpoints load strictly: init_conv, layer.{0,1,2}.block.{i}.(batchnorm_0, conv_0,
/// batchnorm_1, conv_1, shortcut), batchnorm, logits.
/// Input: images in [0, 1], [B, InputChannels, H, W] with H + 2 * Padding = W + 2 * Padding = 32 for the
/// final 8x8 pooling to reduce to 1x1. Output: logits [B, NumClasses].
/// </summary>
public sealed class WideResNet : ImageClassifier
{
    // Declaration order = PyTorch registration order = state-dict order.
    readonly Conv2d init_conv;
    readonly Sequential layer;
    readonly BatchNorm2d batchnorm;
    readonly Module<Tensor, Tensor> relu;
    readonly Linear logits;

    public WideResNetSettings Settings { get; }

    /// <param name="settings">Architecture; the DMWideResNet defaults (WRN-28-10, ReLU) when null.</param>
    public WideResNet(WideResNetSettings? settings = null)
        // Settings are checked first, so a bad Depth is reported before anything is built.
        : base(nameof(WideResNet), (settings ??= new WideResNetSettings()).Validate().InputChannels, settings.Mean, settings.Std)
    {
        var s = Settings = settings;
        var c = s.Channels;

        init_conv = Conv2d(s.InputChannels, c[0], 3, stride: 1, padding: 1, bias: false);
        layer = Sequential(
            new WideResNetBlockGroup(s.BlocksPerGroup, c[0], c[1], stride: 1, s.Activation),
            new WideResNetBlockGroup(s.BlocksPerGroup, c[1], c[2], stride: 2, s.Activation),
            new WideResNetBlockGroup(s.BlocksPerGroup, c[2], c[3], stride: 2, s.Activation));
        batchnorm = WideResNetBlock.BatchNorm(c[3]);
        relu = Activations.Create(s.Activation);
        logits = Linear(c[3], s.NumClasses);
        RegisterComponents();
    }

    /// <param name="x">Images in [0, 1], [B, InputChannels, H, W].</param>
    /// <returns>Logits [B, NumClasses].</returns>
    public override Tensor forward(Tensor x)
    {
        var p = Settings.Padding;
        if (p > 0) x = functional.pad(x, (p, p, p, p));
        var out_ = init_conv.call(Standardise(x));
        out_ = relu.call(batchnorm.call(layer.call(out_)));
        out_ = functional.avg_pool2d(out_, 8); // [B, 64k, 8, 8] -> [B, 64k, 1, 1] for 32x32 inputs
        // flatten(1), not PyTorch's view(-1, C): a wrong input size fails in `logits` instead of mixing the batch.
        return logits.call(out_.flatten(1));
    }
}

/// <summary>
/// One group of the WideResNet: <c>block</c>, a Sequential of n <see cref="WideResNetBlock"/>s; the first
/// changes channels and applies the stride. [B, inPlanes, H, W] -> [B, outPlanes, H/stride, W/stride].
/// </summary>
public sealed class WideResNetBlockGroup : Module<Tensor, Tensor>
{
    readonly Sequential block;

    public WideResNetBlockGroup(int blocks, int inPlanes, int outPlanes, int stride, Activation activation)
        : base(nameof(WideResNetBlockGroup))
    {
        block = Sequential(Enumerable.Range(0, blocks)
            .Select(i => (Module<Tensor, Tensor>)new WideResNetBlock(
                i == 0 ? inPlanes : outPlanes, outPlanes, i == 0 ? stride : 1, activation))
            .ToArray());
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => block.call(x);
}

/// <summary>
/// The pre-activation block of the DeepMind WideResNet (<c>_Block</c>), quirks included:
/// conv_0 has no padding of its own and its input is padded "SAME"-style as in TensorFlow, (1, 1, 1, 1) at
/// stride 1 and (0, 1, 0, 1) (right and bottom only) at stride 2; and when the block has a 1x1 shortcut
/// convolution (in != out channels) the shortcut reads the pre-activated input relu_0(batchnorm_0(x)),
/// while the identity shortcut adds the raw x.
/// [B, inPlanes, H, W] -> [B, outPlanes, H/stride, W/stride].
/// </summary>
public sealed class WideResNetBlock : Module<Tensor, Tensor>
{
    readonly BatchNorm2d batchnorm_0;
    readonly Module<Tensor, Tensor> relu_0;
    readonly Conv2d conv_0;
    readonly BatchNorm2d batchnorm_1;
    readonly Module<Tensor, Tensor> relu_1;
    readonly Conv2d conv_1;
    readonly Conv2d? shortcut; // a bare conv, not a Sequential: key "shortcut.weight" as in the checkpoints
    readonly (long, long, long, long) conv0Padding; // (left, right, top, bottom)

    public WideResNetBlock(int inPlanes, int outPlanes, int stride, Activation activation) : base(nameof(WideResNetBlock))
    {
        conv0Padding = stride switch
        {
            1 => (1, 1, 1, 1),
            2 => (0, 1, 0, 1),
            _ => throw new ArgumentException($"WideResNetBlock supports stride 1 or 2, got {stride}", nameof(stride)),
        };
        batchnorm_0 = BatchNorm(inPlanes);
        relu_0 = Activations.Create(activation);
        conv_0 = Conv2d(inPlanes, outPlanes, 3, stride: stride, bias: false); // padding 0: forward pads by hand
        batchnorm_1 = BatchNorm(outPlanes);
        relu_1 = Activations.Create(activation);
        conv_1 = Conv2d(outPlanes, outPlanes, 3, stride: 1, padding: 1, bias: false);
        if (inPlanes != outPlanes)
            shortcut = Conv2d(inPlanes, outPlanes, 1, stride: stride, bias: false);
        RegisterComponents();
    }

    /// <summary>
    /// Batch norm with momentum 0.01 (running stats decay 0.99), as in the DeepMind training code and its
    /// PyTorch ports; RobustBench's evaluation-only copy keeps PyTorch's 0.1, which changes neither the
    /// state dict nor inference.
    /// </summary>
    internal static BatchNorm2d BatchNorm(int features) => BatchNorm2d(features, momentum: 0.01);

    public override Tensor forward(Tensor x)
    {
        var activated = relu_0.call(batchnorm_0.call(x));
        var residual = shortcut is null ? x : shortcut.call(activated);
        var out_ = conv_0.call(functional.pad(activated, conv0Padding));
        out_ = conv_1.call(relu_1.call(batchnorm_1.call(out_)));
        return residual + out_;
    }
}
