using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Carso.Models;

/// <summary>
/// PreAct ResNet-18 for 3x32x32 images (He et al. 2016, identity mappings), the version of Wong et al. 2020
/// (fast adversarial training) and Rice et al. 2020 (robust overfitting): conv1, four stages of two
/// <see cref="PreActBlock"/>s (64, 128, 256, 512 channels; stride 2 from stage 2 on), a final bn + ReLU,
/// 4x4 average pooling and <c>linear</c>. Input: images in [0, 1], [B, 3, 32, 32]. Output: logits [B, numClasses].
/// State-dict keys and shapes are those of the PyTorch model (conv1.weight, layer1.0.bn1.weight, ...,
/// layer2.0.shortcut.0.weight, bn.weight, linear.weight); 11,172,170 parameters for 10 classes.
/// </summary>
public sealed class PreActResNet18 : ImageClassifier
{
    // Field names are the PyTorch attribute names: TorchSharp derives state-dict keys from them.
    readonly Conv2d conv1;
    readonly Sequential layer1, layer2, layer3, layer4;
    readonly BatchNorm2d bn;
    readonly Module<Tensor, Tensor> relu;
    readonly Linear linear;

    public int NumClasses { get; }

    /// <param name="numClasses">Number of logits.</param>
    /// <param name="mean">Per-channel input mean (3 values); CIFAR-10's by default.</param>
    /// <param name="std">Per-channel input std (3 values); CIFAR-10's by default.</param>
    public PreActResNet18(int numClasses = 10, IReadOnlyList<double>? mean = null, IReadOnlyList<double>? std = null)
        : base(nameof(PreActResNet18), 3, mean ?? InputNormalization.Cifar10Mean, std ?? InputNormalization.Cifar10Std)
    {
        if (numClasses < 1) throw new ArgumentException($"numClasses must be >= 1, got {numClasses}", nameof(numClasses));
        NumClasses = numClasses;

        conv1 = Conv2d(3, 64, 3, stride: 1, padding: 1, bias: false);
        layer1 = Stage(64, 64, stride: 1);
        layer2 = Stage(64, 128, stride: 2);
        layer3 = Stage(128, 256, stride: 2);
        layer4 = Stage(256, 512, stride: 2);
        bn = BatchNorm2d(512);
        relu = ReLU();
        linear = Linear(512, numClasses);
        RegisterComponents();
    }

    static Sequential Stage(int inPlanes, int planes, int stride) =>
        Sequential(new PreActBlock(inPlanes, planes, stride), new PreActBlock(planes, planes, 1));

    /// <param name="x">Images in [0, 1], [B, 3, 32, 32].</param>
    /// <returns>Logits [B, NumClasses].</returns>
    public override Tensor forward(Tensor x)
    {
        var out_ = conv1.call(Standardise(x));
        out_ = layer4.call(layer3.call(layer2.call(layer1.call(out_))));
        out_ = relu.call(bn.call(out_));
        out_ = functional.avg_pool2d(out_, 4); // [B, 512, 4, 4] -> [B, 512, 1, 1]
        return linear.call(out_.flatten(1));
    }
}

/// <summary>
/// Pre-activation basic block: out = conv2(relu(bn2(conv1(a)))) + shortcut, with a = relu(bn1(x)).
/// The shortcut is x itself, or a 1x1 convolution of <c>a</c> (the activated input, as in the published
/// code) when the stride or the channel count changes. [B, inPlanes, H, W] -> [B, planes, H/stride, W/stride].
/// </summary>
public sealed class PreActBlock : Module<Tensor, Tensor>
{
    readonly BatchNorm2d bn1;
    readonly Module<Tensor, Tensor> relu1; // not in PyTorch (it calls F.relu); a module so it can be captured
    readonly Conv2d conv1;
    readonly BatchNorm2d bn2;
    readonly Module<Tensor, Tensor> relu2;
    readonly Conv2d conv2;
    readonly Sequential? shortcut; // null: identity, and no state-dict entry, as PyTorch's missing attribute

    public PreActBlock(int inPlanes, int planes, int stride) : base(nameof(PreActBlock))
    {
        bn1 = BatchNorm2d(inPlanes);
        relu1 = ReLU();
        conv1 = Conv2d(inPlanes, planes, 3, stride: stride, padding: 1, bias: false);
        bn2 = BatchNorm2d(planes);
        relu2 = ReLU();
        conv2 = Conv2d(planes, planes, 3, stride: 1, padding: 1, bias: false);
        if (stride != 1 || inPlanes != planes)
            shortcut = Sequential(Conv2d(inPlanes, planes, 1, stride: stride, bias: false));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var a = relu1.call(bn1.call(x));
        var residual = shortcut is null ? x : shortcut.call(a);
        var out_ = conv2.call(relu2.call(bn2.call(conv1.call(a))));
        return out_ + residual;
    }
}
