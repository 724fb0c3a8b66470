using System.Diagnostics;
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
/// once its pauses add up to <see cref="SqliteConnections.BusyTimeoutSeconds"/> (a little more in
/// time, since a sleep overruns).
/// </para>
/// </summary>
internal static unsafe class SqliteBusyWait
{
    /// <summary>The pauses between attempts, in microseconds: the first attempts', the next ones', and every later one's.</summary>
    private const int ShortPause = 50, MiddlePause = 250, LongPause = 1000;

    /// <summary>Attempts with the short pause, then (up to this count) with the middle one (see <see cref="PauseMicroseconds"/>).</summary>
    private const int ShortAttempts = 20, MiddleAttempts = 100;

    /// <summary>Attempts after which a wait gives up: their pauses add up to the busy timeout.</summary>
    internal static readonly int AttemptsMax = MiddleAttempts
        + (int)(((SqliteConnections.BusyTimeoutSeconds * 1_000_000L) - (ShortAttempts * ShortPause) - ((MiddleAttempts - ShortAttempts) * MiddlePause)) / LongPause);

    private static Meter Meter => LedgerCommitQueue.Meter;

    /// <summary>Waits for another connection's write lock (one each time SQLite found it taken and called the handler afresh).</summary>
    private static readonly Counter<long> LockWaits = Meter.CreateCounter<long>("loyalty.sqlite.lock_waits", "{wait}");

    /// <summary>Time slept waiting for the write lock, as measured around each pause.</summary>
    private static readonly Counter<double> LockWaitTime = Meter.CreateCounter<double>("loyalty.sqlite.lock_wait_time", "ms");

    private static readonly KeyValuePair<string, object?> LedgerWriter = new("connection", "ledger_writer");
    private static readonly KeyValuePair<string, object?> Other = new("connection", "other");

    private static readonly Lock Installing = new();
    private static volatile bool _installed;

    /// <summary>Waits begun on this thread (SQLite calls the handler on the thread running the statement), all and the ledger writer's.</summary>
    [ThreadStatic]
    private static int t_waits, t_writerWaits;

    /// <summary>libc's <c>usleep</c>, found when the hook is installed; null where there is none (Windows).</summary>
    private static delegate* unmanaged[Cdecl]<uint, int> _usleep;

    /// <summary>How many times statements run on this thread have begun to wait in the handler, in all and on a ledger writer's connection.</summary>
    internal static (int All, int Writer) WaitsOnThisThread => (t_waits, t_writerWaits);

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
            if (NativeLibrary.TryLoad("libc", typeof(SqliteBusyWait).Assembly, null, out IntPtr libc)
                && NativeLibrary.TryGetExport(libc, "usleep", out IntPtr usleep))
            {
                _usleep = (delegate* unmanaged[Cdecl]<uint, int>)usleep;
            }

            int result = sqlite3_auto_extension(&OnOpen);
            if (result != 0)
            {
                throw new InvalidOperationException($"SQLite refused the busy-wait hook (error {result}).");
            }

            _installed = true;
        }
    }

    /// <summary>
    /// Marks an open connection as the ledger writer's (so that its waits are counted apart), or,
    /// with <paramref name="ledgerWriter"/> false, as an ordinary one again before it goes back to the pool.
    /// </summary>
    public static void Mark(SQLitePCL.sqlite3 connection, bool ledgerWriter)
    {
        int result = sqlite3_busy_handler(connection.DangerousGetHandle(), &OnBusy, ledgerWriter ? 1 : 0);
        if (result != 0)
        {
            throw new InvalidOperationException($"SQLite refused the busy handler (error {result}).");
        }
    }

    /// <summary>The pause before attempt <paramref name="attempt"/> (0 for the first retry).</summary>
    internal static int PauseMicroseconds(int attempt) =>
        attempt < ShortAttempts ? ShortPause : attempt < MiddleAttempts ? MiddlePause : LongPause;

    /// <summary>Whether SQLite should try again before attempt <paramref name="attempt"/>, or give up with SQLITE_BUSY.</summary>
    internal static bool TriesAgain(int attempt) => attempt < AttemptsMax;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnOpen(IntPtr connection, IntPtr errorMessage, IntPtr api) =>
        sqlite3_busy_handler(connection, &OnBusy, 0);

    /// <summary>
    /// SQLite's busy callback: nonzero to try again, zero to give up. <paramref name="attempt"/>
    /// counts from 0 for each wait; <paramref name="writer"/> is 1 on the ledger writer's connection.
    /// Nothing may escape it (an exception here would end the process), so a failure to count or
    /// to sleep still answers "try again" until the attempts run out.
    /// </summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnBusy(nint writer, int attempt)
    {
        if (!TriesAgain(attempt))
        {
            return 0;
        }

        try
        {
            bool isWriter = writer == 1;
            if (attempt == 0)
            {
                t_waits++;
                if (isWriter)
                {
                    t_writerWaits++;
                }

                LockWaits.Add(1, isWriter ? LedgerWriter : Other);
            }

            long started = Stopwatch.GetTimestamp();
            Pause(PauseMicroseconds(attempt));
            LockWaitTime.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds, isWriter ? LedgerWriter : Other);
        }
        catch
        {
            // A listener of the counters failed: the wait itself goes on.
        }

        return 1;
    }

    /// <summary>Sleeps for about <paramref name="microseconds"/>; without <c>usleep</c>, for a millisecond or more.</summary>
    private static void Pause(int microseconds)
    {
        if (_usleep is not null)
        {
            _ = _usleep((uint)microseconds);
        }
        else
        {
            Thread.Sleep(1);
        }
    }

    [DllImport("e_sqlite3", CallingConvention = CallingConvention.Cdecl)]
    private static extern int sqlite3_auto_extension(delegate* unmanaged[Cdecl]<IntPtr, IntPtr, IntPtr, int> entryPoint);

    [DllImport("e_sqlite3", CallingConvention = CallingConvention.Cdecl)]
    private static extern int sqlite3_busy_handler(IntPtr connection, delegate* unmanaged[Cdecl]<nint, int, int> handler, nint argument);
}
