using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Models;

/// <summary>Element-wise activation of a residual network, built as a module so forward hooks can capture it.</summary>
public enum Activation
{
    ReLU,
    /// <summary>SiLU, also called Swish: x * sigmoid(x) (Gowal et al. 2020 and later DeepMind-style WideResNets).</summary>
    SiLU,
    /// <summary>GELU with the exact (erf) formula, as PyTorch's nn.GELU() by default.</summary>
    GELU,
}

public static class Activations
{
    /// <summary>A fresh, parameter-free activation module: shape-preserving, [*] -> [*].</summary>
    /// <remarks>Every use site gets its own instance, so a hook on one named layer fires once per forward.</remarks>
    public static nn.Module<Tensor, Tensor> Create(Activation activation) => activation switch
    {
        Activation.ReLU => nn.ReLU(),
        Activation.SiLU => nn.SiLU(),
        Activation.GELU => nn.GELU(),
        _ => throw new ArgumentOutOfRangeException(nameof(activation), activation, "unknown activation"),
    };
}
