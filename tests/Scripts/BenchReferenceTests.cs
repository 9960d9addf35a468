namespace Carso.Tests.Scripts;

/// <summary>bench.cs --autoattack N --autoattack-reference DIR end to end, with a stand-in for the reference package (tests
/// never use the network, and fra31/auto-attack is not installed on CI): the export of our classifier, the Python driver
/// (scripts/bench-autoattack-reference.py) loading it strictly into bench-pytorch.py's SmallCnn, the reference's log lines
/// parsed into stages, and the comparison printed beside ours.</summary>
[Collection(ScriptCollections.Evaluation)]
public class BenchReferenceTests
{
    /// <summary>Speaks the reference's interface as the driver uses it: AutoAttack(model, norm, eps, version, seed, device),
    /// its logger and its two APGD attacks' loggers, run_standard_evaluation(x, y, bs) logging "robust accuracy after
    /// STAGE: P% (total time T s)" per stage. It attacks nothing: every stage reports the model's clean accuracy.</summary>
    const string StandIn = """
        import torch

        class _Attack:
            def __init__(self):
                self.logger = None

        class AutoAttack:
            def __init__(self, model, norm="Linf", eps=0.3, version="standard", seed=None, device="cuda"):
                assert norm == "Linf" and version == "standard" and device == "cpu"
                self.model, self.logger = model, None
                self.apgd, self.apgd_targeted = _Attack(), _Attack()

            def run_standard_evaluation(self, x, y, bs=250):
                with torch.no_grad():
                    accuracy = (self.model(x).argmax(1) == y).float().mean().item()
                for i, stage in enumerate(["APGD-CE", "APGD-T", "FAB-T", "SQUARE"]):
                    self.logger.log(f"robust accuracy after {stage}: {100 * accuracy:.2f}% (total time {2.0 * (i + 1):.1f} s)")
                return x
        """;

    [Fact]
    public void BenchRunsTheReferenceAutoAttackBesideOursAndPrintsTheRatios()
    {
        if (!File.Exists("/usr/bin/python3")) Assert.Fail("/usr/bin/python3 is missing: .ci/run installs python3-torch");
        var folder = Directory.CreateTempSubdirectory("carso-aa-standin-").FullName;
        try
        {
            Directory.CreateDirectory(Path.Combine(folder, "autoattack"));
            // Laid out as the reference's checkout is: autoattack/autoattack.py, re-exported by the package.
            File.WriteAllText(Path.Combine(folder, "autoattack", "autoattack.py"), StandIn);
            File.WriteAllText(Path.Combine(folder, "autoattack", "__init__.py"), "from .autoattack import AutoAttack\n");
            var (exitCode, output) = ScriptSmokeTests.RunScript("bench.cs", "--autoattack", "4", "--autoattack-stages", "apgd-ce",
                "--autoattack-reference", folder);
            Assert.True(exitCode == 0, $"bench.cs exited with {exitCode}:\n{output}");
            Assert.Contains("stage apgd-ce: ", output);                                   // ours
            Assert.Contains("reference: torch ", output);                                 // the driver's result line, parsed
            Assert.Matches(@"stage apgd-ce: reference 2\.0 s, robust after \d+\.\d\d%; ours \d+\.\d s, robust after \d+\.\d\d%: ratio ours/reference \d+\.\d\d", output);
            Assert.Contains("stage apgd-t: reference 2.0 s", output);                    // a stage we did not run: the reference's alone
            Assert.DoesNotContain("reference AutoAttack failed", output);
        }
        finally { Directory.Delete(folder, recursive: true); }
    }
}
