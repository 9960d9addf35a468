using Carso.Data;

namespace Carso.Tests.Data;

public class IdxTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ReadsRawAndGzippedFilesIntoNchwFloatsInUnitRange(bool gzip)
    {
        using var dir = new TempFolder();
        TestFiles.WriteIdxFolder(dir.Path, trainCount: 12, testCount: 5, gzip);
        using var train = FashionMnist.Load(Split.Train, dir.Path);
        using var test = FashionMnist.Load(Split.Test, dir.Path);
        Assert.Equal(new long[] { 12, 1, 28, 28 }, train.Images.shape);
        Assert.Equal(new long[] { 5, 1, 28, 28 }, test.Images.shape);
        Assert.Equal(TorchSharp.torch.ScalarType.Float32, train.Images.dtype);
        Assert.Equal(TorchSharp.torch.ScalarType.Int64, train.Labels.dtype);
        // pixel (i, r, c) was written as (i*7 + r*28 + c) % 256
        Assert.Equal((3 * 7 + 2 * 28 + 5) % 256 / 255f, train.Images[3, 0, 2, 5].item<float>(), 6);
        Assert.Equal(new long[] { 0, 1, 2, 3, 4 }, test.Labels.data<long>().ToArray());
        Assert.Equal("Ankle boot", train.Classes[9]);
    }

    [Fact]
    public void MissingFashionMnistListsThePathsTriedAndTheInstallCommand()
    {
        using var dir = new TempFolder();
        string[] searchPath = [dir.File("nowhere-a"), dir.File("nowhere-b")];
        var e = Assert.Throws<DatasetException>(() => FashionMnist.Locate(searchPath: searchPath));
        Assert.Contains("Fashion-MNIST not found", e.Message);
        Assert.Contains(searchPath[0], e.Message);
        Assert.Contains(searchPath[1], e.Message);
        Assert.Contains("apt-get install -y dataset-fashion-mnist", e.Message);
    }

    [Fact]
    public void DefaultSearchOrderIsDebianPathThenDataFolderAndTheOverrideReplacesIt()
    {
        var search = FashionMnist.SearchPath(overrideDir: "");
        Assert.Equal("/usr/share/datasets/fashion-mnist", search[0]);
        Assert.EndsWith(Path.Combine("data", "fashion-mnist"), search[1]);
        Assert.Equal(["/my/files"], FashionMnist.SearchPath(overrideDir: "/my/files"));
        var e = Assert.Throws<DatasetException>(() => FashionMnist.Locate(overrideDir: "/my/files"));
        Assert.Contains("CARSO_FASHION_MNIST_DIR is set to '/my/files'", e.Message);
    }

    [Fact]
    public void AMissingSingleFileNamesBothCandidatePaths()
    {
        using var dir = new TempFolder();
        TestFiles.WriteIdxFolder(dir.Path, 4, 4, gzip: true);
        File.Delete(dir.File("t10k-labels-idx1-ubyte.gz"));
        var e = Assert.Throws<DatasetException>(() => FashionMnist.Load(Split.Test, dir.Path));
        Assert.Contains(dir.File("t10k-labels-idx1-ubyte.gz"), e.Message);
        Assert.Contains(dir.File("t10k-labels-idx1-ubyte"), e.Message);
    }

    [Fact]
    public void WrongMagicNumberIsNamedWithTheFileAndWhatItIs()
    {
        using var dir = new TempFolder();
        var (images, labels) = TestFiles.IdxPair(3, 28, 28);
        File.WriteAllBytes(dir.File("images"), labels); // a label file where images belong
        File.WriteAllBytes(dir.File("labels"), labels);
        var e = Assert.Throws<DatasetException>(() => IdxDataset.Load("t", dir.File("images"), dir.File("labels"), IdxDataset.MnistClasses));
        Assert.Contains(dir.File("images"), e.Message);
        Assert.Contains("wrong magic number 2049", e.Message);
        Assert.Contains("starts with 2051", e.Message);
        Assert.Contains("this is a label file", e.Message);

        File.WriteAllBytes(dir.File("junk"), [0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0]);
        var junk = Assert.Throws<DatasetException>(() => Idx.ReadImages(dir.File("junk")));
        Assert.Contains("not an unsigned-byte IDX file", junk.Message);
    }

    [Fact]
    public void TruncatedRawFileSaysHowManyBytesWereExpected()
    {
        using var dir = new TempFolder();
        var (images, _) = TestFiles.IdxPair(3, 28, 28);
        File.WriteAllBytes(dir.File("images"), images[..^100]);
        var e = Assert.Throws<DatasetException>(() => Idx.ReadImages(dir.File("images")));
        Assert.Contains(dir.File("images"), e.Message);
        Assert.Contains("truncated", e.Message);
        Assert.Contains("[3 x 28 x 28] = 2352 bytes of data, file has 2252", e.Message);

        File.WriteAllBytes(dir.File("header"), images[..10]);
        var header = Assert.Throws<DatasetException>(() => Idx.ReadImages(dir.File("header")));
        Assert.Contains("truncated: 10 bytes, the header alone needs 16", header.Message);
    }

    [Fact]
    public void TruncatedGzipIsReportedAsCorruptOrTruncated()
    {
        using var dir = new TempFolder();
        var (images, _) = TestFiles.IdxPair(30, 28, 28);
        var gz = TestFiles.Gzip(images);
        File.WriteAllBytes(dir.File("images.gz"), gz[..(gz.Length / 2)]);
        var e = Assert.Throws<DatasetException>(() => Idx.ReadImages(dir.File("images.gz")));
        Assert.Contains(dir.File("images.gz"), e.Message);
        Assert.Contains("corrupt or truncated", e.Message);
    }

    [Fact]
    public void ImageAndLabelCountMismatchNamesBothFiles()
    {
        using var dir = new TempFolder();
        var (images, _) = TestFiles.IdxPair(5, 28, 28);
        var (_, labels) = TestFiles.IdxPair(4, 28, 28);
        File.WriteAllBytes(dir.File("i"), images);
        File.WriteAllBytes(dir.File("l"), labels);
        var e = Assert.Throws<DatasetException>(() => IdxDataset.Load("t", dir.File("i"), dir.File("l"), IdxDataset.MnistClasses));
        Assert.Contains($"{dir.File("i")} has 5 images but {dir.File("l")} has 4 labels", e.Message);
    }

    [Fact]
    public void OutOfRangeLabelIsNamed()
    {
        using var dir = new TempFolder();
        var (images, _) = TestFiles.IdxPair(2, 28, 28);
        File.WriteAllBytes(dir.File("i"), images);
        File.WriteAllBytes(dir.File("l"), TestFiles.Idx(0x0801, [2], [3, 12]));
        var e = Assert.Throws<DatasetException>(() => IdxDataset.Load("t", dir.File("i"), dir.File("l"), IdxDataset.MnistClasses));
        Assert.Contains("label 12 at index 1 is out of range for 10 classes", e.Message);
    }
}
