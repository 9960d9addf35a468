using System.Diagnostics;
using Carso.IO;
using Carso.Models;
using Carso.Runtime;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Carso.Tests.IO;

/// <summary>The Python interpreter with PyTorch (Debian's python3-torch) that scripts/interop-pytorch.py runs under:
/// $CARSO_PYTHON when set (only it), else /usr/bin/python3 (the python3 first on PATH may be another one, e.g. pyenv's,
/// without torch), then python3 on PATH; null when none can <c>import torch, numpy</c>.</summary>
public static class PythonTorch
{
    static readonly Lazy<string?> Found = new(() =>
        (Environment.GetEnvironmentVariable("CARSO_PYTHON") is { Length: > 0 } chosen ? [chosen] : new[] { "/usr/bin/python3", "python3" })
        .FirstOrDefault(python =>
        {
            try { return Processes.Run(python, ["-c", "import torch, numpy"], TimeSpan.FromMinutes(2)).ExitCode == 0; }
            catch (System.ComponentModel.Win32Exception) { return false; } // no such program
        }));

    public static string? Python => Found.Value;
}

/// <summary>A [Fact] that needs PyTorch in Python; elsewhere skipped with the reason "skipped: python3-torch not installed"
/// (apt-get install -y python3-torch python3-numpy; .ci/run installs them).</summary>
public sealed class PythonTorchFactAttribute : FactAttribute
{
    public PythonTorchFactAttribute()
    {
        if (PythonTorch.Python is null) Skip = "skipped: python3-torch not installed";
    }
}

public static class Processes
{
    /// <summary>Runs a program to completion (killed after <paramref name="timeout"/>), one thread for libtorch/OpenMP.</summary>
    public static (int ExitCode, string Output) Run(string file, IEnumerable<string> args, TimeSpan timeout)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["OMP_NUM_THREADS"] = "1";
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            return (-1, $"{file} {string.Join(" ", args)}: timed out after {timeout}\n{stdout.Result}\n{stderr.Result}");
        }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }
}

/// <summary>
/// Interoperability with PyTorch, proven on files each side wrote: scripts/interop-pytorch.py builds SmallCnn,
/// PreActResNet18 and RobustBench's DMWideResNet-28-10 (SiLU) in PyTorch with our parameter names; their state dicts
/// (torch.save's .pt and .safetensors) import strictly into our models and give PyTorch's logits, and models built and
/// trained here, exported by <see cref="StateDicts.Export"/>, load strictly in PyTorch and give ours. One thread.
/// </summary>
public class PythonInteropTests(ITestOutputHelper output)
{
    const double Tolerance = 1e-4;
    static readonly string[] Formats = ["pt", "safetensors"];

    /// <summary>The script's model names, a fresh C# model for each, the shape of its fixed inputs and its last linear layer.</summary>
    static readonly (string Name, Func<nn.Module<Tensor, Tensor>> Build, long[] InputShape, string Head)[] Models =
    [
        ("smallcnn", () => new SmallCnn(), [4, 1, 28, 28], "logits"),
        ("preactresnet18", () => new PreActResNet18(), [2, 3, 32, 32], "linear"),
        ("wrn-28-10", () => new WideResNet(WideResNetSettings.Wrn28_10), [2, 3, 32, 32], "logits"),
    ];

    static string Script => Path.Combine(Paths.RepoRoot() ?? throw new InvalidOperationException("tests must run inside the repository"),
        "scripts", "interop-pytorch.py");

    string RunScript(params string[] args)
    {
        var (exitCode, text) = Processes.Run(PythonTorch.Python!, [Script, .. args], TimeSpan.FromMinutes(10));
        output.WriteLine($"interop-pytorch.py {string.Join(" ", args)}:\n{text}");
        Assert.True(exitCode == 0, $"scripts/interop-pytorch.py {string.Join(" ", args)} failed ({exitCode}):\n{text}");
        return text;
    }

    static T OneThread<T>(Func<T> f)
    {
        var threads = get_num_threads();
        set_num_threads(1);
        try { return f(); }
        finally { set_num_threads(threads); }
    }

    static double MaxAbsDifference(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    static Tensor EvalLogits(nn.Module<Tensor, Tensor> model, Tensor x)
    {
        model.eval();
        using var _ = no_grad();
        return model.call(x);
    }

    [PythonTorchFact]
    public void StateDictsPyTorchWroteImportStrictlyAndGivePyTorchsLogits() => OneThread(() =>
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        RunScript("export", dir.Path);
        var python = StateDicts.Read(dir.File("python-logits.safetensors"));
        var failures = new List<string>();
        foreach (var (name, build, inputShape, _) in Models)
        {
            var input = python[$"{name}.input"];
            Assert.Equal(inputShape, input.shape);
            // torch.save's zip pickle and the hand-written safetensors hold the same tensors, dtype for dtype.
            var pt = StateDicts.Read(dir.File(name + ".pt"));
            var st = StateDicts.Read(dir.File(name + ".safetensors"));
            Assert.Equal(pt.Keys, st.Keys);
            foreach (var (key, t) in pt)
                Assert.True(t.dtype == st[key].dtype && t.shape.SequenceEqual(st[key].shape) && t.eq(st[key]).all().item<bool>(),
                    $"{name}: {key} differs between the .pt and the .safetensors file");
            foreach (var format in Formats)
            {
                var model = build();
                var report = StateDicts.Import(model, dir.File($"{name}.{format}")); // strict
                Assert.Empty(report.Missing);
                Assert.Empty(report.Unexpected);
                Assert.Equal(model.state_dict().Count, report.Loaded.Count);
                var logits = EvalLogits(model, input);
                var diff = MaxAbsDifference(logits, python[$"{name}.logits"]);
                output.WriteLine($"PyTorch -> Carso {name}.{format}: {report.Loaded.Count} tensors, max |logit| " +
                                 $"{logits.abs().max().item<float>():F3}, max |difference| {diff:E2}");
                if (!(diff <= Tolerance)) failures.Add($"{name}.{format}: logits differ by {diff:E2} > {Tolerance:E0}");
                model.Dispose();
            }
        }
        Assert.Empty(failures);
        return 0;
    });

    /// <summary>Random batch-norm statistics, affine parameters and counters, so a batch norm loaded under another's name
    /// changes the logits (fresh ones are all 0, 1, 1, 0).</summary>
    static void RandomiseBatchNorms(nn.Module model, Generator generator)
    {
        using var _ = no_grad();
        var state = model.state_dict();
        foreach (var prefix in state.Keys.Where(k => k.EndsWith(".running_mean")).Select(k => k[..^".running_mean".Length]))
        {
            state[prefix + ".running_mean"].copy_(randn(state[prefix + ".running_mean"].shape, generator: generator) * 0.1);
            state[prefix + ".running_var"].copy_(rand(state[prefix + ".running_var"].shape, generator: generator) + 0.5);
            state[prefix + ".weight"].copy_(rand(state[prefix + ".weight"].shape, generator: generator) + 0.5);
            state[prefix + ".bias"].copy_(randn(state[prefix + ".bias"].shape, generator: generator) * 0.1);
        }
    }

    /// <summary>A few SGD steps on random images and labels (train mode: batch norms update their statistics too).</summary>
    static void Train(nn.Module<Tensor, Tensor> model, long[] inputShape, Generator generator, int steps)
    {
        using var optimizer = optim.SGD(model.parameters(), learningRate: 0.05, momentum: 0.9);
        model.train();
        for (var step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            var x = rand(inputShape, generator: generator);
            var y = randint(0, 10, [inputShape[0]], generator: generator);
            optimizer.zero_grad();
            nn.functional.cross_entropy(model.call(x), y).backward();
            optimizer.step();
        }
        model.eval();
    }

    /// <summary>Scales the last linear layer so the largest logit on x is 4 in magnitude: a barely trained model's logits are
    /// ~0.3, on which a 1e-4 agreement would say little.</summary>
    static void ScaleHead(nn.Module<Tensor, Tensor> model, string head, Tensor x)
    {
        var factor = 4.0 / EvalLogits(model, x).abs().max().item<float>();
        using var _ = no_grad();
        var state = model.state_dict();
        state[head + ".weight"].mul_(factor);
        state[head + ".bias"].mul_(factor);
    }

    [PythonTorchFact]
    public void ModelsBuiltAndTrainedInCarsoLoadStrictlyInPyTorchAndGiveOurLogits() => OneThread(() =>
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        using var generator = new Generator(2026);
        var ours = new Dictionary<string, Tensor>();
        foreach (var (name, build, inputShape, head) in Models)
        {
            using var model = build();
            RandomiseBatchNorms(model, generator);
            Train(model, inputShape, generator, steps: name == "smallcnn" ? 20 : 2);
            var input = rand(inputShape, generator: generator);
            ScaleHead(model, head, input);
            ours[$"{name}.input"] = input;
            ours[$"{name}.logits"] = EvalLogits(model, input);
            foreach (var format in Formats) StateDicts.Export(model, dir.File($"{name}.{format}"));
        }
        StateDicts.ExportTensors(ours, dir.File("carso-logits.safetensors"));

        RunScript("check", dir.Path);
        var python = StateDicts.Read(dir.File("python-check.safetensors"));
        var failures = new List<string>();
        foreach (var (name, _, _, _) in Models)
            foreach (var format in Formats)
            {
                var key = $"{name}.{format}.logits";
                Assert.True(python.ContainsKey(key), $"PyTorch computed no {key}");
                var diff = MaxAbsDifference(python[key], ours[$"{name}.logits"]);
                output.WriteLine($"Carso -> PyTorch {name}.{format}: max |logit| {ours[$"{name}.logits"].abs().max().item<float>():F3}, " +
                                 $"max |difference| {diff:E2}");
                if (!(diff <= Tolerance)) failures.Add($"{name}.{format}: logits differ by {diff:E2} > {Tolerance:E0}");
            }
        Assert.Empty(failures);
        return 0;
    });

    [PythonTorchFact]
    public void APyTorchTrainingCheckpointComesInThroughTheScriptsConvertMode() => OneThread(() =>
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        RunScript("export", dir.Path, "smallcnn");
        var wrapped = dir.File("smallcnn-wrapped.pt");
        // {"state_dict": {"module.conv1.weight": ...}, "epoch": 3} is not a bare state dict: our loader says so ...
        var e = Assert.Throws<InvalidDataException>(() => StateDicts.Import(new SmallCnn(), wrapped));
        Assert.Contains("not a tensor", e.Message);
        // ... and the script's convert mode unwraps it into one.
        var converted = dir.File("smallcnn-converted.safetensors");
        RunScript("convert", wrapped, converted);
        var model = new SmallCnn();
        StateDicts.Import(model, converted);
        var python = StateDicts.Read(dir.File("python-logits.safetensors"));
        var diff = MaxAbsDifference(EvalLogits(model, python["smallcnn.input"]), python["smallcnn.logits"]);
        Assert.True(diff <= Tolerance, $"logits differ by {diff:E2}");
        return 0;
    });
}
