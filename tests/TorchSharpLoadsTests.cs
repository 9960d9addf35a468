using static TorchSharp.torch;

namespace Carso.Tests;

/// <summary>The native library loads on this machine (the GLIBCXX fix worked) and computes correctly.</summary>
public class TorchSharpLoadsTests
{
    [Fact]
    public void ConvolutionForwardAndBackwardComputeTheRightValues()
    {
        using var scope = NewDisposeScope();
        // A 1x1x3x3 input of ones and a 1x1x2x2 kernel of ones: every output is 4, and each input pixel's
        // gradient of sum(output) counts the windows covering it: corners 1, edges 2, centre 4.
        var x = ones(1, 1, 3, 3, requires_grad: true);
        var weight = ones(1, 1, 2, 2, requires_grad: true);
        var y = nn.functional.conv2d(x, weight);
        Assert.Equal(new long[] { 1, 1, 2, 2 }, y.shape);
        Assert.All(y.data<float>().ToArray(), v => Assert.Equal(4f, v));
        y.sum().backward();
        Assert.Equal(new float[] { 1, 2, 1, 2, 4, 2, 1, 2, 1 }, x.grad!.data<float>().ToArray());
        Assert.All(weight.grad!.data<float>().ToArray(), v => Assert.Equal(4f, v)); // each weight sees 4 windows of ones
    }

    [Fact]
    public void DevicePickerChoosesCpuHereAndRejectsNonsense()
    {
        Assert.Equal(TorchSharp.DeviceType.CPU, Carso.Runtime.Devices.Pick("cpu").type);
        if (!cuda.is_available())
        {
            Assert.Equal(TorchSharp.DeviceType.CPU, Carso.Runtime.Devices.Pick("auto").type);
            var e = Assert.Throws<Carso.Runtime.UsageException>(() => Carso.Runtime.Devices.Pick("cuda"));
            Assert.Contains("CUDA is not available", e.Message);
        }
        var unknown = Assert.Throws<Carso.Runtime.UsageException>(() => Carso.Runtime.Devices.Pick("tpu"));
        Assert.Contains("unknown device 'tpu'", unknown.Message);
    }
}
