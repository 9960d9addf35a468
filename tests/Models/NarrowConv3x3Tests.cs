using TorchSharp;
using Carso.Models;
using static TorchSharp.torch;

namespace Carso.Tests.Models;

/// <summary>The managed 3x3 correlation into few channels, and the two modules that use it where libtorch is slow:
/// against libtorch in float64 (the kernel sums in another order, so float32 agrees to rounding, not bit for bit).</summary>
public class NarrowConv3x3Tests
{
    static double RelativeError(Tensor actual, Tensor expected) =>
        ((actual.to(ScalarType.Float64) - expected).abs().max() / expected.abs().max()).item<double>();

    /// <summary>Sizes around the kernel's 16-column step and 4-row step, odd ones, 1 to 4 outputs, 1 to 33 channels.</summary>
    [Theory]
    [InlineData(3, 1, 1, 28, 28)]
    [InlineData(2, 32, 1, 28, 28)]
    [InlineData(2, 16, 3, 13, 17)]
    [InlineData(1, 33, 4, 5, 33)]
    [InlineData(4, 2, 2, 1, 1)]
    [InlineData(2, 3, 1, 2, 16)]
    public void CorrelateIsConv2dWithPaddingOne(int b, int c, int o, int h, int w)
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var x = randn(b, c, h, w);
        var taps = randn(o, c, 3, 3);
        var bias = randn(o);
        var expected = nn.functional.conv2d(x.to(ScalarType.Float64), taps.to(ScalarType.Float64), bias.to(ScalarType.Float64), padding: [1, 1]);
        var actual = NarrowConv3x3.Correlate(x, taps, bias);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True(RelativeError(actual, expected) < 1e-5, $"relative error {RelativeError(actual, expected):E2}");
        // Without a bias; a non-contiguous input.
        var xt = x.transpose(2, 3).contiguous().transpose(2, 3);
        var noBias = nn.functional.conv2d(x.to(ScalarType.Float64), taps.to(ScalarType.Float64), padding: [1, 1]);
        Assert.True(RelativeError(NarrowConv3x3.Correlate(xt, taps, null), noBias) < 1e-5);
    }

    [Fact]
    public void CorrelateGivesEachImageTheSameBitsAloneInABatchAndWithTwoThreads()
    {
        using var scope = NewDisposeScope();
        manual_seed(12);
        var x = randn(9, 16, 28, 28);
        var taps = randn(1, 16, 3, 3);
        var batch = NarrowConv3x3.Correlate(x, taps, null);
        var alone = NarrowConv3x3.Correlate(x.narrow(0, 5, 1), taps, null);
        Assert.True(batch.narrow(0, 5, 1).eq(alone).all().item<bool>());
        var threads = get_num_threads();
        set_num_threads(2);
        try { Assert.True(NarrowConv3x3.Correlate(x, taps, null).eq(batch).all().item<bool>()); }
        finally { set_num_threads(threads); }
    }

    [Fact]
    public void CorrelateRejectsWhatItDoesNotServe()
    {
        using var scope = NewDisposeScope();
        Assert.Throws<ArgumentException>(() => NarrowConv3x3.Correlate(randn(1, 2, 4, 4, dtype: ScalarType.Float64), randn(1, 2, 3, 3), null));
        Assert.Throws<ArgumentException>(() => NarrowConv3x3.Correlate(randn(1, 2, 4, 4), randn(5, 2, 3, 3), null));
        Assert.Throws<ArgumentException>(() => NarrowConv3x3.Correlate(randn(1, 2, 4, 4), randn(1, 3, 3, 3), null));
    }

    static void Freeze(nn.Module m) { foreach (var p in m.parameters()) p.requires_grad_(false); }

    /// <summary>ours has the reference's parameter names and initial values (same seed) and, trainable, its forward pass and
    /// gradients (input and weight) bit for bit. Returns ours' parameters, the reference's output and gradients [input, weight].</summary>
    static (Dictionary<string, TorchSharp.Modules.Parameter> Parameters, Tensor Output, IList<Tensor> Gradients) TrainableIsLibtorchs(
        nn.Module<Tensor, Tensor> reference, Tensor weight, Tensor bias, nn.Module<Tensor, Tensor> ours, Tensor x, Tensor upstream)
    {
        var p = ours.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        Assert.Equal(["weight", "bias"], p.Keys.ToArray());
        Assert.True(p["weight"].eq(weight).all().item<bool>(), "the same initial weights from the same seed");
        Assert.True(p["bias"].eq(bias).all().item<bool>());
        var (xa, xb) = (x.detach().requires_grad_(true), x.detach().requires_grad_(true));
        var ya = reference.call(xa);
        var yb = ours.call(xb);
        Assert.True(ya.eq(yb).all().item<bool>());
        var ga = autograd.grad([(ya * upstream).sum()], [xa, weight]);
        var gb = autograd.grad([(yb * upstream).sum()], [xb, p["weight"]]);
        Assert.True(ga[0].eq(gb[0]).all().item<bool>() && ga[1].eq(gb[1]).all().item<bool>());
        return (p, ya, ga);
    }

    [Fact]
    public void Conv3x3IsConv2dInInitialisationKeysForwardAndGradients()
    {
        using var scope = NewDisposeScope();
        manual_seed(13);
        var reference = nn.Conv2d(1, 32, 3, padding: 1);
        manual_seed(13);
        var ours = new Conv3x3(1, 32);
        var x = rand(5, 1, 28, 28);
        var upstream = randn(5, 32, 28, 28);
        var (p, ya, ga) = TrainableIsLibtorchs(reference, reference.weight!, reference.bias!, ours, x, upstream);

        // Frozen: the same forward bit for bit, the input gradient from the kernel, right to float rounding.
        Freeze(ours);
        var xc = x.detach().requires_grad_(true);
        var yc = ours.call(xc);
        Assert.True(yc.eq(ya).all().item<bool>());
        var gc = autograd.grad([(yc * upstream).sum()], [xc])[0];
        var x64 = x.to(ScalarType.Float64).requires_grad_(true);
        var y64 = nn.functional.conv2d(x64, p["weight"].to(ScalarType.Float64), p["bias"].to(ScalarType.Float64), padding: [1, 1]);
        var g64 = autograd.grad([(y64 * upstream.to(ScalarType.Float64)).sum()], [x64])[0];
        Assert.True(RelativeError(gc, g64) < 1e-5, $"relative error {RelativeError(gc, g64):E2}");
        using (no_grad()) Assert.True(ours.call(x).eq(ya.detach()).all().item<bool>());
        // Switched off: libtorch's input gradient, bit for bit.
        using (NarrowConv3x3.LibtorchOnly())
        {
            var xd = x.detach().requires_grad_(true);
            var gd = autograd.grad([(ours.call(xd) * upstream).sum()], [xd])[0];
            Assert.True(gd.eq(ga[0]).all().item<bool>());
        }
        Assert.False(gc.eq(ga[0]).all().item<bool>(), "the kernel's summation order differs from oneDNN's (else this test proves nothing)");
    }

    [Fact]
    public void ConvTranspose3x3IsConvTranspose2dInInitialisationKeysForwardAndGradients()
    {
        using var scope = NewDisposeScope();
        manual_seed(14);
        var reference = nn.ConvTranspose2d(16, 1, 3, stride: 1, padding: 1);
        manual_seed(14);
        var ours = new ConvTranspose3x3(16, 1);
        var x = randn(6, 16, 28, 28);
        var upstream = randn(6, 1, 28, 28);
        var (p, _, _) = TrainableIsLibtorchs(reference, reference.weight!, reference.bias!, ours, x, upstream);

        // Frozen (and under no_grad): the kernel's forward; the input gradient is libtorch's plain convolution.
        var x64 = x.to(ScalarType.Float64).requires_grad_(true);
        var y64 = nn.functional.conv_transpose2d(x64, p["weight"].to(ScalarType.Float64), p["bias"].to(ScalarType.Float64), padding: [1, 1]);
        var g64 = autograd.grad([(y64 * upstream.to(ScalarType.Float64)).sum()], [x64])[0];
        using (no_grad()) Assert.True(RelativeError(ours.call(x), y64.detach()) < 1e-5);
        Freeze(ours);
        var xc = x.detach().requires_grad_(true);
        var yc = ours.call(xc);
        Assert.True(RelativeError(yc.detach(), y64.detach()) < 1e-5);
        var gc = autograd.grad([(yc * upstream).sum()], [xc])[0];
        Assert.True(RelativeError(gc, g64) < 1e-5, $"relative error {RelativeError(gc, g64):E2}");
    }

    [Fact]
    public void FrozenSmallCnnGradientsMatchFloat64AndItsStateDictKeysAndBFloat16CopyStand()
    {
        using var scope = NewDisposeScope();
        manual_seed(15);
        var model = new SmallCnn();
        Assert.Contains("conv1.weight", model.state_dict().Keys);
        Assert.Contains("conv1.bias", model.state_dict().Keys);
        var model64 = new SmallCnn();
        model64.load_state_dict(model.state_dict());
        model64.to(ScalarType.Float64);
        Freeze(model);
        model.eval();
        var images = rand(7, 1, 28, 28);
        var labels = tensor(new long[] { 0, 1, 2, 3, 4, 5, 6 });
        var x = images.detach().requires_grad_(true);
        var g = autograd.grad([nn.functional.cross_entropy(model.call(x), labels, reduction: nn.Reduction.Sum)], [x])[0];
        var x64 = images.to(ScalarType.Float64).requires_grad_(true);
        var g64 = autograd.grad([nn.functional.cross_entropy(model64.call(x64), labels, reduction: nn.Reduction.Sum)], [x64])[0];
        Assert.True(RelativeError(g, g64) < 1e-4, $"relative error {RelativeError(g, g64):E2}");
        // A bfloat16 copy (CarsoPrecision) takes libtorch's path and still gets input gradients.
        var low = new SmallCnn();
        low.load_state_dict(model.state_dict());
        low.to(ScalarType.BFloat16);
        Freeze(low);
        var xl = images.to(ScalarType.BFloat16).requires_grad_(true);
        var gl = autograd.grad([low.call(xl).to(ScalarType.Float32).sum()], [xl])[0];
        Assert.True(gl.to(ScalarType.Float32).isfinite().all().item<bool>() && gl.to(ScalarType.Float32).abs().sum().item<float>() > 0);
    }
}
