// One test at a time: the tests share torch's global generator, and TorchSharp 0.107 frees a Scalar made from a double
// (`t * 0.9`) in its finalizer as soon as the call has read its handle — a garbage collection started by another managed
// thread during the native call then frees it under libtorch (seen as RAdam reading a corrupt Scalar when script tests ran
// on other threads of this process). The tests that only run scripts as child processes live in their own test project
// (tests/Scripts), which `dotnet test` runs in its own process beside this one.
[assembly: Xunit.CollectionBehavior(DisableTestParallelization = true)]

namespace Carso.Tests
{
    /// <summary>One libtorch thread: the script tests' process runs beside this one on CI's 2 cores, and OpenMP threads
    /// spin while they wait.</summary>
    static class TestThreads
    {
        [System.Runtime.CompilerServices.ModuleInitializer]
        internal static void OneThread() => TorchSharp.torch.set_num_threads(1);
    }
}
