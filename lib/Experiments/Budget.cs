using System.Collections;
using System.Reflection;

namespace Carso.Experiments;

/// <summary>
/// Budgets describe themselves: the text saying how a run departs from the published protocol is generated from its
/// settings and the published defaults, never typed, so it cannot go stale when a setting changes.
/// </summary>
public static class Budget
{
    /// <summary>One departure: the setting's path (e.g. "Protocol.EotIter"), the value used and the published one.</summary>
    public sealed record Departure(string Setting, string Used, string Published)
    {
        public override string ToString() => $"{Setting} {Used} (published {Published})";
    }

    /// <summary>Every public property of <paramref name="used"/> (recursing into nested records) whose value differs from
    /// <paramref name="published"/>'s. Both must be of the same type.</summary>
    public static IReadOnlyList<Departure> Departures(object used, object published, string prefix = "")
    {
        if (used.GetType() != published.GetType())
            throw new ArgumentException($"cannot compare {used.GetType().Name} with {published.GetType().Name}");
        var departures = new List<Departure>();
        foreach (var property in used.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            // Settings only: properties a caller can set (positional or init); computed ones follow from them. An anonymous
            // object (`new { settings.Points, settings.Protocol }`) has get-only properties, all of them settings.
            if (property.GetIndexParameters().Length > 0 || property.Name == "EqualityContract" ||
                (property.SetMethod is null && !IsAnonymous(used.GetType()))) continue;
            var (a, b) = (property.GetValue(used), property.GetValue(published));
            var name = prefix + property.Name;
            if (a is not null && b is not null && IsRecord(a.GetType()) && a.GetType() == b.GetType())
                departures.AddRange(Departures(a, b, name + "."));
            else if (Format(a) != Format(b))
                departures.Add(new Departure(name, Format(a), Format(b)));
        }
        return departures;
    }

    /// <summary>"as published", or "REDUCED from the published protocol: ..." listing every departure, plus a reminder
    /// that a reduced attack gives an upper bound on robustness.</summary>
    public static string Describe(object used, object published)
    {
        var departures = Departures(used, published);
        return departures.Count == 0
            ? "budgets as published"
            : $"REDUCED from the published protocol: {string.Join(", ", departures)}. A reduced attack gives an upper bound on robust accuracy.";
    }

    static bool IsRecord(Type t) => t.GetMethod("<Clone>$") is not null;

    static bool IsAnonymous(Type t) => t.Name.Contains("AnonymousType") &&
        t.IsDefined(typeof(System.Runtime.CompilerServices.CompilerGeneratedAttribute), false);

    static string Format(object? value) => value switch
    {
        null => "none",
        string s => s,
        IEnumerable e => "[" + string.Join(", ", e.Cast<object?>().Select(Format)) + "]",
        double d => d.ToString("G6", System.Globalization.CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
