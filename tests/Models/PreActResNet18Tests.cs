using Carso.Models;
using static TorchSharp.torch;

namespace Carso.Tests.Models;

public class PreActResNet18Tests
{
    [Fact]
    public void ForwardGivesLogitsAndBackwardReachesTheInput()
    {
        using var model = new PreActResNet18();
        ModelTestKit.AssertLogitsAndInputGradient(model, [2, 3, 32, 32], 10);
        model.eval();
        ModelTestKit.AssertLogitsAndInputGradient(model, [2, 3, 32, 32], 10);
    }

    [Fact]
    public void StateDictHasThePyTorchNamesAndShapes()
    {
        using var model = new PreActResNet18(numClasses: 10);
        var sd = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);

        var expected = new Dictionary<string, long[]>
        {
            ["conv1.weight"] = [64, 3, 3, 3],
            ["layer1.0.bn1.weight"] = [64],
            ["layer1.0.bn1.bias"] = [64],
            ["layer1.0.bn1.running_mean"] = [64],
            ["layer1.0.bn1.running_var"] = [64],
            ["layer1.0.bn1.num_batches_tracked"] = [],
            ["layer1.0.conv1.weight"] = [64, 64, 3, 3],
            ["layer1.1.conv2.weight"] = [64, 64, 3, 3],
            ["layer2.0.bn1.weight"] = [64], // pre-activation: bn1 sees the block's input channels
            ["layer2.0.conv1.weight"] = [128, 64, 3, 3],
            ["layer2.0.shortcut.0.weight"] = [128, 64, 1, 1],
            ["layer3.0.shortcut.0.weight"] = [256, 128, 1, 1],
            ["layer4.0.shortcut.0.weight"] = [512, 256, 1, 1],
            ["layer4.1.bn2.running_var"] = [512],
            ["bn.weight"] = [512],
            ["bn.num_batches_tracked"] = [],
            ["linear.weight"] = [10, 512],
            ["linear.bias"] = [10],
        };
        foreach (var (name, shape) in expected)
        {
            Assert.True(sd.ContainsKey(name), $"missing {name}");
            Assert.Equal(shape, sd[name]);
        }
        // Identity shortcuts have no entry; normalisation constants are not state.
        foreach (var absent in new[] { "layer1.0.shortcut.0.weight", "layer2.1.shortcut.0.weight", "mean", "std", "mu", "sigma" })
            Assert.DoesNotContain(absent, sd.Keys);

        // 20 convolutions (1 stem + 16 in blocks + 3 shortcuts), 17 batch norms x 5 entries, linear weight + bias.
        Assert.Equal(20 + 17 * 5 + 2, sd.Count);
        // convs 11,159,232 + batch norms 7,808 + linear 5,130. (11,173,962 is the post-activation ResNet-18's count,
        // which has a stem bn and shortcut bns but no final bn.)
        Assert.Equal(11_172_170, model.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void EveryNamedSubmoduleFiresItsForwardHookOnce()
    {
        using var model = new PreActResNet18();
        var fired = ModelTestKit.FiredHooks(model, [1, 3, 32, 32]);
        Assert.Equal(model.named_modules().Select(m => m.name).Order(), fired.Order());
        Assert.Contains("layer2.0.shortcut.0", fired);
        Assert.Contains("layer3.1.relu2", fired);
    }

    [Fact]
    public void DownsamplingBlockFeedsTheShortcutThePreActivatedInput()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        using var block = new PreActBlock(4, 8, stride: 2);
        var sd = ModelTestKit.EvalWithRandomBatchNorms(block);
        var x = randn(2, 4, 8, 8);

        var a = nn.functional.relu(ModelTestKit.BatchNorm(x, sd, "bn1"));
        var h = ModelTestKit.Conv(a, sd["conv1.weight"], stride: 2, padding: 1);
        h = ModelTestKit.Conv(nn.functional.relu(ModelTestKit.BatchNorm(h, sd, "bn2")), sd["conv2.weight"], padding: 1);
        var expected = ModelTestKit.Conv(a, sd["shortcut.0.weight"], stride: 2) + h;

        Assert.True(block.call(x).allclose(expected, rtol: 1e-4, atol: 1e-5));
    }

    [Fact]
    public void InputStatisticsMustMatchThreeChannels()
    {
        var e = Assert.Throws<ArgumentException>(() => new PreActResNet18(mean: [0.5]));
        Assert.Contains("Mean has 1 values but there are 3 input channels", e.Message);
    }
}
