using Carso.Models;
using Carso.Runtime;
using static TorchSharp.torch;

namespace Carso.Experiments;

/// <summary>Inference speed of a model, for ablations that trade accuracy for time.</summary>
public static class Throughput
{
    /// <summary>Images per second of no_grad passes over images [N, C, H, W] in batches: the median of
    /// <paramref name="repeats"/> passes after one warm-up pass.</summary>
    public static double ImagesPerSecond(StochasticModel model, Tensor images, int repeats, int batchSize, Device device, long seed = 0)
    {
        var n = images.shape[0];
        double Pass(int pass)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            using var noGrad = no_grad();
            for (long start = 0, block = 0; start < n; start += batchSize, block++)
            {
                using var scope = NewDisposeScope();
                using var generator = Seeds.Generator(seed, "throughput", device, pass, block);
                model(images.narrow(0, start, Math.Min(batchSize, n - start)).to(device), generator).cpu(); // .cpu(): wait for the device
            }
            return clock.Elapsed.TotalSeconds;
        }
        Pass(-1);
        var seconds = Enumerable.Range(0, repeats).Select(Pass).Order().ToArray();
        return n / seconds[seconds.Length / 2];
    }
}
