using Carso.Runtime;

namespace Carso.Tests.Runtime;

public class CpuThreadsTests
{
    [Theory]
    [InlineData(2, 0.0, 2)]
    [InlineData(2, 0.4, 2)]
    [InlineData(2, 1.0, 1)]   // one other busy job on 2 cores: one thread
    [InlineData(2, 1.6, 1)]
    [InlineData(2, 3.0, 1)]   // overloaded: still one
    [InlineData(8, 2.5, 6)]   // 5.5 idle cores round away from zero
    [InlineData(1, 0.0, 1)]
    public void OneThreadPerIdleCoreAtLeastOne(int cores, double busy, int expected) =>
        Assert.Equal(expected, CpuThreads.Choose(cores, busy));

    [Fact]
    public void BusyCoresAreTheNonIdleShareOfTheElapsedJiffiesTimesTheCores()
    {
        // 400 jiffies elapsed on 2 cores: 100 user + 60 system + 40 softirq busy, 180 idle + 20 iowait.
        const string before = "cpu  1000 0 500 8000 100 0 50 0 0 0";
        const string after = "cpu  1100 0 560 8180 120 0 90 0 0 0";
        Assert.Equal(1.0, CpuThreads.BusyCores(before, after, 2), 6);
        Assert.Equal(0, CpuThreads.BusyCores(before, before, 2));
    }
}
