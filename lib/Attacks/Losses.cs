using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>
/// Per-example losses of logits z [B, K] and labels y [B] -> [B]; attacks maximise them
/// (definitions as in Croce &amp; Hein 2020; pi = classes sorted by descending logit).
/// </summary>
public static class Losses
{
    /// <summary>Cross-entropy, per example.</summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor labels) =>
        nn.functional.cross_entropy(logits, labels, reduction: nn.Reduction.None);

    /// <summary>DLR: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12). Scale-invariant; needs K >= 3.</summary>
    public static Tensor Dlr(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        RequireClasses(logits, 3, "DLR");
        var sorted = logits.sort(1).Values;                     // ascending: pi1 = last
        var zy = logits.gather(1, labels.unsqueeze(1)).squeeze(1);
        var loss = -(zy - MaxOther(logits, labels)) / (sorted[.., -1] - sorted[.., -3] + 1e-12);
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12); needs K >= 4.</summary>
    public static Tensor TargetedDlr(Tensor logits, Tensor labels, Tensor targets)
    {
        using var scope = NewDisposeScope();
        RequireClasses(logits, 4, "targeted DLR");
        var sorted = logits.sort(1).Values;
        var zy = logits.gather(1, labels.unsqueeze(1)).squeeze(1);
        var zt = logits.gather(1, targets.unsqueeze(1)).squeeze(1);
        var loss = -(zy - zt) / (sorted[.., -1] - (sorted[.., -3] + sorted[.., -4]) / 2 + 1e-12);
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>Margin z_y - max_{i != y} z_i (Square minimises it; the point is fooled when it is negative).</summary>
    public static Tensor Margin(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var zy = logits.gather(1, labels.unsqueeze(1)).squeeze(1);
        return (zy - MaxOther(logits, labels)).MoveToOuterDisposeScope();
    }

    /// <summary>max_{i != y} z_i: the largest logit of a wrong class, [B].</summary>
    public static Tensor MaxOther(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var mask = nn.functional.one_hot(labels, logits.shape[1]).to(ScalarType.Bool);
        return logits.masked_fill(mask, double.NegativeInfinity).amax([1]).MoveToOuterDisposeScope();
    }

    static void RequireClasses(Tensor logits, int k, string name)
    {
        if (logits.shape[1] < k)
            throw new ArgumentException($"the {name} loss needs at least {k} classes, got logits of shape [{string.Join(", ", logits.shape)}]");
    }
}
