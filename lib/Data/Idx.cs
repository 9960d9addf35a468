using System.Buffers.Binary;
using System.IO.Compression;

namespace Carso.Data;

/// <summary>
/// The IDX format of MNIST and Fashion-MNIST, gzipped or raw (detected from the content, not the name):
/// two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, then each dimension
/// as a big-endian int32, then the data. Image files are magic 2051 (3 dims), label files 2049 (1 dim).
/// </summary>
public static class Idx
{
    public const int ImagesMagic = 0x0803;
    public const int LabelsMagic = 0x0801;

    /// <summary>An unsigned-byte IDX array: its dimensions and its data in row-major order.</summary>
    public sealed record IdxArray(int[] Dims, byte[] Data);

    /// <summary>Reads a whole file, decompressing it when it is gzipped. Errors name the file.</summary>
    public static byte[] ReadAllBytes(string path)
    {
        if (!File.Exists(path))
            throw new DatasetException($"{path}: file not found");
        var raw = File.ReadAllBytes(path);
        if (raw.Length < 2 || raw[0] != 0x1f || raw[1] != 0x8b) return raw;
        try
        {
            using var gz = new GZipStream(new MemoryStream(raw), CompressionMode.Decompress);
            using var output = new MemoryStream();
            gz.CopyTo(output);
            // GZipStream stops quietly at the end of a cut file; the trailer's size (mod 2^32) tells.
            var expectedSize = BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan(raw.Length - 4));
            if (raw.Length < 18 || (uint)output.Length != expectedSize)
                throw new InvalidDataException(
                    $"decompressed {output.Length} bytes but the gzip trailer says {expectedSize}");
            return output.ToArray();
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException)
        {
            throw new DatasetException(
                $"{path}: the gzip data is corrupt or truncated ({e.Message}). Re-download or reinstall the file.", e);
        }
    }

    /// <summary>Parses an unsigned-byte IDX array with the expected magic number (2051 images, 2049 labels).</summary>
    public static IdxArray Parse(string path, byte[] bytes, int expectedMagic)
    {
        var expectedDims = expectedMagic & 0xff;
        var kind = expectedMagic == ImagesMagic ? "image" : expectedMagic == LabelsMagic ? "label" : "IDX";
        if (bytes.Length < 4)
            throw new DatasetException($"{path}: truncated: {bytes.Length} bytes, too short for an IDX header");
        var magic = BinaryPrimitives.ReadInt32BigEndian(bytes);
        if (magic != expectedMagic)
        {
            var hint = magic == ImagesMagic ? " (this is an image file)"
                : magic == LabelsMagic ? " (this is a label file)"
                : " (not an unsigned-byte IDX file)";
            throw new DatasetException(
                $"{path}: wrong magic number {magic} (0x{magic:x8}); an IDX {kind} file starts with {expectedMagic}{hint}");
        }
        var headerLength = 4 + 4 * expectedDims;
        if (bytes.Length < headerLength)
            throw new DatasetException($"{path}: truncated: {bytes.Length} bytes, the header alone needs {headerLength}");
        var dims = Enumerable.Range(0, expectedDims)
            .Select(i => BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(4 + 4 * i)))
            .ToArray();
        if (dims.Any(d => d < 0))
            throw new DatasetException($"{path}: negative dimension in header [{string.Join(", ", dims)}]");
        var expected = dims.Aggregate(1L, (a, d) => a * d);
        var actual = (long)bytes.Length - headerLength;
        if (actual < expected)
            throw new DatasetException(
                $"{path}: truncated: header says [{string.Join(" x ", dims)}] = {expected} bytes of data, file has {actual}. " +
                "Re-download or reinstall the file.");
        if (actual > expected)
            throw new DatasetException(
                $"{path}: {actual - expected} unexpected bytes after the [{string.Join(" x ", dims)}] data; the file is not a valid IDX file");
        return new IdxArray(dims, bytes.AsSpan(headerLength).ToArray());
    }

    public static IdxArray ReadImages(string path) => Parse(path, ReadAllBytes(path), ImagesMagic);
    public static IdxArray ReadLabels(string path) => Parse(path, ReadAllBytes(path), LabelsMagic);
}
