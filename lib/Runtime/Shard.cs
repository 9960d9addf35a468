namespace Carso.Runtime;

/// <summary>
/// Shard <see cref="Index"/> of <see cref="Count"/> (`--shard K/N`, K from 0): a contiguous range of whole blocks of an
/// evaluation's points. Blocks are the evaluation driver's fixed runs of BatchSize consecutive points whose randomness is
/// keyed by their global index, so the shards of a split together evaluate every point exactly as one process would.
/// </summary>
public sealed record Shard(int Index, int Count)
{
    /// <summary>"K/N" with 0 &lt;= K &lt; N; anything else is a usage error naming the option.</summary>
    public static Shard Parse(string text)
    {
        var parts = text.Split('/');
        if (parts.Length == 2 && int.TryParse(parts[0], out var k) && int.TryParse(parts[1], out var n) && n >= 1 && k >= 0 && k < n)
            return new Shard(k, n);
        throw new UsageException($"--shard needs K/N with 0 <= K < N (shard K of N, counted from 0), got '{text}'");
    }

    /// <summary>The shard's folder inside a run's output folder: "shard-K-of-N".</summary>
    public string Folder => $"shard-{Index}-of-{Count}";

    public override string ToString() => $"{Index}/{Count}";

    /// <summary>The shard's blocks [First, End) of <paramref name="blocks"/>: N nearly equal contiguous ranges.</summary>
    public (int First, int End) Blocks(int blocks) => ((int)((long)blocks * Index / Count), (int)((long)blocks * (Index + 1) / Count));

    /// <summary>The shard's points [Start, End) of <paramref name="points"/> cut into blocks of <paramref name="blockSize"/>.
    /// Every shard gets at least one block: more shards than blocks is a usage error that says how many blocks there are.</summary>
    public (int Start, int End) Points(int points, int blockSize, string what = "the evaluation")
    {
        var blocks = (points + blockSize - 1) / blockSize;
        if (Count > blocks)
            throw new UsageException($"--shard {this}: {what} has {points} points in {blocks} block(s) of BatchSize {blockSize}, " +
                                     $"fewer than {Count} shards; use at most {blocks} shards, or a smaller BatchSize (it keys the randomness: " +
                                     "compare only runs with the same BatchSize)");
        var (first, end) = Blocks(blocks);
        return (first * blockSize, Math.Min(points, end * blockSize));
    }
}
