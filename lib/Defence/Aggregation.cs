using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Defence;

/// <summary>How CARSO turns the logits of N classified reconstructions into one output per point.</summary>
public enum AggregationKind
{
    /// <summary>Mean of the logits over samples.</summary>
    Logit,
    /// <summary>Mean over samples of sigmoid(l), returned as its inverse sigmoid.</summary>
    Prob,
    /// <summary>One-hot votes of each sample's argmax, summed (piecewise constant: no gradient anywhere).</summary>
    Count,
    /// <summary>NOT the published function: the log-odds of each class's share of S_c = sum over samples of exp(l_c),
    /// log(S_c / sum_{c' != c} S_c'), computed in log space. Same argmax as <see cref="Lexsemble"/>, finite and
    /// non-saturating for finite logits: the attacker's stable surrogate of the published aggregation. (Records made
    /// before this name existed call it "peel".)</summary>
    ExpShare,
    /// <summary>The published CARSO aggregation, exactly as the reference computes it (ebtorch's lexsemble, the paper's
    /// "peel"): S_c = sum over samples of exp(l_c), p = softmax over classes of S (doubly exponential), returned as
    /// log(p / (1 - p)), in plain float32 with no stabilisation. It saturates (p = 1 exactly, +-inf, NaN gradients)
    /// as soon as the classes' S differ by ~17, i.e. for almost every confidently classified point.</summary>
    Lexsemble,
}

/// <summary>
/// Aggregations of logits l [B, K, N] (B points, K classes, N samples) into outputs [B, K] that attacks
/// differentiate and whose argmax is the prediction. Logit, Prob and ExpShare give finite outputs for finite logits,
/// in float32 too (Prob and ExpShare work in log space). Lexsemble is the published function computed as published,
/// and saturates: its non-finite outputs give attacks NaN gradients (sign(NaN) = 0 in libtorch: a sign-step attack
/// stands still) and fake robustness, so <see cref="Apply"/> also counts the non-finite outputs of the aggregation
/// actually used.
/// </summary>
public static class Aggregation
{
    /// <summary>The valid names, lower case, as <see cref="Parse"/> accepts them.</summary>
    public static IReadOnlyList<string> Names { get; } = Enum.GetNames<AggregationKind>().Select(n => n.ToLowerInvariant()).ToArray();

    /// <summary>The aggregation of a name, ignoring case ("peel", "Logit"); any other name is an
    /// ArgumentException listing the valid ones.</summary>
    public static AggregationKind Parse(string name)
    {
        // Matched by name only: Enum.TryParse would also take "2" or "logit, prob".
        foreach (var kind in Enum.GetValues<AggregationKind>())
            if (string.Equals(kind.ToString(), name?.Trim(), StringComparison.OrdinalIgnoreCase))
                return kind;
        throw new ArgumentException($"unknown aggregation '{name}'; valid: {string.Join(", ", Names)}", nameof(name));
    }

    /// <summary>logits [B, K, N] -> outputs [B, K] (same dtype), differentiable except for Count.</summary>
    public static Tensor Aggregate(AggregationKind kind, Tensor logits) => kind switch
    {
        AggregationKind.Logit => Logit(logits),
        AggregationKind.Prob => Prob(logits),
        AggregationKind.Count => Count(logits),
        AggregationKind.ExpShare => ExpShare(logits),
        AggregationKind.Lexsemble => Lexsemble(logits),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, $"unknown aggregation; valid: {string.Join(", ", Names)}"),
    };

    /// <summary>
    /// logits [B, K, N] -> (outputs [B, K], the number of the B * K outputs that are not finite). The count costs a
    /// device synchronisation.
    /// </summary>
    public static (Tensor Output, long Saturated) Apply(AggregationKind kind, Tensor logits)
    {
        var output = Aggregate(kind, logits);
        return (output, NonFinite(output));
    }

    /// <summary>How many of the B * K outputs of the aggregation actually used are infinite or NaN: such outputs give an
    /// attack no (or a NaN) gradient. Never differentiated.</summary>
    public static long Saturation(AggregationKind kind, Tensor logits)
    {
        CheckShape(logits);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return NonFinite(Aggregate(kind, logits.detach()));
    }

    static long NonFinite(Tensor outputs)
    {
        using var scope = NewDisposeScope();
        return outputs.detach().isfinite().logical_not().sum().item<long>();
    }

    /// <summary>Mean over samples: [B, K, N] -> [B, K].</summary>
    public static Tensor Logit(Tensor logits)
    {
        CheckShape(logits);
        return logits.mean([2]);
    }

    /// <summary>
    /// logit(mean over samples of sigmoid(l)): [B, K, N] -> [B, K]. Computed as log p - log(1 - p) with
    /// log p = logsumexp_n logsigmoid(l_n) - log N and log(1 - p) = logsumexp_n logsigmoid(-l_n) - log N, which is
    /// exact (no clamping) and finite for finite logits: the naive p rounds to 1 in float32 from l ~ 17 on.
    /// </summary>
    public static Tensor Prob(Tensor logits)
    {
        CheckShape(logits);
        using var scope = NewDisposeScope();
        var logN = Math.Log(logits.shape[2]);
        var logP = nn.functional.logsigmoid(logits).logsumexp(2) - logN;
        var log1mP = nn.functional.logsigmoid(-logits).logsumexp(2) - logN;
        return (logP - log1mP).MoveToOuterDisposeScope();
    }

    /// <summary>Votes: for each sample the class of its largest logit gets 1; summed over samples, [B, K, N] -> [B, K]
    /// in the logits' dtype. Ties go to the lowest class index (argmax).</summary>
    public static Tensor Count(Tensor logits)
    {
        CheckShape(logits);
        using var scope = NewDisposeScope();
        var winners = logits.detach().argmax(1);                                // [B, N]
        var votes = nn.functional.one_hot(winners, logits.shape[1]).sum([1]);   // [B, N, K] -> [B, K]
        return votes.to_type(logits.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The attacker's surrogate of the published aggregation: with S_c = sum over samples of exp(l_c), returns
    /// log(S_c / sum_{c' != c} S_c') = log S_c - log sum_{c' != c} S_c': [B, K, N] -> [B, K], K >= 2. Computed in log
    /// space (log S_c = logsumexp over samples; the other classes by a logsumexp with class c masked out), so it is
    /// finite for any finite logits in float32. Its argmax is the published one's (both are increasing in S_c);
    /// its values and gradients are not.
    /// </summary>
    public static Tensor ExpShare(Tensor logits)
    {
        CheckShape(logits);
        var (b, k) = (logits.shape[0], logits.shape[1]);
        if (k < 2) throw new ArgumentException($"ExpShare needs at least 2 classes, got logits [{string.Join(", ", logits.shape)}]");
        using var scope = NewDisposeScope();
        var logS = logits.logsumexp(2);                                             // [B, K]
        var self = eye(k, dtype: ScalarType.Bool, device: logits.device);         // [c, c']: c' == c
        var others = logS.unsqueeze(1).expand(b, k, k).masked_fill(self, double.NegativeInfinity).logsumexp(2);
        return (logS - others).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The published aggregation as the reference computes it (ebtorch lexsemble): S = sum_n exp(l) [B, K];
    /// p = softmax_c(S); log(p / (1 - p)) — in the logits' dtype, with no stabilisation: +-inf or NaN wherever it
    /// saturates (in float32: exp(l) overflows above l ~ 88.7; p rounds to exactly 1 once the top S leads the next by ~17).
    /// </summary>
    public static Tensor Lexsemble(Tensor logits)
    {
        CheckShape(logits);
        using var scope = NewDisposeScope();
        var p = logits.exp().sum([2]).softmax(1);
        return (p / (1 - p)).log().MoveToOuterDisposeScope();
    }

    static void CheckShape(Tensor logits)
    {
        if (logits.dim() != 3 || logits.shape.Any(d => d < 1))
            throw new ArgumentException(
                $"aggregations take logits [B, K, N] (points, classes, samples), got [{string.Join(", ", logits.shape)}]");
    }
}
