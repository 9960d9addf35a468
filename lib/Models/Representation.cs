using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Carso.Models;

/// <summary>One named submodule: its name (as in named_modules / the state dict), its type, and its output shape.</summary>
public sealed record LayerInfo(string Name, string Type, long[] OutputShape)
{
    public override string ToString() => $"{Name} ({Type}) -> [{string.Join(", ", OutputShape)}]";
}

/// <summary>
/// The internal representation of a classifier: the outputs of named layers, captured by forward hooks
/// during one ordinary forward pass. Works under no_grad (purifier training) and with gradients flowing
/// back to the input (end-to-end attacks), since the captured tensors are the graph's own.
/// Models must call their submodules with .call(x) so that hooks fire.
/// </summary>
public static class Representation
{
    /// <summary>
    /// The name of a layer every classifier has: the log-softmax of its logits [B, K], the last representation layer
    /// of the reference CARSO (its Fashion-MNIST classifiers end in a LogSoftmax module). Computed from the output,
    /// so a classifier need not have such a module; one of its own by that name takes precedence.
    /// </summary>
    public const string LogSoftmax = "log_softmax";

    /// <summary>The named submodules that produce a tensor (every Module&lt;Tensor, Tensor&gt; but the root).</summary>
    public static IReadOnlyList<(string Name, Module<Tensor, Tensor> Module)> Layers(Module model) =>
        model.named_modules()
            .Where(m => m.name.Length > 0 && m.module is Module<Tensor, Tensor>)
            .Select(m => (m.name, (Module<Tensor, Tensor>)m.module))
            .ToArray();

    /// <summary>
    /// Runs the model on x [B, ...] and returns its logits [B, K] and the outputs of the named layers, in the
    /// order of <paramref name="layerNames"/>. An unknown name is an error listing the available names.
    /// A layer called more than once in a forward pass (shared modules) yields its last output.
    /// </summary>
    public static (Tensor Logits, Tensor[] Layers) Capture(Module<Tensor, Tensor> model, IReadOnlyList<string> layerNames, Tensor x)
    {
        var layers = Layers(model).ToDictionary(l => l.Name, l => l.Module);
        var fromOutput = !layers.ContainsKey(LogSoftmax);
        var unknown = layerNames.Where(n => !layers.ContainsKey(n) && !(fromOutput && n == LogSoftmax)).ToArray();
        if (unknown.Length > 0)
            throw new ArgumentException(
                $"unknown layer name{(unknown.Length > 1 ? "s" : "")} {string.Join(", ", unknown.Select(u => $"'{u}'"))} " +
                $"for {model.GetName()}; available: {string.Join(", ", layers.Keys.Append(LogSoftmax).Distinct())}");
        var captured = new Tensor?[layerNames.Count];
        // Models may run forward inside their own dispose scopes (and may dispose intermediate outputs), while the
        // captured outputs must outlive them and belong to the caller's scope, like the logits do. So the hook
        // keeps its own alias (a view: same storage, same autograd graph) outside every scope, and the caller
        // gets a fresh alias of it made in its own scope. Not MoveToOtherDisposeScope: in TorchSharp 0.107, moving
        // a tensor to the scope it is already in drops it from that scope while it still points there, and its
        // finalizer then throws ObjectDisposedException on the finalizer thread, killing the process.
        var removers = layerNames.Select((name, i) => (name, i)).Where(l => layers.ContainsKey(l.name)).Select(l => layers[l.name].register_forward_hook((_, _, output) =>
        {
            captured[l.i]?.Dispose();
            captured[l.i] = output.alias().DetachFromDisposeScope();
            return output;
        })).ToArray();
        try
        {
            var logits = model.call(x);
            for (var i = 0; i < layerNames.Count; i++)
                if (fromOutput && layerNames[i] == LogSoftmax)
                    captured[i] = functional.log_softmax(logits, 1).DetachFromDisposeScope();
            var missing = layerNames.Where((_, i) => captured[i] is null).ToArray();
            if (missing.Length > 0)
                throw new InvalidOperationException(
                    $"layers {string.Join(", ", missing)} of {model.GetName()} did not run in forward: " +
                    "the model must call them with .call(x)");
            return (logits, captured.Select(t => t!.alias()).ToArray());
        }
        finally
        {
            foreach (var remover in removers) remover.remove();
            foreach (var t in captured) t?.Dispose();
        }
    }

    /// <summary>Every named layer's output shape for one input of the given shape (e.g. [1, 28, 28]), in call order.</summary>
    public static IReadOnlyList<LayerInfo> Describe(Module<Tensor, Tensor> model, long[] inputShape)
    {
        var layers = Layers(model);
        var seen = new List<LayerInfo>();
        var removers = layers.Select(l => l.Module.register_forward_hook((_, _, output) =>
        {
            if (seen.All(s => s.Name != l.Name))
                seen.Add(new LayerInfo(l.Name, l.Module.GetType().Name, output.shape));
            return output;
        })).ToArray();
        var wasTraining = model.training;
        try
        {
            model.eval();
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            var device = model.parameters().FirstOrDefault()?.device ?? CPU;
            var logits = model.call(zeros([1, .. inputShape], device: device));
            if (seen.All(s => s.Name != LogSoftmax)) seen.Add(new LayerInfo(LogSoftmax, "log_softmax of the output", logits.shape));
            return seen;
        }
        finally
        {
            foreach (var remover in removers) remover.remove();
            model.train(wasTraining);
        }
    }
}
