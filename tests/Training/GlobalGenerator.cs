using static TorchSharp.torch;

namespace Carso.Tests;

/// <summary>Checks that code leaves torch's global generator alone (the training functions draw from their own).</summary>
public static class GlobalGenerator
{
    /// <summary>Unrelated work on the global generator: reseed it and draw from it.</summary>
    public static void Disturb(int k)
    {
        manual_seed(123 + k);
        rand(17).Dispose();
    }

    /// <summary>Runs f and, when check, asserts that it neither reseeded nor drew from the global generator.</summary>
    public static T LeftAlone<T>(Func<T> f, bool check = true)
    {
        if (!check) return f();
        manual_seed(5);
        var result = f();
        using var after = rand(8);
        manual_seed(5);
        using var expected = rand(8);
        Assert.True(after.eq(expected).all().item<bool>(), "the code used torch's global generator");
        return result;
    }
}
