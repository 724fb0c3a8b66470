using Loyalty.Storage.Reports;
using Microsoft.Data.Sqlite;
using SQLitePCL;
using System.Diagnostics.Metrics;

namespace Loyalty.Storage;

/// <summary>
/// The ledger writer's connection and every statement it runs per batch, each prepared once and
/// run through SQLite's C API (<see cref="SqliteStatement"/>): the transaction's BEGIN IMMEDIATE
/// and COMMIT, the entries, the due dates and the report totals. At a steady 2,000 purchases/s
/// most batches carry one or two entries, so whatever a batch costs, a purchase costs: through
/// Microsoft.Data.Sqlite, a transaction object, a command and a data reader for BEGIN and for
/// COMMIT (each SQL text parsed again) and a command per due date came to about a tenth of
/// everything the engine allocated per purchase.
/// </summary>
internal sealed class SqliteWriter : IDisposable
{
    private const string InsertSql =
        "INSERT INTO ledger_entries (" + LedgerRows.Columns + ") VALUES " +
        "($p, $m, $s, $k, $pts, $t, $f, $st, $a, $c, $r, $ref, $o, $rec, $v, $av, $d) ON CONFLICT DO NOTHING";

    /// <summary>
    /// Adds to a report total in slot 0 (one engine writes the file), held at 64 bits' bounds as
    /// PostgreSQL's is: SQLite's own sum past them would store a floating-point total.
    /// </summary>
    public const string AddTotalSql =
        "INSERT INTO report_totals (program_id, day, metric, key, slot, value) VALUES ($p, $d, $m, $k, 0, $v) " +
        "ON CONFLICT (program_id, day, metric, key, slot) DO UPDATE SET value = CASE " +
        "WHEN excluded.value > 0 AND report_totals.value > 9223372036854775807 - excluded.value THEN 9223372036854775807 " +
        "WHEN excluded.value < 0 AND report_totals.value < (-9223372036854775807 - 1) - excluded.value THEN (-9223372036854775807 - 1) " +
        "ELSE report_totals.value + excluded.value END";

    private const string DueSetSql =
        "INSERT INTO member_due (program_id, member_id, due_at) VALUES ($p, $m, $d) " +
        "ON CONFLICT (program_id, member_id) DO UPDATE SET due_at = excluded.due_at";

    private const string DueEarlierSql =
        "INSERT INTO member_due (program_id, member_id, due_at) VALUES ($p, $m, $d) " +
        "ON CONFLICT (program_id, member_id) DO UPDATE SET due_at = min(member_due.due_at, excluded.due_at)";

    private const string DueDeleteSql = "DELETE FROM member_due WHERE program_id = $p AND member_id = $m";

    private const string RemoveSql = "DELETE FROM ledger_entries WHERE program_id = $p AND member_id = $m AND seq = $s";

    private readonly SqliteConnection _connection;
    private readonly SqliteStatement _begin, _commit, _rollback, _addTotal, _dueSet, _dueEarlier, _dueDelete, _remove;
    private readonly SqliteInsert _insert;

    /// <summary>Prepares the statements on <paramref name="connection"/>, which the writer then owns.</summary>
    public SqliteWriter(SqliteConnection connection)
    {
        _connection = connection;
        var prepared = new List<IDisposable>();
        try
        {
            T Prepare<T>(T statement)
                where T : IDisposable
            {
                prepared.Add(statement);
                return statement;
            }

            _begin = Prepare(new SqliteStatement(connection, "BEGIN IMMEDIATE", parameterCount: 0));
            _commit = Prepare(new SqliteStatement(connection, "COMMIT", parameterCount: 0));
            _rollback = Prepare(new SqliteStatement(connection, "ROLLBACK", parameterCount: 0));
            _insert = Prepare(new SqliteInsert(connection, InsertSql));
            _addTotal = Prepare(new SqliteStatement(connection, AddTotalSql, parameterCount: 5));
            _dueSet = Prepare(new SqliteStatement(connection, DueSetSql, parameterCount: 3));
            _dueEarlier = Prepare(new SqliteStatement(connection, DueEarlierSql, parameterCount: 3));
            _dueDelete = Prepare(new SqliteStatement(connection, DueDeleteSql, parameterCount: 2));
            _remove = Prepare(new SqliteStatement(connection, RemoveSql, parameterCount: 3));
        }
        catch
        {
            // A statement left unfinalized would keep the connection half open after it is closed.
            prepared.ForEach(p => p.Dispose());
            throw;
        }
    }

    /// <summary>Takes the write lock (waiting in SQLite's busy handler) and starts the batch's transaction.</summary>
    public void Begin() => _begin.Run();

    /// <summary>Commits the batch: with <c>synchronous=FULL</c>, durable when this returns.</summary>
    public void Commit() => _commit.Run();

    /// <summary>The values of the <c>step</c> tag of <c>loyalty.ledger.checkpoint_duration</c>.</summary>
    public const string CheckpointStepCopy = "copy", CheckpointStepSync = "sync", CheckpointStepFinish = "finish";

    private static readonly Histogram<double> CheckpointDuration = LedgerCommitQueue.Meter.CreateHistogram<double>(
        "loyalty.ledger.checkpoint_duration", "ms", "SQLite: the checkpointer's copy and sync of the log, and the writer's finish of it");

    /// <summary>Records one step of a checkpoint, between two <see cref="System.Diagnostics.Stopwatch"/> timestamps.</summary>
    public static void RecordCheckpoint(string step, long started, long ended) =>
        CheckpointDuration.Record(System.Diagnostics.Stopwatch.GetElapsedTime(started, ended).TotalMilliseconds, new KeyValuePair<string, object?>("step", step));

    /// <summary>
    /// Copies the write-ahead log's committed frames into the database file: a passive checkpoint
    /// on the writer's connection, outside any transaction. A failure is left to the next pass:
    /// the log stays bounded by <c>wal_autocheckpoint</c>, and a file that cannot be written fails
    /// the next batch, which reports it.
    /// </summary>
    public void CopyLogBack() => _ = CopyLogBack(_connection);

    /// <summary>
    /// A passive checkpoint of the main database on <paramref name="connection"/>, through the
    /// pragma, which opens the log first on a connection that has not read yet (the C API then
    /// does nothing): how many of the log's frames are now in the database file.
    /// </summary>
    public static long CopyLogBack(SqliteConnection connection)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "PRAGMA wal_checkpoint(PASSIVE);";
        using SqliteDataReader reader = command.ExecuteReader();
        return reader.Read() ? reader.GetInt64(CheckpointedColumn) : 0;
    }

    /// <summary>The pragma's row is (busy, frames in the log, frames checkpointed).</summary>
    private const int CheckpointedColumn = 2;

    /// <summary>Inserts one entry; false when its (member, sequence) or (program, transaction id) is taken.</summary>
    public bool Insert(LedgerEntry entry, ReadOnlySpan<byte> detailsJson) => _insert.Insert(entry, detailsJson);

    /// <summary>Applies the batch's due-date changes, one per member (see <see cref="DueChange.Collapse"/>); they are rare: one per member and expiry period.</summary>
    public void WriteDues(IReadOnlyList<DueChange> dues)
    {
        IReadOnlyList<DueChange> collapsed = DueChange.Collapse(dues);
        for (int i = 0; i < collapsed.Count; i++)
        {
            DueChange change = collapsed[i];
            SqliteStatement statement = change.DueAt is null ? _dueDelete : change.Exact ? _dueSet : _dueEarlier;
            statement.Text(1, change.ProgramId);
            statement.Text(2, change.MemberId);
            if (change.DueAt is { } due)
            {
                statement.Integer(3, UnixMicros.From(due));
            }

            statement.Run();
        }
    }

    /// <summary>
    /// Deletes entries this transaction inserted (the part of a group that could not go in whole).
    /// Nobody ever saw them, so a rowid this frees and a later insert takes again still comes
    /// after every rowid a reader of events has seen.
    /// </summary>
    public void Remove(List<LedgerEntry> entries)
    {
        foreach (LedgerEntry entry in entries)
        {
            _remove.Text(1, entry.ProgramId);
            _remove.Text(2, entry.MemberId);
            _remove.Integer(3, entry.Sequence);
            _remove.Run();
        }
    }

    /// <summary>
    /// Adds the batch's report totals (one writer: one slot, any order). A batch holds few distinct
    /// totals (days × figures), so one prepared statement run per total is cheap.
    /// </summary>
    public void AddTotals(ReportTotals totals) => AddTotals(_addTotal, totals);

    /// <summary>Adds <paramref name="totals"/> through a statement prepared from <see cref="AddTotalSql"/>.</summary>
    public static void AddTotals(SqliteStatement addTotal, ReportTotals totals)
    {
        foreach (((string programId, int day, ReportMetric metric, string key), long value) in totals)
        {
            addTotal.Text(1, programId);
            addTotal.Integer(2, day);
            addTotal.Integer(3, (long)metric);
            addTotal.Text(4, key);
            addTotal.Integer(5, value);
            addTotal.Run();
        }
    }

    /// <summary>
    /// After a failure: rolls back what the transaction wrote, if one is open, and makes sure the
    /// connection is closed rather than pooled, since Microsoft.Data.Sqlite does not know of a
    /// transaction begun through the C API. Never throws.
    /// </summary>
    public void Abandon()
    {
        try
        {
            if (_connection.Handle is { } handle && raw.sqlite3_get_autocommit(handle) == 0)
            {
                _rollback.Run();
            }
        }
        catch (SqliteException)
        {
            // Closing the connection below rolls back whatever is still open.
        }

        SqliteConnection.ClearPool(_connection);
        Dispose();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (SqliteStatement statement in (ReadOnlySpan<SqliteStatement>)[_begin, _commit, _rollback, _addTotal, _dueSet, _dueEarlier, _dueDelete, _remove])
        {
            statement.Dispose();
        }

        _insert.Dispose();
        if (_connection.Handle is { } handle)
        {
            // Back to the pool as an ordinary connection, so that its later waits are not counted as the writer's.
            SqliteBusyWait.Mark(handle, ledgerWriter: false);
        }

        _connection.Dispose();
    }
}
