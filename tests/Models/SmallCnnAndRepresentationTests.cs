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
        Assert.Equal("Conv2d", layers[0].Type);
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

    [Fact]
    public void ChannelsLastMaxPoolMatchesMaxPool2dBitForBitInValuesAndGradientsWithTies()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        // Coarse values make ties within windows common (first maximum wins in both); odd sizes drop the last row/column.
        var data = (rand(5, 7, 13, 11) * 4).floor();
        var pool = new ChannelsLastMaxPool(2);
        var reference = data.detach().requires_grad_(true);
        var ours = data.detach().requires_grad_(true);
        var expected = nn.functional.max_pool2d(reference, 2);
        var actual = pool.call(ours);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True(actual.is_contiguous());
        Assert.True(expected.eq(actual).all().item<bool>());
        var upstream = randn(expected.shape);
        var gExpected = autograd.grad([(expected * upstream).sum()], [reference])[0];
        var gActual = autograd.grad([(actual * upstream).sum()], [ours])[0];
        Assert.True(gExpected.eq(gActual).all().item<bool>());
        using (no_grad()) Assert.True(pool.call(data).eq(expected.detach()).all().item<bool>());
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
