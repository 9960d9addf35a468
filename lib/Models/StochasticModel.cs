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

    /// <summary>The model with its generator fixed: the <c>Func&lt;Tensor, Tensor&gt;</c> every attack takes.</summary>
    public static Func<Tensor, Tensor> Bind(this StochasticModel model, Generator generator) => x => model(x, generator);
}
