using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Carso.IO;

/// <summary>
/// One JSON document per run, written by every script: what ran (script, settings, seed), on what
/// (versions, device, threads), how long, and what it measured (metrics: any JSON-serialisable values).
/// </summary>
public sealed record RunRecord(
    string Script,
    bool Smoke,
    long Seed,
    JsonNode? Settings,
    IReadOnlyDictionary<string, string> Versions,
    string Device,
    int Threads,
    DateTimeOffset StartedUtc,
    double WallSeconds,
    JsonNode? Metrics)
{
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>Any object (a settings record, an anonymous object, a dictionary) as a JSON tree.</summary>
    public static JsonNode? ToJson(object? value) => value is null ? null : JsonSerializer.SerializeToNode(value, value.GetType(), Json);

    /// <summary>A metric of the record, typed (reports draw everything from records through this).</summary>
    public T Metric<T>(string name) =>
        (Metrics?[name] ?? throw new InvalidDataException($"{Script} run record has no metrics.{name}")).Deserialize<T>(Json)
        ?? throw new InvalidDataException($"{Script} run record: metrics.{name} is not a {typeof(T).Name}");

    public string Serialize() => JsonSerializer.Serialize(this, Json);

    /// <summary>Writes the record atomically (temporary file, then rename).</summary>
    public void Save(string path) => AtomicFile.WriteAllText(path, Serialize() + "\n");

    public static RunRecord Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<RunRecord>(File.ReadAllText(path), Json)
                ?? throw new InvalidDataException($"{path}: empty run record");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a valid run record ({e.Message})", e);
        }
    }
}
