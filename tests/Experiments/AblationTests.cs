using Carso.Defence;
using Carso.Evaluation;
using Carso.Experiments;
using Carso.IO;
using Carso.Runtime;

namespace Carso.Tests.Experiments;

public class AblationTests
{
    static readonly CarsoProtocolSettings Reduced = new(RandAttacks: ["apgd-ce"], ApgdIterations: 10, EotIter: 2, PgdSteps: 0,
        Surrogate: null, RepresentationPath: false, SquareQueries: 0);

    [Fact]
    public void ChangingEpsInAnAblationsSettingsIsRefusedByTheCommittedTransferSet()
    {
        // As a user editing Eps in an ablation script: the classifier's transfer set was made at eps 0.1.
        var budget = new AblationBudget(CleanPoints: 4, RobustPoints: 4, Eps: 0.05, BatchSize: 4, Protocol: Reduced with { ApgdIterations = 1 });
        var run = ScriptRun.Start("ablation-test", ["--smoke"]);
        Variant[] variants = [new("sampled", "N = 2", context => Ablation.Carso(context, Committed.Carso(context.Device, new CarsoSettings(Samples: 2))))];
        var e = Assert.Throws<TransferSetMismatchException>(() => Ablation.Run(run, budget, 0, "test", "nothing", budget, variants));
        Assert.Contains(Committed.TransferSetPath.Replace('/', Path.DirectorySeparatorChar), e.Message);
        Assert.Contains("made for Linf eps=0.1, the evaluation is at Linf eps=0.05", e.Message);
        Assert.Contains("re-run scripts/eval-autoattack.cs with Eps = 0.05", e.Message);
        Assert.IsAssignableFrom<IUserError>(e);
    }

    [Fact]
    public void TheBudgetDescribesEveryDepartureFromThePublishedProtocolAndNothingElse()
    {
        Assert.Equal("budgets as published", AblationBudget.Published.Describe());
        var text = new AblationBudget(RobustPoints: 200, Protocol: Reduced).Describe();
        Assert.StartsWith("REDUCED from the published protocol: ", text);
        foreach (var expected in new[] { "RobustPoints 200 (published 1000)", "Protocol.RandAttacks [apgd-ce] (published none)",
                     "Protocol.ApgdIterations 10 (published 100)", "Protocol.EotIter 2 (published 20)", "Protocol.PgdSteps 0 (published 200)",
                     "Protocol.Surrogate none (published ExpShare)", "Protocol.SquareQueries 0 (published 5000)", "upper bound" })
            Assert.Contains(expected, text);
        Assert.DoesNotContain("CleanPoints", text);
        Assert.DoesNotContain("PgdStepSize", text);
        // The text follows the settings: change one, the text changes with it.
        Assert.Contains("Protocol.EotIter 4 (published 20)", new AblationBudget(Protocol: Reduced with { EotIter = 4 }).Describe());
    }

    [Fact]
    public void AnyAblationRecordIsDrawnByTheGenericReportWhateverItsScriptName()
    {
        var accuracy = Accuracy.Of(7, 10);
        var family = new FamilySummary("autoattack-rand", "APGD-CE", Accuracy.Of(5, 10), 1.0, new Carso.Attacks.AttackMonitor.Counts(0, 0, 0, 10), 0);
        VariantResult Variant(string name, double x) => new(name, "CARSO", x, name, accuracy, accuracy, [family], Accuracy.Of(4, 10), [],
            new Dictionary<string, double> { ["images/s"] = 100 * x });
        var metrics = new AblationMetrics("A new ablation", "knob", 10, 10, "Linf eps=0.1", "budgets as published",
            [Variant("knob 1", 1), Variant("knob 2", 2)], [], []);
        var record = new RunRecord("a-script-nobody-registered", false, 0, RunRecord.ToJson(new { }), new Dictionary<string, string>(), "cpu", 1,
            DateTimeOffset.UtcNow, 1, RunRecord.ToJson(metrics));
        var reread = System.Text.Json.JsonSerializer.Deserialize<RunRecord>(System.Text.Json.JsonSerializer.Serialize(record, RunRecord.Json), RunRecord.Json)!;
        Assert.NotNull(Reports.For(reread));
        Assert.Equal(["accuracy", "accuracy-vs-knob", "images-s-vs-knob"], Reports.For(reread)!(reread).Select(f => f.Name));
        Assert.Equal(["clean (n=10)", "autoattack-rand", "worst case"], VariantReport.Rows(reread).Take(3).Select(r => r.Evaluation));
        var readme = ReadmeResults.AblationRows(new Dictionary<string, RunRecord> { ["x"] = reread });
        Assert.Equal(4, readme.Count);
        Assert.Equal("dotnet run scripts/a-script-nobody-registered.cs", readme[0].Command);
    }
}
