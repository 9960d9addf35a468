using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Carso.Defence;

/// <summary>
/// Sizes of the CARSO purifier (<see cref="Purifier"/>). The two headline sizes are the reference CIFAR-10
/// values; the channel counts are small so that a purifier over every conv layer of a WideResNet-28-10 stays
/// cheap (its compressors are a few thousand parameters per layer; most parameters sit in the linear layers).
/// </summary>
/// <param name="ConditioningSize">Length of the conditioning vector c (reference: 512).</param>
/// <param name="LatentSize">Length of the joint latent z (reference: 128).</param>
/// <param name="CompressorChannels">Channels a 4-D layer output is reduced to by its compressor's 1x1 convolution.
/// This and the other channel counts must be multiples of <see cref="ChannelMultiple"/>.</param>
/// <param name="CompressedSize">A compressor halves a 4-D layer's height and width (stride-2 3x3 convolutions)
/// until both are at most this; a layer of 16 channels at 4x4 then gives 256 features.</param>
/// <param name="CompressorFeatures">Features a flat layer output [F] (e.g. fc features) is mapped to.</param>
/// <param name="EncoderChannels1">Channels of the encoder's first stride-2 convolution on the image.</param>
/// <param name="EncoderChannels2">Channels of the encoder's second stride-2 convolution on the image.</param>
/// <param name="DecoderChannels">Channels of the decoder's first (smallest) feature map; each upsampling stage
/// halves them (rounded down to a multiple of 16), down to 16 at least.</param>
/// <param name="DecoderBaseSize">The decoder starts from a feature map of at most this height and width and
/// doubles it per transposed convolution (7 -> 14 -> 28, 8 -> 16 -> 32, 8 -> 16 -> 32 -> 64).</param>
/// <param name="NegativeSlope">Slope of the LeakyReLU activations for negative inputs.</param>
/// <param name="BatchNorm">Batch normalisation where the reference Fashion-MNIST purifier has it: after every
/// convolution and linear layer of the compressors, the conditioning layer and the encoder's convolutions (the
/// decoder has none, as in the reference). Off in purifiers made before it existed (their specs lack it).</param>
public sealed record PurifierSettings(
    int ConditioningSize = 512,
    int LatentSize = 128,
    int CompressorChannels = 16,
    int CompressedSize = 4,
    int CompressorFeatures = 256,
    int EncoderChannels1 = 32,
    int EncoderChannels2 = 64,
    int DecoderChannels = 64,
    int DecoderBaseSize = 8,
    double NegativeSlope = 0.2,
    bool BatchNorm = false)
{
    /// <summary>
    /// Every convolution channel count is a multiple of this. On CPU, libtorch 2.10 (TorchSharp 0.107) runs
    /// float32 convolutions through oneDNN, whose backward-data pass of a 3x3 convolution (also the forward pass of
    /// a stride-1 transposed one) reads uninitialised memory when the output channels are not a multiple of 16
    /// (presumably the AVX-512 channel block): the input gradient is then garbage or NaN as soon as freed memory
    /// is reused (measured: 1-5, 7, 8, 12, 15, 17, 20, 24 channels wrong; 16, 32, 48, 64 right; 1x1 kernels and
    /// float64 right). See the README's conventions.
    /// </summary>
    public const int ChannelMultiple = 16;

    /// <summary>Returns these settings, or throws an ArgumentException naming the first setting that is not
    /// positive, or a channel count that is not a multiple of <see cref="ChannelMultiple"/>.</summary>
    public PurifierSettings Validate()
    {
        foreach (var (name, value) in new (string, double)[]
                 {
                     (nameof(ConditioningSize), ConditioningSize), (nameof(LatentSize), LatentSize),
                     (nameof(CompressorChannels), CompressorChannels), (nameof(CompressedSize), CompressedSize),
                     (nameof(CompressorFeatures), CompressorFeatures), (nameof(EncoderChannels1), EncoderChannels1),
                     (nameof(EncoderChannels2), EncoderChannels2), (nameof(DecoderChannels), DecoderChannels),
                     (nameof(DecoderBaseSize), DecoderBaseSize),
                 })
            if (!(value >= 1))
                throw new ArgumentException($"PurifierSettings.{name} must be >= 1, got {value}", name);
        foreach (var (name, value) in new (string, int)[]
                 {
                     (nameof(CompressorChannels), CompressorChannels), (nameof(EncoderChannels1), EncoderChannels1),
                     (nameof(EncoderChannels2), EncoderChannels2), (nameof(DecoderChannels), DecoderChannels),
                 })
            if (value % ChannelMultiple != 0)
                throw new ArgumentException(
                    $"PurifierSettings.{name} must be a multiple of {ChannelMultiple}, got {value}: libtorch 2.10's CPU " +
                    "float32 convolutions (oneDNN, AVX-512) compute wrong gradients through a 3x3 convolution whose " +
                    "output channels are not a multiple of 16", name);
        if (!(NegativeSlope >= 0))
            throw new ArgumentException($"PurifierSettings.NegativeSlope must be >= 0, got {NegativeSlope}", nameof(NegativeSlope));
        return this;
    }
}

/// <summary>
/// The CARSO purifier: a conditional VAE from a frozen classifier's internal representation of a (maybe
/// perturbed) input to a distribution over CLEAN images.
/// <list type="bullet">
/// <item>Compressors, one per representation layer: a 4-D output [B, C_l, H_l, W_l] goes through a 1x1
/// convolution to <c>CompressorChannels</c> and stride-2 3x3 convolutions down to at most
/// <c>CompressedSize</c> square; any other output [B, ...] is flattened and mapped by a linear layer to
/// <c>CompressorFeatures</c>. The flattened results are concatenated and a linear layer makes the conditioning
/// vector c [B, ConditioningSize].</item>
/// <item>Encoder (training only): two stride-2 convolutions on the image x [B, C, H, W], flattened; with c,
/// linear layers give mu and logvar [B, LatentSize].</item>
/// <item>Decoder: [z, c] -> linear -> [B, DecoderChannels, h0, w0] -> stride-2 transposed convolutions, each
/// doubling the size (and cropping one row or column where the target is odd, so any size comes out exactly)
/// -> 3x3 convolution (stride-1 transposed) to C channels -> sigmoid: [B, C, H, W] in (0, 1).</item>
/// </list>
/// With <c>BatchNorm</c>, the compressors, the conditioning layer and the encoder normalise over the batch in
/// training and with their running statistics in eval mode, which <see cref="CarsoModel"/> sets: at inference a
/// point's reconstruction never depends on the rest of its batch, so batched inference equals a per-point loop.
/// Activations are LeakyReLU modules and every submodule is called with .call, so hooks see all of it.
/// Build with <see cref="Build"/>; the training forward is <c>call(layers, x)</c>.
/// </summary>
public sealed class Purifier : Module<Tensor[], Tensor, (Tensor Reconstruction, Tensor Mu, Tensor LogVar)>
{
    // Field names are the state-dict prefixes.
    readonly ModuleList<Module<Tensor, Tensor>> compressors;
    readonly Linear condition;
    readonly Module<Tensor, Tensor> condition_act;
    readonly Sequential encoder;
    readonly Linear mu, logvar;
    readonly Linear decoder_input;
    readonly Module<Tensor, Tensor> decoder_input_act;
    readonly Sequential decoder;
    readonly Module<Tensor, Tensor> output;

    readonly long[] decoderBase; // [channels, h0, w0] of the decoder's first feature map

    public PurifierSettings Settings { get; }

    /// <summary>The output shape of each representation layer it conditions on, without the batch dimension.</summary>
    public IReadOnlyList<long[]> LayerShapes { get; }

    /// <summary>The image shape [C, H, W] it encodes and decodes.</summary>
    public long[] InputShape { get; }

    Purifier(PurifierSettings settings, IReadOnlyList<long[]> layerShapes, long[] inputShape) : base(nameof(Purifier))
    {
        var s = Settings = settings.Validate();
        if (layerShapes.Count == 0)
            throw new ArgumentException("the purifier needs at least one representation layer", nameof(layerShapes));
        for (var i = 0; i < layerShapes.Count; i++)
            if (layerShapes[i].Length == 0 || layerShapes[i].Any(d => d < 1))
                throw new ArgumentException(
                    $"representation layer {i} has shape [{string.Join(", ", layerShapes[i])}]; give each layer's " +
                    "output shape without the batch dimension, every size >= 1", nameof(layerShapes));
        if (inputShape.Length != 3 || inputShape.Any(d => d < 1))
            throw new ArgumentException($"the input shape must be [C, H, W], got [{string.Join(", ", inputShape)}]", nameof(inputShape));
        LayerShapes = layerShapes.Select(l => l.ToArray()).ToArray();
        InputShape = inputShape.ToArray();
        var (c, h, w) = (inputShape[0], inputShape[1], inputShape[2]);

        var compressed = LayerShapes.Select(shape => Compressor(shape, s)).ToArray();
        compressors = ModuleList(compressed.Select(m => m.Module).ToArray());
        condition = Linear(compressed.Sum(m => m.Features), s.ConditioningSize, hasBias: !s.BatchNorm);
        condition_act = Normalised(BatchNorm1d(s.ConditioningSize), s);

        // Two stride-2 3x3 convolutions, padding 1: H -> ceil(H/2) -> ceil(H/4).
        encoder = Sequential(
            ("conv_0", Conv2d(c, s.EncoderChannels1, 3, stride: 2, padding: 1, bias: !s.BatchNorm)),
            ("act_0", Normalised(BatchNorm2d(s.EncoderChannels1), s)),
            ("conv_1", Conv2d(s.EncoderChannels1, s.EncoderChannels2, 3, stride: 2, padding: 1, bias: !s.BatchNorm)),
            ("act_1", Normalised(BatchNorm2d(s.EncoderChannels2), s)),
            ("flatten", Flatten()));
        var encoded = s.EncoderChannels2 * Halved(h, 2) * Halved(w, 2);
        mu = Linear(encoded + s.ConditioningSize, s.LatentSize);
        logvar = Linear(encoded + s.ConditioningSize, s.LatentSize);

        var (heights, widths) = (UpsamplingSizes(h, s.DecoderBaseSize), UpsamplingSizes(w, s.DecoderBaseSize));
        var stages = Math.Max(heights.Length, widths.Length) - 1;
        (heights, widths) = (UpsamplingSizes(h, s.DecoderBaseSize, stages), UpsamplingSizes(w, s.DecoderBaseSize, stages));
        decoderBase = [s.DecoderChannels, heights[0], widths[0]];
        decoder_input = Linear(s.LatentSize + s.ConditioningSize, decoderBase[0] * decoderBase[1] * decoderBase[2]);
        decoder_input_act = new Carso.Models.LeakyRelu(s.NegativeSlope);
        var stageModules = new List<(string, Module<Tensor, Tensor>)>();
        long channels = s.DecoderChannels;
        for (var k = 1; k <= stages; k++)
        {
            var next = Math.Max(channels / 2 / PurifierSettings.ChannelMultiple * PurifierSettings.ChannelMultiple,
                PurifierSettings.ChannelMultiple);
            // A 4x4 transposed convolution, stride 2, padding 1 doubles n exactly; UpsamplingSizes chose
            // n = ceil(target / 2), so an odd target is one row or column short of 2n and the last is cropped.
            // (Not output_padding: with TorchSharp 0.107 a ConvTranspose2d built with output padding (1, 0) pads
            // both dimensions by 1, which broke odd-by-even sizes such as 27x33.)
            stageModules.Add(($"up_{k - 1}", ConvTranspose2d(channels, next, 4, stride: 2, padding: 1)));
            if (heights[k] % 2 == 1 || widths[k] % 2 == 1)
                stageModules.Add(($"crop_{k - 1}", new Crop(heights[k], widths[k])));
            stageModules.Add(($"act_{k - 1}", new Carso.Models.LeakyRelu(s.NegativeSlope)));
            channels = next;
        }
        // The last 3x3 layer is a stride-1 transposed convolution (a 3x3 convolution with "same" padding and a
        // mirrored kernel), not a Conv2d: a Conv2d to C = 1 or 3 channels would have a wrong backward pass on CPU
        // (see PurifierSettings.ChannelMultiple), and its input gradient feeds every other decoder gradient, in
        // training and in end-to-end attacks alike. The transposed one's backward is a plain convolution from C
        // channels, and its forward is right because its input has a multiple of 16 channels.
        // (tests/Defence/PurifierTests.cs checks float32 against float64 on dirty memory.)
        stageModules.Add(("conv", new Carso.Models.ConvTranspose3x3(channels, c)));   // its forward from few channels computed faster
        decoder = Sequential(stageModules);
        output = Sigmoid();
        RegisterComponents();
    }

    /// <summary>
    /// A purifier for a classifier whose representation layers have the output shapes
    /// <paramref name="layerShapes"/> (each without the batch dimension, e.g. [32, 28, 28] or [128]; take them
    /// from <c>Representation.Describe</c>) and for images of shape <paramref name="inputShape"/> [C, H, W].
    /// Freshly initialised, in training mode, on the CPU.
    /// </summary>
    public static Purifier Build(PurifierSettings settings, IReadOnlyList<long[]> layerShapes, long[] inputShape) =>
        new(settings, layerShapes, inputShape);

    /// <summary>
    /// The conditioning vector of a representation: layers[i] [B, ...LayerShapes[i]] -> c [B, ConditioningSize].
    /// A wrong number of layers or a wrong shape is an ArgumentException naming the layer and both shapes.
    /// </summary>
    public Tensor Condition(Tensor[] layers)
    {
        if (layers.Length != LayerShapes.Count)
            throw new ArgumentException(
                $"the purifier was built for {LayerShapes.Count} representation layers, got {layers.Length}", nameof(layers));
        for (var i = 0; i < layers.Length; i++)
            if (!layers[i].shape.Skip(1).SequenceEqual(LayerShapes[i]) || layers[i].shape[0] != layers[0].shape[0])
                throw new ArgumentException(
                    $"representation layer {i} has shape [{string.Join(", ", layers[i].shape)}]; the purifier was built " +
                    $"for [B, {string.Join(", ", LayerShapes[i])}] with the batch size B of layer 0 ({layers[0].shape[0]})",
                    nameof(layers));
        using var scope = NewDisposeScope();
        var features = cat(layers.Select((t, i) => compressors[i].call(t)).ToArray(), 1);
        return condition_act.call(condition.call(features)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The posterior of the joint latent: images x [B, C, H, W] and conditioning c [B, ConditioningSize] ->
    /// (mu, logvar), each [B, LatentSize]. Used only in training (inference samples z from N(0, I)).
    /// </summary>
    public (Tensor Mu, Tensor LogVar) Encode(Tensor x, Tensor c)
    {
        CheckImages(x, nameof(x));
        using var scope = NewDisposeScope();
        var joint = cat([encoder.call(x), c], 1);
        return (mu.call(joint).MoveToOuterDisposeScope(), logvar.call(joint).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Reconstructions of latents z [B, LatentSize] given conditioning c [B, ConditioningSize]:
    /// [B, C, H, W] with values in (0, 1), exactly <see cref="InputShape"/> per point.
    /// </summary>
    public Tensor Decode(Tensor z, Tensor c)
    {
        if (z.dim() != 2 || z.shape[1] != Settings.LatentSize || c.dim() != 2 || c.shape[1] != Settings.ConditioningSize || z.shape[0] != c.shape[0])
            throw new ArgumentException(
                $"Decode needs z [B, {Settings.LatentSize}] and c [B, {Settings.ConditioningSize}], got z " +
                $"[{string.Join(", ", z.shape)}] and c [{string.Join(", ", c.shape)}]");
        using var scope = NewDisposeScope();
        var h = decoder_input_act.call(decoder_input.call(cat([z, c], 1)));
        h = h.view(z.shape[0], decoderBase[0], decoderBase[1], decoderBase[2]);
        return output.call(decoder.call(h)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Reconstructions of <paramref name="samples"/> latents per point: z [B * N, LatentSize] (rows b * N .. b * N + N - 1
    /// for point b), c [B, ConditioningSize] (one per point) -> [B * N, C, H, W] (NCHW strides). The same function as
    /// <c>Decode(z, c.repeat_interleave(N, 0))</c>, equal to float rounding, and cheaper, which matters because CARSO's
    /// attacks decode N reconstructions per point in every pass: the conditioning's share of the first linear layer is
    /// computed once per point instead of once per sample (W [z; c] + b = W_z z + (W_c c + b)), and the transposed
    /// convolutions run on channels-last feature maps (oneDNN then skips its layout conversions; measured on this CPU:
    /// CARSO's end-to-end gradient, N = 8, batch 128, 1.15x the images/s of the plain path, gradients equal within 3e-6
    /// relative).
    /// </summary>
    public Tensor DecodeSamples(Tensor z, Tensor c, long samples)
    {
        if (z.dim() != 2 || z.shape[1] != Settings.LatentSize || c.dim() != 2 || c.shape[1] != Settings.ConditioningSize
            || samples < 1 || z.shape[0] != c.shape[0] * samples)
            throw new ArgumentException(
                $"DecodeSamples needs z [B * N, {Settings.LatentSize}] and c [B, {Settings.ConditioningSize}] with N = {samples}, got z " +
                $"[{string.Join(", ", z.shape)}] and c [{string.Join(", ", c.shape)}]");
        using var scope = NewDisposeScope();
        var (points, latent) = (c.shape[0], (long)Settings.LatentSize);
        var weight = decoder_input.weight!;
        var perPoint = functional.linear(c, weight.narrow(1, latent, weight.shape[1] - latent), decoder_input.bias);   // [B, F]
        var perSample = functional.linear(z, weight.narrow(1, 0, latent)).view(points, samples, -1);                 // [B, N, F]
        var h = decoder_input_act.call((perSample + perPoint.unsqueeze(1)).view(points * samples, -1));
        h = ChannelsLast(h.view(points * samples, decoderBase[0], decoderBase[1], decoderBase[2]));
        return Contiguous(output.call(decoder.call(h))).MoveToOuterDisposeScope();
    }

    /// <summary>The same values [B, C, H, W] laid out channels-last (TorchSharp 0.107 has no memory_format argument; a
    /// permuted contiguous copy has the strides libtorch recognises).</summary>
    static Tensor ChannelsLast(Tensor t) => t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);

    /// <summary>The same values [B, C, H, W] with NCHW strides. With one channel a channels-last tensor already has that
    /// memory order (only its strides differ), so it is restrided rather than copied.</summary>
    static Tensor Contiguous(Tensor t) => t.shape[1] == 1 && t.is_contiguous()
        ? t.as_strided(t.shape, [t.shape[2] * t.shape[3], t.shape[2] * t.shape[3], t.shape[3], 1])
        : t.contiguous();

    /// <summary>z = mu + exp(logvar / 2) * eps with eps ~ N(0, I) drawn from <paramref name="generator"/>
    /// (the global one when null): [B, LatentSize] -> [B, LatentSize], differentiable in mu and logvar.</summary>
    public static Tensor Reparameterise(Tensor mu, Tensor logVar, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        var eps = randn(mu.shape, dtype: mu.dtype, device: mu.device, generator: generator);
        return (mu + (logVar / 2).exp() * eps).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The training pass: the representation layers of x (captured from the frozen classifier, see
    /// <see cref="Condition"/>) and the image the encoder sees, x [B, C, H, W] (the classifier's own input,
    /// clean or perturbed) -> (reconstruction [B, C, H, W] in (0, 1), mu, logvar [B, LatentSize]).
    /// The loss compares the reconstruction with the CLEAN image (<see cref="PurifierLoss"/>).
    /// </summary>
    public override (Tensor Reconstruction, Tensor Mu, Tensor LogVar) forward(Tensor[] layers, Tensor x) => Reconstruct(layers, x);

    /// <summary>As <c>forward</c>, with the reparameterisation noise drawn from <paramref name="generator"/>.</summary>
    public (Tensor Reconstruction, Tensor Mu, Tensor LogVar) Reconstruct(Tensor[] layers, Tensor x, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        var c = Condition(layers);
        var (m, lv) = Encode(x, c);
        var reconstruction = Decode(Reparameterise(m, lv, generator), c);
        return (reconstruction.MoveToOuterDisposeScope(), m.MoveToOuterDisposeScope(), lv.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The VAE loss: pixelwise binary cross-entropy of the reconstruction [B, C, H, W] against the clean images
    /// [B, C, H, W] plus beta times KL(N(mu, exp(logvar)) || N(0, I)) of mu, logvar [B, LatentSize]; returns
    /// (total, bce, kl), scalars. Both terms are SUMS over pixels and latent dimensions, as in the reference, and
    /// then divided by the batch size B: the reference also sums over the batch, so this is its loss / B. The
    /// BCE : KL ratio that beta weighs is the reference's; only the scale differs, which keeps the gradient size
    /// independent of the batch size (and an adaptive optimiser such as RAdam is nearly indifferent to it).
    /// BCE clamps log(p) at -100 (PyTorch's convention), so it stays finite for saturated pixels.
    /// With <paramref name="freeBits"/> &gt; 0 the total charges each latent dimension's batch-mean KL as
    /// max(freeBits, KL_j) (free bits); the returned kl is always the plain one.
    /// </summary>
    public static (Tensor Total, Tensor Bce, Tensor Kl) PurifierLoss(Tensor reconstruction, Tensor clean, Tensor mu, Tensor logVar, double beta,
        double freeBits = 0)
    {
        if (!reconstruction.shape.SequenceEqual(clean.shape))
            throw new ArgumentException(
                $"reconstruction [{string.Join(", ", reconstruction.shape)}] and clean images [{string.Join(", ", clean.shape)}] differ in shape");
        using var scope = NewDisposeScope();
        var batch = reconstruction.shape[0];
        var bce = functional.binary_cross_entropy(reconstruction, clean, reduction: Reduction.Sum) / batch;
        var kl = -0.5 * (1 + logVar - mu.square() - logVar.exp()).sum() / batch;
        // Free bits: each dimension's batch-mean KL [LatentSize], charged at least freeBits.
        var charged = freeBits > 0 ? ((-0.5 * (1 + logVar - mu.square() - logVar.exp())).sum([0]) / batch).clamp_min(freeBits).sum() : kl;
        var total = bce + beta * charged;
        return (total.MoveToOuterDisposeScope(), bce.MoveToOuterDisposeScope(), kl.MoveToOuterDisposeScope());
    }

    void CheckImages(Tensor x, string name)
    {
        if (x.dim() != 4 || !x.shape.Skip(1).SequenceEqual(InputShape))
            throw new ArgumentException(
                $"the purifier was built for images [B, {string.Join(", ", InputShape)}], got [{string.Join(", ", x.shape)}]", name);
    }

    /// <summary>The compressor of one layer output shape (without batch) and the number of features it makes.</summary>
    static (Module<Tensor, Tensor> Module, long Features) Compressor(long[] shape, PurifierSettings s)
    {
        if (shape.Length != 3)
        {
            // Flat features (or any non-image output): one linear layer over all of it.
            var size = shape.Aggregate(1L, (a, d) => a * d);
            return (Sequential(
                ("flatten", Flatten()),
                ("linear", Linear(size, s.CompressorFeatures, hasBias: !s.BatchNorm)),
                ("act", Normalised(BatchNorm1d(s.CompressorFeatures), s))), s.CompressorFeatures);
        }
        // Channels first (a 1x1 convolution is cheap at any resolution, and the wide layers of a WRN have up to
        // 640 channels), then halve the resolution at CompressorChannels, where 3x3 convolutions cost little.
        var layers = new List<(string, Module<Tensor, Tensor>)>
        {
            ("reduce", Conv2d(shape[0], s.CompressorChannels, 1, bias: !s.BatchNorm)),
            ("act", Normalised(BatchNorm2d(s.CompressorChannels), s)),
        };
        var (h, w) = (shape[1], shape[2]);
        for (var i = 0; Math.Max(h, w) > s.CompressedSize; i++)
        {
            layers.Add(($"down_{i}", Conv2d(s.CompressorChannels, s.CompressorChannels, 3, stride: 2, padding: 1, bias: !s.BatchNorm)));
            layers.Add(($"act_{i}", Normalised(BatchNorm2d(s.CompressorChannels), s)));
            (h, w) = (Halved(h, 1), Halved(w, 1));
        }
        layers.Add(("flatten", Flatten()));
        return (Sequential(layers), s.CompressorChannels * h * w);
    }

    /// <summary>
    /// The activation after a layer: LeakyReLU, preceded by <paramref name="norm"/> when the settings ask for batch
    /// norm (the layer then has no bias: the norm's shift replaces it). Without batch norm the module is the bare
    /// LeakyReLU, so purifiers saved before batch norm existed keep their state-dict names.
    /// </summary>
    static Module<Tensor, Tensor> Normalised(Module<Tensor, Tensor> norm, PurifierSettings s)
    {
        var act = new Carso.Models.LeakyRelu(s.NegativeSlope);
        if (s.BatchNorm) return Sequential(("norm", norm), ("act", act));
        norm.Dispose();
        return act;
    }

    /// <summary>The size after <paramref name="times"/> stride-2, padding-1 3x3 convolutions: ceil(n / 2^times).</summary>
    static long Halved(long n, int times)
    {
        for (var i = 0; i < times; i++) n = (n + 1) / 2;
        return n;
    }

    /// <summary>
    /// The sizes the decoder passes through for one spatial dimension, smallest first, ending at
    /// <paramref name="target"/>: each is ceil(next / 2). With <paramref name="stages"/> null, as few stages as
    /// make the first size at most <paramref name="baseSize"/>.
    /// </summary>
    static long[] UpsamplingSizes(long target, int baseSize, int? stages = null)
    {
        var sizes = new List<long> { target };
        while (stages is { } n ? sizes.Count <= n : sizes[^1] > baseSize) sizes.Add((sizes[^1] + 1) / 2);
        sizes.Reverse();
        return sizes.ToArray();
    }
}

/// <summary>Keeps the first <c>height</c> rows and <c>width</c> columns: [B, C, H', W'] -> [B, C, height, width]
/// with H' &gt;= height, W' &gt;= width. Parameter-free.</summary>
public sealed class Crop(long height, long width) : Module<Tensor, Tensor>(nameof(Crop))
{
    public override Tensor forward(Tensor x) => x.narrow(2, 0, height).narrow(3, 0, width);
}
