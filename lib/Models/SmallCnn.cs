using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Carso.Models;

/// <summary>
/// A small CNN for 1x28x28 images (Fashion-MNIST, MNIST), sized so that PGD adversarial training takes
/// minutes per epoch on 2 CPU cores:
///   conv1 3x3 (1 -> C1) relu1 pool1 -> [C1, 14, 14]
///   conv2 3x3 (C1 -> C2) relu2 pool2 -> [C2, 7, 7]
///   flatten, fc1 (C2*49 -> Hidden) relu3, logits (Hidden -> classes).
/// Input: images [B, 1, 28, 28] in [0, 1]; output: logits [B, classes]. No input normalisation
/// (the data are already in [0, 1] and the network learns its own scale).
/// Every stage is a named module, so representation capture can read any of them.
/// </summary>
public sealed class SmallCnn : Module<Tensor, Tensor>
{
    public sealed record Settings(int Channels1 = 32, int Channels2 = 64, int Hidden = 128, int Classes = 10);

    public Settings Config { get; }

    readonly Conv2d conv1, conv2;
    readonly ReLU relu1, relu2, relu3;
    readonly MaxPool2d pool1, pool2;
    readonly Flatten flatten;
    readonly Linear fc1, logits;

    public SmallCnn(Settings? settings = null) : base(nameof(SmallCnn))
    {
        Config = settings ?? new Settings();
        conv1 = Conv2d(1, Config.Channels1, 3, padding: 1);
        relu1 = ReLU();
        pool1 = MaxPool2d(2);
        conv2 = Conv2d(Config.Channels1, Config.Channels2, 3, padding: 1);
        relu2 = ReLU();
        pool2 = MaxPool2d(2);
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
        var h = pool1.call(relu1.call(conv1.call(images)));
        h = pool2.call(relu2.call(conv2.call(h)));
        h = relu3.call(fc1.call(flatten.call(h)));
        return logits.call(h).MoveToOuterDisposeScope();
    }
}
