using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Training;

/// <summary>
/// RAdam (Liu et al. 2020) computed as PyTorch's torch.optim.RAdam computes it (L2 weight decay added to the gradient;
/// SGD with bias-corrected momentum while the rectification length rho_t is at most 5, the rectified adaptive step after).
/// TorchSharp 0.107's RAdam multiplies the rectified step by the learning rate twice (lr^2: with lr 1e-3 every step after
/// the 5th is 1000 times too short), which is why it "did not train" the purifier; see tests/Training/RAdamTests.cs.
/// This subclass keeps TorchSharp's state, param groups (so <see cref="Optimizers.SetLearningRate"/> applies) and
/// state-dict format, and replaces only the step.
/// </summary>
public sealed class RAdam : TorchSharp.Modules.RAdam
{
    public sealed record Hyper(double LearningRate, double Beta1, double Beta2, double Eps, double WeightDecay);

    /// <summary>PyTorch's defaults (TorchSharp's default learning rate is 2e-3).</summary>
    public RAdam(IEnumerable<TorchSharp.Modules.Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0)
        : base(parameters, lr, Checked(beta1), Checked(beta2), eps, weightDecay) { }

    // TorchSharp accepts beta = 1, where rho_inf divides by zero; PyTorch requires beta < 1.
    static double Checked(double beta) =>
        beta is >= 0 and < 1 ? beta : throw new ArgumentOutOfRangeException(nameof(beta), $"RAdam betas must be in [0, 1), got {beta}");

    public override Tensor step(Func<Tensor>? closure = null) =>
        _step<ParamGroup>(group =>
        {
            var o = group.Options;
            var hyper = new Hyper(o.LearningRate!.Value, o.beta1!.Value, o.beta2!.Value, o.eps!.Value, o.weight_decay!.Value);
            foreach (var p in group.Parameters)
            {
                if (p.grad is not { } grad) continue;
                var state = (State)_state[p.Handle];
                state.step += 1;
                Update(p, grad, state.exp_avg, state.exp_avg_sq, state.step, hyper);
            }
        }, closure);

    /// <summary>
    /// One RAdam step in place (param, and the moment estimates m and v) at step number t >= 1, in PyTorch's order of
    /// operations. Call without gradient tracking.
    /// </summary>
    public static void Update(Tensor param, Tensor grad, Tensor m, Tensor v, long t, Hyper h)
    {
        using var scope = NewDisposeScope();
        var biasCorrection1 = 1 - Math.Pow(h.Beta1, t);
        var biasCorrection2 = 1 - Math.Pow(h.Beta2, t);
        var g = h.WeightDecay != 0 ? grad.add(param, alpha: h.WeightDecay) : grad;
        m.mul_(h.Beta1).add_(g, alpha: 1 - h.Beta1);
        v.mul_(h.Beta2).addcmul_(g, g, value: 1 - h.Beta2);
        var mHat = m / biasCorrection1;
        var (rhoT, rect) = Rectification(h.Beta2, t);
        if (rhoT > 5)
        {
            var adaptive = Math.Sqrt(biasCorrection2) / v.sqrt().add_(h.Eps);
            param.add_(mHat * h.LearningRate * adaptive * rect, alpha: -1.0);
        }
        else param.add_(mHat * h.LearningRate, alpha: -1.0);   // too few steps for a trustworthy variance: momentum SGD
    }

    /// <summary>The approximated SMA length rho_t and the variance rectification term r_t (NaN while rho_t &lt;= 5).</summary>
    public static (double RhoT, double Rect) Rectification(double beta2, long t)
    {
        var rhoInf = 2 / (1 - beta2) - 1;
        var rhoT = rhoInf - 2 * t * Math.Pow(beta2, t) / (1 - Math.Pow(beta2, t));
        var rect = rhoT > 5 ? Math.Sqrt((rhoT - 4) * (rhoT - 2) * rhoInf / ((rhoInf - 4) * (rhoInf - 2) * rhoT)) : double.NaN;
        return (rhoT, rect);
    }
}
