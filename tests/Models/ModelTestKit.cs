using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Tests.Models;

/// <summary>Checks shared by the architecture tests.</summary>
static class ModelTestKit
{
    /// <summary>
    /// A forward pass on random images in [0, 1] gives finite logits [B, numClasses], and the cross-entropy
    /// gradient reaches the input finite and non-zero (what every gradient attack needs).
    /// </summary>
    public static void AssertLogitsAndInputGradient(nn.Module<Tensor, Tensor> model, long[] inputShape, int numClasses)
    {
        using var scope = NewDisposeScope();
        manual_seed(0);
        var x = rand(inputShape, requires_grad: true);
        var logits = model.call(x);
        Assert.Equal(new[] { inputShape[0], (long)numClasses }, logits.shape);
        Assert.True(logits.isfinite().all().item<bool>(), "logits have non-finite values");

        var labels = arange(inputShape[0]) % numClasses;
        nn.functional.cross_entropy(logits, labels).backward();
        var grad = x.grad ?? throw new Xunit.Sdk.XunitException("no gradient reached the input");
        Assert.Equal(inputShape, grad.shape);
        Assert.True(grad.isfinite().all().item<bool>(), "input gradient has non-finite values");
        Assert.True(grad.abs().sum().item<float>() > 0, "input gradient is zero");
    }

    /// <summary>Names of the submodules whose forward hooks fired during one forward pass, in firing order.</summary>
    public static List<string> FiredHooks(nn.Module<Tensor, Tensor> model, long[] inputShape)
    {
        using var scope = NewDisposeScope();
        var fired = new List<string>();
        var removers = model.named_modules()
            .Where(m => m.module is nn.Module<Tensor, Tensor>)
            .Select(m => ((nn.Module<Tensor, Tensor>)m.module).register_forward_hook((_, _, output) =>
            {
                fired.Add(m.name);
                return output;
            }))
            .ToList();
        using (no_grad()) model.call(rand(inputShape));
        removers.ForEach(r => r.remove());
        return fired;
    }

    /// <summary>
    /// Puts every batch norm of <paramref name="module"/> in eval mode with random statistics and affine
    /// parameters (so that which tensor goes through which norm matters) and returns the state dict.
    /// </summary>
    public static Dictionary<string, Tensor> EvalWithRandomBatchNorms(nn.Module module)
    {
        module.eval();
        var sd = module.state_dict();
        using (no_grad())
            foreach (var (name, t) in sd.Where(kv => kv.Value.is_floating_point() && !kv.Key.Contains("conv") && !kv.Key.Contains("shortcut")))
                t.copy_(rand_like(t) + 0.5);
        return sd;
    }

    /// <summary>Eval-mode batch norm written out: (x - running_mean) / sqrt(running_var + 1e-5) * weight + bias.</summary>
    public static Tensor BatchNorm(Tensor x, Dictionary<string, Tensor> sd, string prefix)
    {
        Tensor C(string n) => sd[$"{prefix}.{n}"].view(1, -1, 1, 1);
        return (x - C("running_mean")) / (C("running_var") + 1e-5).sqrt() * C("weight") + C("bias");
    }

    public static Tensor Conv(Tensor x, Tensor weight, long stride = 1, long padding = 0) =>
        nn.functional.conv2d(x, weight, strides: [stride, stride], padding: [padding, padding]);

    /// <summary>State-dict entries as "name [shape]" strings, for readable set comparisons.</summary>
    public static string Entry(string name, long[] shape) => $"{name} [{string.Join(", ", shape)}]";
}
