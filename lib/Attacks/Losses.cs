using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>Per-example losses of logits [B, K] and labels [B] -> [B]. Attacks maximise them.</summary>
public static class Losses
{
    public static Tensor CrossEntropy(Tensor logits, Tensor labels) =>
        nn.functional.cross_entropy(logits, labels, reduction: nn.Reduction.None);
}
