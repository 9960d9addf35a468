using Carso.IO;
using Carso.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Carso.Tests.Training;

public class StateDictTests
{
    public static TheoryData<string> Extensions => [".safetensors", ".pt"];

    /// <summary>Conv2d + BatchNorm2d (buffers running_mean, running_var, num_batches_tracked) + Linear;
    /// the knobs build "another architecture": a wider head, an extra layer, a renamed layer.</summary>
    static Sequential Net(int classes = 10, bool extraLayer = false, string convName = "conv")
    {
        var layers = new List<(string, Module<Tensor, Tensor>)>
        {
            (convName, Conv2d(1, 4, 3)),
            ("bn", BatchNorm2d(4)),
            ("relu", ReLU()),
            ("flat", Flatten()),
            ("fc", Linear(4 * 6 * 6, classes)),
        };
        if (extraLayer) layers.Add(("head", Linear(classes, classes)));
        return Sequential(layers);
    }

    /// <summary>A module with a persistent and a non-persistent buffer.</summary>
    sealed class WithScratch : Module<Tensor, Tensor>
    {
        readonly Module<Tensor, Tensor> fc = Linear(3, 2);

        public WithScratch(float scratch) : base(nameof(WithScratch))
        {
            RegisterComponents();
            register_buffer("scale", full(2, 2f));
            register_buffer("scratch", full(5, scratch), persistent: false);
        }

        public override Tensor forward(Tensor x) => fc.forward(x) * get_buffer("scale")!;
    }

    /// <summary>Overwrites every parameter and buffer with fresh random values (integers for integer buffers).</summary>
    static void Randomise(Module model, int seed)
    {
        var generator = new Generator((ulong)seed);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var (name, t) in model.state_dict())
        {
            if (name.EndsWith("running_var")) t.copy_(rand(t.shape, generator: generator) + 0.5); // a variance is positive
            else if (t.is_floating_point()) t.copy_(randn(t.shape, generator: generator));
            else t.copy_(randint(1, 1000, t.shape, dtype: t.dtype, generator: generator));
        }
    }

    /// <summary>A copy of every state-dict tensor, to compare a model with itself later.</summary>
    static Dictionary<string, Tensor> Snapshot(Module model) =>
        model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());

    /// <summary>Same names, dtypes, shapes and values (Tensor.Equals is torch.equal; TorchSharp's Tensor.equal is the
    /// elementwise eq), and the same bytes, which is stricter still (-0.0 vs 0.0, NaN payloads).</summary>
    static void AssertBitExact(IReadOnlyDictionary<string, Tensor> expected, IReadOnlyDictionary<string, Tensor> actual)
    {
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, e) in expected)
        {
            var a = actual[name];
            Assert.True(e.dtype == a.dtype, $"{name}: dtype {e.dtype} vs {a.dtype}");
            Assert.Equal(e.shape, a.shape);
            Assert.True(e.Equals(a), $"{name} differs");
            Assert.True(e.bytes.SequenceEqual(a.bytes), $"{name} differs in its bytes");
        }
    }

    [Theory]
    [MemberData(nameof(Extensions))]
    public void ExportThenImportRoundTripsBitExactlyIncludingBuffers(string extension)
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        var source = Net();
        Randomise(source, seed: 1);
        var target = Net();
        Randomise(target, seed: 2);
        Assert.False(source.state_dict()["fc.weight"].Equals(target.state_dict()["fc.weight"]));
        Assert.False(source.state_dict()["bn.num_batches_tracked"].Equals(target.state_dict()["bn.num_batches_tracked"]));

        var path = dir.File("net" + extension);
        StateDicts.Export(source, path);
        var report = StateDicts.Import(target, path);

        var expected = source.state_dict();
        Assert.Equal(expected.Keys.Order(), report.Loaded.Order());
        Assert.Empty(report.Missing);
        Assert.Empty(report.Unexpected);
        Assert.Contains("bn.running_mean", report.Loaded);
        Assert.Contains("bn.num_batches_tracked", report.Loaded);
        AssertBitExact(expected, target.state_dict());
        AssertBitExact(expected, StateDicts.Read(path));
        Assert.Equal(ScalarType.Int64, StateDicts.Read(path)["bn.num_batches_tracked"].dtype);
        Assert.Empty(StateDicts.Read(path)["bn.num_batches_tracked"].shape); // a scalar stays 0-dimensional
        // Parameters stay trainable, and the imported model computes what the source computes.
        Assert.All(target.parameters(), p => Assert.True(p.requires_grad));
        source.eval();
        target.eval();
        var x = randn(2, 1, 8, 8);
        Assert.True(source.forward(x).Equals(target.forward(x)));
    }

    [Theory]
    [MemberData(nameof(Extensions))]
    public void ExportLeavesOnlyTheTargetFileInTheFolderAndOverwritesAtomically(string extension)
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        var path = dir.File("sub/net" + extension);
        var first = Net();
        StateDicts.Export(first, path);
        var second = Net();
        Randomise(second, seed: 3);
        StateDicts.Export(second, path);
        Assert.Equal(["net" + extension], Directory.GetFiles(dir.File("sub")).Select(Path.GetFileName));
        AssertBitExact(second.state_dict(), StateDicts.Read(path));
    }

    [Fact]
    public void SafetensorsFilesAreAlignedLikeTheReferenceWriterLaysThemOut()
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        var model = Net();
        using (no_grad()) model.state_dict()["fc.bias"].fill_(1.25);
        var path = dir.File("net.safetensors");
        StateDicts.Export(model, path);
        var bytes = File.ReadAllBytes(path);
        var headerLength = (long)BitConverter.ToUInt64(bytes, 0);
        Assert.Equal(0, headerLength % 8); // padded with spaces: the data section starts 8-aligned
        using var header = System.Text.Json.JsonDocument.Parse(bytes.AsMemory(8, (int)headerLength));
        foreach (var entry in header.RootElement.EnumerateObject())
        {
            var size = entry.Value.GetProperty("dtype").GetString() == "I64" ? 8 : 4;
            var begin = entry.Value.GetProperty("data_offsets")[0].GetInt64();
            Assert.True((8 + headerLength + begin) % size == 0, $"{entry.Name} starts misaligned");
        }
        var fcBias = header.RootElement.GetProperty("fc.bias");
        var start = 8 + (int)headerLength + (int)fcBias.GetProperty("data_offsets")[0].GetInt64();
        Assert.Equal(1.25f, BitConverter.ToSingle(bytes, start)); // raw little-endian float32, readable by anyone
        AssertBitExact(model.state_dict(), StateDicts.Read(path));
    }

    [Fact]
    public void AFailedExportKeepsTheOldFileAndLeavesNoTemporaryFile()
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        var path = dir.File("net.safetensors");
        var model = Net();
        StateDicts.Export(model, path);
        var before = File.ReadAllBytes(path);
        var complex = Linear(2, 2);
        complex.register_buffer("phase", zeros(3, dtype: ScalarType.ComplexFloat32));
        var e = Assert.Throws<NotSupportedException>(() => StateDicts.Export(complex, path));
        Assert.Contains(path, e.Message);
        Assert.Contains("phase", e.Message);
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(["net.safetensors"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
    }

    [Theory]
    [MemberData(nameof(Extensions))]
    public void NonPersistentBuffersAreNeitherExportedNorExpected(string extension)
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        var source = new WithScratch(scratch: 7f);
        Assert.Equal(["fc.bias", "fc.weight", "scale"], source.state_dict().Keys.Order());
        var path = dir.File("scratch" + extension);
        StateDicts.Export(source, path);
        Assert.Equal(["fc.bias", "fc.weight", "scale"], StateDicts.Read(path).Keys);

        var target = new WithScratch(scratch: 3f);
        var report = StateDicts.Import(target, path);
        Assert.Empty(report.Missing);
        Assert.True(target.get_buffer("scratch")!.Equals(full(5, 3f))); // untouched: not part of the state dict
        AssertBitExact(source.state_dict(), target.state_dict());
    }

    public static TheoryData<string, string> Architectures => new()
    {
        { ".safetensors", "wider" }, { ".pt", "wider" },
        { ".safetensors", "extra" }, { ".pt", "extra" },
        { ".safetensors", "fewer" }, { ".pt", "fewer" },
        { ".safetensors", "renamed" }, { ".pt", "renamed" },
    };

    [Theory]
    [MemberData(nameof(Architectures))]
    public void ACheckpointOfAnotherArchitectureFailsNamingEachTensorAndLeavesTheModelUntouched(string extension, string kind)
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        var (other, expected) = kind switch
        {
            "wider" => (Net(classes: 12), new[] { "shape mismatch: fc.weight file [12, 144] vs model [10, 144], fc.bias file [12] vs model [10]" }),
            "extra" => (Net(extraLayer: true), new[] { "unexpected: head.bias, head.weight" }),
            "renamed" => (Net(convName: "stem"), new[] { "missing: conv.weight, conv.bias", "unexpected: stem.bias, stem.weight" }),
            _ => (Net(), []),
        };
        var model = kind == "fewer" ? Net(extraLayer: true) : Net();
        if (kind == "fewer") expected = ["missing: head.weight, head.bias"];
        Randomise(other, seed: 4);
        Randomise(model, seed: 5);
        var path = dir.File("other" + extension);
        StateDicts.Export(other, path);
        var before = Snapshot(model);

        var e = Assert.Throws<CheckpointMismatchException>(() => StateDicts.Import(model, path));
        Assert.Contains(path, e.Message);
        Assert.Contains("another architecture", e.Message);
        foreach (var part in expected) Assert.Contains(part, e.Message);
        Assert.Equal(path, e.Path);
        AssertBitExact(before, model.state_dict());
    }

    [Theory]
    [MemberData(nameof(Extensions))]
    public void NonStrictImportReportsMissingAndUnexpectedButStillRejectsShapeMismatches(string extension)
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        var renamed = Net(convName: "stem");
        Randomise(renamed, seed: 6);
        var path = dir.File("renamed" + extension);
        StateDicts.Export(renamed, path);
        var model = Net();
        var convBefore = model.state_dict()["conv.weight"].detach().clone();

        var report = StateDicts.Import(model, path, strict: false);
        Assert.Equal(["conv.weight", "conv.bias"], report.Missing);
        Assert.Equal(["stem.bias", "stem.weight"], report.Unexpected);
        Assert.Equal(model.state_dict().Keys.Where(k => !k.StartsWith("conv.")), report.Loaded);
        Assert.True(model.state_dict()["fc.weight"].Equals(renamed.state_dict()["fc.weight"]));
        Assert.True(model.state_dict()["bn.num_batches_tracked"].Equals(renamed.state_dict()["bn.num_batches_tracked"]));
        Assert.True(model.state_dict()["conv.weight"].Equals(convBefore));

        var wider = Net(classes: 12);
        var widerPath = dir.File("wider" + extension);
        StateDicts.Export(wider, widerPath);
        var before = Snapshot(model);
        var e = Assert.Throws<CheckpointMismatchException>(() => StateDicts.Import(model, widerPath, strict: false));
        Assert.Contains("fc.weight file [12, 144] vs model [10, 144]", e.Message);
        Assert.Empty(e.Missing);
        AssertBitExact(before, model.state_dict());
    }

    [Fact]
    public void ADtypeMismatchIsAnErrorNotASilentConversion()
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        var path = dir.File("double.safetensors");
        StateDicts.Export(Net().to(ScalarType.Float64), path);
        var model = Net();
        var e = Assert.Throws<CheckpointMismatchException>(() => StateDicts.Import(model, path, strict: false));
        Assert.Contains("dtype mismatch: conv.weight file Float64 vs model Float32", e.Message);
        Assert.DoesNotContain("num_batches_tracked", e.Message); // Int64 on both sides
    }

    [Fact]
    public void AnUnknownExtensionIsAnArgumentErrorNamingThePathAndTheAllowedOnes()
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        var path = dir.File("net.ckpt");
        foreach (var act in new Action[] { () => StateDicts.Export(Net(), path), () => StateDicts.Read(path), () => StateDicts.Import(Net(), path) })
        {
            var e = Assert.Throws<ArgumentException>(act);
            Assert.Contains(path, e.Message);
            Assert.Contains(".safetensors", e.Message);
            Assert.Contains(".pt", e.Message);
        }
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Theory]
    [MemberData(nameof(Extensions))]
    public void AMissingFileIsAnErrorNamingIt(string extension)
    {
        using var dir = new TempFolder();
        var path = dir.File("absent" + extension);
        var e = Assert.Throws<FileNotFoundException>(() => StateDicts.Import(Net(), path));
        Assert.Contains(path, e.Message);
        Assert.Equal(path, e.FileName);
    }

    [Theory]
    [MemberData(nameof(Extensions))]
    public void CorruptTruncatedOrEmptyFilesAreErrorsNamingTheFile(string extension)
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        var random = new byte[4096];
        new Random(42).NextBytes(random);
        var good = dir.File("good" + extension);
        StateDicts.Export(Net(), good);
        var bytes = File.ReadAllBytes(good);
        var cases = new Dictionary<string, byte[]>
        {
            ["random"] = random,
            ["empty"] = [],
            ["truncated"] = bytes[..(bytes.Length / 2)],
            ["headonly"] = bytes[..16],
        };
        foreach (var (name, content) in cases)
        {
            var path = dir.File(name + extension);
            File.WriteAllBytes(path, content);
            var model = Net();
            var before = Snapshot(model);
            var e = Assert.Throws<InvalidDataException>(() => StateDicts.Import(model, path));
            Assert.Contains(path, e.Message);
            Assert.Contains("corrupt", e.Message);
            AssertBitExact(before, model.state_dict());
        }
    }

    [Fact]
    public void ATrainingCheckpointIsNotMistakenForAStateDict()
    {
        using var dir = new TempFolder();
        using var scope = NewDisposeScope();
        var path = dir.File("checkpoint.pt");
        // {"model": {...state dict...}, "epoch": 3}, as torch.save({"model": model.state_dict(), "epoch": 3}) writes it.
        using (var stream = File.Create(path))
            TorchSharp.PyBridge.PyTorchPickler.PickleStateDict(stream,
                new System.Collections.Hashtable { ["model"] = Net().state_dict(), ["epoch"] = 3 });
        var e = Assert.Throws<InvalidDataException>(() => StateDicts.Read(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("not a tensor", e.Message);
    }
}
