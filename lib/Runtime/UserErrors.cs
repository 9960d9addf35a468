using System.Reflection;
using Carso.IO;

namespace Carso.Runtime;

// IUserError (lib/IUserError.cs, namespace Carso) marks an exception as the user's to fix: every area may raise one.

/// <summary>A bad value in a script's settings record. Message: "Settings.{Setting}: {Problem}".</summary>
public sealed class SettingsException(string setting, string problem)
    : Exception($"Settings.{setting}: {problem}"), IUserError
{
    /// <summary>The setting's name as the record spells it, dotted for nested records ("Training.Epochs").</summary>
    public string Setting { get; } = setting;

    /// <summary>What is wrong with its value and how to fix it.</summary>
    public string Problem { get; } = problem;
}

/// <summary>A bad command line (unknown option, missing or malformed value): exit code 2. The message names the
/// option and the values it accepts. An ArgumentException, so code that catches those still does.</summary>
public sealed class UsageException(string message) : ArgumentException(message);

/// <summary>What a script does with an exception that reached the top: exit code, the one line for stderr, and
/// whether a stack trace follows.</summary>
public sealed record ScriptFailure(int ExitCode, string Line, bool StackTrace);

/// <summary>Sorts exceptions that end a script into bad command lines, user errors and bugs (pure functions).</summary>
public static class ScriptErrors
{
    public const int UsageExitCode = 2;
    public const int UserErrorExitCode = 1;
    /// <summary>sysexits' EX_SOFTWARE: an internal error. The runtime's own crash (SIGABRT, 134) is never left to
    /// happen: it prints a trace without the script's name and may write a core dump.</summary>
    public const int BugExitCode = 70;

    /// <summary>The exception that matters: wrappers added by tasks, reflection and static constructors are peeled
    /// off (an AggregateException only when it wraps exactly one).</summary>
    public static Exception Unwrap(Exception e) => e switch
    {
        AggregateException { InnerExceptions.Count: 1 } a => Unwrap(a.InnerExceptions[0]),
        TargetInvocationException { InnerException: { } inner } => Unwrap(inner),
        TypeInitializationException { InnerException: { } inner } => Unwrap(inner),
        _ => e,
    };

    /// <summary>The library's named exceptions for bad input files and settings, and anything marked IUserError.
    /// (The lib/IO exceptions are listed by type rather than marked: lib/IO does not depend on Runtime.)</summary>
    public static bool IsUserError(Exception e) => e is IUserError
        or CheckpointMismatchException or PurifierClassifierMismatchException or ResumeMismatchException
        or InvalidDataException or FileNotFoundException or DirectoryNotFoundException;

    /// <summary>One line: messages that span lines (saved vs current settings, lists) are joined with spaces.</summary>
    public static string OneLine(string message) =>
        string.Join(" ", message.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0));

    /// <summary>How a script ends on exception e: usage errors exit 2, user errors 1 (no trace unless verbose),
    /// anything else is a bug (exit 70, always the full trace).</summary>
    public static ScriptFailure Classify(string script, Exception e, bool verbose)
    {
        var cause = Unwrap(e);
        return cause switch
        {
            UsageException => new(UsageExitCode, $"{script}: {OneLine(cause.Message)} (options: dotnet run scripts/{script}.cs -- --help)", verbose),
            _ when IsUserError(cause) => new(UserErrorExitCode, $"{script}: {OneLine(cause.Message)}", verbose),
            _ => new(BugExitCode, $"{script}: internal error, a bug (not a problem with your files or settings); " +
                                  $"please report it with this trace: {cause.GetType().Name}: {OneLine(cause.Message)}", true),
        };
    }
}
