using System.Buffers.Binary;
using System.Collections;
using System.Text.Json;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;
using Module = TorchSharp.torch.nn.Module;

namespace Carso.IO;

/// <summary>What an import copied: the names loaded, and (only possible with strict = false) the names the
/// model has and the file lacks (left as they were) and the names the file has and the model lacks (ignored).</summary>
public sealed record ImportReport(IReadOnlyList<string> Loaded, IReadOnlyList<string> Missing, IReadOnlyList<string> Unexpected);

/// <summary>
/// A model's state dict (parameters and persistent buffers by name) in the files PyTorch uses, so weights move
/// between Carso and PyTorch: <c>.safetensors</c> (safetensors format) and <c>.pt</c> / <c>.pth</c> (the zip
/// pickle of <c>torch.save(model.state_dict(), path)</c>; read back in Python with <c>torch.load</c>).
/// TorchSharp.PyBridge does the encoding; this class adds what it lacks: atomic writes, errors that name the
/// file, and a strict import that checks every name, shape and dtype before it copies anything, so a checkpoint
/// for another architecture fails loudly and leaves the model untouched instead of loading half of it.
/// Non-persistent buffers are not part of a state dict (TorchSharp's <c>state_dict()</c> leaves them out): they
/// are neither written nor expected.
/// </summary>
public static class StateDicts
{
    /// <summary>The file formats, chosen by extension.</summary>
    public enum Format { Safetensors, PyTorch }

    /// <summary>The extensions understood, each with its format (compared ignoring case).</summary>
    public static readonly IReadOnlyDictionary<string, Format> Extensions = new Dictionary<string, Format>
    {
        [".safetensors"] = Format.Safetensors,
        [".pt"] = Format.PyTorch,
        [".pth"] = Format.PyTorch,
    };

    /// <summary>
    /// The format a path's extension selects. Any other extension is an ArgumentException naming the path and
    /// the allowed extensions, so a typo never silently picks a format.
    /// </summary>
    public static Format FormatOf(string path)
    {
        var ext = Path.GetExtension(path).ToLowerInvariant();
        return Extensions.TryGetValue(ext, out var format)
            ? format
            : throw new ArgumentException(
                $"{path}: unknown state-dict file extension '{ext}'; use one of {string.Join(", ", Extensions.Keys)}",
                nameof(path));
    }

    /// <summary>
    /// Writes the model's state dict (parameters and persistent buffers, detached, as contiguous CPU copies)
    /// to <paramref name="path"/> in the format its extension selects. The write is atomic: the bytes go to a
    /// temporary file in the same folder, which is renamed over the target only when complete, so a killed
    /// process leaves the old file or the new one, never half of one, and no temporary file stays behind.
    /// A .safetensors file is laid out as the reference writer lays it out (header padded to 8 bytes, tensors by
    /// decreasing element size), so every tensor is aligned for readers that map the file. Tensors are written
    /// with requires_grad = false, as PyTorch's <c>state_dict()</c> gives them.
    /// </summary>
    public static void Export(Module model, string path)
    {
        using var scope = NewDisposeScope();
        ExportTensors(model.state_dict(), path);
    }

    /// <summary>Writes named tensors as <see cref="Export"/> writes a state dict (same formats, same atomic write).</summary>
    public static void ExportTensors(IReadOnlyDictionary<string, Tensor> modelState, string path)
    {
        var format = FormatOf(path);
        using var scope = NewDisposeScope();
        foreach (var (name, tensor) in modelState)
            if (!Writable(format, tensor.dtype))
                throw new NotSupportedException(
                    $"{path}: tensor {name} has dtype {tensor.dtype}, which the {format} writer cannot store" +
                    (format == Format.Safetensors ? "; export to .pt instead" : ""));
        // Largest elements first, then by name (the order of the reference safetensors writer): every tensor then
        // starts at a multiple of its element size, so readers that map the file can view the bytes in place.
        var state = modelState
            .OrderByDescending(kv => kv.Value.ElementSize).ThenBy(kv => kv.Key, StringComparer.Ordinal)
            .ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu().contiguous());
        AtomicFile.Write(path, stream =>
        {
            if (format == Format.Safetensors)
            {
                using var padded = new HeaderPaddingStream(stream);
                Safetensors.SaveStateDict(padded, state, leaveOpen: true);
                padded.EnsureHeaderWritten(path);
            }
            else PyTorchPickler.PickleStateDict(stream, state, leaveOpen: true);
        });
    }

    /// <summary>
    /// Reads a state-dict file (.safetensors, or .pt/.pth as written by <c>torch.save(model.state_dict())</c>)
    /// into name -> CPU tensor, sorted by name. The caller owns the tensors (they join the caller's dispose scope
    /// if there is one). A missing file is a FileNotFoundException and a corrupt, truncated or foreign file an
    /// InvalidDataException, each naming the file and what is wrong.
    /// </summary>
    public static Dictionary<string, Tensor> Read(string path)
    {
        var format = FormatOf(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"{path}: state-dict file not found", path);
        using var scope = NewDisposeScope();
        var tensors = format == Format.Safetensors ? ReadSafetensors(path) : ReadPyTorch(path);
        var sorted = new Dictionary<string, Tensor>();
        foreach (var name in tensors.Keys.Order(StringComparer.Ordinal))
            sorted[name] = tensors[name].MoveToOuterDisposeScope();
        return sorted;
    }

    /// <summary>
    /// A model that attacks and defences treat as fixed: its weights imported strictly from <paramref name="path"/>,
    /// moved to <paramref name="device"/>, in eval mode, every parameter without gradient (attacks differentiate with
    /// respect to the input only). Returns the model.
    /// </summary>
    public static T ImportFrozen<T>(T model, string path, Device device) where T : nn.Module
    {
        Import(model, path);
        model.to(device).eval();
        foreach (var p in model.parameters()) p.requires_grad_(false);
        return model;
    }

    /// <summary>
    /// Loads a state-dict file into <paramref name="model"/>. Everything is checked before anything is copied:
    /// the file's names against the model's <c>state_dict()</c>, and the shape and dtype of every tensor both
    /// have. A shape or dtype mismatch is always a <see cref="CheckpointMismatchException"/>; so are missing and
    /// unexpected names unless <paramref name="strict"/> is false, when they are allowed and reported. The
    /// exception names the file and every offending tensor, and the model is left exactly as it was. Only when
    /// all fits are the values copied in place (no_grad), bit for bit; parameters keep their requires_grad.
    /// </summary>
    public static ImportReport Import(Module model, string path, bool strict = true)
    {
        using var scope = NewDisposeScope(); // owns the file's tensors, never the model's
        var file = Read(path);
        var target = model.state_dict();

        var missing = target.Keys.Where(name => !file.ContainsKey(name)).ToList();
        var unexpected = file.Keys.Where(name => !target.ContainsKey(name)).ToList();
        var common = target.Keys.Where(file.ContainsKey).ToList();
        var shapeMismatches = common
            .Where(name => !file[name].shape.SequenceEqual(target[name].shape))
            .Select(name => $"{name} file {Shape(file[name])} vs model {Shape(target[name])}")
            .ToList();
        var dtypeMismatches = common
            .Where(name => file[name].shape.SequenceEqual(target[name].shape) && file[name].dtype != target[name].dtype)
            .Select(name => $"{name} file {file[name].dtype} vs model {target[name].dtype}")
            .ToList();

        if (shapeMismatches.Count > 0 || dtypeMismatches.Count > 0 || (strict && (missing.Count > 0 || unexpected.Count > 0)))
            throw strict
                ? new CheckpointMismatchException(path, missing, unexpected, shapeMismatches, dtypeMismatches)
                : new CheckpointMismatchException(path, [], [], shapeMismatches, dtypeMismatches);

        using (no_grad())
        {
            foreach (var name in common) target[name].copy_(file[name]);
        }
        return new ImportReport(common, missing, unexpected);
    }

    /// <summary>
    /// Passes a safetensors file through, padding its JSON header with spaces to a multiple of 8 bytes as the
    /// format allows and the reference writer does (PyBridge does not pad), so the data section starts 8-aligned.
    /// </summary>
    sealed class HeaderPaddingStream(Stream inner) : Stream
    {
        readonly MemoryStream head = new();
        long headerLength = -1;
        bool headerWritten;

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (headerWritten) { inner.Write(buffer); return; }
            var need = headerLength < 0 ? 8 - head.Length : 8 + headerLength - head.Length;
            var take = (int)Math.Min(need, buffer.Length);
            head.Write(buffer[..take]);
            if (headerLength < 0 && head.Length == 8)
                headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(head.GetBuffer().AsSpan(0, 8));
            if (headerLength >= 0 && head.Length == 8 + headerLength)
            {
                var padding = (int)((8 - headerLength % 8) % 8);
                Span<byte> length = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)(headerLength + padding));
                inner.Write(length);
                inner.Write(head.GetBuffer().AsSpan(8, (int)headerLength));
                for (var i = 0; i < padding; i++) inner.WriteByte((byte)' ');
                headerWritten = true;
            }
            if (take < buffer.Length) Write(buffer[take..]);
        }

        public void EnsureHeaderWritten(string path)
        {
            if (!headerWritten) throw new InvalidOperationException($"{path}: the safetensors writer wrote no complete header");
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Flush() => inner.Flush();
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }

    static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";

    // The dtypes each PyBridge writer knows (the rest would fail inside it, after the temporary file exists).
    static bool Writable(Format format, ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 or ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int64
            or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Int8 or ScalarType.Byte or ScalarType.Bool => true,
        ScalarType.ComplexFloat32 or ScalarType.ComplexFloat64 => format == Format.PyTorch,
        _ => false,
    };

    // Safetensors: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
    // then the data. PyBridge trusts the header (short reads leave garbage, bad offsets read other tensors'
    // bytes), so the header is checked against the file size first.
    static readonly Dictionary<string, int> SafetensorsElementSizes = new()
    {
        ["F64"] = 8, ["F32"] = 4, ["F16"] = 2, ["BF16"] = 2, ["I64"] = 8,
        ["I32"] = 4, ["I16"] = 2, ["I8"] = 1, ["U8"] = 1, ["BOOL"] = 1,
    };

    static Dictionary<string, Tensor> ReadSafetensors(string path)
    {
        using var stream = File.OpenRead(path);
        var fileLength = stream.Length;
        Exception Corrupt(string what, Exception? inner = null) => new InvalidDataException(
            $"{path}: not a valid safetensors state dict ({what}); the file is corrupt, truncated or not safetensors", inner);

        if (fileLength < 8) throw Corrupt($"only {fileLength} bytes, shorter than the 8-byte header length");
        Span<byte> lengthBytes = stackalloc byte[8];
        stream.ReadExactly(lengthBytes);
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength < 2 || headerLength > (ulong)(fileLength - 8) || headerLength > int.MaxValue)
            throw Corrupt($"header length {headerLength} does not fit a file of {fileLength} bytes");
        var header = new byte[headerLength];
        stream.ReadExactly(header);
        var dataLength = fileLength - 8 - (long)headerLength;

        JsonDocument json;
        try { json = JsonDocument.Parse(header); }
        catch (JsonException e) { throw Corrupt("header is not JSON: " + e.Message, e); }
        using (json)
        {
            if (json.RootElement.ValueKind != JsonValueKind.Object) throw Corrupt("header is not a JSON object");
            foreach (var entry in json.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__") continue;
                var (dtype, shape, begin, end) = ParseEntry(entry, Corrupt);
                if (!SafetensorsElementSizes.TryGetValue(dtype, out var elementSize))
                    throw Corrupt($"tensor {entry.Name} has dtype {dtype}, which is not supported (supported: " +
                                  string.Join(", ", SafetensorsElementSizes.Keys) + ")");
                var bytes = shape.Aggregate(1L, (n, d) => n * d) * elementSize;
                if (begin < 0 || end < begin || end > dataLength || end - begin != bytes)
                    throw Corrupt($"tensor {entry.Name} ({dtype} [{string.Join(", ", shape)}]) has data offsets " +
                                  $"[{begin}, {end}] that do not fit its size {bytes} or the {dataLength} data bytes");
            }
        }

        stream.Position = 0;
        try { return Safetensors.LoadStateDict(stream, leaveOpen: true); }
        catch (Exception e) when (e is not OutOfMemoryException) { throw Corrupt(e.Message, e); }
    }

    static (string Dtype, long[] Shape, long Begin, long End) ParseEntry(JsonProperty entry,
        Func<string, Exception?, Exception> corrupt)
    {
        try
        {
            var value = entry.Value;
            var dtype = value.GetProperty("dtype").GetString() ?? "";
            var shape = value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
            var offsets = value.GetProperty("data_offsets").EnumerateArray().Select(d => d.GetInt64()).ToArray();
            if (shape.Any(d => d < 0) || offsets.Length != 2) throw new FormatException("negative dimension or not two offsets");
            return (dtype, shape, offsets[0], offsets[1]);
        }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw corrupt($"header entry {entry.Name} is not {{dtype, shape, data_offsets}}: {e.Message}", e);
        }
    }

    // PyTorch (torch.save since 1.6): a zip archive holding data.pkl (the pickled dict, whose tensors point at
    // storages) and data/0, data/1, ... (the raw bytes). PyBridge unpickles it; we check the zip signature
    // first (its own message blames the legacy format for any non-zip file) and that every value is a tensor.
    static Dictionary<string, Tensor> ReadPyTorch(string path)
    {
        Exception Corrupt(string what, Exception? inner = null) => new InvalidDataException(
            $"{path}: not a valid PyTorch state dict ({what}); the file is corrupt, truncated, or not written by " +
            "torch.save(model.state_dict(), path)", inner);

        using var stream = File.OpenRead(path);
        Span<byte> signature = stackalloc byte[4];
        if (stream.Length < 4 || stream.Read(signature) < 4 || !signature.SequenceEqual("PK\x03\x04"u8))
            throw Corrupt("no zip signature; a file from torch.save with _use_new_zipfile_serialization=False " +
                          "(the pre-1.6 format) is not supported either");
        stream.Position = 0;

        Hashtable table;
        try { table = PyTorchUnpickler.UnpickleStateDict(stream, leaveOpen: true); }
        catch (Exception e) when (e is not OutOfMemoryException) { throw Corrupt(e.Message, e); }

        var tensors = new Dictionary<string, Tensor>();
        foreach (DictionaryEntry entry in table)
        {
            if (entry.Key is not string name || entry.Value is not Tensor tensor)
                throw new InvalidDataException(
                    $"{path}: not a bare state dict: entry '{entry.Key}' is a {entry.Value?.GetType().Name ?? "None"}, " +
                    "not a tensor (a training checkpoint holding a state dict among other things?); in Python, " +
                    "torch.save(model.state_dict(), path) alone");
            tensors[name] = tensor;
        }
        return tensors;
    }
}
