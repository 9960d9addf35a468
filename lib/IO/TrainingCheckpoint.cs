using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Carso.IO;

/// <summary>How to write and read the optimiser-side state of a run (optimiser, Lookahead, ...).</summary>
public sealed record OptimizerState(Action<BinaryWriter> Save, Action<BinaryReader> Load);

/// <summary>
/// The resumable state of a training run in a folder: state.json (settings, per-epoch history) names the
/// model and optimiser files of the last complete epoch; best.bin holds the best weights. Every file is
/// written atomically and state.json last, so a run killed at any moment resumes from a consistent epoch.
/// Randomness is not saved: runs seed every epoch from (seed, epoch), so resuming needs no RNG state.
/// </summary>
public sealed class TrainingCheckpoint<TMetrics>(string folder)
{
    public string Folder { get; } = Path.GetFullPath(folder);
    public string StatePath => Path.Combine(Folder, "state.json");
    public string BestPath => Path.Combine(Folder, "best.bin");

    public sealed record State(JsonNode Settings, IReadOnlyList<TMetrics> History, string ModelFile, string OptimizerFile);

    public void Save(nn.Module model, OptimizerState optimizer, object settings, IReadOnlyList<TMetrics> history, bool isBest)
    {
        Directory.CreateDirectory(Folder);
        var epoch = history.Count;
        var modelFile = $"model-epoch{epoch:D3}.bin";
        var optimizerFile = $"optimizer-epoch{epoch:D3}.bin";
        TrainingCheckpoint.SaveModule(model, Path.Combine(Folder, modelFile));
        AtomicFile.Write(Path.Combine(Folder, optimizerFile), s =>
        {
            using var writer = new BinaryWriter(s, System.Text.Encoding.UTF8, leaveOpen: true);
            optimizer.Save(writer);
        });
        if (isBest) TrainingCheckpoint.SaveModule(model, BestPath);
        var state = new State(RunRecord.ToJson(settings)!, history, modelFile, optimizerFile);
        AtomicFile.WriteAllText(StatePath, JsonSerializer.Serialize(state, RunRecord.Json));
        // Older epochs are no longer referenced by state.json.
        foreach (var old in Directory.GetFiles(Folder, "*-epoch*.bin")
                     .Where(f => Path.GetFileName(f) != modelFile && Path.GetFileName(f) != optimizerFile))
            File.Delete(old);
    }

    /// <summary>Loads the last complete epoch into the model and the optimiser state; null when the folder holds
    /// no run. A run with other settings is an error (resuming it would mix two experiments). legacyDerived:
    /// derived properties that earlier versions stored with the settings and that are ignored when comparing.</summary>
    public State? Load(nn.Module model, OptimizerState optimizer, object settings, IEnumerable<string>? legacyDerived = null)
    {
        if (!File.Exists(StatePath)) return null;
        State state;
        try
        {
            state = JsonSerializer.Deserialize<State>(File.ReadAllText(StatePath), RunRecord.Json)
                    ?? throw new InvalidDataException("empty");
        }
        catch (Exception e) when (e is JsonException or InvalidDataException)
        {
            throw new InvalidDataException($"{StatePath}: not a valid training state ({e.Message}); delete the folder to start over", e);
        }
        if (state.Settings is JsonObject saved)
            foreach (var name in legacyDerived ?? []) saved.Remove(name);
        var current = WithoutNewDefaults(RunRecord.ToJson(settings)!, state.Settings, settings.GetType()).ToJsonString();
        if (state.Settings.ToJsonString() != current)
            throw new ResumeMismatchException(Folder,
                $"{Folder} holds a training run with other settings:\n  saved:   {state.Settings.ToJsonString()}\n  current: {current}\n" +
                "use another output folder (--out), or delete this one to start over");
        ReadOrExplain(Path.Combine(Folder, state.ModelFile), path => model.load(path));
        ReadOrExplain(Path.Combine(Folder, state.OptimizerFile), path =>
        {
            using var reader = new BinaryReader(File.OpenRead(path));
            optimizer.Load(reader);
        });
        return state;
    }

    /// <summary>
    /// The current settings without the properties the saved ones lack and that hold their type's default value: a
    /// setting added to the code after the run started, left at its default, is not a change of the run (its default is
    /// what the older code did). A new setting away from its default still is. Only for settings types with a
    /// parameterless constructor (records of init properties); others are compared whole.
    /// </summary>
    static JsonNode WithoutNewDefaults(JsonNode current, JsonNode? saved, Type type)
    {
        if (current is not JsonObject now || saved is not JsonObject before || type.GetConstructor(Type.EmptyTypes) is null) return current;
        var defaults = RunRecord.ToJson(Activator.CreateInstance(type)!) as JsonObject;
        foreach (var (name, value) in now.ToArray())
            if (!before.ContainsKey(name) && defaults is not null && defaults.TryGetPropertyValue(name, out var d) && JsonNode.DeepEquals(value, d))
                now.Remove(name);
        return now;
    }

    /// <summary>Reads one file of the saved epoch; a missing, truncated or foreign file is an InvalidDataException
    /// naming it (TorchSharp's own errors, e.g. "Mismatched state_dict sizes", name no file).</summary>
    void ReadOrExplain(string path, Action<string> read)
    {
        try { read(path); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException(
                $"{path}: cannot be read back ({e.GetType().Name}: {e.Message}); the checkpoint in {Folder} is corrupt " +
                "or from another model: delete the folder to start over", e);
        }
    }
}

public static class TrainingCheckpoint
{
    /// <summary>The state of a TorchSharp optimiser.</summary>
    public static OptimizerState OptimizerState(optim.Optimizer optimizer) => new(
        w => ((TorchSharp.Modules.OptimizerHelper)optimizer).save_state_dict(w),
        r => ((TorchSharp.Modules.OptimizerHelper)optimizer).load_state_dict(r));

    /// <summary>Writes a module's weights in TorchSharp's format, atomically.</summary>
    public static void SaveModule(nn.Module model, string path) =>
        AtomicFile.Write(path, s =>
        {
            using var writer = new BinaryWriter(s, System.Text.Encoding.UTF8, leaveOpen: true);
            model.save(writer);
        });
}
