using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Models;

/// <summary>
/// LeakyReLU, [*] -> [*]: x for x >= 0, NegativeSlope * x otherwise. Unlike TorchSharp's nn.LeakyReLU, which
/// converts its double slope into a fresh native Scalar on every call, this holds one Scalar for its lifetime.
/// An evaluation run crashed inside nn.LeakyReLU after about an hour of attacks, libtorch reading a Scalar that was
/// no longer valid ("toFloat: Expected false to be true"): dispose scopes do not track Scalars in TorchSharp 0.107,
/// so a temporary one is only kept alive by the managed call, and its finalizer can free it while native code still
/// reads it. A Scalar owned by the module cannot be collected while the module is in use. Parameter-free: state
/// dicts are unchanged.
/// </summary>
public sealed class LeakyRelu : nn.Module<Tensor, Tensor>
{
    readonly Scalar slope;

    public double NegativeSlope { get; }

    public LeakyRelu(double negativeSlope, string name = "LeakyRelu") : base(name)
    {
        NegativeSlope = negativeSlope;
        slope = negativeSlope.ToScalar(); // TorchSharp 0.107 scopes do not track Scalars: this one lives with the module
    }

    public override Tensor forward(Tensor input) => input.leaky_relu(slope);

    protected override void Dispose(bool disposing)
    {
        if (disposing) slope.Dispose();
        base.Dispose(disposing);
    }
}
