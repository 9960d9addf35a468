using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Carso.Models;

/// <summary>
/// A 3x3 correlation (stride 1, zero padding 1) from C channels into a FEW output channels (at most
/// <see cref="MaxOutputs"/>), float32 on the CPU in managed AVX-512 code. libtorch's oneDNN kernels are slow exactly there,
/// and two of CARSO's hot operations are that: the input gradient of SmallCnn's first convolution (1 input channel: 32 -> 1
/// channel) and the forward pass of the purifier's last layer (a stride-1 transposed convolution, 16 -> 1 channel).
/// Measured on 1024 images of 28x28, one thread, idle core: the conv1 input gradient 173 ms -> 31 ms, the last layer's
/// forward 74 ms -> 18 ms. Each image is computed by one thread in a fixed order (bias, then channel by channel, the 9
/// taps row-major, fused multiply-adds), so a point's output does not depend on the batch or the thread count; it differs
/// from oneDNN's summation order by float rounding (tests: against float64).
/// </summary>
public static class NarrowConv3x3
{
    /// <summary>Output channels the kernel serves (each reads the whole input once more).</summary>
    public const int MaxOutputs = 4;

    [ThreadStatic] static bool off;

    /// <summary>Within the returned scope (on this thread) the modules below take libtorch's path, as nn.Conv2d and
    /// nn.ConvTranspose2d would: for benchmarks against the code before them, and tests.</summary>
    public static IDisposable LibtorchOnly()
    {
        var before = off;
        off = true;
        return new Restore(() => off = before);
    }

    sealed class Restore(Action restore) : IDisposable { public void Dispose() => restore(); }

    /// <summary>Whether the kernel serves x [B, C, H, W] into <paramref name="outputs"/> channels (and is not switched off).</summary>
    public static bool IsSupported(Tensor x, long outputs) =>
        !off && Avx512F.IsSupported && x.device_type == TorchSharp.DeviceType.CPU && x.dtype == ScalarType.Float32 && x.dim() == 4 &&
        outputs >= 1 && outputs <= MaxOutputs;

    /// <summary>x [B, C, H, W], taps [O, C, 3, 3] (as conv2d's weight), bias [O] or null -> [B, O, H, W]:
    /// <c>conv2d(x, taps, bias, padding: 1)</c>. No gradient (the callers below define theirs).</summary>
    public static Tensor Correlate(Tensor input, Tensor taps, Tensor? bias)
    {
        var (outputs, channels) = (taps.shape[0], taps.shape[1]);
        if (!IsSupported(input, outputs) || input.shape[1] != channels || taps.shape[2] != 3 || taps.shape[3] != 3)
            throw new ArgumentException($"NarrowConv3x3 needs float32 [B, C, H, W] on an AVX-512 CPU and taps [O <= {MaxOutputs}, C, 3, 3], " +
                                        $"got {input.dtype} [{string.Join(", ", input.shape)}] on {input.device} and [{string.Join(", ", taps.shape)}]");
        using var scope = NewDisposeScope();
        using var x = input.detach().contiguous();
        var k = taps.detach().to(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
        var b = bias is null ? new float[outputs] : bias.detach().to(ScalarType.Float32).cpu().contiguous().data<float>().ToArray();
        var (batch, h, w) = (x.shape[0], x.shape[2], x.shape[3]);
        var y = empty([batch, outputs, h, w]);
        nint src, dst;
        unsafe
        {
            src = (nint)((float*)x.storage<float>().data_ptr() + x.storage_offset());
            dst = (nint)(float*)y.storage<float>().data_ptr();
        }
        var threads = get_num_threads();
        if (threads <= 1 || batch < 2 * threads) Images(src, dst, k, b, 0, batch, channels, outputs, h, w);
        else
        {
            var chunk = (batch + threads - 1) / threads;
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads },
                t => Images(src, dst, k, b, t * chunk, Math.Min(batch, (t + 1) * chunk), channels, outputs, h, w));
        }
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>The taps that turn a 3x3 conv2d weight [O, I, 3, 3] (padding 1) into its input gradient: [I, O, 3, 3], mirrored.</summary>
    public static Tensor InputGradientTaps(Tensor convWeight) => convWeight.detach().transpose(0, 1).flip(2, 3);

    /// <summary>The taps of a stride-1, padding-1 3x3 transposed convolution's weight [I, O, 3, 3]: [O, I, 3, 3], mirrored.</summary>
    public static Tensor TransposedTaps(Tensor transposedWeight) => transposedWeight.detach().transpose(0, 1).flip(2, 3);

    const int Rows = 4;   // output rows per step: four independent accumulator chains

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Images(nint source, nint destination, float[] taps, float[] bias, long from, long to, long c, long outputs, long h, long w)
    {
        // Each image is copied into a zero-bordered scratch plane per channel (image column j at j + 1, row i at i + 1), so
        // the 9 taps are plain unaligned loads with no edge cases; the scratch is L2-sized and reused for every image.
        var wp = (w + 2 + 15) / 16 * 16 + 16;
        var hp = h + 2 + Rows;
        var plane = hp * wp;
        var scratch = (float*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)(c * plane * sizeof(float)));
        var tail = stackalloc float[16];
        try
        {
            fixed (float* k = taps)
                for (var b = from; b < to; b++)
                {
                    var x = (float*)source + b * c * h * w;
                    for (long ch = 0; ch < c; ch++)
                        for (long i = 0; i < h; i++)
                            Buffer.MemoryCopy(x + (ch * h + i) * w, scratch + ch * plane + (i + 1) * wp + 1, w * sizeof(float), w * sizeof(float));
                    for (long o = 0; o < outputs; o++)
                    {
                        var y = (float*)destination + (b * outputs + o) * h * w;
                        var ko = k + o * c * 9;
                        for (long i0 = 0; i0 < h; i0 += Rows)
                            for (long j = 0; j < w; j += 16)
                            {
                                var start = Vector512.Create(bias[o]);
                                var (a0, a1, a2, a3) = (start, start, start, start);
                                for (long ch = 0; ch < c; ch++)
                                {
                                    var p = scratch + ch * plane + i0 * wp + j;   // scratch row i0 = image row i0 - 1, column j - 1
                                    var kc = ko + ch * 9;
                                    for (var di = 0; di < 3; di++)
                                        for (var dj = 0; dj < 3; dj++)
                                        {
                                            var kk = Vector512.Create(kc[di * 3 + dj]);
                                            var q = p + di * wp + dj;
                                            a0 = Vector512.FusedMultiplyAdd(kk, Vector512.Load(q), a0);
                                            a1 = Vector512.FusedMultiplyAdd(kk, Vector512.Load(q + wp), a1);
                                            a2 = Vector512.FusedMultiplyAdd(kk, Vector512.Load(q + 2 * wp), a2);
                                            a3 = Vector512.FusedMultiplyAdd(kk, Vector512.Load(q + 3 * wp), a3);
                                        }
                                }
                                var n = (int)Math.Min(16, w - j);
                                Store(a0, y, i0, j, n, h, w, tail);
                                Store(a1, y, i0 + 1, j, n, h, w, tail);
                                Store(a2, y, i0 + 2, j, n, h, w, tail);
                                Store(a3, y, i0 + 3, j, n, h, w, tail);
                            }
                    }
                }
        }
        finally { System.Runtime.InteropServices.NativeMemory.Free(scratch); }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Store(Vector512<float> v, float* y, long i, long j, int n, long h, long w, float* tail)
    {
        if (i >= h) return;
        if (n == 16) { v.Store(y + i * w + j); return; }
        v.Store(tail);
        Buffer.MemoryCopy(tail, y + i * w + j, n * sizeof(float), n * sizeof(float));
    }
}

/// <summary>A layer with frozen parameters as one autograd node over its input: its forward pass (run without a gradient) and
/// its input gradient (upstream gradient -> gradient of the input), given as functions.</summary>
static class FrozenLayer
{
    public static Tensor Apply(Tensor x, Func<Tensor, Tensor> forward, Func<Tensor, Tensor> inputGradient) =>
        Function.apply(x, new Pass(forward, inputGradient));

    /// <summary>Whether a layer with these parameters may take the frozen route for x: gradients on, x needs one, none of
    /// the parameters does.</summary>
    public static bool Applies(Tensor x, params Tensor?[] parameters) =>
        x.requires_grad && is_grad_enabled() && parameters.All(p => p is null || !p.requires_grad);

    sealed record Pass(Func<Tensor, Tensor> Forward, Func<Tensor, Tensor> InputGradient);

    sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => nameof(FrozenLayer);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var pass = (Pass)vars[1];
            ctx.save_data("pass", pass);
            using var noGrad = no_grad();
            return pass.Forward((Tensor)vars[0]);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            using var noGrad = no_grad();
            return [((Pass)ctx.get_data("pass")).InputGradient(gradOutput), null!];   // one per argument of apply: none for the pass
        }
    }
}

/// <summary>
/// nn.Conv2d(in, out, 3, padding: 1) — same parameters ("weight" [out, in, 3, 3], "bias" [out]), initialisation and
/// forward pass (libtorch's) — whose input gradient, when its parameters are frozen and it has at most
/// <see cref="NarrowConv3x3.MaxOutputs"/> input channels (SmallCnn's first layer), is <see cref="NarrowConv3x3"/>'s
/// instead of libtorch's slow backward-data pass. Trainable parameters or other shapes and types take libtorch's path.
/// </summary>
public sealed class Conv3x3 : Module<Tensor, Tensor>
{
    readonly Parameter weight;
    readonly Parameter? bias;

    public Conv3x3(long inChannels, long outChannels, bool hasBias = true) : base(nameof(Conv3x3))
    {
        // nn.Conv2d's own initialisation, so a seeded model draws the same numbers as before.
        using var reference = Conv2d(inChannels, outChannels, 3, padding: 1, bias: hasBias);
        weight = new Parameter(reference.weight!.detach().clone());
        bias = hasBias ? new Parameter(reference.bias!.detach().clone()) : null;
        RegisterComponents();
    }

    /// <summary>x [B, in, H, W] -> [B, out, H, W].</summary>
    public override Tensor forward(Tensor x) =>
        FrozenLayer.Applies(x, weight, bias) && NarrowConv3x3.IsSupported(x, weight.shape[1])
            ? FrozenLayer.Apply(x, Plain, upstream =>
            {
                using var taps = NarrowConv3x3.InputGradientTaps(weight);
                return NarrowConv3x3.Correlate(upstream, taps, null);
            })
            : Plain(x);

    Tensor Plain(Tensor x) => functional.conv2d(x, weight, bias, padding: [1, 1]);
}

/// <summary>
/// nn.ConvTranspose2d(in, out, 3, stride: 1, padding: 1) — same parameters ("weight" [in, out, 3, 3], "bias" [out]),
/// initialisation and gradients (libtorch's) — whose forward pass, when its parameters are frozen and it has at most
/// <see cref="NarrowConv3x3.MaxOutputs"/> output channels (the purifier's last layer), is <see cref="NarrowConv3x3"/>'s
/// instead of libtorch's slow one. Its input gradient stays libtorch's: a 3x3 convolution from the few channels (the
/// weight [in, out, 3, 3] read as conv2d's), the direction libtorch is fast in.
/// </summary>
public sealed class ConvTranspose3x3 : Module<Tensor, Tensor>
{
    readonly Parameter weight;
    readonly Parameter? bias;

    public ConvTranspose3x3(long inChannels, long outChannels, bool hasBias = true) : base(nameof(ConvTranspose3x3))
    {
        using var reference = ConvTranspose2d(inChannels, outChannels, 3, stride: 1, padding: 1, bias: hasBias);
        weight = new Parameter(reference.weight!.detach().clone());
        bias = hasBias ? new Parameter(reference.bias!.detach().clone()) : null;
        RegisterComponents();
    }

    /// <summary>x [B, in, H, W] -> [B, out, H, W].</summary>
    public override Tensor forward(Tensor x)
    {
        var frozen = !is_grad_enabled() || !(weight.requires_grad || (bias?.requires_grad ?? false));
        if (!frozen || !NarrowConv3x3.IsSupported(x, weight.shape[1])) return functional.conv_transpose2d(x, weight, bias, padding: [1, 1]);
        return FrozenLayer.Applies(x, weight, bias)
            ? FrozenLayer.Apply(x, Kernel, upstream => functional.conv2d(upstream, weight, padding: [1, 1]))
            : Kernel(x);
    }

    Tensor Kernel(Tensor x)
    {
        using var taps = NarrowConv3x3.TransposedTaps(weight);
        return NarrowConv3x3.Correlate(x, taps, bias);
    }
}
