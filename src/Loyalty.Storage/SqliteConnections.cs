using Microsoft.Data.Sqlite;

namespace Loyalty.Storage;

/// <summary>
/// Opens the engine's own connections to its SQLite file. Each waits for the file's write lock in
/// SQLite's own busy handler (<c>busy_timeout</c>), which retries within a millisecond or two of
/// the lock coming free. Without it, Microsoft.Data.Sqlite answers a busy file by putting the
/// calling thread to sleep for 150 ms and trying again; with the ledger writer committing almost
/// continuously under load, every periodic write elsewhere (claiming due members, webhook leases,
/// key changes) would take such a sleep on a thread-pool thread. Their checkpoint threshold stays
/// SQLite's default (1,000 pages): while no purchases arrive, their commits are what keeps the
/// write-ahead log bounded; the ledger writer sets its own.
/// </summary>
internal static class SqliteConnections
{
    /// <summary>How long a connection waits for the write lock before its statement fails with SQLITE_BUSY.</summary>
    public const int BusyTimeoutSeconds = 30;

    public static async Task<SqliteConnection> OpenAsync(string connectionString, CancellationToken cancellationToken)
    {
        var connection = new SqliteConnection(connectionString);
        try
        {
            await connection.OpenAsync(cancellationToken);
            await using SqliteCommand command = connection.CreateCommand();
            command.CommandText = $"PRAGMA busy_timeout={BusyTimeoutSeconds * 1000};";
            await command.ExecuteNonQueryAsync(cancellationToken);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }
}
