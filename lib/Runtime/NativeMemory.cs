using System.Runtime.InteropServices;

namespace Carso.Runtime;

/// <summary>
/// glibc malloc settings for libtorch's CPU allocator. By default glibc serves every block above a (dynamic)
/// threshold with a fresh mmap and returns it with munmap on free, so each activation of every forward pass
/// is page-faulted and zeroed by the kernel again: measured here, training spent most of its time in system
/// calls. Serving every block from the heap and keeping freed memory there (up to a generous trim threshold)
/// removes that cost.
/// </summary>
public static class NativeMemory
{
    const int M_TRIM_THRESHOLD = -1;
    const int M_MMAP_THRESHOLD = -3;
    const int M_MMAP_MAX = -4;

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int Mallopt(int param, int value);

    static int tuned;

    /// <summary>Applies the settings once per process (Linux/glibc only; a no-op elsewhere). Returns whether they were applied.</summary>
    public static bool Tune()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("CARSO_NO_MALLOC_TUNING") is "1") return false;
        if (Interlocked.Exchange(ref tuned, 1) == 1) return true;
        try
        {
            // 32 MiB: glibc's maximum mmap threshold on 64-bit; blocks below it come from the reusable heap.
            var mmapOk = Mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1;
            // ... and blocks above it (any activation of a batch of several hundred images: 800 SmallCnn inputs
            // make 100 MB conv outputs) would still be mmapped and zeroed on every call: no mmap at all, every
            // block from the heap. Measured: SmallCnn forward+backward on 800 images 1019 -> 203 ms.
            mmapOk &= Mallopt(M_MMAP_MAX, 0) == 1;
            // Keep up to 1 GiB of freed heap instead of returning it to the kernel after every step.
            var trimOk = Mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024) == 1;
            return mmapOk && trimOk;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false; // not glibc (e.g. musl): nothing to tune
        }
    }
}
