using Carso.Runtime;

namespace Carso.Tests.Runtime;

/// <summary>The plain (non-terminal) progress lines, on a hand-driven clock; and the live view's plumbing.</summary>
public class ProgressTests
{
    /// <summary>A Progress that prints into a list, on a clock the test moves.</summary>
    sealed class Recorder
    {
        public readonly List<string> Lines = [];
        public TimeSpan Now = TimeSpan.Zero;
        public readonly Progress Progress;
        public Recorder() => Progress = Progress.Plain(Lines.Add, () => Now);

        /// <summary>Runs a task of total steps, each taking stepSeconds.</summary>
        public void Run(string name, int total, double stepSeconds)
        {
            using var task = Progress.Start(name, total);
            for (var i = 0; i < total; i++) { Now += TimeSpan.FromSeconds(stepSeconds); task.Advance(); }
        }
    }

    [Fact]
    public void ASlowTaskPrintsAtEachFurtherTenPercentAtMostEveryTenSecondsThenOneClosingLine()
    {
        var r = new Recorder();
        r.Run("epoch", 100, stepSeconds: 1);
        Assert.Equal(
        [
            "epoch: 10/100 (10%), 0:10 elapsed, ETA 1:30",
            "epoch: 20/100 (20%), 0:20 elapsed, ETA 1:20",
            "epoch: 30/100 (30%), 0:30 elapsed, ETA 1:10",
            "epoch: 40/100 (40%), 0:40 elapsed, ETA 1:00",
            "epoch: 50/100 (50%), 0:50 elapsed, ETA 0:50",
            "epoch: 60/100 (60%), 1:00 elapsed, ETA 0:40",
            "epoch: 70/100 (70%), 1:10 elapsed, ETA 0:30",
            "epoch: 80/100 (80%), 1:20 elapsed, ETA 0:20",
            "epoch: 90/100 (90%), 1:30 elapsed, ETA 0:10",
            "epoch: 100/100 done in 1:40",
        ], r.Lines);
    }

    [Fact]
    public void AFastTaskPrintsNothing()
    {
        var r = new Recorder();
        r.Run("batch", 1000, stepSeconds: 0.005); // 5 s in all: under the 10 s interval
        Assert.Empty(r.Lines);
    }

    [Fact]
    public void ManyQuickStepsPrintAtEachTenthAndAfterEachMinuteOfSilence()
    {
        var r = new Recorder();
        r.Run("apgd", 100_000, stepSeconds: 0.01); // 1000 s: a tenth every 100 s
        var periodic = r.Lines.SkipLast(1).ToList();
        Assert.InRange(periodic.Count, 9, 20); // the tenths, plus a line after each minute of silence
        Assert.Equal("apgd: 100000/100000 done in 16:40", r.Lines[^1]);
    }

    [Fact]
    public void VerySlowStepsStillPrintAfterAMinuteOfSilence()
    {
        var r = new Recorder();
        using (var task = r.Progress.Start("square", 1000))
            for (var i = 0; i < 3; i++) { r.Now += TimeSpan.FromSeconds(70); task.Advance(); } // 0.3%, no tenth crossed
        Assert.Equal(4, r.Lines.Count);
        Assert.Equal("square: 1/1000 (0%), 1:10 elapsed, ETA 19:25:30", r.Lines[0]);
        Assert.Equal("square: stopped at 3/1000 after 3:30", r.Lines[^1]);
    }

    [Fact]
    public void NestedTasksAreIndentedAndOnlyTheTopLevelTaskClosesWithALine()
    {
        var r = new Recorder();
        using (var family = r.Progress.Start("apgd-ce", 2))
        {
            for (var batch = 0; batch < 2; batch++)
            {
                r.Run("batch", 4, stepSeconds: 5); // 20 s each
                family.Advance();
                r.Progress.Log($"batch {batch} done");
            }
        }
        // Inner lines: at most one per 10 s (so not at 3/4, 5 s after 2/4); no closing line for a nested task.
        Assert.Equal(
        [
            "  batch: 2/4 (50%), 0:10 elapsed, ETA 0:10",
            "apgd-ce: 1/2 (50%), 0:20 elapsed, ETA 0:20",
            "batch 0 done",
            "  batch: 2/4 (50%), 0:10 elapsed, ETA 0:10",
            "batch 1 done",
            "apgd-ce: 2/2 done in 0:40",
        ], r.Lines);
    }

    [Fact]
    public void StepCallbacksBecomeOneTaskPerRound()
    {
        var r = new Recorder();
        var callback = r.Progress.Steps("epoch");
        for (var epoch = 0; epoch < 2; epoch++)
            for (var step = 1; step <= 20; step++) { r.Now += TimeSpan.FromSeconds(1); callback(step, 20); }
        // Each round is its own task: its clock starts at its first callback (1 s in) and it ends at step 20.
        Assert.Equal(
        [
            "epoch: 11/20 (55%), 0:10 elapsed, ETA 0:08",
            "epoch: 20/20 done in 0:19",
            "epoch: 11/20 (55%), 0:10 elapsed, ETA 0:08",
            "epoch: 20/20 done in 0:19",
        ], r.Lines);
    }

    [Fact]
    public void NoneIsSilentAndFormattingIsPlain()
    {
        using (var task = Progress.None.Start("x", 10)) task.Advance(10);
        Progress.None.Log("not printed anywhere");
        Assert.False(Progress.None.IsLive);
        Assert.Equal("0:42", Progress.Duration(TimeSpan.FromSeconds(42)));
        Assert.Equal("12:05", Progress.Duration(TimeSpan.FromSeconds(725)));
        Assert.Equal("1:02:03", Progress.Duration(TimeSpan.FromSeconds(3723)));
        Assert.Null(Progress.Eta(0, 10, TimeSpan.FromSeconds(5)));
        Assert.Equal(TimeSpan.FromSeconds(15), Progress.Eta(1, 4, TimeSpan.FromSeconds(5)));
        Assert.Equal("0/10 (0%), 0:05 elapsed, ETA ?", Progress.Status(0, 10, TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task TheLiveViewRoutesLogAndConsoleLinesAndRestoresConsoleOut()
    {
        // Not a terminal here, so Spectre renders with its fallback; what is checked is our plumbing: the display
        // thread, the queued lines, Console.Out redirected while live and restored after, no deadlock.
        var original = Console.Out;
        var captured = new StringWriter();
        Console.SetOut(captured);
        var before = Console.Out;
        try
        {
            var run = Task.Run(() =>
            {
                var progress = Progress.ForConsole(terminal: true);
                Assert.True(progress.IsLive);
                using (var family = progress.Start("family", 2))
                {
                    for (var i = 0; i < 2; i++)
                    {
                        using (var attack = progress.Start("attack", 3))
                            for (var j = 0; j < 3; j++) { attack.Advance(); progress.Log($"log {i}.{j}"); Console.WriteLine($"stray {i}.{j}"); }
                        family.Advance();
                    }
                }
                progress.Log("after");
            });
            await run.WaitAsync(TimeSpan.FromSeconds(60)); // a TimeoutException here: the live view deadlocked
            Assert.Same(before, Console.Out);
        }
        finally { Console.SetOut(original); }
        var text = captured.ToString();
        foreach (var line in new[] { "log 0.0", "stray 0.2", "log 1.2", "stray 1.2", "after" }) Assert.Contains(line, text);
        Assert.True(text.IndexOf("log 1.2", StringComparison.Ordinal) < text.IndexOf("after", StringComparison.Ordinal));
    }

    [Fact]
    public void PlainScheduleIsDueOnlyAfterTheIntervalAndAtAFurtherStep()
    {
        var s = PlainSchedule.Default;
        Assert.False(s.Due(lastDone: 0, TimeSpan.FromSeconds(9), done: 50, total: 100));  // too soon
        Assert.True(s.Due(lastDone: 0, TimeSpan.FromSeconds(10), done: 10, total: 100));  // a tenth, 10 s
        Assert.False(s.Due(lastDone: 10, TimeSpan.FromSeconds(30), done: 19, total: 100)); // same tenth, under a minute
        Assert.True(s.Due(lastDone: 10, TimeSpan.FromSeconds(60), done: 11, total: 100));  // a minute of silence
        Assert.False(s.Due(lastDone: 0, TimeSpan.FromSeconds(99), done: 100, total: 100)); // the end: the closing line says it
        Assert.True(s.ClosingLine(depth: 0, TimeSpan.FromSeconds(10)));
        Assert.False(s.ClosingLine(depth: 0, TimeSpan.FromSeconds(9)));
        Assert.False(s.ClosingLine(depth: 1, TimeSpan.FromSeconds(100)));
    }
}
