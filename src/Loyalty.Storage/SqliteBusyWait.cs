using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Loyalty.Storage;

/// <summary>
/// Makes every SQLite connection the process opens, including those Orleans' ADO.NET snapshot
/// storage opens for itself, wait for the write lock in SQLite's own busy handler. Orleans creates
/// its connections from Microsoft.Data.Sqlite's factory and runs no statement of ours on them, so
/// a <c>PRAGMA busy_timeout</c> cannot reach them; SQLite's automatic extensions can: the function
/// registered here runs inside every <c>sqlite3_open</c> in the process. Without it a snapshot
/// written while the ledger writer commits (which under load is nearly always) finds the file
/// busy, and Microsoft.Data.Sqlite sleeps 150 ms on the grain's thread before it tries again.
/// </summary>
internal static unsafe class SqliteBusyWait
{
    private static readonly Lock Installing = new();
    private static volatile bool _installed;

    /// <summary>Registers the hook once per process; connections opened before it keep their setting.</summary>
    public static void Install()
    {
        if (_installed)
        {
            return;
        }

        // Under a lock, so that no caller returns before the hook is in place.
        lock (Installing)
        {
            if (_installed)
            {
                return;
            }

            // Loads the native library the way Microsoft.Data.Sqlite will, so both use one SQLite.
            SQLitePCL.Batteries_V2.Init();
            int result = sqlite3_auto_extension(&OnOpen);
            if (result != 0)
            {
                throw new InvalidOperationException($"SQLite refused the busy-wait hook (error {result}).");
            }

            _installed = true;
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnOpen(IntPtr connection, IntPtr errorMessage, IntPtr api) =>
        sqlite3_busy_timeout(connection, SqliteConnections.BusyTimeoutSeconds * 1000);

    [DllImport("e_sqlite3", CallingConvention = CallingConvention.Cdecl)]
    private static extern int sqlite3_auto_extension(delegate* unmanaged[Cdecl]<IntPtr, IntPtr, IntPtr, int> entryPoint);

    [DllImport("e_sqlite3", CallingConvention = CallingConvention.Cdecl)]
    private static extern int sqlite3_busy_timeout(IntPtr connection, int milliseconds);
}
