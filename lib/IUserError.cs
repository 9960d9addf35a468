namespace Carso;

/// <summary>Marks an exception that reports a user's mistake (a bad file, setting or argument) whose message names
/// what is wrong and the fix: the script harness prints the message as one line instead of a stack trace.</summary>
public interface IUserError;
