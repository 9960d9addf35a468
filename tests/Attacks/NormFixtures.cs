using Carso.Attacks;
using static TorchSharp.torch;

namespace Carso.Tests.Attacks;

/// <summary>Models and checks shared by the L2 and L1 attack tests.</summary>
static class NormFixtures
{
    /// <summary>Four classes on 1x8x8: class k is bright (0.6 + U(0, 0.4)) in its band of two rows, dark (U(0, 0.4)) elsewhere.</summary>
    public static (Tensor X, Tensor Y) Bands(int n, ulong seed)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(seed);
        var labels = randint(0, 4, [n], generator: generator, dtype: ScalarType.Int64);
        var rows = arange(8).div(2, rounding_mode: RoundingMode.floor).view(1, 1, 8, 1);
        var images = rows.eq(labels.view(n, 1, 1, 1)).to_type(ScalarType.Float32).expand(n, 1, 8, 8) * 0.6f
                     + rand([n, 1, 8, 8], generator: generator) * 0.4f;
        return (images.contiguous().MoveToOuterDisposeScope(), labels.MoveToOuterDisposeScope());
    }

    static readonly Lazy<Func<Tensor, Tensor>> TrainedMlp = new(TrainMlp);

    /// <summary>An undefended 64-32-4 ReLU MLP trained on Bands (weights from an explicit generator).</summary>
    public static Func<Tensor, Tensor> Mlp => TrainedMlp.Value;

    static Func<Tensor, Tensor> TrainMlp()
    {
        // The first test to ask may do so inside an attack's no_grad block.
        using var gradients = enable_grad();
        using var generator = new Generator(7);
        var w1 = (randn([64, 32], generator: generator) * 0.125f).requires_grad_(true);
        var b1 = zeros(32).requires_grad_(true);
        var w2 = (randn([32, 4], generator: generator) * 0.18f).requires_grad_(true);
        var b2 = zeros(4).requires_grad_(true);
        Tensor Forward(Tensor x) => nn.functional.relu(x.flatten(1).matmul(w1) + b1).matmul(w2) + b2;
        Tensor[] parameters = [w1, b1, w2, b2];
        using (var data = NewDisposeScope())
        {
            var (x, y) = Bands(512, 1);
            for (var step = 0; step < 300; step++)
            {
                using var scope = NewDisposeScope();
                var loss = nn.functional.cross_entropy(Forward(x), y);
                var grads = autograd.grad([loss], parameters);
                using (no_grad())
                    for (var i = 0; i < parameters.Length; i++) parameters[i].sub_(0.5 * grads[i]);
            }
        }
        foreach (var p in parameters) p.requires_grad_(false).DetachFromDisposeScope();
        return Forward;
    }

    /// <summary>
    /// A linear model on 1x8x8 with logits [0, v·x + c, -100]: the boundary between classes 0 and 1 is v·x + c = 0.
    /// Every point X is placed at the same margin v·x + c = Margin (class 1), near the grey image, so that the minimal
    /// perturbation is Margin / ||v||_2 in L2 and Margin / ||v||_inf in L1 (one pixel moved) with the box far away.
    /// </summary>
    public sealed record Linear(Tensor V, double C, Tensor X, Tensor Y, double Margin)
    {
        public Func<Tensor, Tensor> Model => x =>
        {
            var f = x.flatten(1).matmul(V) + C;
            return stack([zeros_like(f), f, full_like(f, -100.0)], 1);
        };

        /// <summary>The closed-form minimal perturbation in the norm (L2 or L1).</summary>
        public double MinimalNorm(Norm norm) => norm switch
        {
            Norm.L2 => Margin / V.norm().item<float>(),
            Norm.L1 => Margin / V.abs().max().item<float>(),
            _ => throw new ArgumentOutOfRangeException(nameof(norm)),
        };

        public static Linear Create(int n, ulong seed, double margin = 0.5)
        {
            using var scope = NewDisposeScope();
            using var generator = new Generator(seed);
            var v = randn([64], generator: generator);
            var c = -0.5 * v.sum().item<float>();                              // the boundary passes through the grey image
            var raw = (rand([n, 64], generator: generator) * 0.1f + 0.45f);
            var f = raw.matmul(v) + c;
            var x = (raw + (margin - f).unsqueeze(1) * v / v.square().sum()).view(n, 1, 8, 8);
            var y = ones(n, dtype: ScalarType.Int64);
            return new Linear(v.MoveToOuterDisposeScope(), c, x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope(), margin);
        }
    }

    public static Tensor Predict(Func<Tensor, Tensor> model, Tensor x)
    {
        using (no_grad()) return model(x).argmax(1);
    }

    /// <summary>The fraction of points classified correctly at xAdv.</summary>
    public static double RobustAccuracy(Func<Tensor, Tensor> model, Tensor xAdv, Tensor y)
    {
        using var scope = NewDisposeScope();
        return Predict(model, xAdv).eq(y).to_type(ScalarType.Float64).mean().item<double>();
    }

    /// <summary>xAdv has x's shape, is finite, in [0, 1] and within eps of x in the norm (relative float tolerance 1e-5).</summary>
    public static void AssertInBallAndBox(Tensor xAdv, Tensor x, Norm norm, double eps, string what = "")
    {
        using var scope = NewDisposeScope();
        Assert.Equal(x.shape, xAdv.shape);
        Assert.True(xAdv.isfinite().all().item<bool>(), $"{what}: xAdv has non-finite values");
        var largest = Projection.NormOf(xAdv - x, norm).max().item<float>();
        Assert.True(largest <= eps * (1 + 1e-5) + 1e-6, $"{what}: ||xAdv - x||_{norm} = {largest} > eps = {eps}");
        Assert.True(xAdv.min().item<float>() >= 0 && xAdv.max().item<float>() <= 1, $"{what}: xAdv leaves [0, 1]");
    }
}
