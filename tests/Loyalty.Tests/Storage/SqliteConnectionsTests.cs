using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Data.Sqlite;

namespace Loyalty.Tests.Storage;

/// <summary>How the engine's connections to its SQLite file, and Orleans' on the same file, wait for the write lock.</summary>
public sealed class SqliteConnectionsTests
{
    [Fact]
    public async Task Open_WaitsForTheWriteLockInSQLitesOwnHandler_NotInASleepOf150Ms()
    {
        StorageOptions options = TestDatabases.Create(Backend.Sqlite, "busy");

        await using SqliteConnection connection = await SqliteConnections.OpenAsync(options.ConnectionString, CancellationToken.None);

        Assert.Equal(SqliteConnections.BusyTimeoutSeconds * 1000L, await PragmaAsync(connection, "busy_timeout"));
    }

    [Fact]
    public async Task AConnectionOpenedElsewhere_AsOrleansOpensItsOwn_AlsoWaitsInSQLitesHandler()
    {
        StorageOptions options = TestDatabases.Create(Backend.Sqlite, "orleans");
        SqliteBusyWait.Install();

        // Orleans' ADO.NET storage: the provider's factory, the connection string, Open; no statement of ours.
        await using var connection = (SqliteConnection)SqliteFactory.Instance.CreateConnection();
        connection.ConnectionString = options.ConnectionString;
        await connection.OpenAsync();

        Assert.Equal(SqliteConnections.BusyTimeoutSeconds * 1000L, await PragmaAsync(connection, "busy_timeout"));
    }

    [Fact]
    public async Task AWriteWhileAnotherConnectionHoldsTheLock_CompletesOnceItIsReleased()
    {
        StorageOptions options = TestDatabases.Create(Backend.Sqlite, "contended");
        await using SqliteConnection holder = await SqliteConnections.OpenAsync(options.ConnectionString, CancellationToken.None);
        await ExecuteAsync(holder, "PRAGMA journal_mode=WAL; CREATE TABLE t (v INTEGER);");
        await using SqliteConnection waiter = await SqliteConnections.OpenAsync(options.ConnectionString, CancellationToken.None);
        await ExecuteAsync(holder, "BEGIN IMMEDIATE; INSERT INTO t VALUES (1);");

        // Microsoft.Data.Sqlite's async calls run synchronously: the wait happens on its own thread.
        Task write = Task.Run(() => ExecuteAsync(waiter, "INSERT INTO t VALUES (2);"));
        await Task.Delay(50);
        bool doneWhileHeld = write.IsCompleted;
        await ExecuteAsync(holder, "COMMIT;");
        await write.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(doneWhileHeld);
        Assert.Equal(2L, await ScalarAsync(holder, "SELECT count(*) FROM t;"));
    }

    private static async Task<long> PragmaAsync(SqliteConnection connection, string pragma) => await ScalarAsync(connection, $"PRAGMA {pragma};");

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
