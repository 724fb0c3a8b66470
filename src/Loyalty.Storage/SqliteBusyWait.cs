using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Loyalty.Storage;

/// <summary>
/// Makes every SQLite connection the process opens, including those Orleans' ADO.NET snapshot
/// storage opens for itself, wait for the write lock in a busy handler of the engine's own.
/// Orleans creates its connections from Microsoft.Data.Sqlite's factory and runs no statement of
/// ours on them, so a <c>PRAGMA</c> cannot reach them; SQLite's automatic extensions can: the
/// function registered here runs inside every <c>sqlite3_open</c> in the process.
/// <para>
/// Without a handler, Microsoft.Data.Sqlite answers a busy file by sleeping 150 ms before it tries
/// again. SQLite's own <c>busy_timeout</c> is better but still coarse: it sleeps 1, 2, 5, 10, 15,
/// 20, 25 ms… between attempts, so a writer that finds the lock taken by a commit lasting half a
/// millisecond (a due-member claim, a snapshot) waits 3–8 ms, the ledger's writer included, and
/// every purchase of its next batch with it. This handler tries again after 50 µs for the first
/// millisecond, every 250 µs for the next 20 ms, then every millisecond, and gives up (SQLITE_BUSY)
/// after <see cref="SqliteConnections.BusyTimeoutSeconds"/>.
/// </para>
/// </summary>
internal static unsafe class SqliteBusyWait
{
    /// <summary>Attempts with the shortest pause, then with the middle one (see <see cref="PauseMicroseconds"/>).</summary>
    private const int ShortAttempts = 20, MiddleAttempts = 100;

    /// <summary>Attempts after which a wait gives up: their pauses add up to the busy timeout.</summary>
    internal static readonly int AttemptsMax = MiddleAttempts + (SqliteConnections.BusyTimeoutSeconds * 1000)
        - ((ShortAttempts * 50) + ((MiddleAttempts - ShortAttempts) * 250)) / 1000;

    private static readonly Meter Meter = new(LedgerCommitQueue.MeterName);

    /// <summary>Waits for another connection's write lock (one per statement that found it taken).</summary>
    private static readonly Counter<long> LockWaits = Meter.CreateCounter<long>("loyalty.sqlite.lock_waits", "{wait}");

    /// <summary>Time slept waiting for the write lock.</summary>
    private static readonly Counter<double> LockWaitTime = Meter.CreateCounter<double>("loyalty.sqlite.lock_wait_time", "ms");

    private static readonly KeyValuePair<string, object?> LedgerWriter = new("connection", "ledger_writer");
    private static readonly KeyValuePair<string, object?> Other = new("connection", "other");

    private static readonly Lock Installing = new();
    private static volatile bool _installed;

    /// <summary>Waits begun on this thread (SQLite calls the handler on the thread running the statement).</summary>
    [ThreadStatic]
    private static int t_waits;

    /// <summary>How many times a statement run on this thread has waited in the handler.</summary>
    internal static int WaitsOnThisThread => t_waits;

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

    /// <summary>Marks an open connection as the ledger writer's, so that its waits are counted apart.</summary>
    public static void MarkLedgerWriter(SQLitePCL.sqlite3 connection)
    {
        int result = sqlite3_busy_handler(connection.DangerousGetHandle(), &OnBusy, 1);
        if (result != 0)
        {
            throw new InvalidOperationException($"SQLite refused the busy handler (error {result}).");
        }
    }

    /// <summary>The pause before attempt <paramref name="attempt"/> (0 for the first retry).</summary>
    internal static int PauseMicroseconds(int attempt) =>
        attempt < ShortAttempts ? 50 : attempt < MiddleAttempts ? 250 : 1000;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnOpen(IntPtr connection, IntPtr errorMessage, IntPtr api) =>
        sqlite3_busy_handler(connection, &OnBusy, 0);

    /// <summary>
    /// SQLite's busy callback: nonzero to try again, zero to give up. <paramref name="attempt"/>
    /// counts from 0 for each wait; <paramref name="writer"/> is 1 on the ledger writer's connection.
    /// </summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnBusy(nint writer, int attempt)
    {
        if (attempt >= AttemptsMax)
        {
            return 0;
        }

        int pause = PauseMicroseconds(attempt);
        bool isWriter = writer == 1;
        if (attempt == 0)
        {
            t_waits++;
            LockWaits.Add(1, isWriter ? LedgerWriter : Other);
        }

        LockWaitTime.Add(pause / 1000.0, isWriter ? LedgerWriter : Other);
        _ = usleep((uint)pause);
        return 1;
    }

    [DllImport("e_sqlite3", CallingConvention = CallingConvention.Cdecl)]
    private static extern int sqlite3_auto_extension(delegate* unmanaged[Cdecl]<IntPtr, IntPtr, IntPtr, int> entryPoint);

    [DllImport("e_sqlite3", CallingConvention = CallingConvention.Cdecl)]
    private static extern int sqlite3_busy_handler(IntPtr connection, delegate* unmanaged[Cdecl]<nint, int, int> handler, nint argument);

    [DllImport("libc", CallingConvention = CallingConvention.Cdecl)]
    private static extern int usleep(uint microseconds);
}
