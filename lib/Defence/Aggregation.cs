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
    /// <summary>The reference CARSO aggregation: p = softmax over classes of S_c = sum over samples of
    /// exp(l_c), returned as log(p / (1 - p)).</summary>
    Peel,
}

/// <summary>
/// Aggregations of logits l [B, K, N] (B points, K classes, N samples) into outputs [B, K] that attacks
/// differentiate and whose argmax is the prediction. Every one is computed so that finite logits give finite
/// outputs, in float32 too: Prob and Peel work in log space, where the textbook formulas saturate (a
/// probability of exactly 0 or 1, an output of +-inf, no gradient) once logits are moderately confident.
/// Saturated outputs would give attacks no gradient and fake robustness, so <see cref="Apply"/> also counts how
/// many outputs the naive float32 formula would have saturated.
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
        AggregationKind.Peel => Peel(logits),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, $"unknown aggregation; valid: {string.Join(", ", Names)}"),
    };

    /// <summary>
    /// logits [B, K, N] -> (outputs [B, K], the number of the B * K outputs that the naive float32 formula would
    /// have saturated; see <see cref="Saturation"/>). The count costs a device synchronisation.
    /// </summary>
    public static (Tensor Output, long Saturated) Apply(AggregationKind kind, Tensor logits) =>
        (Aggregate(kind, logits), Saturation(kind, logits));

    /// <summary>
    /// How many of the B * K outputs would be infinite or undefined if computed naively in float32 — a probability
    /// of exactly 1 or 0 (Prob: mean sigmoid; Peel: softmax of sums of exp, whose exp overflows above ~88.7),
    /// or an overflowing mean (Logit). Such outputs give an attack no gradient. Count is never infinite and
    /// counts 0 (it has no gradient anywhere by construction). Never differentiated.
    /// </summary>
    public static long Saturation(AggregationKind kind, Tensor logits)
    {
        CheckShape(logits);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var l = logits.detach().to_type(ScalarType.Float32);
        var saturated = kind switch
        {
            AggregationKind.Logit => l.mean([2]).isfinite().logical_not(),
            AggregationKind.Prob => NaiveProbability(l).le(0).logical_or(NaiveProbability(l).ge(1)),
            AggregationKind.Count => zeros(1, dtype: ScalarType.Bool),
            AggregationKind.Peel => NaivePeel(l).isfinite().logical_not(),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, $"unknown aggregation; valid: {string.Join(", ", Names)}"),
        };
        return saturated.sum().item<long>();
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
    /// The peel aggregation: with S_c = sum over samples of exp(l_c) and p = softmax_c(S_c) = S_c / sum S,
    /// returns log(p_c / (1 - p_c)) = log S_c - log sum_{c' != c} S_c': [B, K, N] -> [B, K], K >= 2.
    /// Computed in log space (log S_c = logsumexp over samples; the other classes by a logsumexp with class c
    /// masked out), so it is finite for any finite logits in float32, where the naive formula overflows
    /// (exp(l) > 3.4e38 from l ~ 88.7) or rounds p to exactly 1 long before.
    /// </summary>
    public static Tensor Peel(Tensor logits)
    {
        CheckShape(logits);
        var (b, k) = (logits.shape[0], logits.shape[1]);
        if (k < 2) throw new ArgumentException($"the peel aggregation needs at least 2 classes, got logits [{string.Join(", ", logits.shape)}]");
        using var scope = NewDisposeScope();
        var logS = logits.logsumexp(2);                                             // [B, K]
        var self = eye(k, dtype: ScalarType.Bool, device: logits.device);         // [c, c']: c' == c
        var others = logS.unsqueeze(1).expand(b, k, k).masked_fill(self, double.NegativeInfinity).logsumexp(2);
        return (logS - others).MoveToOuterDisposeScope();
    }

    /// <summary>The textbook peel, log(p / (1 - p)) with p = softmax_c(sum_n exp(l)), in the logits' dtype: what
    /// saturates. For diagnostics and tests only; [B, K, N] -> [B, K], with +-inf or NaN where it saturates.</summary>
    public static Tensor NaivePeel(Tensor logits)
    {
        CheckShape(logits);
        using var scope = NewDisposeScope();
        var s = logits.exp().sum([2]);
        var p = s / s.sum([1], keepdim: true);
        return (p / (1 - p)).log().MoveToOuterDisposeScope();
    }

    /// <summary>The textbook mean sigmoid, [B, K, N] -> [B, K], in the logits' dtype; exactly 0 or 1 where Prob
    /// would saturate.</summary>
    public static Tensor NaiveProbability(Tensor logits)
    {
        CheckShape(logits);
        return logits.sigmoid().mean([2]);
    }

    static void CheckShape(Tensor logits)
    {
        if (logits.dim() != 3 || logits.shape.Any(d => d < 1))
            throw new ArgumentException(
                $"aggregations take logits [B, K, N] (points, classes, samples), got [{string.Join(", ", logits.shape)}]");
    }
}
