using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Loyalty.Storage;

/// <summary>Makes a file system's written pages durable, through a handle to any file on it.</summary>
internal static partial class FileSystemSync
{
    /// <summary>
    /// Flushes to the disk every page written to the file system that holds the file behind
    /// <paramref name="anyFileOnIt"/> (Linux's <c>syncfs</c>), without a descriptor on any other file.
    /// False where that call does not exist, or when it fails; nothing relies on it for durability.
    /// </summary>
    public static bool TryFlush(SafeFileHandle anyFileOnIt)
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        bool referenced = false;
        try
        {
            anyFileOnIt.DangerousAddRef(ref referenced);
            return SyncFs(anyFileOnIt.DangerousGetHandle().ToInt32()) == 0;
        }
        catch (ObjectDisposedException)
        {
            // Closed meanwhile: the store is being disposed.
            return false;
        }
        finally
        {
            if (referenced)
            {
                anyFileOnIt.DangerousRelease();
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "syncfs", SetLastError = true)]
    private static partial int SyncFs(int fd);
}
