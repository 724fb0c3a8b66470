using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Data.Sqlite;

namespace Loyalty.Tests.Storage;

/// <summary>How the engine's connections to its SQLite file, and Orleans' on the same file, wait for the write lock.</summary>
public sealed class SqliteConnectionsTests
{
    /// <summary>How the waiting connection came to be.</summary>
    public enum Opened
    {
        /// <summary>By the engine (SqliteConnections).</summary>
        ByTheEngine,

        /// <summary>As Orleans' ADO.NET storage opens its own: the provider's factory, the string, Open; no statement of ours.</summary>
        AsOrleansOpensIt,

        /// <summary>By the engine, then marked as the ledger writer's.</summary>
        AsTheLedgerWriter,

        /// <summary>Marked as the writer's, then back as an ordinary one (as when the writer's connection returns to the pool).</summary>
        MarkedBackFromTheWriter,
    }

    /// <summary>
    /// How long the lock stays held once the waiter's thread has started. On a loaded machine the
    /// waiter may still not reach SQLite in that time; then it never waited, and the test tries
    /// again on a fresh file rather than count nothing (a handler that never counts still fails).
    /// </summary>
    private const int HeldMilliseconds = 100;

    private const int ContentionAttemptsMax = 3;

    [Theory]
    [InlineData(Opened.ByTheEngine, 0)]
    [InlineData(Opened.AsOrleansOpensIt, 0)]
    [InlineData(Opened.AsTheLedgerWriter, 1)]
    [InlineData(Opened.MarkedBackFromTheWriter, 0)]
    public async Task AConnection_WaitsForTheWriteLockInTheEnginesHandler_CountedAsTheWritersOnlyOnItsConnection(Opened how, int writerWaits)
    {
        (int all, int writer, bool doneWhileHeld, long rows) = (0, 0, false, 0);
        for (int attempt = 0; attempt < ContentionAttemptsMax && all == 0 && !doneWhileHeld; attempt++)
        {
            StorageOptions options = TestDatabases.Create(Backend.Sqlite, $"busy-{how}-{attempt}");
            await using SqliteConnection waiter = await OpenAsync(options, how);
            ((all, writer), doneWhileHeld, rows) = await ContendAsync(options, waiter);
        }

        Assert.False(doneWhileHeld);
        Assert.Equal((1, writerWaits), (all, writer));
        Assert.Equal(2L, rows);
    }

    [Fact]
    public void TheHandlersPauses_GrowFrom50Microseconds_AndItGivesUpOnceTheyAddUpToTheBusyTimeout()
    {
        long total = 0;
        for (int attempt = 0; attempt < SqliteBusyWait.AttemptsMax; attempt++)
        {
            total += SqliteBusyWait.PauseMicroseconds(attempt);
        }

        Assert.True(SqliteBusyWait.TriesAgain(SqliteBusyWait.AttemptsMax - 1));
        Assert.False(SqliteBusyWait.TriesAgain(SqliteBusyWait.AttemptsMax));
        Assert.Equal(50, SqliteBusyWait.PauseMicroseconds(0));
        Assert.Equal(1000, SqliteBusyWait.PauseMicroseconds(SqliteBusyWait.AttemptsMax - 1));
        Assert.InRange(total, SqliteConnections.BusyTimeoutSeconds * 1_000_000L, (SqliteConnections.BusyTimeoutSeconds * 1_000_000L) + 1000);
    }

    private static async Task<SqliteConnection> OpenAsync(StorageOptions options, Opened how)
    {
        if (how == Opened.AsOrleansOpensIt)
        {
            SqliteBusyWait.Install();
            var connection = (SqliteConnection)SqliteFactory.Instance.CreateConnection();
            connection.ConnectionString = options.ConnectionString;
            await connection.OpenAsync();
            return connection;
        }

        SqliteConnection ours = await SqliteConnections.OpenAsync(options.ConnectionString, CancellationToken.None);
        if (how is Opened.AsTheLedgerWriter or Opened.MarkedBackFromTheWriter)
        {
            SqliteBusyWait.Mark(ours.Handle!, ledgerWriter: true);
        }

        if (how == Opened.MarkedBackFromTheWriter)
        {
            SqliteBusyWait.Mark(ours.Handle!, ledgerWriter: false);
        }

        return ours;
    }

    /// <summary>
    /// Holds the write lock on a connection of its own while <paramref name="waiter"/> inserts a
    /// row, then releases it: how many waits the waiter's thread began in the handler, whether the
    /// insert finished while the lock was held, and the rows at the end.
    /// </summary>
    private static async Task<((int All, int Writer) Waits, bool DoneWhileHeld, long Rows)> ContendAsync(StorageOptions options, SqliteConnection waiter)
    {
        await using SqliteConnection holder = await SqliteConnections.OpenAsync(options.ConnectionString, CancellationToken.None);
        await ExecuteAsync(holder, "PRAGMA journal_mode=WAL; CREATE TABLE t (v INTEGER);");
        await ExecuteAsync(holder, "BEGIN IMMEDIATE; INSERT INTO t VALUES (1);");

        // Microsoft.Data.Sqlite's async calls run synchronously, so the handler runs on this task's thread.
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task<(int, int)> write = Task.Run(async () =>
        {
            (int all, int writer) = SqliteBusyWait.WaitsOnThisThread;
            started.SetResult();
            await ExecuteAsync(waiter, "INSERT INTO t VALUES (2);");
            return (SqliteBusyWait.WaitsOnThisThread.All - all, SqliteBusyWait.WaitsOnThisThread.Writer - writer);
        });
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await Task.Delay(HeldMilliseconds);
        bool doneWhileHeld = write.IsCompleted;
        await ExecuteAsync(holder, "COMMIT;");
        (int, int) waits = await write.WaitAsync(TimeSpan.FromSeconds(30));
        return (waits, doneWhileHeld, await ScalarAsync(holder, "SELECT count(*) FROM t;"));
    }

    private static async Task<long> ScalarAsync(SqliteConnection connection, string sql)
    {
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        return (long)(await command.ExecuteScalarAsync())!;
    }

    private static async Task ExecuteAsync(SqliteConnection connection, string sql)
    {
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync();
    }
}
