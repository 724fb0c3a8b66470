using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Loyalty.Storage;

/// <summary>
/// The writer's ledger insert, prepared once on the writer's connection and run through SQLite's
/// C API. Microsoft.Data.Sqlite's command makes a data reader and binds each parameter through
/// an object on every execution; at a thousand rows per batch that was a large share of the
/// single writer's time, and the writer's time is the SQLite ledger's throughput. It runs inside
/// the writer's transaction, which Microsoft.Data.Sqlite begins with BEGIN IMMEDIATE: the write
/// lock is taken (with the connection's busy timeout) before the first insert, which therefore
/// never waits for another writer.
/// </summary>
internal sealed class SqliteInsert : IDisposable
{
    private const int ColumnCount = 17;
    private readonly sqlite3 _db;
    private readonly sqlite3_stmt _statement;

    /// <summary>Prepares <paramref name="sql"/>, whose 17 parameters are the ledger's columns in order.</summary>
    public SqliteInsert(SqliteConnection connection, string sql)
    {
        _db = connection.Handle ?? throw new InvalidOperationException("The writer's connection is not open.");
        Check(raw.sqlite3_prepare_v2(_db, sql, out _statement));
        if (raw.sqlite3_bind_parameter_count(_statement) != ColumnCount)
        {
            _statement.Dispose();
            throw new InvalidOperationException($"The ledger insert must have {ColumnCount} parameters.");
        }
    }

    /// <summary>Inserts one entry; false when its (member, sequence) or (program, transaction id) is taken.</summary>
    public bool Insert(LedgerEntry e, string? detailsJson)
    {
        Text(1, e.ProgramId);
        Text(2, e.MemberId);
        Check(raw.sqlite3_bind_int64(_statement, 3, e.Sequence));
        Check(raw.sqlite3_bind_int64(_statement, 4, (long)e.Kind));
        Check(raw.sqlite3_bind_int64(_statement, 5, e.Points.Value));
        Text(6, e.TransactionId);
        Check(raw.sqlite3_bind_int64(_statement, 7, e.Fingerprint));
        Text(8, e.StoreId);
        Check(raw.sqlite3_bind_int64(_statement, 9, e.AmountMinor));
        Text(10, e.Currency);
        Text(11, e.Reason);
        Text(12, e.Reference);
        Check(raw.sqlite3_bind_int64(_statement, 13, UnixMicros.From(e.OccurredAt)));
        Check(raw.sqlite3_bind_int64(_statement, 14, UnixMicros.From(e.RecordedAt)));
        Check(raw.sqlite3_bind_int64(_statement, 15, e.ProgramVersion));
        Check(e.AvailableAt is { } availableAt
            ? raw.sqlite3_bind_int64(_statement, 16, UnixMicros.From(availableAt))
            : raw.sqlite3_bind_null(_statement, 16));
        Text(17, detailsJson);
        int stepped = raw.sqlite3_step(_statement);
        int reset = raw.sqlite3_reset(_statement);
        if (stepped != raw.SQLITE_DONE)
        {
            Check(stepped);
            Check(reset);
        }

        return raw.sqlite3_changes(_db) == 1;
    }

    /// <inheritdoc />
    public void Dispose() => _statement.Dispose();

    private void Text(int index, string? value) =>
        Check(value is null ? raw.sqlite3_bind_null(_statement, index) : raw.sqlite3_bind_text(_statement, index, value));

    private void Check(int result)
    {
        if (result is not raw.SQLITE_OK and not raw.SQLITE_DONE and not raw.SQLITE_ROW)
        {
            SqliteException.ThrowExceptionForRC(result, _db);
        }
    }
}
