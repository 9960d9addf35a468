using System.Runtime.CompilerServices;

namespace Carso.Runtime;

static class ModuleSetup
{
    /// <summary>Runs when the Carso assembly loads (scripts and tests alike), before any tensor is made.</summary>
#pragma warning disable CA2255 // a library initializer is the point: the allocator must be tuned before libtorch allocates
    [ModuleInitializer]
    internal static void Initialize() => NativeMemory.Tune();
}
#pragma warning restore CA2255
