using System.Runtime.InteropServices;

namespace Carso.Runtime;

/// <summary>
/// Process-wide libtorch switches TorchSharp 0.107 does not expose, set through libtorch_cpu's exported C++ API.
/// </summary>
public static class LibTorchSettings
{
    // at::globalContext() and at::Context::setUserEnabledNNPACK(bool) (Itanium C++ ABI; `this` is the first argument).
    [DllImport("libtorch_cpu", EntryPoint = "_ZN2at13globalContextEv")]
    static extern IntPtr GlobalContext();

    [DllImport("libtorch_cpu", EntryPoint = "_ZN2at7Context20setUserEnabledNNPACKEb")]
    static extern void SetUserEnabledNnpack(IntPtr context, [MarshalAs(UnmanagedType.U1)] bool enabled);

    static int nnpackDisabled;

    /// <summary>
    /// Turns NNPACK off (what torch.backends.nnpack.flags(enabled=False) does in Python). libtorch 2.10 asks NNPACK
    /// whether it is available while choosing the algorithm of every CPU convolution, and on hardware it does not
    /// support (this machine) logs "Could not initialize NNPACK! Reason: Unsupported hardware." to stderr EVERY time:
    /// thousands of lines per minute of attack, each a formatted, locked write. With NNPACK off the check stops
    /// before that. Convolutions are unchanged (NNPACK was never used here). Call after libtorch is loaded (any torch
    /// call); idempotent; CARSO_KEEP_NNPACK=1 leaves it on. Returns whether it is off.
    /// </summary>
    public static bool DisableNnpack()
    {
        if (Environment.GetEnvironmentVariable("CARSO_KEEP_NNPACK") is "1") return false;
        if (Interlocked.Exchange(ref nnpackDisabled, 1) == 1) return true;
        try
        {
            SetUserEnabledNnpack(GlobalContext(), false);
            return true;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false; // another libtorch build (e.g. Windows, macOS): leave it
        }
    }
}
