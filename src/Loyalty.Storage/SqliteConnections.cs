using Microsoft.Data.Sqlite;

namespace Loyalty.Storage;

/// <summary>
/// Opens the engine's own connections to its SQLite file. Each waits for the file's write lock in
/// the engine's busy handler (set by <see cref="SqliteBusyWait"/>'s hook inside SQLite's open, for
/// Orleans' connections as for ours), which tries again within 50 µs to 1 ms of the lock coming
/// free. Without it, Microsoft.Data.Sqlite answers a busy file by putting the
/// calling thread to sleep for 150 ms and trying again; with the ledger writer committing almost
/// continuously under load, every periodic write elsewhere (claiming due members, webhook leases,
/// key changes) would take such a sleep on a thread-pool thread. Their checkpoint threshold stays
/// SQLite's default (1,000 pages): while no purchases arrive, their commits are what keeps the
/// write-ahead log bounded; the ledger writer sets its own.
/// </summary>
internal static class SqliteConnections
{
    /// <summary>How long a connection waits for the write lock before SQLite answers SQLITE_BUSY.</summary>
    public const int BusyTimeoutSeconds = 30;

    /// <summary>Opens a connection (a pooled one when the string allows); installs the busy-wait hook first if nothing has yet.</summary>
    public static async Task<SqliteConnection> OpenAsync(string connectionString, CancellationToken cancellationToken)
    {
        SqliteBusyWait.Install();
        var connection = new SqliteConnection(connectionString);
        try
        {
            await connection.OpenAsync(cancellationToken);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }
}
