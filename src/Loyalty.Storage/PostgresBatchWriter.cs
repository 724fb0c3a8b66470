using Loyalty.Storage.Reports;
using Npgsql;
using NpgsqlTypes;

namespace Loyalty.Storage;

/// <summary>
/// The PostgreSQL ledger's batch writer: one open connection with the batch's two statements
/// prepared on it, and the parameter lists they read, all kept from batch to batch. A batch then
/// costs the server no parsing or planning, and the engine no connection, command, parameter or
/// array of its own: at 2,000 purchases/s a batch holds two or three entries, so what a batch
/// allocated was most of what the PostgreSQL ledger allocated per purchase.
/// <para>
/// One batch at a time: <see cref="PostgresLedgerStore"/> lends it to one caller and opens a
/// second writer for a caller that finds it taken. A writer that failed is disposed, never
/// reused, since its connection's state is then unknown.
/// </para>
/// </summary>
internal sealed class PostgresBatchWriter : IAsyncDisposable
{
    /// <summary>
    /// The entries as parallel arrays, numbered (ordinality), inserted where their keys are free;
    /// the answer is the numbers of those written, so no key is read back as text. Details come as
    /// UTF-8 bytes, as the commit queue encoded them (empty for none), and the server decodes them into the text column.
    /// <para>
    /// A written row is matched to its entry by member, sequence and transaction id: an entry
    /// skipped because its transaction id was taken must not be answered as written when a later
    /// entry of the batch with the same member and sequence but another id went in. Entries equal
    /// in all of these (a resend within one batch) answer the first number only: the rows are
    /// inserted in their numbers' order, so the first is the one written and the rest conflict.
    /// </para>
    /// </summary>
    private const string InsertSql =
        "WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::smallint[], $5::bigint[], $6::text[], $7::bigint[], " +
        "$8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::timestamptz[], $14::timestamptz[], $15::bigint[], " +
        "$16::timestamptz[], $17::bytea[]) WITH ORDINALITY AS t(program_id, member_id, seq, kind, points, txn_id, fingerprint, store_id, " +
        "amount_minor, currency, reason, reference, occurred_at, recorded_at, program_version, available_at, details, i)), " +
        "written AS (INSERT INTO ledger_entries (" + LedgerRows.Columns + ") " +
        "SELECT program_id, member_id, seq, kind, points, txn_id, fingerprint, store_id, amount_minor, currency, reason, reference, " +
        "occurred_at, recorded_at, program_version, available_at, convert_from(NULLIF(details, ''::bytea), 'UTF8') FROM input ORDER BY i " +
        "ON CONFLICT DO NOTHING RETURNING program_id, member_id, seq, txn_id) " +
        "SELECT DISTINCT ON (input.program_id, input.member_id, input.seq) input.i::integer FROM input JOIN written " +
        "ON input.program_id = written.program_id AND input.member_id = written.member_id AND input.seq = written.seq " +
        "AND input.txn_id IS NOT DISTINCT FROM written.txn_id " +
        "ORDER BY input.program_id, input.member_id, input.seq, input.i";

    /// <summary>
    /// A batch's due changes, one row each (collapsed per member, so no row is touched twice): a
    /// null time removes the member's row, an exact time replaces it, any other keeps the earlier
    /// of the two. One statement in the entries' transaction, so that entries are never durable
    /// without their due time, as on SQLite. The rows are upserted in key order, as
    /// <see cref="PostgresLedgerStore.ScheduleProgramAsync"/> upserts a program's, so that two
    /// transactions taking several of the same rows take them in one order.
    /// </summary>
    private const string DuesSql =
        "WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::boolean[]) AS t(program_id, member_id, due_at, exact)), " +
        "removed AS (DELETE FROM member_due AS d USING input AS i " +
        "WHERE i.due_at IS NULL AND d.program_id = i.program_id AND d.member_id = i.member_id) " +
        "INSERT INTO member_due (program_id, member_id, due_at) " +
        "SELECT program_id, member_id, due_at FROM input WHERE due_at IS NOT NULL ORDER BY program_id, member_id " +
        "ON CONFLICT (program_id, member_id) DO UPDATE SET due_at = CASE WHEN " +
        "(SELECT i.exact FROM input AS i WHERE i.program_id = excluded.program_id AND i.member_id = excluded.member_id) " +
        "THEN excluded.due_at ELSE LEAST(member_due.due_at, excluded.due_at) END";

    private readonly NpgsqlConnection _connection;
    private readonly NpgsqlCommand _dues;
    private readonly NpgsqlCommand _insert;
    private readonly NpgsqlCommand _totals;
    private readonly ReportTotals _batchTotals = new();
    private readonly List<(string Program, ReportTotal Total)> _sortedTotals = [];

    private readonly List<string> _programs = [], _members = [];
    private readonly List<long> _sequences = [], _points = [], _fingerprints = [], _amounts = [], _versions = [];
    private readonly List<short> _kinds = [];
    private readonly List<string?> _transactions = [], _stores = [], _currencies = [], _reasons = [], _references = [];
    private readonly List<DateTime> _occurred = [], _recorded = [];
    private readonly List<DateTime?> _available = [];
    private readonly List<ReadOnlyMemory<byte>> _details = [];

    private readonly List<string> _duePrograms = [], _dueMembers = [];
    private readonly List<DateTime?> _dueTimes = [];
    private readonly List<bool> _dueExact = [];

    private readonly List<string> _totalPrograms = [], _totalKeys = [];
    private readonly List<int> _totalDays = [];
    private readonly List<short> _totalMetrics = [];
    private readonly List<long> _totalValues = [];
    private readonly NpgsqlParameter<short> _totalSlot = new() { NpgsqlDbType = NpgsqlDbType.Smallint };

    private PostgresBatchWriter(NpgsqlConnection connection)
    {
        _connection = connection;
        _dues = new NpgsqlCommand(DuesSql, connection);
        AddList(_dues, _duePrograms, NpgsqlDbType.Text);
        AddList(_dues, _dueMembers, NpgsqlDbType.Text);
        AddList(_dues, _dueTimes, NpgsqlDbType.TimestampTz);
        AddList(_dues, _dueExact, NpgsqlDbType.Boolean);

        _insert = new NpgsqlCommand(InsertSql, connection);
        AddList(_insert, _programs, NpgsqlDbType.Text);
        AddList(_insert, _members, NpgsqlDbType.Text);
        AddList(_insert, _sequences, NpgsqlDbType.Bigint);
        AddList(_insert, _kinds, NpgsqlDbType.Smallint);
        AddList(_insert, _points, NpgsqlDbType.Bigint);
        AddList(_insert, _transactions, NpgsqlDbType.Text);
        AddList(_insert, _fingerprints, NpgsqlDbType.Bigint);
        AddList(_insert, _stores, NpgsqlDbType.Text);
        AddList(_insert, _amounts, NpgsqlDbType.Bigint);
        AddList(_insert, _currencies, NpgsqlDbType.Text);
        AddList(_insert, _reasons, NpgsqlDbType.Text);
        AddList(_insert, _references, NpgsqlDbType.Text);
        AddList(_insert, _occurred, NpgsqlDbType.TimestampTz);
        AddList(_insert, _recorded, NpgsqlDbType.TimestampTz);
        AddList(_insert, _versions, NpgsqlDbType.Bigint);
        AddList(_insert, _available, NpgsqlDbType.TimestampTz);
        AddList(_insert, _details, NpgsqlDbType.Bytea);

        _totals = new NpgsqlCommand(PostgresLedgerStore.UpsertTotalsSql, connection);
        AddList(_totals, _totalPrograms, NpgsqlDbType.Text);
        AddList(_totals, _totalDays, NpgsqlDbType.Integer);
        AddList(_totals, _totalMetrics, NpgsqlDbType.Smallint);
        AddList(_totals, _totalKeys, NpgsqlDbType.Text);
        AddList(_totals, _totalValues, NpgsqlDbType.Bigint);
        _totals.Parameters.Add(_totalSlot);
    }

    /// <summary>When the writer last finished a batch (<see cref="Environment.TickCount64"/>).</summary>
    public long LastUsedAt { get; private set; } = Environment.TickCount64;

    /// <summary>Opens a connection from <paramref name="dataSource"/> and prepares the batch's statements on it.</summary>
    public static async Task<PostgresBatchWriter> OpenAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        NpgsqlConnection connection = await dataSource.OpenConnectionAsync(cancellationToken);
        var writer = new PostgresBatchWriter(connection);
        try
        {
            await writer._dues.PrepareAsync(cancellationToken);
            await writer._insert.PrepareAsync(cancellationToken);
            await writer._totals.PrepareAsync(cancellationToken);
            return writer;
        }
        catch
        {
            await writer.DisposeAsync();
            throw;
        }
    }

    /// <summary>Writes one batch as <see cref="ILedgerStore.AppendBatchAsync(IReadOnlyList{LedgerEntry}, bool[], IReadOnlyList{DueChange}, IReadOnlyList{ReadOnlyMemory{byte}}?, IReadOnlyList{EntryGroup}, IReadOnlyList{EntryFence}, CancellationToken)"/> describes.</summary>
    public async Task WriteAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<DueChange> dues, IReadOnlyList<ReadOnlyMemory<byte>>? detailsJson,
        IReadOnlyList<EntryGroup> groups, IReadOnlyList<EntryFence> fences, CancellationToken cancellationToken)
    {
        if (entries.Count == 0 && dues.Count == 0)
        {
            return;
        }

        // The due times and the entries, with the report totals of those written, commit
        // together: one commit (one flush of the server's log) a batch, as on SQLite. Due times
        // were once written each in a commit of its own before the entries; with pending points
        // or expiry, where a member's first purchase moves its due time, that took p99 at
        // 2,000 purchases/s to 850 ms (the load tester's --rules full).
        await using NpgsqlTransaction transaction = await _connection.BeginTransactionAsync(cancellationToken);
        if (dues.Count > 0)
        {
            await WriteDuesAsync(dues, cancellationToken);
        }

        if (entries.Count > 0)
        {
            await InsertAsync(entries, detailsJson, inserted, cancellationToken);
            List<LedgerEntry>? stale = fences.Count > 0 ? await TakeBackFencedAsync(entries, inserted, fences, cancellationToken) : null;
            if (groups.Count > 0 && EntryGroups.TakeBackPartial(entries, inserted, groups) is { } partial)
            {
                (stale ??= []).AddRange(partial);
            }

            if (stale is not null)
            {
                await PostgresLedgerStore.RemoveAsync(_connection, stale, cancellationToken);
            }

            await WriteTotalsAsync(entries, inserted, cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
        LastUsedAt = Environment.TickCount64;
    }

    /// <summary>
    /// Marks not inserted, and returns, the entries whose fence's lock was taken since with a
    /// larger epoch; null when none. The locks' rows are read FOR SHARE, so a newer holder records
    /// its epoch only after this batch commits (see 019_lock_epochs.sql).
    /// </summary>
    private async Task<List<LedgerEntry>?> TakeBackFencedAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<EntryFence> fences, CancellationToken cancellationToken)
    {
        var latest = new Dictionary<string, long>(StringComparer.Ordinal);
        await using (var command = new NpgsqlCommand(
            "SELECT name, epoch FROM lock_epochs_latest WHERE name = ANY($1) ORDER BY name FOR SHARE", _connection))
        {
            command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = [.. fences.Select(f => f.LockName).Distinct()] });
            await using NpgsqlDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                latest[reader.GetString(0)] = reader.GetInt64(1);
            }
        }

        return EntryFence.TakeBackStale(entries, inserted, fences, latest);
    }

    /// <summary>Writes the batch's due changes (<see cref="DuesSql"/>).</summary>
    private async Task WriteDuesAsync(IReadOnlyList<DueChange> dues, CancellationToken cancellationToken)
    {
        try
        {
            IReadOnlyList<DueChange> collapsed = DueChange.Collapse(dues);
            for (int i = 0; i < collapsed.Count; i++)
            {
                DueChange change = collapsed[i];
                _duePrograms.Add(change.ProgramId);
                _dueMembers.Add(change.MemberId);
                _dueTimes.Add(change.DueAt?.UtcDateTime);
                _dueExact.Add(change.Exact);
            }

            await _dues.ExecuteNonQueryAsync(cancellationToken);
        }
        finally
        {
            _duePrograms.Clear();
            _dueMembers.Clear();
            _dueTimes.Clear();
            _dueExact.Clear();
        }
    }

    private async Task InsertAsync(IReadOnlyList<LedgerEntry> entries, IReadOnlyList<ReadOnlyMemory<byte>>? detailsJson, bool[] inserted, CancellationToken cancellationToken)
    {
        try
        {
            // The lists are empty here: every batch's finally below clears them.
            for (int i = 0; i < entries.Count; i++)
            {
                LedgerEntry e = entries[i];
                _programs.Add(e.ProgramId);
                _members.Add(e.MemberId);
                _sequences.Add(e.Sequence);
                _kinds.Add((short)e.Kind);
                _points.Add(e.Points.Value);
                _transactions.Add(e.TransactionId);
                _fingerprints.Add(e.Fingerprint);
                _stores.Add(e.StoreId);
                _amounts.Add(e.AmountMinor);
                _currencies.Add(e.Currency);
                _reasons.Add(e.Reason);
                _references.Add(e.Reference);
                _occurred.Add(e.OccurredAt.UtcDateTime);
                _recorded.Add(e.RecordedAt.UtcDateTime);
                _versions.Add(e.ProgramVersion);
                _available.Add(e.AvailableAt?.UtcDateTime);
                // Bound as they are (the queue's pooled bytes, no copy); none is empty bytes, NULL in the row.
                _details.Add(detailsJson is null ? DetailsJson.WriteUtf8(e.Details) : detailsJson[i]);
            }

            await using NpgsqlDataReader reader = await _insert.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                // Ordinality counts from 1.
                inserted[reader.GetInt32(0) - 1] = true;
            }
        }
        finally
        {
            // The lists start every batch empty, and the entries' texts and details are not kept alive until the next one.
            ClearEntryLists();
        }
    }

    /// <summary>Adds the written entries' totals into one slot of their rows, in the rows' order.</summary>
    private async Task WriteTotalsAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, CancellationToken cancellationToken)
    {
        try
        {
            _batchTotals.AddWritten(entries, inserted);
            if (_batchTotals.Count == 0)
            {
                return;
            }

            _batchTotals.SortInto(_sortedTotals);
            foreach ((string program, ReportTotal total) in _sortedTotals)
            {
                _totalPrograms.Add(program);
                _totalDays.Add(total.Day);
                _totalMetrics.Add((short)total.Metric);
                _totalKeys.Add(total.Key);
                _totalValues.Add(total.Value);
            }

            _totalSlot.TypedValue = PostgresLedgerStore.AnySlot();
            await _totals.ExecuteNonQueryAsync(cancellationToken);
        }
        finally
        {
            // The lists start every batch empty, and nothing of this batch is kept alive until the next one.
            _batchTotals.Clear();
            _sortedTotals.Clear();
            _totalPrograms.Clear();
            _totalDays.Clear();
            _totalMetrics.Clear();
            _totalKeys.Clear();
            _totalValues.Clear();
        }
    }

    private void ClearEntryLists()
    {
        _programs.Clear();
        _members.Clear();
        _sequences.Clear();
        _kinds.Clear();
        _points.Clear();
        _transactions.Clear();
        _fingerprints.Clear();
        _stores.Clear();
        _amounts.Clear();
        _currencies.Clear();
        _reasons.Clear();
        _references.Clear();
        _occurred.Clear();
        _recorded.Clear();
        _versions.Clear();
        _available.Clear();
        _details.Clear();
    }

    /// <summary>A parameter that reads <paramref name="list"/> as a PostgreSQL array of <paramref name="elementType"/> each time the command runs.</summary>
    private static void AddList<T>(NpgsqlCommand command, List<T> list, NpgsqlDbType elementType) =>
        command.Parameters.Add(new NpgsqlParameter<List<T>> { TypedValue = list, NpgsqlDbType = NpgsqlDbType.Array | elementType });

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _dues.DisposeAsync();
        await _insert.DisposeAsync();
        await _totals.DisposeAsync();
        await _connection.DisposeAsync();
    }
}
