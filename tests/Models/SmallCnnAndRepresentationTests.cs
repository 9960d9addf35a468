using Carso.Models;
using static TorchSharp.torch;

namespace Carso.Tests.Models;

public class SmallCnnAndRepresentationTests
{
    [Fact]
    public void SmallCnnRunsForwardAndBackwardOnFashionMnistShapes()
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        var model = new SmallCnn();
        var x = rand(4, 1, 28, 28, requires_grad: true);
        var logits = model.call(x);
        Assert.Equal(new long[] { 4, 10 }, logits.shape);
        logits.sum().backward();
        Assert.True(x.grad!.abs().sum().item<float>() > 0);
        Assert.All(model.parameters(), p => Assert.True(p.grad is not null && p.grad.isfinite().all().item<bool>()));
    }

    [Fact]
    public void CaptureReturnsLayerOutputsInTheRequestedOrderAndTheSameLogits()
    {
        using var scope = NewDisposeScope();
        manual_seed(2);
        var model = new SmallCnn();
        model.eval();
        var x = rand(3, 1, 28, 28);
        var (logits, layers) = Representation.Capture(model, ["relu3", "conv1", "pool2"], x);
        Assert.Equal(new long[] { 3, 128 }, layers[0].shape);              // default hidden 128
        Assert.Equal(new long[] { 3, 32, 28, 28 }, layers[1].shape);
        Assert.Equal(new long[] { 3, 64, 7, 7 }, layers[2].shape);
        Assert.True(logits.allclose(model.call(x)));
        Assert.True(layers[0].ge(0).all().item<bool>(), "relu3 output must be non-negative");
    }

    [Fact]
    public void GradientsFlowFromCapturedLayersBackToTheInput()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var model = new SmallCnn();
        var x = rand(2, 1, 28, 28, requires_grad: true);
        var (_, layers) = Representation.Capture(model, ["conv2"], x);
        var grad = autograd.grad([layers[0].pow(2).sum()], [x])[0];
        Assert.True(grad.abs().sum().item<float>() > 0);
        Assert.True(grad.isfinite().all().item<bool>());
    }

    [Fact]
    public void CaptureWorksUnderNoGrad()
    {
        using var scope = NewDisposeScope();
        var model = new SmallCnn();
        using var noGrad = no_grad();
        var (logits, layers) = Representation.Capture(model, ["fc1"], rand(2, 1, 28, 28));
        Assert.False(logits.requires_grad);
        Assert.False(layers[0].requires_grad);
    }

    [Fact]
    public void UnknownLayerNamesAreAnErrorListingTheAvailableNames()
    {
        var model = new SmallCnn();
        var e = Assert.Throws<ArgumentException>(() => Representation.Capture(model, ["conv9", "conv1"], zeros(1, 1, 28, 28)));
        Assert.Contains("'conv9'", e.Message);
        Assert.Contains("available: conv1, conv2", e.Message);
        Assert.Contains("logits", e.Message);
    }

    [Fact]
    public void DescribeListsEveryLayerWithItsOutputShapeInCallOrder()
    {
        var layers = Representation.Describe(new SmallCnn(), [1, 28, 28]);
        Assert.Equal(["conv1", "pool1", "relu1", "conv2", "pool2", "relu2", "flatten", "fc1", "relu3", "logits", Representation.LogSoftmax],
            layers.Select(l => l.Name));
        Assert.Equal(new long[] { 1, 64, 7, 7 }, layers.Single(l => l.Name == "pool2").OutputShape);
        Assert.Equal(new long[] { 1, 10 }, layers[^1].OutputShape);
        Assert.Equal("Conv3x3", layers[0].Type);
        Assert.Equal("Conv2d", layers[3].Type);
    }

    [Fact]
    public void TheLogSoftmaxLayerIsTheLogSoftmaxOfTheLogitsAndCarriesTheInputGradient()
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        var model = new SmallCnn();
        model.eval();
        var x = rand(3, 1, 28, 28).requires_grad_(true);
        var (logits, layers) = Representation.Capture(model, ["conv1", Representation.LogSoftmax], x);
        Assert.True(layers[1].allclose(nn.functional.log_softmax(logits, 1)));
        Assert.True(layers[1].exp().sum(1).allclose(ones(3)), "log-probabilities");
        layers[1][TensorIndex.Colon, 0].sum().backward();
        Assert.True(x.grad is { } g && g.abs().sum().item<float>() > 0, "the captured layer must be part of the graph");
    }

    /// <summary>Both routes of FastMaxPool (the AVX-512 kernel where this CPU has it, and the channels-last one) against
    /// max_pool2d: values, chosen positions (through the gradient) and gradients bit for bit, with ties in most windows, NaN
    /// and -inf windows, odd sizes (the last row and column belong to no window), sizes around the kernel's 16-window step,
    /// a non-contiguous input, with and without a gradient.</summary>
    [Theory]
    [InlineData(5, 7, 13, 11)]
    [InlineData(3, 4, 28, 28)]
    [InlineData(2, 3, 14, 14)]
    [InlineData(2, 2, 6, 66)]
    [InlineData(1, 1, 2, 2)]
    public void FastMaxPoolMatchesMaxPool2dBitForBitInValuesAndGradientsWithTiesAndNaNs(int b, int c, int h, int w)
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        // Coarse values make ties within windows common (first maximum wins in all); a NaN window and an all -inf one.
        var data = (rand(b, c, h, w) * 4).floor() - 2;
        data[0, 0, 0, 0] = tensor(float.NaN);
        data[0, 0, 0, 1] = tensor(float.NaN);
        data[b - 1, c - 1, h - 2, w - 2] = tensor(float.NegativeInfinity);
        data[b - 1, c - 1, h - 2, w - 1] = tensor(float.NegativeInfinity);
        data[b - 1, c - 1, h - 1, w - 2] = tensor(float.NegativeInfinity);
        data[b - 1, c - 1, h - 1, w - 1] = tensor(float.NegativeInfinity);
        var inputs = new[] { data, data.transpose(2, 3).contiguous().transpose(2, 3) }; // the second is not contiguous
        var routes = new (string Name, Func<Tensor, Tensor> Pool)[]
        {
            ("module", x => new FastMaxPool(2).call(x)),
            ("channels-last", x => FastMaxPool.ChannelsLast(x, 2)),
            ("module, 2 threads", x =>
            {
                // The kernel splits the planes between workers when libtorch has several threads.
                var threads = get_num_threads();
                set_num_threads(2);
                try { return new FastMaxPool(2).call(x); }
                finally { set_num_threads(threads); }
            }),
        };
        foreach (var input in inputs)
            foreach (var (name, pool) in routes)
            {
                var reference = input.detach().requires_grad_(true);
                var ours = input.detach().requires_grad_(true);
                var expected = nn.functional.max_pool2d(reference, 2);
                var actual = pool(ours);
                Assert.Equal(expected.shape, actual.shape);
                Assert.True(actual.is_contiguous(), name);
                Assert.True(expected.isnan().eq(actual.isnan()).all().item<bool>(), $"{name}: NaN positions");
                Assert.True(expected.nan_to_num().eq(actual.nan_to_num()).all().item<bool>(), $"{name}: values");
                var upstream = randn(expected.shape);
                upstream.view(-1)[upstream.numel() / 2] = tensor(-0.0f); // a negative zero upstream: the scatter-add gives +0
                var gExpected = autograd.grad([(expected * upstream).nansum()], [reference])[0];
                var gActual = autograd.grad([(actual * upstream).nansum()], [ours])[0];
                Assert.True(gExpected.eq(gActual).all().item<bool>(), $"{name}: gradients");
                Assert.True(gExpected.signbit().eq(gActual.signbit()).all().item<bool>(), $"{name}: signs of zero gradients");
                using (no_grad())
                {
                    var plain = pool(input);
                    Assert.True(plain.nan_to_num().eq(expected.detach().nan_to_num()).all().item<bool>(), $"{name}: without a gradient");
                }
            }
    }

    [Fact]
    public void PoolingBeforeTheReluGivesTheLogitsAndInputGradientsOfTheUsualOrderBitForBit()
    {
        using var scope = NewDisposeScope();
        manual_seed(4);
        var model = new SmallCnn();
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        // The textbook order, with libtorch's own max-pool: conv, ReLU, then pool.
        Tensor Usual(Tensor x)
        {
            var h = nn.functional.max_pool2d(nn.functional.relu(nn.functional.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding: [1, 1])), 2);
            h = nn.functional.max_pool2d(nn.functional.relu(nn.functional.conv2d(h, p["conv2.weight"], p["conv2.bias"], padding: [1, 1])), 2);
            h = nn.functional.relu(nn.functional.linear(h.flatten(1), p["fc1.weight"], p["fc1.bias"]));
            return nn.functional.linear(h, p["logits.weight"], p["logits.bias"]);
        }
        // Flat regions (constant pre-activations, ties in every window) next to textured ones, as in Fashion-MNIST.
        var images = rand(6, 1, 28, 28);
        images.index_put_(zeros(6, 1, 28, 12), TensorIndex.Ellipsis, TensorIndex.Slice(0, 12));
        images.index_put_(ones(6, 1, 6, 28), TensorIndex.Ellipsis, TensorIndex.Slice(20, 26), TensorIndex.Colon);
        var labels = tensor(new long[] { 0, 1, 2, 3, 4, 5 });
        var a = images.detach().requires_grad_(true);
        var b = images.detach().requires_grad_(true);
        var expected = Usual(a);
        var actual = model.forward(b);
        Assert.True(expected.eq(actual).all().item<bool>());
        var gExpected = autograd.grad([nn.functional.cross_entropy(expected, labels)], [a])[0];
        var gActual = autograd.grad([nn.functional.cross_entropy(actual, labels)], [b])[0];
        Assert.True(gExpected.eq(gActual).all().item<bool>());
        Assert.True(gActual.abs().sum().item<float>() > 0);
    }
}
