using Microsoft.Data.Sqlite;

namespace Loyalty.Storage;

/// <summary>
/// The writer's ledger insert, a <see cref="SqliteStatement"/>: at a thousand rows per batch,
/// binding through Microsoft.Data.Sqlite's parameter objects was a large share of the single
/// writer's time, and the writer's time is the SQLite ledger's throughput.
/// </summary>
internal sealed class SqliteInsert : IDisposable
{
    private const int ColumnCount = 17;
    private readonly SqliteStatement _statement;

    /// <summary>Prepares <paramref name="sql"/>, whose 17 parameters are the ledger's columns in order.</summary>
    public SqliteInsert(SqliteConnection connection, string sql) => _statement = new SqliteStatement(connection, sql, ColumnCount);

    /// <summary>
    /// Inserts one entry with its details' UTF-8 JSON (empty: none, stored as NULL); false when
    /// its (member, sequence) or (program, transaction id) is taken.
    /// </summary>
    public bool Insert(LedgerEntry e, ReadOnlySpan<byte> detailsJson)
    {
        SqliteStatement s = _statement;
        s.Text(1, e.ProgramId);
        s.Text(2, e.MemberId);
        s.Integer(3, e.Sequence);
        s.Integer(4, (long)e.Kind);
        s.Integer(5, e.Points.Value);
        s.Text(6, e.TransactionId);
        s.Integer(7, e.Fingerprint);
        s.Text(8, e.StoreId);
        s.Integer(9, e.AmountMinor);
        s.Text(10, e.Currency);
        s.Text(11, e.Reason);
        s.Text(12, e.Reference);
        s.Integer(13, UnixMicros.From(e.OccurredAt));
        s.Integer(14, UnixMicros.From(e.RecordedAt));
        s.Integer(15, e.ProgramVersion);
        s.Integer(16, e.AvailableAt is { } availableAt ? UnixMicros.From(availableAt) : null);
        s.Utf8OrNull(17, detailsJson);
        return s.Run() == 1;
    }

    /// <inheritdoc />
    public void Dispose() => _statement.Dispose();
}
