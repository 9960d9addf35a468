using static TorchSharp.torch;

namespace Carso.Runtime;

/// <summary>Run-time device choice: CUDA when available, else CPU; a setting or $CARSO_DEVICE overrides.</summary>
public static class Devices
{
    public const string EnvironmentVariable = "CARSO_DEVICE";

    /// <summary>
    /// Picks the device from a setting: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
    /// Null or empty means $CARSO_DEVICE, then "auto". An unknown value, or CUDA on a machine without it, is a
    /// <see cref="UsageException"/> that names the accepted values (and, for CUDA, why it is missing).
    /// </summary>
    public static Device Pick(string? setting = null)
    {
        var fromEnvironment = string.IsNullOrWhiteSpace(setting);
        var choice = (fromEnvironment ? Environment.GetEnvironmentVariable(EnvironmentVariable) : setting)
            ?.Trim().ToLowerInvariant();
        // A bad $CARSO_DEVICE is named as such: the command line did not say it.
        var source = fromEnvironment ? $"${EnvironmentVariable}: " : "";
        if (string.IsNullOrEmpty(choice) || choice == "auto")
            return cuda.is_available() ? CUDA : CPU;
        if (choice == "cpu") return CPU;
        if (choice == "cuda" || (choice.StartsWith("cuda:") && int.TryParse(choice["cuda:".Length..], out var index) && index >= 0))
        {
            if (!cuda.is_available())
                throw new UsageException(
                    $"{source}device '{choice}' requested but CUDA is not available: this build uses the " +
                    $"'{Backend}' backend package (rebuild with CARSO_BACKEND=cuda on a machine with an NVIDIA driver) " +
                    "or no GPU is visible; use auto or cpu");
            return new Device(choice);
        }
        throw new UsageException($"{source}unknown device '{choice}': use auto, cpu, cuda or cuda:N");
    }

    /// <summary>The libtorch backend this build loaded: "cuda" when CUDA support is compiled in, else "cpu".</summary>
    public static string Backend => cuda.is_available() || HasCudaPackage() ? "cuda" : "cpu";

    static bool HasCudaPackage() =>
        File.Exists(Path.Combine(AppContext.BaseDirectory, "libtorch_cuda.so"));

    /// <summary>One line for the start of every script: device, backend, threads.</summary>
    public static string Describe(Device device) =>
        $"device: {device.type.ToString().ToLowerInvariant()}{(device.type == TorchSharp.DeviceType.CUDA ? $":{device.index}" : "")} " +
        $"(backend {Backend}, {get_num_threads()} CPU threads, TorchSharp {Versions.TorchSharp})";
}
