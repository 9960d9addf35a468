using System.Text.Json.Serialization;
using Carso.Attacks;
using Carso.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Defence;

/// <summary>
/// Inference settings of CARSO.
/// </summary>
/// <param name="Samples">N: reconstructions sampled, classified and aggregated per input (reference: 8).</param>
/// <param name="Aggregation">How the N outputs become one. Default ExpShare: the published argmax, finite everywhere; Lexsemble is the
/// published computation itself (it saturates: see AggregationKind).</param>
/// <param name="Deterministic">z = 0 instead of z ~ N(0, I): the deterministic variant (all N samples are then
/// the same reconstruction).</param>
/// <param name="Differentiable">true: the whole pipeline is recorded by autograd, so gradients flow from the output
/// back to the input through the classifier's representation, the purifier's decoder and the final
/// classification (end-to-end attacks). false: it runs under no_grad and the output carries no graph.</param>
/// <param name="MaxReconstructions">At most this many reconstructions (points x samples) are decoded and classified in
/// one pass; larger batches go through in chunks of whole points. Per image, CPU throughput falls when one pass
/// holds thousands of images (measured: N = 8 inference at 512 points 85 images/s in one pass, 230 at 128 points).
/// Chunks give the same outputs: nothing in the pipeline mixes points.</param>
/// <param name="Precision">The arithmetic of the reconstructions: float32 (the default), or, opt-in, bfloat16 for their
/// classification or for their decoding and classification (see <see cref="CarsoPrecision"/>). bfloat16 changes the
/// numbers, hence attack results: the model needs bfloat16 copies of its networks (<see cref="CarsoModel.WithBFloat16"/>;
/// Committed.Carso makes them). Left out of JSON (run records, training checkpoints) at its default, so settings saved before
/// it existed still match.</param>
public sealed record CarsoSettings(
    int Samples = 8,
    AggregationKind Aggregation = AggregationKind.ExpShare,
    bool Deterministic = false,
    bool Differentiable = false,
    int MaxReconstructions = 1024,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)] CarsoPrecision Precision = CarsoPrecision.Float32)
{
    public CarsoSettings Validate() =>
        Samples < 1 ? throw new ArgumentException($"CarsoSettings.Samples must be >= 1, got {Samples}", nameof(Samples))
        : MaxReconstructions < 1 ? throw new ArgumentException($"CarsoSettings.MaxReconstructions must be >= 1, got {MaxReconstructions}", nameof(MaxReconstructions))
        : this;
}

/// <summary>
/// The arithmetic of CARSO's reconstructions. The classifier's representation of the input and the conditioning vector
/// are float32 in every case; the aggregation is float32. bfloat16 runs on oneDNN's AVX512-BF16 kernels where the CPU has
/// them (measured on this machine's AMD EPYC, CARSO end-to-end gradient, N = 8, batch 128, against float32 with the same
/// layout: BFloat16Classifier 1.2x, BFloat16 1.4x the images/s; input gradients differ from float32 by up to 5% and 31%
/// of their largest entry). Opt-in only: it changes attack results (see the README's speed section for the robust
/// accuracy of a fixed attack in each precision on the same points).
/// </summary>
public enum CarsoPrecision
{
    /// <summary>Everything in float32 (the default; every committed result).</summary>
    Float32,
    /// <summary>The reconstructions are decoded in float32 and classified in bfloat16 (logits back in float32).</summary>
    BFloat16Classifier,
    /// <summary>The reconstructions are decoded and classified in bfloat16.</summary>
    BFloat16,
}

/// <summary>bfloat16 copies of CARSO's classifier and purifier (same weights, rounded), for <see cref="CarsoPrecision"/>.</summary>
public sealed record BFloat16Copies(nn.Module<Tensor, Tensor> Classifier, Purifier Purifier);

/// <summary>
/// The CARSO defence as a model: images x [B, C, H, W] in [0, 1] -> aggregated outputs [B, K].
/// For each point the frozen classifier's representation (the named layers, captured in one forward pass) is
/// compressed into the conditioning vector c; N latents z ~ N(0, I) (or z = 0) are decoded into N
/// reconstructions; all B * N reconstructions are classified by the same classifier in one batch (in chunks of
/// whole points when B * N exceeds MaxReconstructions); the logits
/// [B, K, N] are aggregated. The purifier's encoder is not used. Being a function from images to [B, K], it is
/// the model every attack takes (<see cref="AsModel"/>): stochastic unless Deterministic, and differentiable end
/// to end when Differentiable.
/// The constructor puts the classifier and the purifier in eval mode (the classifier is frozen; the purifier has
/// no mode-dependent layers). It leaves requires_grad of their parameters alone: attacks differentiate with
/// respect to the input only (autograd.grad), so no parameter gradient accumulates.
/// </summary>
public sealed class CarsoModel
{
    public nn.Module<Tensor, Tensor> Classifier { get; }
    public Purifier Purifier { get; }
    public IReadOnlyList<string> LayerNames { get; }
    public CarsoSettings Settings { get; }
    /// <summary>The bfloat16 copies a Precision other than Float32 runs on (null until <see cref="WithBFloat16"/>).</summary>
    public BFloat16Copies? BFloat16 { get; }

    public CarsoModel(nn.Module<Tensor, Tensor> classifier, Purifier purifier, IReadOnlyList<string> layerNames, CarsoSettings? settings = null,
        BFloat16Copies? bfloat16 = null)
    {
        Settings = (settings ?? new CarsoSettings()).Validate();
        if (Settings.Precision != CarsoPrecision.Float32 && bfloat16 is null)
            throw new ArgumentException(
                $"CarsoSettings.Precision {Settings.Precision} runs on bfloat16 copies of the classifier and purifier, and this model has none: " +
                "make them with carso.WithBFloat16(a new classifier of the same architecture) (Committed.Carso does)", nameof(settings));
        BFloat16 = bfloat16;
        if (layerNames.Count != purifier.LayerShapes.Count)
            throw new ArgumentException(
                $"the purifier takes {purifier.LayerShapes.Count} representation layers, got {layerNames.Count} names " +
                $"({string.Join(", ", layerNames)})", nameof(layerNames));
        Classifier = classifier;
        Purifier = purifier;
        LayerNames = layerNames.ToArray();
        classifier.eval();
        purifier.eval();
    }

    /// <summary>The same classifier and purifier with other settings (e.g. Differentiable for an end-to-end attack).</summary>
    public CarsoModel With(CarsoSettings settings) => new(Classifier, Purifier, LayerNames, settings, BFloat16);

    /// <summary>
    /// The same defence with bfloat16 copies of its classifier and purifier, so that its settings may ask for a bfloat16
    /// <see cref="CarsoSettings.Precision"/>: <paramref name="freshClassifier"/> is a new instance of the classifier's
    /// architecture (its weights are overwritten with the classifier's); the purifier is copied. The float32 networks
    /// are not touched. The copies are frozen, in eval mode, on the classifier's device.
    /// </summary>
    public CarsoModel WithBFloat16(nn.Module<Tensor, Tensor> freshClassifier)
    {
        var device = Classifier.parameters().FirstOrDefault()?.device ?? CPU;
        var purifier = Purifier.Build(Purifier.Settings, Purifier.LayerShapes, Purifier.InputShape);
        using (no_grad())
        {
            freshClassifier.to(device).load_state_dict(Classifier.state_dict());
            purifier.to(device).load_state_dict(Purifier.state_dict());
        }
        foreach (var module in new nn.Module[] { freshClassifier, purifier })
        {
            module.to(ScalarType.BFloat16).eval();
            foreach (var p in module.parameters()) p.requires_grad_(false);
        }
        return new(Classifier, Purifier, LayerNames, Settings, new BFloat16Copies(freshClassifier, purifier));
    }

    /// <summary>The defence as evaluations take it: (x [B, C, H, W], generator) -> outputs [B, K], its latents drawn
    /// from the generator; <c>AsModel().Bind(generator)</c> is the function attacks take.
    /// When Differentiable, the model brings its own EOT gradient (<see cref="EotGradient"/>), which the attacks' EOT loops use.</summary>
    public StochasticModel AsModel()
    {
        StochasticModel model = (x, generator) => Forward(x, generator: generator);
        return Settings.Differentiable
            ? model.WithEotGradient(generator => (x, loss, eotIter, onLogits) => EotGradient(x, loss, eotIter, generator, onLogits))
            : model;
    }

    /// <summary>
    /// Latents for a batch of <paramref name="batch"/> points: [batch * N, LatentSize], rows b * N .. b * N + N - 1
    /// for point b; zeros when Deterministic, else N(0, I) from <paramref name="generator"/>, which the sampled
    /// defence requires: its randomness is explicit, never torch's global generator.
    /// </summary>
    public Tensor Latents(long batch, Generator? generator = null, Device? device = null)
    {
        long[] shape = [batch * Settings.Samples, Purifier.Settings.LatentSize];
        if (Settings.Deterministic) return zeros(shape, device: device);
        return randn(shape, device: device, generator: generator
            ?? throw new ArgumentNullException(nameof(generator), "the sampled CARSO defence draws its latents from an explicit generator; pass one (or z)"));
    }

    /// <summary>
    /// The classifier's logits of every reconstruction, [B, K, N]: x [B, C, H, W]; z, when given, the latents
    /// [B * N, LatentSize] (rows b * N .. b * N + N - 1 belong to point b; used as they are, whatever
    /// Deterministic says), else <see cref="Latents"/> from <paramref name="generator"/>.
    /// </summary>
    public Tensor SampleLogits(Tensor x, Tensor? z = null, Generator? generator = null)
    {
        var (b, n) = (x.shape[0], (long)Settings.Samples);
        if (z is not null && (z.dim() != 2 || z.shape[0] != b * n || z.shape[1] != Purifier.Settings.LatentSize))
            throw new ArgumentException(
                $"z must be [B * N, LatentSize] = [{b * n}, {Purifier.Settings.LatentSize}] for {b} points and {n} samples, " +
                $"got [{string.Join(", ", z.shape)}]", nameof(z));
        using var scope = NewDisposeScope();
        using var gradMode = Settings.Differentiable ? null : no_grad();
        var latents = z ?? Latents(b, generator, x.device);                        // drawn for the whole batch at once
        var parts = Chunks(b).Select(p => LogitsFrom(Conditioning(x.narrow(0, p.Start, p.Size)), latents.narrow(0, p.Start * n, p.Size * n))).ToArray();
        return (parts.Length == 1 ? parts[0] : cat(parts, 0)).MoveToOuterDisposeScope();
    }

    /// <summary>The passes of a batch of b points: (first point, points) of at most MaxReconstructions / N points each.</summary>
    IEnumerable<(long Start, long Size)> Chunks(long b)
    {
        var chunk = Math.Max(1, Settings.MaxReconstructions / Settings.Samples);  // points per pass
        for (long start = 0; start < b; start += chunk) yield return (start, Math.Min(chunk, b - start));
    }

    /// <summary>The conditioning vectors of x [b, C, H, W]: the classifier's representation (one float32 forward pass),
    /// compressed by the purifier: [b, Cond].</summary>
    Tensor Conditioning(Tensor x) => Purifier.Condition(Representation.Capture(Classifier, LayerNames, x).Layers);

    /// <summary>One pass from the conditioning: c [b, Cond], latents [b * N, LatentSize] -> logits [b, K, N] (float32 in every
    /// precision).</summary>
    Tensor LogitsFrom(Tensor c, Tensor latents)
    {
        var (b, n) = (c.shape[0], (long)Settings.Samples);
        var reconstructions = DecodeFrom(c, latents);                               // [b * N, C, H, W]
        var logits = Settings.Precision == CarsoPrecision.Float32
            ? Classifier.call(reconstructions)
            : BFloat16!.Classifier.call(reconstructions.to(ScalarType.BFloat16)).to(ScalarType.Float32);   // [b * N, K]
        return logits.view(b, n, -1).transpose(1, 2);                              // [b, K, N]
    }

    /// <summary>Reconstructions [b * N, C, H, W] from c [b, Cond] and latents [b * N, LatentSize] (bfloat16 when Precision is
    /// BFloat16).</summary>
    Tensor DecodeFrom(Tensor c, Tensor latents) => Settings.Precision != CarsoPrecision.BFloat16
        ? Purifier.DecodeSamples(latents.to(c.dtype, c.device), c, Settings.Samples)
        : BFloat16!.Purifier.DecodeSamples(latents.to(ScalarType.BFloat16, c.device), c.to(ScalarType.BFloat16), Settings.Samples);

    /// <summary>
    /// The EOT gradient of the defence at x [B, C, H, W] (Differentiable only): what an attack's loop of
    /// <paramref name="eotIter"/> passes of <see cref="Forward"/> gives, the mean input gradient of sum_b loss(output)_b,
    /// the mean loss [B] and mean output [B, K], with the same latents (each pass draws [B * N, LatentSize] from
    /// <paramref name="generator"/> in turn, as the loop's passes do) and the same values to float rounding, for less
    /// work: the classifier's representation of x and the conditioning (the same in every pass) are computed once, each
    /// pass differentiates only down to the conditioning, and one backward pass takes the summed conditioning gradient
    /// to the input. loss: output [B, K] -> [B]; onLogits sees each pass's output.
    /// </summary>
    public EotEstimate EotGradient(Tensor x, Func<Tensor, Tensor> loss, int eotIter, Generator? generator = null, Action<Tensor>? onLogits = null)
    {
        if (eotIter < 1) throw new ArgumentOutOfRangeException(nameof(eotIter), eotIter, $"EOT iterations must be >= 1, got {eotIter}");
        if (!Settings.Differentiable)
            throw new InvalidOperationException("CarsoModel.EotGradient differentiates the defence: use settings with Differentiable = true");
        using var scope = NewDisposeScope();
        var (b, n) = (x.shape[0], (long)Settings.Samples);
        var input = x.detach().requires_grad_(true);
        using var enabled = enable_grad();
        var chunks = Chunks(b).ToArray();
        var parts = chunks.Select(p => Conditioning(input.narrow(0, p.Start, p.Size))).ToArray();
        var c = parts.Length == 1 ? parts[0] : cat(parts, 0);                      // [B, Cond], with its graph to the input
        var shared = c.detach().requires_grad_(true);
        var cGradSum = zeros_like(c);
        Tensor? lossSum = null, outputSum = null;
        for (var pass = 0; pass < eotIter; pass++)
        {
            using var passScope = NewDisposeScope();
            var latents = Latents(b, generator, x.device);
            var logits = chunks.Select(p => LogitsFrom(shared.narrow(0, p.Start, p.Size), latents.narrow(0, p.Start * n, p.Size * n))).ToArray();
            var output = Aggregation.Aggregate(Settings.Aggregation, logits.Length == 1 ? logits[0] : cat(logits, 0));
            onLogits?.Invoke(output);
            var losses = loss(output);
            var grad = autograd.grad([losses.sum()], [shared])[0];
            using (no_grad())
            {
                cGradSum.add_(grad);
                if (lossSum is null) lossSum = losses.detach().clone().MoveToOuterDisposeScope();
                else lossSum.add_(losses.detach());
                if (outputSum is null) outputSum = output.detach().clone().MoveToOuterDisposeScope();
                else outputSum.add_(output.detach());
            }
        }
        var gradSum = autograd.grad([c], [input], [cGradSum])[0];
        return new EotEstimate((gradSum / eotIter).MoveToOuterDisposeScope(), (lossSum! / eotIter).MoveToOuterDisposeScope(),
            (outputSum! / eotIter).MoveToOuterDisposeScope());
    }

    /// <summary>The N reconstructions the defence classifies, for galleries: x [B, C, H, W] -> [B, N, C, H, W] (no gradient),
    /// latents from <paramref name="generator"/> as in <see cref="Latents"/>.</summary>
    public Tensor Reconstructions(Tensor x, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var n = (long)Settings.Samples;
        var decoded = DecodeFrom(Conditioning(x), Latents(x.shape[0], generator, x.device)).to(x.dtype);
        return decoded.view([x.shape[0], n, .. decoded.shape[1..]]).MoveToOuterDisposeScope();
    }

    /// <summary>Aggregated outputs [B, K] of x [B, C, H, W]; z and generator as in <see cref="SampleLogits"/>.</summary>
    public Tensor Forward(Tensor x, Tensor? z = null, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        using var gradMode = Settings.Differentiable ? null : no_grad();
        return Aggregation.Aggregate(Settings.Aggregation, SampleLogits(x, z, generator)).MoveToOuterDisposeScope();
    }

    /// <summary>As <see cref="Forward"/>, with the number of outputs the naive aggregation would have saturated
    /// (see <see cref="Aggregation.Saturation"/>): the diagnostics of an evaluation.</summary>
    public (Tensor Output, long Saturated) ForwardWithSaturation(Tensor x, Tensor? z = null, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        using var gradMode = Settings.Differentiable ? null : no_grad();
        var (output, saturated) = Aggregation.Apply(Settings.Aggregation, SampleLogits(x, z, generator));
        return (output.MoveToOuterDisposeScope(), saturated);
    }
}
