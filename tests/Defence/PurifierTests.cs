using Carso.IO;
using Carso.Defence;
using Carso.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Carso.Tests.Defence;

/// <summary>A tiny classifier for 3x64x64 images (none of the library's models runs at that size):
/// conv1 (stride 2) relu1 conv2 (stride 2) relu2 pool flatten fc -> [B, 10].</summary>
sealed class Tiny64Cnn : Module<Tensor, Tensor>
{
    readonly Conv2d conv1, conv2;
    readonly Module<Tensor, Tensor> relu1, relu2, pool, flatten;
    readonly Linear fc;

    public Tiny64Cnn() : base(nameof(Tiny64Cnn))
    {
        // Channel counts are multiples of 16, as CPU convolution gradients need (PurifierSettings.ChannelMultiple).
        conv1 = Conv2d(3, 16, 3, stride: 2, padding: 1);   // [16, 32, 32]
        relu1 = ReLU();
        conv2 = Conv2d(16, 32, 3, stride: 2, padding: 1);  // [32, 16, 16]
        relu2 = ReLU();
        pool = AdaptiveAvgPool2d(1);
        flatten = Flatten();                                // [32]
        fc = Linear(32, 10);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) =>
        fc.call(flatten.call(pool.call(relu2.call(conv2.call(relu1.call(conv1.call(x)))))));
}

public class PurifierTests
{
    /// <summary>
    /// Builds a purifier for the classifier's layers, runs the training forward on 2 random images and backprops
    /// the loss: the reconstruction has exactly the input shape with values in (0, 1), mu/logvar are
    /// [2, LatentSize], the loss terms are finite and every purifier parameter gets a finite, non-zero gradient.
    /// </summary>
    static void AssertBuildsAndTrains(Module<Tensor, Tensor> classifier, IReadOnlyList<string> layerNames, long[] inputShape,
        PurifierSettings? settings = null)
    {
        using var scope = NewDisposeScope();
        manual_seed(0);
        classifier.eval();
        settings ??= new PurifierSettings();
        var purifier = Purifier.Build(settings, PurifierCheckpoint.LayerShapes(classifier, layerNames, inputShape), inputShape);
        var x = rand([2, .. inputShape]);
        Tensor[] layers;
        using (no_grad()) layers = Representation.Capture(classifier, layerNames, x).Layers; // the classifier is frozen

        var (reconstruction, mu, logVar) = purifier.call(layers, x);
        Assert.Equal([2, .. inputShape], reconstruction.shape);
        Assert.True(reconstruction.gt(0).all().item<bool>() && reconstruction.lt(1).all().item<bool>(), "reconstruction not in (0, 1)");
        Assert.Equal(new long[] { 2, settings.LatentSize }, mu.shape);
        Assert.Equal(new long[] { 2, settings.LatentSize }, logVar.shape);

        var (total, bce, kl) = Purifier.PurifierLoss(reconstruction, x, mu, logVar, beta: 1.0);
        Assert.True(float.IsFinite(total.item<float>()) && bce.item<float>() > 0 && kl.item<float>() >= 0);
        total.backward();
        foreach (var (name, p) in purifier.named_parameters())
        {
            var grad = p.grad ?? throw new Xunit.Sdk.XunitException($"{name} got no gradient");
            Assert.True(grad.isfinite().all().item<bool>(), $"{name} has a non-finite gradient");
            Assert.True(grad.abs().sum().item<float>() > 0, $"{name} has a zero gradient");
        }

        // Inference path: decode from the prior given c alone.
        using (no_grad())
        {
            var c = purifier.Condition(layers);
            Assert.Equal(new long[] { 2, settings.ConditioningSize }, c.shape);
            Assert.Equal([2, .. inputShape], purifier.Decode(zeros(2, settings.LatentSize), c).shape);
        }
    }

    [Fact]
    public void BuildsAndTrainsOnSmallCnnFashionMnist()
    {
        // 4-D layers at 28x28 and 14x14 and the flat fc features.
        AssertBuildsAndTrains(new SmallCnn(), ["conv1", "relu2", "relu3"], [1, 28, 28]);
    }

    [Fact]
    public void BuildsAndTrainsOnPreActResNet18Cifar()
    {
        AssertBuildsAndTrains(new PreActResNet18(), ["conv1", "layer1.1", "layer2.1", "layer3.1", "layer4.1", "linear"], [3, 32, 32]);
    }

    [Fact]
    public void BuildsAndTrainsOnEveryConvAndShortcutLayerOfWideResNet28_10()
    {
        // The reference representation: all 28 convolutions (init_conv, conv_0/conv_1 of 12 blocks, 3 shortcuts).
        var model = new WideResNet();
        var convs = Representation.Describe(model, [3, 32, 32]).Where(l => l.Type == "Conv2d").Select(l => l.Name).ToArray();
        Assert.Equal(28, convs.Length);
        Assert.Contains("layer.2.block.0.shortcut", convs);
        AssertBuildsAndTrains(model, convs, [3, 32, 32]);
    }

    [Fact]
    public void BuildsAndTrainsOn64x64Images()
    {
        AssertBuildsAndTrains(new Tiny64Cnn(), ["relu1", "relu2", "flatten"], [3, 64, 64]);
    }

    public static TheoryData<long[]> ImageShapes => [[1, 28, 28], [3, 32, 32], [3, 64, 64], [1, 8, 8], [3, 27, 33], [1, 5, 100], [2, 1, 1]];

    [Theory]
    [MemberData(nameof(ImageShapes))]
    public void DecodesAndEncodesExactlyTheInputShape(long[] inputShape)
    {
        using var scope = NewDisposeScope();
        var settings = new PurifierSettings(ConditioningSize: 16, LatentSize: 4, DecoderChannels: 16);
        var purifier = Purifier.Build(settings, [[4, 5, 5], [6]], inputShape);
        var layers = new[] { randn(3, 4, 5, 5), randn(3, 6) };
        var (reconstruction, _, _) = purifier.call(layers, rand([3, .. inputShape]));
        Assert.Equal([3, .. inputShape], reconstruction.shape);
        Assert.Equal([3, .. inputShape], purifier.Decode(randn(3, 4), purifier.Condition(layers)).shape);
    }

    /// <summary>
    /// Allocates and frees blocks full of NaN, so that the next allocations reuse dirty memory: a kernel that reads
    /// memory it never wrote then gives NaN instead of silently reading zeros from fresh pages.
    /// </summary>
    internal static void PoisonFreedMemory()
    {
        foreach (var n in new long[] { 1 << 10, 1 << 14, 1 << 18, 1 << 20, 1 << 22 })
            for (var k = 0; k < 4; k++) full(n, float.NaN).Dispose();
    }

    /// <summary>max |a - b| &lt;= 1e-3 max |b| + 1e-6, with b the float64 reference.</summary>
    internal static void AssertClose(Tensor float32, Tensor float64, string what)
    {
        var error = (float32.to_type(ScalarType.Float64) - float64).abs().nan_to_num(double.PositiveInfinity).max().item<double>();
        var scale = float64.abs().max().item<double>();
        Assert.True(error <= 1e-3 * scale + 1e-6, $"{what}: float32 differs from float64 by {error:G3} (scale {scale:G3})");
    }

    public static TheoryData<long[], long[][]> GradientCases => new()
    {
        { [1, 28, 28], [[8, 28, 28], [16, 14, 14], [20]] },
        { [3, 32, 32], [[16, 32, 32], [64, 8, 8], [10]] },
        { [3, 27, 33], [[12, 9, 11], [5]] },
    };

    /// <summary>
    /// The gradients of the loss with respect to the representation, the image and every parameter are the
    /// float64 ones (to float32 accuracy) even on dirty memory. Guards against CPU kernels that read
    /// uninitialised memory in backward (libtorch 2.10's 3x3 Conv2d with few output channels does, which is why
    /// the decoder ends in a transposed convolution).
    /// </summary>
    [Theory]
    [MemberData(nameof(GradientCases))]
    public void Float32GradientsMatchFloat64OnDirtyMemory(long[] inputShape, long[][] layerShapes)
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var settings = new PurifierSettings(ConditioningSize: 32, LatentSize: 8, DecoderChannels: 32);
        var purifier = Purifier.Build(settings, layerShapes, inputShape);
        var generator = new Generator(4);
        var layers64 = layerShapes.Select(s => randn([2, .. s], dtype: ScalarType.Float64, generator: generator)).ToArray();
        var x64 = rand([2, .. inputShape], dtype: ScalarType.Float64, generator: generator);
        var eps64 = randn([2, settings.LatentSize], dtype: ScalarType.Float64, generator: generator);

        Tensor Reconstruction(ScalarType dtype)
        {
            using var noGrad = no_grad();
            var c = purifier.Condition(layers64.Select(l => l.to_type(dtype)).ToArray());
            var (mu, logVar) = purifier.Encode(x64.to_type(dtype), c);
            return purifier.Decode(mu + (logVar / 2).exp() * eps64.to_type(dtype), c);
        }

        Tensor[] Gradients(ScalarType dtype)
        {
            // detach: to_type to the same dtype returns the tensor itself, which must not become a leaf of the graph
            // (x64 is also the loss target).
            var layers = layers64.Select(l => l.to_type(dtype).detach().requires_grad_(true)).ToArray();
            var x = x64.to_type(dtype).detach().requires_grad_(true);
            var c = purifier.Condition(layers);
            var (mu, logVar) = purifier.Encode(x, c);
            var z = mu + (logVar / 2).exp() * eps64.to_type(dtype);
            var (total, _, _) = Purifier.PurifierLoss(purifier.Decode(z, c), x64.to_type(dtype), mu, logVar, beta: 1.0);
            return autograd.grad([total], [.. layers, x, .. purifier.parameters()]).ToArray();
        }

        PoisonFreedMemory();
        var reconstruction32 = Reconstruction(ScalarType.Float32);
        PoisonFreedMemory();
        var float32 = Gradients(ScalarType.Float32);
        purifier.to(ScalarType.Float64);
        AssertClose(reconstruction32, Reconstruction(ScalarType.Float64), "reconstruction");
        var float64 = Gradients(ScalarType.Float64);
        var names = layerShapes.Select((_, i) => $"layer {i}").Append("x").Concat(purifier.named_parameters().Select(p => p.name)).ToArray();
        for (var i = 0; i < float32.Length; i++) AssertClose(float32[i], float64[i], names[i]);
    }

    [Fact]
    public void WrongRepresentationShapesAreAnErrorNamingTheLayer()
    {
        var purifier = Purifier.Build(new PurifierSettings(ConditioningSize: 16, LatentSize: 4), [[4, 5, 5], [6]], [1, 8, 8]);
        var e = Assert.Throws<ArgumentException>(() => purifier.Condition([randn(2, 4, 5, 5), randn(2, 7)]));
        Assert.Contains("layer 1 has shape [2, 7]", e.Message);
        Assert.Contains("[B, 6]", e.Message);
        Assert.Throws<ArgumentException>(() => purifier.Condition([randn(2, 4, 5, 5)]));
        Assert.Throws<ArgumentException>(() => Purifier.Build(new PurifierSettings(LatentSize: 0), [[6]], [1, 8, 8]));
        var channels = Assert.Throws<ArgumentException>(() => new PurifierSettings(DecoderChannels: 24).Validate());
        Assert.Contains("DecoderChannels must be a multiple of 16", channels.Message);
    }

    [Fact]
    public void LossIsPerExampleSumOfBceAndBetaTimesKl()
    {
        using var scope = NewDisposeScope();
        // Two examples of two pixels; mu = 0, logvar = 0 gives KL 0, so only BCE counts at first.
        var reconstruction = tensor(new[] { 0.5f, 0.25f, 0.75f, 0.5f }).view(2, 1, 1, 2);
        var clean = tensor(new[] { 1f, 0f, 1f, 1f }).view(2, 1, 1, 2);
        // BCE sum = -ln 0.5 - ln 0.75 - ln 0.75 - ln 0.5 = 2 ln 2 + 2 ln(4/3); divided by B = 2.
        var expectedBce = (2 * Math.Log(2) + 2 * Math.Log(4.0 / 3)) / 2;
        var (total, bce, kl) = Purifier.PurifierLoss(reconstruction, clean, zeros(2, 3), zeros(2, 3), beta: 0.5);
        Assert.Equal(expectedBce, bce.item<float>(), 5);
        Assert.Equal(0, kl.item<float>(), 6);
        Assert.Equal(expectedBce, total.item<float>(), 5);

        // KL of N(1, e^1) vs N(0, 1) in one dimension: -0.5 (1 + 1 - 1 - e) = (e - 1) / 2; one example with it
        // in one dimension, the other at the prior: sum / B = (e - 1) / 4.
        var mu = tensor(new[] { 1f, 0f, 0f, 0f, 0f, 0f }).view(2, 3);
        var logVar = tensor(new[] { 1f, 0f, 0f, 0f, 0f, 0f }).view(2, 3);
        (total, _, kl) = Purifier.PurifierLoss(reconstruction, clean, mu, logVar, beta: 0.5);
        Assert.Equal((Math.E - 1) / 4, kl.item<float>(), 5);
        Assert.Equal(expectedBce + 0.5 * (Math.E - 1) / 4, total.item<float>(), 5);
    }

    [Fact]
    public void WithBatchNormTheBatchedEvalReconstructionEqualsAPerPointOneAndOldPurifiersKeepTheirNames()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var classifier = new SmallCnn();
        classifier.eval();
        string[] names = ["conv1", "fc1", Representation.LogSoftmax];
        var shapes = PurifierCheckpoint.LayerShapes(classifier, names, [1, 28, 28]);
        var settings = new PurifierSettings(ConditioningSize: 32, LatentSize: 8, DecoderChannels: 32, BatchNorm: true);
        var purifier = Purifier.Build(settings, shapes, [1, 28, 28]);
        var keys = purifier.state_dict().Keys.ToArray();
        Assert.Contains(keys, k => k.EndsWith("norm.running_mean"));
        // A few training steps' worth of batch statistics, so the running ones differ from their initial values.
        var x = rand(6, 1, 28, 28);
        Tensor[] layers;
        using (no_grad()) layers = Representation.Capture(classifier, names, x).Layers;
        purifier.train();
        using (no_grad()) for (var i = 0; i < 3; i++) purifier.call(layers, x);
        purifier.eval();
        var z = randn(6, 8);
        using var noGrad = no_grad();
        var batched = purifier.Decode(z, purifier.Condition(layers));
        var single = cat(Enumerable.Range(0, 6).Select(i =>
            purifier.Decode(z.narrow(0, i, 1), purifier.Condition(layers.Select(l => l.narrow(0, i, 1)).ToArray()))).ToArray());
        Assert.True(batched.allclose(single, rtol: 1e-4, atol: 1e-5), "eval-mode batch norm must not mix points");
        // In training mode the batch statistics do mix them: the norm is really there.
        purifier.train();
        var trainBatched = purifier.Decode(z, purifier.Condition(layers));
        Assert.False(trainBatched.allclose(batched, rtol: 1e-4, atol: 1e-5));
        // Without batch norm, the state dict has the names of purifiers saved before it existed.
        var plain = Purifier.Build(settings with { BatchNorm = false }, shapes, [1, 28, 28]);
        Assert.DoesNotContain(plain.state_dict().Keys, k => k.Contains("norm"));
        Assert.Contains(plain.state_dict().Keys, k => k == "condition.bias");
        Assert.DoesNotContain(keys, k => k == "condition.bias");
    }
}
