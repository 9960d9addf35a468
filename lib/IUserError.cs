namespace Carso;

/// <summary>
/// Marks an exception as the user's to fix (a bad file, folder or setting), not a bug: a script reports its message as
/// one line and exits with 1, without a stack trace (unless --verbose). The message must name what is wrong (the file,
/// the setting) and say how to fix it. In the root namespace so that every area (IO, Data, Evaluation, ...) can raise one
/// without depending on the script harness.
/// </summary>
public interface IUserError;
