using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>
/// An attack as the evaluation sees it: a name and a function (model, x [B,C,H,W], y [B], generator) -> xAdv.
/// The generator carries the attack's randomness, so results depend only on the seed it was made from.
/// </summary>
public sealed record NamedAttack(string Name, Func<Func<Tensor, Tensor>, Tensor, Tensor, Generator, Tensor> Run)
{
    public override string ToString() => Name;
}
