using Carso.Attacks;
using static TorchSharp.torch;
using static Carso.Tests.Attacks.NormFixtures;

namespace Carso.Tests.Attacks;

public class AutoAttackNormsTests
{
    static readonly AutoAttackSettings Small = new(ApgdIterations: 20, FabIterations: 20, NTargetClasses: 3, SquareQueries: 500, EotIter: 2);

    [Theory]
    [InlineData(Norm.L2, 4.0)]
    [InlineData(Norm.L1, 20.0)]
    public void StandardAndRandBreakTheUndefendedModelAtALargeEpsAndStayInTheBall(Norm norm, double eps)
    {
        using var scope = NewDisposeScope();
        var (x, y) = Bands(32, 51);
        var threat = new Threat(norm, eps);
        foreach (var attack in AutoAttack.Standard(threat, Small).Concat(AutoAttack.Rand(threat, Small)))
        {
            using var inner = NewDisposeScope();
            using var generator = new Generator(7);
            var xAdv = attack.Run(Mlp, x, y, generator);
            AssertInBallAndBox(xAdv, x, norm, eps, attack.Name);
            Assert.True(RobustAccuracy(Mlp, xAdv, y) <= 0.05, $"{norm} {attack.Name}: robust accuracy {RobustAccuracy(Mlp, xAdv, y)}");
        }
    }

    [Fact]
    public void StandardL1RunsApgdCeWithFiveLargeRepsRestartsAndApgdTWithFiveTargets()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(3);
        var w = randn([64, 10], generator: generator);
        Func<Tensor, Tensor> model = images => images.flatten(1).matmul(w);
        var x = rand([4, 1, 8, 8], generator: generator);
        var y = Predict(model, x);
        // Eps 0: no point is ever fooled, so every restart, stage and target runs; each stage adds one start gradient.
        var settings = new AutoAttackSettings(ApgdIterations: 10, FabIterations: 2, SquareQueries: 2);
        var expected = new Dictionary<string, long> { ["apgd-ce"] = 4 * 5 * (10 + 3), ["apgd-t"] = 4 * 5 * (10 + 3) };
        foreach (var name in expected.Keys)
        {
            var monitor = new AttackMonitor();
            var attack = AutoAttack.Standard(Threat.L1(0), settings, monitor).Single(a => a.Name == name);
            var xAdv = attack.Run(model, x, y, generator);
            Assert.True(xAdv.eq(x).all().item<bool>());
            Assert.Equal(expected[name], monitor.GradientEvaluations);
        }
        // Linf and L2 keep one restart and NTargetClasses targets, without large reps.
        foreach (var threat in new[] { Threat.Linf(0), Threat.L2(0) })
        {
            var monitor = new AttackMonitor();
            AutoAttack.Standard(threat, settings, monitor).Single(a => a.Name == "apgd-t").Run(model, x, y, generator);
            Assert.Equal(4 * 9 * (10 + 1), monitor.GradientEvaluations);
        }
    }

    [Theory]
    [InlineData(Norm.L2, 3.0)]
    [InlineData(Norm.L1, 12.0)]
    public void PgdAndFgsmStayInTheBallForL2AndL1(Norm norm, double eps)
    {
        using var scope = NewDisposeScope();
        var (x, y) = Bands(16, 52);
        foreach (var attack in AutoAttack.Custom(["pgd", "fgsm"], new Threat(norm, eps)))
        {
            using var generator = new Generator(9);
            var xAdv = attack.Run(Mlp, x, y, generator);
            AssertInBallAndBox(xAdv, x, norm, eps, attack.Name);
            Assert.True(RobustAccuracy(Mlp, xAdv, y) < RobustAccuracy(Mlp, x, y), $"{norm} {attack.Name} fooled no point");
        }
    }
}
