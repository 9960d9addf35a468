using System.Text;
using static TorchSharp.torch;

namespace Carso.Runtime;

/// <summary>
/// Explicit randomness: every random draw in the library comes from a generator made here from
/// (seed, purpose, indices) — e.g. (seed, "family/pgd-eot/attack 0", block 3) — never from torch's global
/// generator. The same key gives the same stream whatever else the process draws, on any thread.
/// </summary>
public static class Seeds
{
    /// <summary>A 64-bit seed derived from a run seed, a purpose and indices (SplitMix64 over an FNV-1a hash of
    /// the purpose): stable across processes, platforms and .NET versions.</summary>
    public static long Derive(long seed, string purpose, params long[] indices)
    {
        var h = Mix(unchecked((ulong)seed));
        foreach (var b in Encoding.UTF8.GetBytes(purpose)) h = unchecked((h ^ b) * 0x100000001B3UL);
        h = Mix(h);
        foreach (var i in indices) h = Mix(h ^ Mix(unchecked((ulong)i)));
        return unchecked((long)(h & 0x7FFF_FFFF_FFFF_FFFFUL)); // non-negative: libtorch takes the seed as uint64
    }

    /// <summary>A fresh generator for (seed, purpose, indices) on the device. The caller disposes it.</summary>
    public static Generator Generator(long seed, string purpose, Device? device = null, params long[] indices) =>
        new((ulong)Derive(seed, purpose, indices), device ?? CPU);

    static ulong Mix(ulong z)
    {
        z = unchecked(z + 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }
}
