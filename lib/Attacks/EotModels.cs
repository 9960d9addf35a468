using System.Runtime.CompilerServices;
using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>
/// A model's own EOT gradient at x [B, C, H, W]: what <see cref="Apgd.EotGradient"/> computes with eotIter passes of
/// the model (the mean input gradient of sum_b loss(logits)_b, the mean loss [B] and the mean logits [B, K]), computed
/// by the model itself, which may share work between the passes. loss: logits [B, K] -> [B]; onLogits, when given,
/// sees every pass's logits (a monitor).
/// </summary>
public delegate EotEstimate EotGradientFunction(Tensor x, Func<Tensor, Tensor> loss, int eotIter, Action<Tensor>? onLogits);

/// <summary>
/// Models (<c>Func&lt;Tensor, Tensor&gt;</c>) that bring their own EOT gradient. The attacks' EOT loops
/// (<see cref="Pgd.EotGradient"/>, <see cref="Apgd.EotGradient"/>) use it when the model they are given has one
/// registered, and the plain loop of passes otherwise, so a model wrapped in another function simply takes the
/// plain loop. A registered function must give what the plain loop gives (the same random draws, the same values to
/// float rounding): CARSO's shares the representation pass of x between the passes.
/// </summary>
public static class EotModels
{
    static readonly ConditionalWeakTable<Func<Tensor, Tensor>, EotGradientFunction> Functions = new();

    /// <summary>Registers <paramref name="eot"/> as the EOT gradient of <paramref name="model"/> and returns the model.</summary>
    public static Func<Tensor, Tensor> WithEotGradient(this Func<Tensor, Tensor> model, EotGradientFunction eot)
    {
        Functions.AddOrUpdate(model, eot);
        return model;
    }

    /// <summary>The EOT gradient registered for this model, or null.</summary>
    public static EotGradientFunction? EotGradientOf(Func<Tensor, Tensor> model) => Functions.TryGetValue(model, out var eot) ? eot : null;
}
