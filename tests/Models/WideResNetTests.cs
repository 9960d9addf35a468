using Carso.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Tests.Models;

public class WideResNetTests
{
    static readonly WideResNetSettings Tiny = new(Depth: 10, Width: 1);

    [Theory]
    [InlineData(Activation.ReLU)]
    [InlineData(Activation.SiLU)]
    [InlineData(Activation.GELU)]
    public void ForwardGivesLogitsAndBackwardReachesTheInput(Activation activation)
    {
        using var model = new WideResNet(Tiny with { Activation = activation });
        ModelTestKit.AssertLogitsAndInputGradient(model, [2, 3, 32, 32], 10);
        model.eval();
        ModelTestKit.AssertLogitsAndInputGradient(model, [2, 3, 32, 32], 10);
    }

    [Fact]
    public void PaddingAndInputChannelsTakeGreyscale28x28Images()
    {
        using var model = new WideResNet(Tiny with { InputChannels = 1, Padding = 2, Mean = [0.5], Std = [0.5], NumClasses = 7 });
        ModelTestKit.AssertLogitsAndInputGradient(model, [2, 1, 28, 28], 7);
    }

    /// <summary>
    /// The state dict RobustBench's DMWideResNet has, enumerated the way its Python modules register
    /// (module attributes in assignment order; a module's parameters, then its buffers, then its children).
    /// </summary>
    static List<(string Name, long[] Shape, bool IsBuffer)> DmWideResNetStateDict(
        int depth, int width, int numClasses, int inputChannels)
    {
        var entries = new List<(string, long[], bool)>();
        void BatchNorm2d(string prefix, long c)
        {
            entries.Add(($"{prefix}.weight", [c], false));
            entries.Add(($"{prefix}.bias", [c], false));
            entries.Add(($"{prefix}.running_mean", [c], true));
            entries.Add(($"{prefix}.running_var", [c], true));
            entries.Add(($"{prefix}.num_batches_tracked", [], true));
        }

        long[] channels = [16, 16 * width, 32 * width, 64 * width];
        var blocks = (depth - 4) / 6;
        // self.mean / self.std: plain tensors, not in the state dict.
        entries.Add(("init_conv.weight", [channels[0], inputChannels, 3, 3], false));
        for (var g = 0; g < 3; g++) // self.layer = nn.Sequential(_BlockGroup x 3)
            for (var i = 0; i < blocks; i++) // _BlockGroup.block = nn.Sequential(_Block x n)
            {
                long inPlanes = i == 0 ? channels[g] : channels[g + 1], outPlanes = channels[g + 1];
                var p = $"layer.{g}.block.{i}";
                BatchNorm2d($"{p}.batchnorm_0", inPlanes);
                entries.Add(($"{p}.conv_0.weight", [outPlanes, inPlanes, 3, 3], false));
                BatchNorm2d($"{p}.batchnorm_1", outPlanes);
                entries.Add(($"{p}.conv_1.weight", [outPlanes, outPlanes, 3, 3], false));
                if (inPlanes != outPlanes) entries.Add(($"{p}.shortcut.weight", [outPlanes, inPlanes, 1, 1], false));
            }
        BatchNorm2d("batchnorm", channels[3]);
        entries.Add(("logits.weight", [numClasses, channels[3]], false));
        entries.Add(("logits.bias", [numClasses], false));
        return entries;
    }

    [Fact]
    public void Wrn28_10StateDictMatchesTheRobustBenchLayout()
    {
        using var model = new WideResNet(WideResNetSettings.Wrn28_10); // the one large construction (36M parameters)
        var expected = DmWideResNetStateDict(depth: 28, width: 10, numClasses: 10, inputChannels: 3);
        var sd = model.state_dict();

        // Same entries with the same shapes.
        Assert.Equal(
            expected.Select(e => ModelTestKit.Entry(e.Name, e.Shape)).Order(),
            sd.Select(kv => ModelTestKit.Entry(kv.Key, kv.Value.shape)).Order());
        // Same order among parameters and among buffers (TorchSharp lists all parameters before all buffers).
        Assert.Equal(expected.Where(e => !e.IsBuffer).Select(e => e.Name), model.named_parameters().Select(p => p.name));
        var parameterNames = model.named_parameters().Select(p => p.name).ToHashSet();
        Assert.Equal(expected.Where(e => e.IsBuffer).Select(e => e.Name), sd.Keys.Where(k => !parameterNames.Contains(k)));

        Assert.Equal(36_479_194, model.parameters().Sum(p => p.numel()));
        Assert.Equal(ScalarType.Int64, sd["layer.0.block.0.batchnorm_0.num_batches_tracked"].dtype);

        // Normalisation constants are buffers but not state.
        Assert.DoesNotContain("mean", sd.Keys);
        Assert.DoesNotContain("std", sd.Keys);
        Assert.Equal(new long[] { 3, 1, 1 }, model.get_buffer("mean")!.shape);
        Assert.Equal(new long[] { 3, 1, 1 }, model.get_buffer("std")!.shape);
    }

    [Fact]
    public void NormalisationBuffersFollowAConversionAndStayOutOfTheStateDict()
    {
        // TorchSharp itself leaves non-persistent buffers behind on .to(); ImageClassifier moves them.
        // A dtype conversion takes the same path as a device move, which this CPU machine cannot test.
        using var model = new WideResNet(Tiny);
        model.to(ScalarType.Float64);
        Assert.Equal(ScalarType.Float64, model.get_buffer("mean")!.dtype);
        Assert.Equal(ScalarType.Float64, model.get_buffer("std")!.dtype);
        Assert.Equal(0.4914, model.get_buffer("mean")![0, 0, 0].item<double>(), 6);
        Assert.DoesNotContain("mean", model.state_dict().Keys);
        Assert.DoesNotContain("std", model.state_dict().Keys);
        using var scope = NewDisposeScope();
        var logits = model.call(rand(2, 3, 32, 32, dtype: ScalarType.Float64));
        Assert.Equal(ScalarType.Float64, logits.dtype);
    }

    [Fact]
    public void EveryNamedSubmoduleFiresItsForwardHookOnce()
    {
        using var model = new WideResNet(Tiny);
        var fired = ModelTestKit.FiredHooks(model, [1, 3, 32, 32]);
        Assert.Equal(model.named_modules().Select(m => m.name).Order(), fired.Order());
        Assert.Contains("layer.1.block.0.shortcut", fired);
        Assert.Contains("layer.2.block.0.relu_1", fired);
    }

    [Fact]
    public void DownsamplingBlockPadsRightAndBottomAndFeedsTheShortcutThePreActivatedInput()
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        using var block = new WideResNetBlock(4, 8, stride: 2, Activation.ReLU);
        var sd = ModelTestKit.EvalWithRandomBatchNorms(block);
        var x = randn(2, 4, 8, 8);

        var a = nn.functional.relu(ModelTestKit.BatchNorm(x, sd, "batchnorm_0"));
        var padded = zeros(2, 4, 9, 9); // TensorFlow "SAME" at stride 2: one zero row below, one zero column right
        padded.narrow(2, 0, 8).narrow(3, 0, 8).copy_(a);
        var h = ModelTestKit.Conv(padded, sd["conv_0.weight"], stride: 2);
        h = ModelTestKit.Conv(nn.functional.relu(ModelTestKit.BatchNorm(h, sd, "batchnorm_1")), sd["conv_1.weight"], padding: 1);
        var expected = ModelTestKit.Conv(a, sd["shortcut.weight"], stride: 2) + h;

        var actual = block.call(x);
        Assert.Equal(new long[] { 2, 8, 4, 4 }, actual.shape);
        Assert.True(actual.allclose(expected, rtol: 1e-4, atol: 1e-5), $"max difference {(actual - expected).abs().max().item<float>()}");
    }

    [Fact]
    public void IdentityBlockAddsTheRawInput()
    {
        using var scope = NewDisposeScope();
        manual_seed(2);
        using var block = new WideResNetBlock(8, 8, stride: 1, Activation.ReLU);
        var sd = ModelTestKit.EvalWithRandomBatchNorms(block);
        var x = randn(2, 8, 6, 6);

        var a = nn.functional.relu(ModelTestKit.BatchNorm(x, sd, "batchnorm_0"));
        var h = ModelTestKit.Conv(a, sd["conv_0.weight"], padding: 1);
        h = ModelTestKit.Conv(nn.functional.relu(ModelTestKit.BatchNorm(h, sd, "batchnorm_1")), sd["conv_1.weight"], padding: 1);
        var expected = x + h;

        Assert.DoesNotContain("shortcut.weight", sd.Keys);
        Assert.True(block.call(x).allclose(expected, rtol: 1e-4, atol: 1e-5));
    }

    [Theory]
    [InlineData(27)]
    [InlineData(4)]
    [InlineData(0)]
    public void DepthMustBeSixNPlusFour(int depth)
    {
        var e = Assert.Throws<ArgumentException>(() => new WideResNet(new WideResNetSettings(Depth: depth)));
        Assert.Equal("Depth", e.ParamName);
        Assert.Contains($"WideResNetSettings.Depth must be 6n + 4 with n >= 1", e.Message);
        Assert.Contains($"got {depth}", e.Message);
    }

    [Fact]
    public void PresetsAreTheCheckpointArchitectures()
    {
        Assert.Equal((28, 10, Activation.SiLU), (WideResNetSettings.Wrn28_10.Depth, WideResNetSettings.Wrn28_10.Width, WideResNetSettings.Wrn28_10.Activation));
        Assert.Equal((70, 16, Activation.SiLU), (WideResNetSettings.Wrn70_16.Depth, WideResNetSettings.Wrn70_16.Width, WideResNetSettings.Wrn70_16.Activation));
        Assert.Equal(InputNormalization.Cifar10Mean, WideResNetSettings.Wrn28_10.Mean);
        Assert.Equal(11, WideResNetSettings.Wrn70_16.BlocksPerGroup);
    }
}
