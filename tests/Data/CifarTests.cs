using Carso.Data;

namespace Carso.Tests.Data;

public class CifarTests
{
    [Fact]
    public void Cifar10ReadsAllTrainingBatchesWithPlanarRgbLayout()
    {
        using var dir = new TempFolder();
        for (var b = 1; b <= 5; b++)
            File.WriteAllBytes(dir.File($"data_batch_{b}.bin"), TestFiles.CifarRecords(2, i => [(byte)((b + i) % 10)]));
        File.WriteAllBytes(dir.File("test_batch.bin"), TestFiles.CifarRecords(3, i => [(byte)i]));
        using var train = Cifar.LoadCifar10(Split.Train, dir.Path);
        using var test = Cifar.LoadCifar10(Split.Test, dir.Path);
        Assert.Equal(new long[] { 10, 3, 32, 32 }, train.Images.shape);
        Assert.Equal(new long[] { 3, 3, 32, 32 }, test.Images.shape);
        Assert.Equal(new long[] { 1, 2, 2, 3, 3, 4, 4, 5, 5, 6 }, train.Labels.data<long>().ToArray());
        // record i, channel k, row r, column c holds (i + 50k + 32r + c) % 256
        Assert.Equal((2 + 50 * 1 + 32 * 3 + 4) % 256 / 255f, test.Images[2, 1, 3, 4].item<float>(), 6);
        Assert.Equal((1 + 50 * 2 + 32 * 31 + 31) % 256 / 255f, test.Images[1, 2, 31, 31].item<float>(), 6);
        Assert.Equal("truck", train.Classes[9]);
    }

    [Fact]
    public void Cifar100ReadsFineAndCoarseLabels()
    {
        using var dir = new TempFolder();
        File.WriteAllBytes(dir.File("train.bin"), TestFiles.CifarRecords(4, i => [(byte)(i + 10), (byte)(i * 20 + 3)]));
        File.WriteAllBytes(dir.File("test.bin"), TestFiles.CifarRecords(2, i => [(byte)19, (byte)99]));
        using var fine = Cifar.LoadCifar100(Split.Train, Cifar.Cifar100Labels.Fine, dir.Path);
        using var coarse = Cifar.LoadCifar100(Split.Train, Cifar.Cifar100Labels.Coarse, dir.Path);
        using var test = Cifar.LoadCifar100(Split.Test, Cifar.Cifar100Labels.Fine, dir.Path);
        Assert.Equal(new long[] { 3, 23, 43, 63 }, fine.Labels.data<long>().ToArray());
        Assert.Equal(new long[] { 10, 11, 12, 13 }, coarse.Labels.data<long>().ToArray());
        Assert.Equal(100, fine.Classes.Count);
        Assert.Equal(20, coarse.Classes.Count);
        Assert.Equal("worm", test.Classes[(int)test.Labels[0].item<long>()]);
        Assert.Equal((3 + 50 * 0 + 7) % 256 / 255f, fine.Images[3, 0, 0, 7].item<float>(), 6);
    }

    [Fact]
    public void WrongImageSizeRecordIsAClearError()
    {
        using var dir = new TempFolder();
        // 28x28 RGB records: 1 + 2352 bytes each, not CIFAR's 1 + 3072
        File.WriteAllBytes(dir.File("test_batch.bin"), TestFiles.CifarRecords(3, i => [(byte)i], pixelBytes: 3 * 28 * 28));
        var e = Assert.Throws<DatasetException>(() => Cifar.LoadCifar10(Split.Test, dir.Path));
        Assert.Contains(dir.File("test_batch.bin"), e.Message);
        Assert.Contains("wrong record size", e.Message);
        Assert.Contains("3073-byte records", e.Message);
        Assert.Contains("not 3x32x32", e.Message);
    }

    [Fact]
    public void ACifar100FileReadAsCifar10SaysWhatItProbablyIs()
    {
        using var dir = new TempFolder();
        File.WriteAllBytes(dir.File("test_batch.bin"), TestFiles.CifarRecords(3, i => [1, 2]));
        var e = Assert.Throws<DatasetException>(() => Cifar.LoadCifar10(Split.Test, dir.Path));
        Assert.Contains("is it a CIFAR-100 file?", e.Message);
    }

    [Fact]
    public void OutOfRangeLabelAndMissingFilesAreNamed()
    {
        using var dir = new TempFolder();
        File.WriteAllBytes(dir.File("test_batch.bin"), TestFiles.CifarRecords(2, i => [(byte)(i == 1 ? 10 : 0)]));
        var label = Assert.Throws<DatasetException>(() => Cifar.LoadCifar10(Split.Test, dir.Path));
        Assert.Contains("record 1 has label 10, out of range for 10 classes", label.Message);

        var missing = Assert.Throws<DatasetException>(() => Cifar.LoadCifar10(Split.Train, dir.Path));
        Assert.Contains("CIFAR-10 not found", missing.Message);
        Assert.Contains(dir.File("data_batch_1.bin"), missing.Message);
        Assert.Contains(dir.File("data_batch_5.bin"), missing.Message);
    }
}
