using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>
/// Settings of the Square attack (Andriushchenko et al. 2020) with the defaults AutoAttack uses for every norm:
/// a budget of NQueries forward passes per point and restart, initial fraction PInit of the pixels changed
/// per square, the margin loss, one restart. Linf (<see cref="Square"/>), L2 (<see cref="SquareL2"/>) and L1
/// (<see cref="SquareL1"/>) threats; <see cref="Square.Attack"/> and <see cref="Square.Run"/> dispatch on the norm.
/// </summary>
public sealed record SquareSettings(Threat Threat, int NQueries = 5000, double PInit = 0.8, int NRestarts = 1)
{
    /// <summary>This record if every setting is usable, else an exception naming the offending setting.</summary>
    public SquareSettings Validated()
    {
        Threat.Validated();
        if (NQueries < 1)
            throw new ArgumentOutOfRangeException(nameof(NQueries), $"Square NQueries must be >= 1, got {NQueries}");
        if (!(PInit > 0 && PInit <= 1))
            throw new ArgumentOutOfRangeException(nameof(PInit), $"Square PInit must be in (0, 1], got {PInit}");
        if (NRestarts < 1)
            throw new ArgumentOutOfRangeException(nameof(NRestarts), $"Square NRestarts must be >= 1, got {NRestarts}");
        return this;
    }
}

/// <summary>
/// What a Square run returns. XAdv [B, C, H, W]: the adversarial point where the attack fooled the model,
/// x itself elsewhere (as the reference). Queries [B] int64: forward passes spent on each point's
/// perturbed inputs, summed over restarts (at most NQueries per restart; 0 for points misclassified at x);
/// the one clean forward pass that decides which points to attack is not counted (as in the paper).
/// Fooled [B] bool: the margin at XAdv was found &lt;= 0 (misclassified at x included).
/// </summary>
public sealed record SquareResult(Tensor XAdv, Tensor Queries, Tensor Fooled) : IDisposable
{
    public void Dispose()
    {
        XAdv.Dispose();
        Queries.Dispose();
        Fooled.Dispose();
    }
}

/// <summary>
/// The Linf Square attack (Andriushchenko et al. 2020), score-based: it only reads the model's logits
/// (forward passes under no_grad), so gradient masking does not stop it. Random search from vertical
/// stripes x + eps * (+-1); each iteration proposes one square window of side s, set to x +- eps per
/// channel, and keeps the proposal where the margin z_y - max_{i != y} z_i decreases or the point
/// becomes misclassified. Follows AutoAttack's square.py as AutoAttack runs it (schedule not rescaled).
/// </summary>
public static class Square
{
    /// <summary>
    /// Untargeted Square attack in the settings' norm (Linf here; L2 and L1 in <see cref="SquareL2"/> and
    /// <see cref="SquareL1"/>). model: images [B, C, H, W] in [0, 1] -> logits [B, K]; x: [B, C, H, W] in [0, 1];
    /// y: [B] int64. Returns xAdv [B, C, H, W] with ||xAdv - x|| &lt;= eps, in [0, 1].
    /// </summary>
    public static Tensor Attack(Func<Tensor, Tensor> model, Tensor x, Tensor y, SquareSettings settings,
        Generator? generator = null, AttackMonitor? monitor = null)
    {
        using var result = Run(model, x, y, settings, generator, monitor);
        return result.XAdv.clone();
    }

    /// <summary>
    /// As <see cref="Attack"/>, also returning the queries spent per point and which points were fooled.
    /// Random draws come from <paramref name="generator"/> (torch's default generator when null); the same
    /// seed gives the same result. monitor, when given, counts non-finite logits of every forward pass
    /// (one host round trip per pass).
    /// </summary>
    public static SquareResult Run(Func<Tensor, Tensor> model, Tensor x, Tensor y, SquareSettings settings,
        Generator? generator = null, AttackMonitor? monitor = null)
    {
        settings = settings.Validated();
        if (x.dim() != 4)
            throw new ArgumentException($"Square expects images [B, C, H, W], got shape [{string.Join(", ", x.shape)}]", nameof(x));
        if (y.dim() != 1 || y.shape[0] != x.shape[0])
            throw new ArgumentException($"Square expects labels [B] for B = {x.shape[0]}, got shape [{string.Join(", ", y.shape)}]", nameof(y));

        using var outer = NewDisposeScope();
        using var noGrad = no_grad();
        var x0 = x.detach();
        var xAdv = x0.clone();
        var queries = zeros(x0.shape[0], ScalarType.Int64, device: x0.device);
        // Only points the model gets right (margin > 0) are attacked; the others keep x and 0 queries.
        // A NaN margin is neither robust nor fooled: it is not attacked and not reported as fooled.
        var cleanMargin = MarginOf(model, x0, y, monitor);
        var robust = cleanMargin.gt(0);
        var fooled = cleanMargin.le(0);

        for (var restart = 0; restart < settings.NRestarts; restart++)
        {
            using var scope = NewDisposeScope();
            var todo = robust.nonzero().squeeze(1);
            if (todo.shape[0] == 0) break;
            var xs = x0.index_select(0, todo);
            var ys = y.index_select(0, todo);
            var (best, margin, spent) = settings.Threat.Norm switch
            {
                Norm.Linf => SingleRun(model, xs, ys, settings, generator, monitor),
                Norm.L2 => SquareL2.SingleRun(model, xs, ys, settings, generator, monitor),
                Norm.L1 => SquareL1.SingleRun(model, xs, ys, settings, generator, monitor),
                _ => throw new ArgumentOutOfRangeException(nameof(settings), settings.Threat.Norm, "unknown Square norm"),
            };
            var fooledNow = margin.le(0);
            // As the reference: a point takes the run's best point only if it was fooled (x otherwise), and
            // each restart starts afresh on the points still robust.
            xAdv.index_copy_(0, todo, where(fooledNow.view(-1, 1, 1, 1), best, xs));
            fooled.index_copy_(0, todo, fooledNow);
            robust.index_copy_(0, todo, fooledNow.logical_not());
            queries.index_copy_(0, todo, queries.index_select(0, todo) + spent);
        }
        return new SquareResult(xAdv.MoveToOuterDisposeScope(), queries.MoveToOuterDisposeScope(), fooled.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The schedule of p, the fraction of pixels a square covers, at iteration i (0-based), as AutoAttack runs
    /// it (the raw iteration, no rescaling to NQueries): i &lt;= 10: pInit; &lt;= 50: /2; &lt;= 200: /4; &lt;= 500: /8;
    /// &lt;= 1000: /16; &lt;= 2000: /32; &lt;= 4000: /64; &lt;= 6000: /128; &lt;= 8000: /256; beyond: /512.
    /// </summary>
    public static double PSelection(double pInit, int iteration) => iteration switch
    {
        <= 10 => pInit,
        <= 50 => pInit / 2,
        <= 200 => pInit / 4,
        <= 500 => pInit / 8,
        <= 1000 => pInit / 16,
        <= 2000 => pInit / 32,
        <= 4000 => pInit / 64,
        <= 6000 => pInit / 128,
        <= 8000 => pInit / 256,
        _ => pInit / 512,
    };

    /// <summary>
    /// Side of the square for fraction p on H x W images: round(sqrt(p * H * W)), rounding halves to even as
    /// Python's round does, at least 1 and at most min(H, W).
    /// </summary>
    public static int SideLength(double p, long height, long width)
    {
        var side = (long)Math.Round(Math.Sqrt(p * height * width), MidpointRounding.ToEven);
        // The reference has no upper bound: for square images with p <= 1 it is never needed, but a wide
        // non-square image would otherwise get a window taller than the image.
        return (int)Math.Clamp(side, 1, Math.Min(height, width));
    }

    /// <summary>
    /// One run on points all correctly classified: xs [n, C, H, W], ys [n]. Returns the best points [n, C, H, W],
    /// their margins [n] and the queries spent per point [n] int64 (the initial query included).
    /// </summary>
    static (Tensor Best, Tensor Margin, Tensor Queries) SingleRun(Func<Tensor, Tensor> model, Tensor xs, Tensor ys,
        SquareSettings settings, Generator? generator, AttackMonitor? monitor)
    {
        using var outer = NewDisposeScope();
        var eps = settings.Threat.Eps;
        var (n, c, h, w) = (xs.shape[0], xs.shape[1], xs.shape[2], xs.shape[3]);
        var device = xs.device;

        // Vertical stripes: one sign per channel and column, constant down each column.
        var best = (xs + eps * RandomSigns([n, c, 1, w], generator, device, xs.dtype)).clamp(0, 1);
        var marginMin = MarginOf(model, best, ys, monitor);
        var queries = ones(n, ScalarType.Int64, device: device);

        // Reference bounds, the same for every point: the eps-box around x intersected with [0, 1] is applied
        // as min(max(., x - eps), x + eps) then clamp, in that order.
        var lower = xs - eps;
        var upper = xs + eps;
        var rows = arange(h, device: device).view(1, h, 1);
        var cols = arange(w, device: device).view(1, 1, w);

        // The initial query counts, so NQueries - 1 iterations keep the budget at NQueries (as the paper's code;
        // AutoAttack's loop runs NQueries iterations, i.e. NQueries + 1 queries).
        for (var i = 0; i < settings.NQueries - 1; i++)
        {
            using var scope = NewDisposeScope();
            var activeMask = marginMin.gt(0);
            // The one host round trip per iteration: which points are still to fool (and stop when none).
            var active = activeMask.nonzero().squeeze(1);
            if (active.shape[0] == 0) break;

            // As AutoAttack: one window position and one sign per channel per iteration, shared by the batch.
            // Positions are uniform in [0, H - s) (the last start row and column are never drawn, as in the
            // reference), 0 when s fills the image. Drawn on the device to avoid a host round trip.
            var s = SideLength(PSelection(settings.PInit, i), h, w);
            var corner = (rand([2], generator: generator, device: device) * tensor(new float[] { h - s, w - s }, device: device)).floor();
            var signs = RandomSigns([c, 1, 1], generator, device, xs.dtype);
            var window = rows.ge(corner[0]).logical_and(rows.lt(corner[0] + s))
                .logical_and(cols.ge(corner[1])).logical_and(cols.lt(corner[1] + s));   // [1, H, W]
            var step = window.to_type(xs.dtype) * (2 * eps) * signs;                     // [C, H, W]

            var bestCurr = best.index_select(0, active);
            var marginCurr = marginMin.index_select(0, active);
            // Adding 2 eps then projecting puts the window at x +- eps (clipped to [0, 1]) whatever it held.
            var candidate = minimum(maximum(bestCurr + step, lower.index_select(0, active)), upper.index_select(0, active)).clamp(0, 1);
            var margin = MarginOf(model, candidate, ys.index_select(0, active), monitor);

            // Accept where the margin decreased or the point is now misclassified; NaN margins never accept.
            var improved = margin.lt(marginCurr).logical_or(margin.le(0));
            marginMin.index_copy_(0, active, where(improved, margin, marginCurr));
            best.index_copy_(0, active, where(improved.view(-1, 1, 1, 1), candidate, bestCurr));
            queries.add_(activeMask.to_type(ScalarType.Int64));
        }
        return (best.MoveToOuterDisposeScope(), marginMin.MoveToOuterDisposeScope(), queries.MoveToOuterDisposeScope());
    }

    /// <summary>The margin z_y - max_{i != y} z_i [B] of the model at images [B, C, H, W]: one query per image.</summary>
    internal static Tensor MarginOf(Func<Tensor, Tensor> model, Tensor images, Tensor labels, AttackMonitor? monitor)
    {
        using var scope = NewDisposeScope();
        var logits = model(images);
        monitor?.Logits(logits);
        return Losses.Margin(logits.detach(), labels).MoveToOuterDisposeScope();
    }

    /// <summary>Independent +-1 with probability 1/2 each, of the given shape.</summary>
    internal static Tensor RandomSigns(long[] shape, Generator? generator, Device device, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return (rand(shape, generator: generator, device: device).lt(0.5).to_type(dtype) * 2 - 1).MoveToOuterDisposeScope();
    }
}
