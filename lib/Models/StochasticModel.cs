using System.Runtime.CompilerServices;
using Carso.Attacks;
using static TorchSharp.torch;

namespace Carso.Models;

/// <summary>
/// A model as evaluations and attacks see it: images x [B, C, H, W] in [0, 1] and the generator of the current batch ->
/// logits [B, K]. A stochastic model (CARSO) draws all its randomness from the generator; a deterministic one ignores
/// it. So a model's outputs depend only on the keys its generators are derived from, never on torch's global one.
/// </summary>
public delegate Tensor StochasticModel(Tensor x, Generator generator);

public static class StochasticModels
{
    /// <summary>A deterministic model (a plain <c>Func&lt;Tensor, Tensor&gt;</c>) as a StochasticModel.</summary>
    public static StochasticModel Fixed(Func<Tensor, Tensor> model) => (x, _) => model(x);

    static readonly ConditionalWeakTable<StochasticModel, Func<Generator, EotGradientFunction>> EotFunctions = new();

    /// <summary>The model with its generator fixed: the <c>Func&lt;Tensor, Tensor&gt;</c> every attack takes (with its own EOT
    /// gradient, drawing from the same generator, when the model has one: <see cref="WithEotGradient"/>).</summary>
    public static Func<Tensor, Tensor> Bind(this StochasticModel model, Generator generator)
    {
        Func<Tensor, Tensor> bound = x => model(x, generator);
        return EotFunctions.TryGetValue(model, out var eot) ? bound.WithEotGradient(eot(generator)) : bound;
    }

    /// <summary>Registers the model's own EOT gradient for a generator (see <see cref="EotModels"/>); returns the model.</summary>
    public static StochasticModel WithEotGradient(this StochasticModel model, Func<Generator, EotGradientFunction> eot)
    {
        EotFunctions.AddOrUpdate(model, eot);
        return model;
    }
}
