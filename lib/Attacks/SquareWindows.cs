using static TorchSharp.torch;

namespace Carso.Attacks;

/// <summary>
/// What the L2 and L1 Square attacks (Andriushchenko et al. 2020; L1 as in AutoAttack's square.py, Croce &amp; Hein 2021)
/// share: the "meta-pseudo-gaussian" window pattern, the tiled starting perturbation, the window side schedule, and the
/// random-search loop that proposes one window update per iteration and keeps it where the margin falls. The norm's own
/// update is in <see cref="SquareL2"/> and <see cref="SquareL1"/>.
/// </summary>
public static class SquareWindows
{
    /// <summary>
    /// Side of the windows at fraction p on H x W images for L2 and L1: round(sqrt(p H W)) (halves to even, as Python),
    /// at least 3, made odd by adding 1, at most min(H, W).
    /// </summary>
    public static int SideLength(double p, long height, long width)
    {
        var side = Math.Max((long)Math.Round(Math.Sqrt(p * height * width), MidpointRounding.ToEven), 3);
        if (side % 2 == 0) side++;
        return (int)Math.Min(side, Math.Min(height, width));
    }

    /// <summary>
    /// The meta-pseudo-gaussian pattern of side s for the norm (L2 or L1), float64 [s, s], before any random transposition:
    /// the top floor(s/2) rows hold a block of nested rectangles centred in it, the bottom rows the negated block of the
    /// remaining rows; rectangle k (k = 0, 1, ... from the centre outwards) adds 1/(k+1)^2 (L2) or 1/(k+1)^4 (L1) to the
    /// cells it covers. Each block and then the whole pattern are normalised to unit L2 (L2) or unit L1 (L1) norm.
    /// </summary>
    public static Tensor PseudoGaussian(int side, Norm norm)
    {
        if (side < 1) throw new ArgumentOutOfRangeException(nameof(side), side, "the window side must be >= 1");
        if (norm is not (Norm.L2 or Norm.L1)) throw new ArgumentOutOfRangeException(nameof(norm), norm, "the pattern is L2's or L1's");
        var top = side / 2;
        var upper = Rectangles(top, side, norm);
        var lower = Rectangles(side - top, side, norm);
        var pattern = new double[side * side];
        for (var r = 0; r < side; r++)
            for (var c = 0; c < side; c++)
                pattern[r * side + c] = r < top ? upper[r, c] : -lower[r - top, c];
        Normalise(pattern, norm);
        return tensor(pattern, [side, side], dtype: ScalarType.Float64);
    }

    /// <summary>Nested rectangles on rows x cols cells (see <see cref="PseudoGaussian"/>), normalised in the norm.</summary>
    static double[,] Rectangles(int rows, int cols, Norm norm)
    {
        var delta = new double[rows, cols];
        var (centreRow, centreCol) = (rows / 2 + 1, cols / 2 + 1);
        var (r0, c0) = (centreRow - 1, centreCol - 1);
        var power = norm == Norm.L2 ? 2 : 4;
        for (var k = 0; k < Math.Max(centreRow, centreCol); k++)
        {
            for (var r = Math.Max(r0, 0); r < Math.Min(r0 + 2 * k + 1, rows); r++)
                for (var c = Math.Max(c0, 0); c < Math.Min(c0 + 2 * k + 1, cols); c++)
                    delta[r, c] += 1.0 / Math.Pow(k + 1, power);
            r0--;
            c0--;
        }
        var flat = new double[rows * cols];
        Buffer.BlockCopy(delta, 0, flat, 0, flat.Length * sizeof(double));
        Normalise(flat, norm);
        Buffer.BlockCopy(flat, 0, delta, 0, flat.Length * sizeof(double));
        return delta;
    }

    static void Normalise(double[] values, Norm norm)
    {
        var total = norm == Norm.L2 ? Math.Sqrt(values.Sum(v => v * v)) : values.Sum(Math.Abs);
        if (total > 0) for (var i = 0; i < values.Length; i++) values[i] /= total;
    }

    /// <summary>The pattern of side s [s, s] in dtype on device, transposed with probability 1/2 (the choice is drawn from
    /// the generator and applied on the device: no host round trip).</summary>
    internal static Tensor RandomlyTransposed(Tensor pattern, Generator? generator)
    {
        using var scope = NewDisposeScope();
        var transpose = rand([1], generator: generator, device: pattern.device).gt(0.5);
        return where(transpose, pattern.t(), pattern).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The starting perturbation [n, C, H, W] of both attacks (before the norm's scaling): tiles of side s0 = floor(H / 5)
    /// (at least 1) from offset floor((H - 5 s0) / 2) in both directions, floor(H / s0) by floor(W / s0) of them (the parts
    /// of tiles past the image are dropped, as in the reference), each the randomly transposed pattern times an independent
    /// sign per image and channel.
    /// </summary>
    internal static Tensor InitialPerturbation(Tensor xs, Norm norm, Generator? generator)
    {
        using var scope = NewDisposeScope();
        var (n, c, h, w) = (xs.shape[0], xs.shape[1], (int)xs.shape[2], (int)xs.shape[3]);
        var side = Math.Max(h / 5, 1);
        var offset = Math.Max((h - side * 5) / 2, 0);
        var pattern = PseudoGaussian(side, norm).to(xs.dtype, xs.device);
        var delta = zeros_like(xs);
        for (var i = 0; i < h / side; i++)
        {
            var top = offset + i * side;
            if (top >= h) break;
            for (var j = 0; j < w / side; j++)
            {
                var left = offset + j * side;
                if (left >= w) break;
                var (rows, cols) = (Math.Min(side, h - top), Math.Min(side, w - left));
                var tile = RandomlyTransposed(pattern, generator).narrow(0, 0, rows).narrow(1, 0, cols).view(1, 1, rows, cols)
                           * Square.RandomSigns([n, c, 1, 1], generator, xs.device, xs.dtype);
                delta.narrow(2, top, rows).narrow(3, left, cols).add_(tile);
            }
        }
        return delta.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One iteration's proposal, for the m points still to fool: XCurr and BestCurr [m, C, H, W] (the clean points and their
    /// current best), Window and Cleared [1, 1, H, W] (1 on the window to rewrite, and on a second random window whose
    /// perturbation is removed), Pattern [1, 1, H, W] (the randomly transposed pattern placed on Window, 0 elsewhere),
    /// Signs [m, C, 1, 1] (+-1).
    /// </summary>
    internal sealed record Proposal(Tensor XCurr, Tensor BestCurr, Tensor Window, Tensor Cleared, Tensor Pattern, Tensor Signs);

    /// <summary>
    /// The random search of the L2 and L1 attacks on points all correctly classified, xs [n, C, H, W], ys [n], from
    /// best [n, C, H, W] (the norm's starting point). Each iteration draws the side s (<see cref="SideLength"/> of the p
    /// schedule), two window positions (uniform in [0, H - s) x [0, W - s), as the reference: one for all points), the
    /// pattern's transposition and the signs, asks propose for the candidates and keeps a candidate where the margin
    /// fell or is &lt;= 0. Returns the best points, their margins [n] and queries [n] int64 (the initial query included),
    /// with the same query accounting as the Linf attack.
    /// </summary>
    internal static (Tensor Best, Tensor Margin, Tensor Queries) Search(Func<Tensor, Tensor> model, Tensor xs, Tensor ys,
        Tensor best, SquareSettings settings, Norm norm, Func<Proposal, Tensor> propose, Generator? generator, AttackMonitor? monitor)
    {
        using var outer = NewDisposeScope();
        var (n, c, h, w) = (xs.shape[0], xs.shape[1], xs.shape[2], xs.shape[3]);
        var device = xs.device;
        best = best.clone();
        var marginMin = Square.MarginOf(model, best, ys, monitor);
        var queries = ones(n, ScalarType.Int64, device: device);
        var rows = arange(h, device: device).view(h, 1);
        var cols = arange(w, device: device).view(1, w);
        var patterns = new Dictionary<int, Tensor>();

        for (var i = 0; i < settings.NQueries - 1; i++)
        {
            using var scope = NewDisposeScope();
            var activeMask = marginMin.gt(0);
            // The one host round trip per iteration, as the Linf attack: which points are still to fool.
            var active = activeMask.nonzero().squeeze(1);
            if (active.shape[0] == 0) break;

            var s = SideLength(Square.PSelection(settings.PInit, i), h, w);
            if (!patterns.TryGetValue(s, out var pattern))
                patterns[s] = pattern = PseudoGaussian(s, norm).to(xs.dtype, device).DetachFromDisposeScope();
            var range = tensor(new float[] { h - s, w - s, h - s, w - s }, device: device);
            var corners = (rand([4], generator: generator, device: device) * range).floor().to_type(ScalarType.Int64);
            var (rowStart, colStart) = (corners[0], corners[1]);
            var window = Box(rows, cols, rowStart, colStart, s);
            var cleared = Box(rows, cols, corners[2], corners[3], s);
            // The pattern placed at the window: each pixel reads the pattern cell at its offset from the corner.
            var local = (rows - rowStart).clamp(0, s - 1) * s + (cols - colStart).clamp(0, s - 1);
            var placed = RandomlyTransposed(pattern, generator).flatten().index_select(0, local.flatten()).view(1, 1, h, w) * window;

            var xCurr = xs.index_select(0, active);
            var bestCurr = best.index_select(0, active);
            var marginCurr = marginMin.index_select(0, active);
            var signs = Square.RandomSigns([active.shape[0], c, 1, 1], generator, device, xs.dtype);
            var candidate = propose(new Proposal(xCurr, bestCurr, window, cleared, placed, signs));
            var margin = Square.MarginOf(model, candidate, ys.index_select(0, active), monitor);

            var improved = margin.lt(marginCurr).logical_or(margin.le(0));
            marginMin.index_copy_(0, active, where(improved, margin, marginCurr));
            best.index_copy_(0, active, where(improved.view(-1, 1, 1, 1), candidate, bestCurr));
            queries.add_(activeMask.to_type(ScalarType.Int64));
        }
        foreach (var p in patterns.Values) p.Dispose();
        return (best.MoveToOuterDisposeScope(), marginMin.MoveToOuterDisposeScope(), queries.MoveToOuterDisposeScope());
    }

    /// <summary>1 on the s x s window with corner (row, col) (int64 scalars on the device), 0 elsewhere: [1, 1, H, W] float.</summary>
    static Tensor Box(Tensor rows, Tensor cols, Tensor row, Tensor col, int s)
    {
        using var scope = NewDisposeScope();
        var inside = rows.ge(row).logical_and(rows.lt(row + s)).logical_and(cols.ge(col)).logical_and(cols.lt(col + s));
        return inside.to_type(ScalarType.Float32).unsqueeze(0).unsqueeze(0).MoveToOuterDisposeScope();
    }
}
