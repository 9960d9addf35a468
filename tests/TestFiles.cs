using System.Buffers.Binary;
using System.IO.Compression;

namespace Carso.Tests;

/// <summary>Small dataset files written by the tests themselves, in a temporary folder per test.</summary>
public sealed class TempFolder : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("carso-test-").FullName;
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose() { try { Directory.Delete(Path, recursive: true); } catch (IOException) { } }
}

public static class TestFiles
{
    /// <summary>An IDX file: magic (0x0803 images / 0x0801 labels), big-endian dims, then the data.</summary>
    public static byte[] Idx(int magic, int[] dims, byte[] data)
    {
        var bytes = new byte[4 + 4 * dims.Length + data.Length];
        BinaryPrimitives.WriteInt32BigEndian(bytes, magic);
        for (var i = 0; i < dims.Length; i++) BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4 + 4 * i), dims[i]);
        data.CopyTo(bytes, 4 + 4 * dims.Length);
        return bytes;
    }

    public static byte[] Gzip(byte[] data)
    {
        using var output = new MemoryStream();
        using (var gz = new GZipStream(output, CompressionLevel.Fastest)) gz.Write(data);
        return output.ToArray();
    }

    /// <summary>n images of h x w whose pixel (i, r, c) = (i * 7 + r * w + c) % 256, and labels i % classes.</summary>
    public static (byte[] Images, byte[] Labels) IdxPair(int n, int h, int w, int classes = 10)
    {
        var pixels = new byte[n * h * w];
        for (var i = 0; i < n; i++)
            for (var p = 0; p < h * w; p++)
                pixels[i * h * w + p] = (byte)((i * 7 + p) % 256);
        var labels = Enumerable.Range(0, n).Select(i => (byte)(i % classes)).ToArray();
        return (Idx(0x0803, [n, h, w], pixels), Idx(0x0801, [n], labels));
    }

    /// <summary>Writes the four Fashion-MNIST files (gzipped or raw) for a tiny dataset into a folder.</summary>
    public static void WriteIdxFolder(string folder, int trainCount, int testCount, bool gzip)
    {
        foreach (var (stem, n) in new[] { ("train", trainCount), ("t10k", testCount) })
        {
            var (images, labels) = IdxPair(n, 28, 28);
            var suffix = gzip ? ".gz" : "";
            File.WriteAllBytes(Path.Combine(folder, $"{stem}-images-idx3-ubyte{suffix}"), gzip ? Gzip(images) : images);
            File.WriteAllBytes(Path.Combine(folder, $"{stem}-labels-idx1-ubyte{suffix}"), gzip ? Gzip(labels) : labels);
        }
    }

    /// <summary>
    /// CIFAR records: label bytes then 3072 pixels (R plane, G plane, B plane). Record i has channel k's
    /// pixel p = (i + 50 k + p) % 256 and label bytes labelsOf(i).
    /// </summary>
    public static byte[] CifarRecords(int n, Func<int, byte[]> labelsOf, int pixelBytes = 3072)
    {
        var records = new List<byte>();
        for (var i = 0; i < n; i++)
        {
            records.AddRange(labelsOf(i));
            for (var p = 0; p < pixelBytes; p++) records.Add((byte)((i + 50 * (p / 1024) + p % 1024) % 256));
        }
        return records.ToArray();
    }
}

/// <summary>Small synthetic datasets made in memory.</summary>
public static class TestData
{
    /// <summary>
    /// 4 classes of 1x8x8 images: class k is brighter by <paramref name="signal"/> in its band of rows 2k..2k+1;
    /// every pixel gets offset + U(0, noise). Separable, so a tiny model learns it in a few hundred steps.
    /// </summary>
    public static Carso.Data.Dataset Bands(int n, long seed, float signal = 0.6f, float offset = 0f, float noise = 0.4f)
    {
        using var generator = new TorchSharp.torch.Generator((ulong)seed);
        var labels = TorchSharp.torch.randint(0, 4, [n], generator: generator, dtype: TorchSharp.torch.ScalarType.Int64);
        var rows = TorchSharp.torch.arange(8).div(2, rounding_mode: TorchSharp.torch.RoundingMode.floor).view(1, 1, 8, 1);
        var images = rows.eq(labels.view(n, 1, 1, 1)).to_type(TorchSharp.torch.ScalarType.Float32).expand(n, 1, 8, 8) * signal
                     + offset + TorchSharp.torch.rand([n, 1, 8, 8], generator: generator) * noise;
        return Carso.Data.Dataset.Create("bands", images.contiguous(), labels, ["0", "1", "2", "3"]);
    }
}
