using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Spectre.Console;
using Spectre.Console.Rendering;
using SpectreProgress = Spectre.Console.Progress;
using SpectreTask = Spectre.Console.ProgressTask;

namespace Carso.Runtime;

/// <summary>
/// Progress of long stages. On a terminal: live bars (Spectre.Console) with done/total, elapsed time and ETA, one
/// row per running task (nested tasks under their parent). Elsewhere (CI, logs, tests): plain lines, at most one
/// per task every 10 s and only at a further 10% (or after a minute of silence), so logs stay short. A top-level
/// task that ran 10 s or more leaves one closing line. <see cref="Log"/> prints a line above live bars without
/// breaking them (and while bars are live, Console.Out is routed the same way, so stray Console.WriteLine calls
/// do not break them either). Meant for one thread: start, advance and dispose tasks from the thread that runs
/// the stage, innermost task first.
/// </summary>
public sealed class Progress
{
    readonly IView view;
    readonly Func<TimeSpan> clock;
    readonly List<ProgressTask> running = [];

    Progress(IView view, Func<TimeSpan> clock) => (this.view, this.clock) = (view, clock);

    /// <summary>Shows nothing and discards log lines (the library's default).</summary>
    public static Progress None { get; } = new(new SilentView(), () => TimeSpan.Zero);

    /// <summary>Progress on standard output: live bars when it is an interactive terminal (or terminal = true),
    /// plain periodic lines otherwise.</summary>
    public static Progress ForConsole(bool? terminal = null)
    {
        var clock = Stopwatch.StartNew();
        return terminal ?? IsInteractiveTerminal()
            ? new Progress(new TerminalView(Console.Out), () => clock.Elapsed)
            : Plain(line => Console.Out.WriteLine(line), () => clock.Elapsed);
    }

    /// <summary>Plain lines through <paramref name="write"/> (a log, a test's list) on the given clock
    /// (default: a stopwatch started now).</summary>
    public static Progress Plain(Action<string> write, Func<TimeSpan>? clock = null, PlainSchedule? schedule = null)
    {
        if (clock is null) { var watch = Stopwatch.StartNew(); clock = () => watch.Elapsed; }
        return new Progress(new PlainView(write, schedule ?? PlainSchedule.Default), clock);
    }

    /// <summary>True when this shows live bars.</summary>
    public bool IsLive => view is TerminalView;

    /// <summary>Starts a task of <paramref name="total"/> steps, nested in the task still running (if any).
    /// Dispose it when the stage ends, finished or not.</summary>
    public ProgressTask Start(string name, long total)
    {
        var task = new ProgressTask(this, name, Math.Max(0, total), running.Count, clock());
        running.Add(task);
        view.Started(task);
        return task;
    }

    /// <summary>A (step, total) callback, the kind training loops take, shown as one task per round of steps
    /// (an epoch): the task starts at a round's first callback and ends at its last (step == total); a step that
    /// does not move forward starts a new round. Its clock starts after the first step, so early ETAs run short.</summary>
    public Action<int, int> Steps(string name)
    {
        ProgressTask? task = null;
        return (step, total) =>
        {
            if (task is not null && (step <= task.Done || total != task.Total)) { task.Dispose(); task = null; }
            task ??= Start(name, total);
            task.Advance(step - task.Done);
            if (step >= total) { task.Dispose(); task = null; }
        };
    }

    /// <summary>Prints a line (above the bars when they are live).</summary>
    public void Log(string line) => view.Log(line);

    internal TimeSpan Now => clock();

    internal void Advanced(ProgressTask task) => view.Advanced(task, clock());

    internal void Ended(ProgressTask task)
    {
        running.Remove(task);
        view.Ended(task, clock());
    }

    /// <summary>Closes any live display now (restoring the cursor and Console.Out): for a process about to exit
    /// on an error, whose tasks will never be disposed.</summary>
    internal static void CloseLiveDisplays() => TerminalView.CloseAll();

    static bool IsInteractiveTerminal()
    {
        if (Console.IsOutputRedirected) return false;
        try { return AnsiConsole.Profile.Capabilities.Interactive && AnsiConsole.Profile.Capabilities.Ansi; }
        catch (Exception) { return false; } // no usable terminal description: plain lines are always safe
    }

    // ---- text shared by both views (pure) -----------------------------------------------------------------

    /// <summary>Estimated time left after done of total steps took elapsed; null before the first step.</summary>
    public static TimeSpan? Eta(long done, long total, TimeSpan elapsed) =>
        done <= 0 ? null : TimeSpan.FromTicks((long)(elapsed.Ticks * (double)Math.Max(0, total - done) / done));

    /// <summary>"0:42", "12:05", "1:02:03".</summary>
    public static string Duration(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t.Minutes:D2}:{t.Seconds:D2}" : $"{t.Minutes}:{t.Seconds:D2}";

    /// <summary>"120/430 (28%), 0:42 elapsed, ETA 1:48".</summary>
    public static string Status(long done, long total, TimeSpan elapsed) =>
        $"{done}/{total} ({(total == 0 ? 100 : 100 * done / total)}%), {Duration(elapsed)} elapsed, ETA " +
        (Eta(done, total, elapsed) is { } eta ? Duration(eta) : "?");

    /// <summary>A periodic line: the name (indented two spaces per nesting level) and its status.</summary>
    public static string Line(string name, int depth, long done, long total, TimeSpan elapsed) =>
        $"{new string(' ', 2 * depth)}{name}: {Status(done, total, elapsed)}";

    /// <summary>The closing line of a task: "name: 430/430 done in 2:31" (or "stopped at" when unfinished).</summary>
    public static string EndLine(string name, int depth, long done, long total, TimeSpan elapsed) =>
        $"{new string(' ', 2 * depth)}{name}: " +
        (done >= total ? $"{done}/{total} done in {Duration(elapsed)}" : $"stopped at {done}/{total} after {Duration(elapsed)}");

    // ---- views -----------------------------------------------------------------------------------------------

    interface IView
    {
        void Started(ProgressTask task);
        void Advanced(ProgressTask task, TimeSpan now);
        void Ended(ProgressTask task, TimeSpan now);
        void Log(string line);
    }

    sealed class SilentView : IView
    {
        public void Started(ProgressTask task) { }
        public void Advanced(ProgressTask task, TimeSpan now) { }
        public void Ended(ProgressTask task, TimeSpan now) { }
        public void Log(string line) { }
    }

    sealed class PlainView(Action<string> write, PlainSchedule schedule) : IView
    {
        // When each running task last printed, and how far it was then.
        readonly Dictionary<ProgressTask, (TimeSpan At, long Done)> last = [];

        public void Started(ProgressTask task) => last[task] = (task.StartedAt, 0);

        public void Advanced(ProgressTask task, TimeSpan now)
        {
            var (at, done) = last[task];
            if (!schedule.Due(done, now - at, task.Done, task.Total)) return;
            last[task] = (now, task.Done);
            write(Line(task.Name, task.Depth, task.Done, task.Total, now - task.StartedAt));
        }

        public void Ended(ProgressTask task, TimeSpan now)
        {
            last.Remove(task);
            if (schedule.ClosingLine(task.Depth, now - task.StartedAt))
                write(EndLine(task.Name, task.Depth, task.Done, task.Total, now - task.StartedAt));
        }

        public void Log(string line) => write(line);
    }

    /// <summary>
    /// Spectre.Console's progress display, run on its own thread for as long as any task is running (its API takes
    /// the whole stage as a callback; ours lets a stage start and end a task where it likes). Lines printed while
    /// it is live (Log, and Console.Out, redirected meanwhile) are queued and written by a third thread through
    /// Spectre, above the bars. Why a queue: .NET takes lock(Console.Out) around every write to the terminal and
    /// every window-size query, so writing through Spectre from inside Console.WriteLine (which holds that lock)
    /// while Spectre's refresh thread waits for it deadlocks (measured: it hung at the first stray WriteLine).
    /// </summary>
    sealed class TerminalView(TextWriter stdout) : IView
    {
        static readonly List<TerminalView> open = [];

        // Created while Console.Out is still the real standard output, so Spectre detects the terminal.
        readonly IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stdout) });
        readonly Dictionary<ProgressTask, SpectreTask> bars = [];
        readonly Lock gate = new();
        Display? display;

        sealed record Display(Thread Thread, ProgressContext Context, ManualResetEventSlim Stop, TextWriter SavedOut,
            BlockingCollection<string> Lines, Thread Writer);

        public void Started(ProgressTask task)
        {
            lock (gate)
            {
                display ??= Open();
                var bar = display.Context.AddTask(Markup.Escape(new string(' ', 2 * task.Depth) + task.Name), maxValue: Math.Max(1, task.Total));
                bar.Tag = task;
                bars[task] = bar;
            }
        }

        public void Advanced(ProgressTask task, TimeSpan now)
        {
            lock (gate) if (bars.TryGetValue(task, out var bar)) bar.Value = task.Done;
        }

        public void Ended(ProgressTask task, TimeSpan now)
        {
            lock (gate)
            {
                if (display is null || !bars.Remove(task, out var bar)) return;
                display.Context.RemoveTask(bar);
                if (bars.Count == 0) Close();
            }
            if (PlainSchedule.Default.ClosingLine(task.Depth, now - task.StartedAt))
                Log(EndLine(task.Name, task.Depth, task.Done, task.Total, now - task.StartedAt));
        }

        public void Log(string line)
        {
            lock (gate)
            {
                if (display is null) stdout.WriteLine(line);
                else display.Lines.Add(line);
            }
        }

        Display Open()
        {
            var ready = new TaskCompletionSource<ProgressContext>();
            var stop = new ManualResetEventSlim();
            var progress = new SpectreProgress(console)
            {
                AutoClear = true,          // the bars vanish with their stage; closing lines stay
                HideCompleted = false,     // tasks are removed when disposed instead
                ExcludeVerticalPadding = true,
            }.Columns(
                new TaskDescriptionColumn { Alignment = Justify.Left },
                new ProgressBarColumn { Width = 20 }, // name, bar and status fit 80 columns
                new StatusColumn());
            var thread = new Thread(() =>
            {
                try { progress.Start(context => { ready.SetResult(context); stop.Wait(); }); }
                catch (Exception e) { ready.TrySetException(e); }
            }) { IsBackground = true, Name = "progress display" };
            thread.Start();
            var context = ready.Task.GetAwaiter().GetResult();
            var lines = new BlockingCollection<string>();
            var writer = new Thread(() =>
            {
                foreach (var line in lines.GetConsumingEnumerable()) console.WriteLine(line); // plain text, not markup
            }) { IsBackground = true, Name = "progress log" };
            writer.Start();
            var savedOut = Console.Out;
            Console.SetOut(new LineWriter(Log));
            lock (open) open.Add(this);
            return new Display(thread, context, stop, savedOut, lines, writer);
        }

        void Close()
        {
            if (display is not { } d) return;
            display = null;
            Console.SetOut(d.SavedOut);
            d.Lines.CompleteAdding();
            d.Writer.Join(TimeSpan.FromSeconds(2)); // queued lines first, then the bars go
            d.Stop.Set();
            d.Thread.Join(TimeSpan.FromSeconds(2));
            lock (open) open.Remove(this);
        }

        public static void CloseAll()
        {
            TerminalView[] views;
            lock (open) views = [.. open];
            foreach (var view in views)
                lock (view.gate) { view.bars.Clear(); view.Close(); }
        }
    }

    /// <summary>done/total, elapsed and ETA in the same words as the plain lines.</summary>
    sealed class StatusColumn : ProgressColumn
    {
        protected override bool NoWrap => true;

        public override IRenderable Render(RenderOptions options, SpectreTask task, TimeSpan deltaTime) =>
            task.Tag is ProgressTask t ? new Text(Status(t.Done, t.Total, t.Elapsed)) : Text.Empty;
    }

    /// <summary>A TextWriter that hands every complete line to an action (Console.Out while bars are live;
    /// Console.SetOut makes it thread-safe).</summary>
    sealed class LineWriter(Action<string> line) : TextWriter
    {
        readonly StringBuilder pending = new();
        public override Encoding Encoding => Encoding.UTF8;

        public override void Write(char value)
        {
            if (value == '\n')
            {
                line(pending.ToString().TrimEnd('\r'));
                pending.Clear();
            }
            else pending.Append(value);
        }

        public override void Write(string? value) { foreach (var c in value ?? "") Write(c); }
        public override void Write(char[] buffer, int index, int count) { for (var i = index; i < index + count; i++) Write(buffer[i]); }
    }
}

/// <summary>
/// When a plain (non-terminal) view prints. Periodic line: at least MinInterval since the task's last line, and
/// either a further Step of the total done or MaxSilence without a line; never for the last step (the closing
/// line says it). Closing line: top-level tasks that ran at least MinInterval (short stages stay silent).
/// </summary>
public sealed record PlainSchedule(TimeSpan MinInterval, TimeSpan MaxSilence, double Step)
{
    public static readonly PlainSchedule Default = new(TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(60), 0.1);

    public bool Due(long lastDone, TimeSpan sinceLast, long done, long total) =>
        done < total && sinceLast >= MinInterval &&
        (Bucket(done, total) > Bucket(lastDone, total) || sinceLast >= MaxSilence);

    public bool ClosingLine(int depth, TimeSpan elapsed) => depth == 0 && elapsed >= MinInterval;

    long Bucket(long done, long total) => total <= 0 ? 0 : (long)Math.Floor((double)done / total / Step + 1e-9);
}

/// <summary>A running task of a <see cref="Progress"/>: advance it per step, dispose it when the stage ends.</summary>
public sealed class ProgressTask : IDisposable
{
    readonly Progress owner;
    bool ended;

    internal ProgressTask(Progress owner, string name, long total, int depth, TimeSpan startedAt) =>
        (this.owner, Name, Total, Depth, StartedAt) = (owner, name, total, depth, startedAt);

    public string Name { get; }
    public long Total { get; }
    /// <summary>Nesting level: 0 for a task started while no other was running.</summary>
    public int Depth { get; }
    public long Done { get; private set; }
    internal TimeSpan StartedAt { get; }
    public TimeSpan Elapsed => owner.Now - StartedAt;

    public void Advance(long by = 1)
    {
        if (ended) return;
        Done = Math.Min(Total, Done + by);
        owner.Advanced(this);
    }

    public void Dispose()
    {
        if (ended) return;
        ended = true;
        owner.Ended(this);
    }
}
