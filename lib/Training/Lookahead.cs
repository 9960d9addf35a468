using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Carso.Training;

/// <summary>
/// Lookahead (Zhang et al. 2019) around any optimiser: the inner ("fast") optimiser takes K steps, then the
/// slow weights move Alpha of the way towards the fast ones and the fast weights restart from them.
/// State (the slow weights and the step counter) is explicit and can be saved and restored for resuming.
/// </summary>
public sealed class Lookahead : IDisposable
{
    public sealed record Settings(int K = 6, double Alpha = 0.8);

    readonly Parameter[] parameters;
    readonly Tensor[] slow;
    public Settings Config { get; }
    public optim.Optimizer Inner { get; }
    public long Steps { get; private set; }

    public Lookahead(optim.Optimizer inner, IEnumerable<Parameter> parameters, Settings? settings = null)
    {
        Config = settings ?? new Settings();
        if (Config.K < 1) throw new ArgumentOutOfRangeException(nameof(settings), $"Lookahead K must be >= 1, got {Config.K}");
        if (Config.Alpha is <= 0 or > 1) throw new ArgumentOutOfRangeException(nameof(settings), $"Lookahead Alpha must be in (0, 1], got {Config.Alpha}");
        Inner = inner;
        this.parameters = parameters.ToArray();
        using var noGrad = no_grad();
        slow = this.parameters.Select(p => p.detach().clone().DetachFromDisposeScope()).ToArray();
    }

    public void zero_grad() => Inner.zero_grad();

    /// <summary>One inner step; every K-th step also synchronises slow and fast weights.</summary>
    public void step()
    {
        Inner.step();
        Steps++;
        if (Steps % Config.K != 0) return;
        using var noGrad = no_grad();
        for (var i = 0; i < parameters.Length; i++)
        {
            slow[i].add_(parameters[i] - slow[i], alpha: Config.Alpha);
            parameters[i].copy_(slow[i]);
        }
    }

    /// <summary>Writes the slow weights and the step counter (the inner optimiser is saved separately).</summary>
    public void Save(BinaryWriter writer)
    {
        writer.Write(Steps);
        writer.Write(slow.Length);
        foreach (var t in slow) t.Save(writer);
    }

    public void Load(BinaryReader reader)
    {
        Steps = reader.ReadInt64();
        var count = reader.ReadInt32();
        if (count != slow.Length) throw new InvalidDataException($"Lookahead state holds {count} tensors, the model has {slow.Length} parameters");
        foreach (var t in slow) t.Load(reader);
    }

    public void Dispose() { foreach (var t in slow) t.Dispose(); }
}
