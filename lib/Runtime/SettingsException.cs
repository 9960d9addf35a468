namespace Carso.Runtime;

/// <summary>A bad value in a script's settings record: names the setting, what is wrong and (in the problem) the fix.</summary>
public sealed class SettingsException(string setting, string problem) : ArgumentException($"Settings.{setting}: {problem}"), IUserError
{
    public string Setting { get; } = setting;
}
