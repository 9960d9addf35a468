using Carso.Runtime;

namespace Carso.Data;

/// <summary>A dataset file or folder that cannot be used. The message names the file, says what is
/// wrong and, where there is one, how to fix it.</summary>
public sealed class DatasetException(string message, Exception? inner = null) : Exception(message, inner), IUserError;
