using Loyalty.Storage.Reports;
using Npgsql;
using NpgsqlTypes;

namespace Loyalty.Storage;

/// <summary>
/// The ledger in PostgreSQL. A batch is one INSERT of parallel arrays (unnest), so a commit of
/// thousands of entries is one round trip. Several silos may append at once: the primary key
/// and the transaction-id index decide, and conflicting rows are reported, not raised.
/// </summary>
public sealed class PostgresLedgerStore : ILedgerStore, IAsyncDisposable
{
    private const string Columns = LedgerRows.Columns;

    /// <summary>timestamptz columns come back as UTC DateTime.</summary>
    private static readonly Func<System.Data.Common.DbDataReader, int, DateTimeOffset> ReadTime =
        static (r, i) => new DateTimeOffset(r.GetDateTime(i), TimeSpan.Zero);

    /// <summary>Serialises schema migrations of concurrently starting silos (an arbitrary constant).</summary>
    private const long MigrationLockKey = 0x4C6F79616C7479; // "Loyalty"

    /// <summary>
    /// Report totals slots: each batch adds into one chosen at random, so engines committing at
    /// the same moment rarely wait for each other's row locks on one day's totals.
    /// </summary>
    private const int TotalsSlots = 16;

    /// <summary>How many times a batch is written when the server ends it to break a deadlock.</summary>
    private const int BatchAttemptsMax = 3;

    /// <summary>Batches written again after the server ended them to break a deadlock (or a serialization failure).</summary>
    private static readonly System.Diagnostics.Metrics.Counter<long> BatchesRetried =
        LedgerCommitQueue.Meter.CreateCounter<long>("loyalty.ledger.batches_retried", "{batch}");

    /// <summary>How long the batch writer's connection may sit unused before the next batch opens a fresh one.</summary>
    internal const long WriterIdleMaxMs = 30_000;

    /// <summary>
    /// How long a batch writer's transaction may wait between its statements before the server
    /// ends it. A batch sends its statements back to back, so only a writer that stopped half-way
    /// waits this long: a node frozen (paused, swapped out) or cut off from the server. Its
    /// transaction has taken an id, and every node's event reads stop at the oldest id still
    /// running, so until the server ends it the whole cluster's events out stand still. Ended, the
    /// batch is rolled back whole; the frozen node's commit then fails and its members are answered
    /// that nothing was recorded.
    /// </summary>
    public const int WriterIdleInTransactionMaxMs = 10_000;

    /// <summary>The accepted <see cref="StorageOptions.PostgresWriterIdleInTransactionMs"/> other than 0 (off).</summary>
    internal const int WriterIdleInTransactionMsMin = 1_000, WriterIdleInTransactionMsMax = 600_000;

    private readonly NpgsqlDataSource _dataSource;

    /// <summary>
    /// Connections for batch writers only, each ending a transaction left waiting (see
    /// <see cref="WriterIdleInTransactionMaxMs"/>). A pool of their own, so that the setting never
    /// reaches the connections whose transactions wait by design (the program desk's lock).
    /// </summary>
    internal NpgsqlDataSource WriterSource { get; }

    /// <summary>The batch writer between batches; null while one is lent out (see <see cref="AppendBatchAsync(IReadOnlyList{LedgerEntry}, bool[], IReadOnlyList{DueChange}, IReadOnlyList{ReadOnlyMemory{byte}}?, IReadOnlyList{EntryGroup}, IReadOnlyList{EntryFence}, CancellationToken)"/>).</summary>
    private PostgresBatchWriter? _idleWriter;
    private volatile bool _disposed;

    /// <summary>Closes the batch writer's connection once it has been idle for <see cref="WriterIdleMaxMs"/>, so an engine that stopped writing holds none.</summary>
    private readonly Timer _idleSweep;

    /// <summary>Creates the store over a pooled data source.</summary>
    public PostgresLedgerStore(string connectionString)
        : this(connectionString, WriterIdleInTransactionMaxMs)
    {
    }

    /// <summary>
    /// Creates the store, its batch writers' transactions ended after <paramref name="writerIdleInTransactionMaxMs"/>
    /// left waiting (see <see cref="StorageOptions.PostgresWriterIdleInTransactionMs"/>; 0 sends no such setting).
    /// </summary>
    public PostgresLedgerStore(string connectionString, int writerIdleInTransactionMaxMs)
    {
        if (writerIdleInTransactionMaxMs is not 0 and (< WriterIdleInTransactionMsMin or > WriterIdleInTransactionMsMax))
        {
            throw new ArgumentOutOfRangeException(nameof(writerIdleInTransactionMaxMs), writerIdleInTransactionMaxMs,
                $"Storage:PostgresWriterIdleInTransactionMs must be 0 (off) or {WriterIdleInTransactionMsMin}..{WriterIdleInTransactionMsMax}.");
        }

        _dataSource = NpgsqlDataSource.Create(connectionString);
        var writer = new NpgsqlConnectionStringBuilder(connectionString);
        if (writerIdleInTransactionMaxMs > 0)
        {
            writer.Options = $"{writer.Options} -c idle_in_transaction_session_timeout={writerIdleInTransactionMaxMs.ToString(System.Globalization.CultureInfo.InvariantCulture)}".Trim();
        }

        WriterSource = NpgsqlDataSource.Create(writer.ConnectionString);
        _idleSweep = new Timer(static store => ((PostgresLedgerStore)store!).SweepIdleWriter(), this, WriterIdleMaxMs, WriterIdleMaxMs);
    }

    /// <summary>Takes the idle batch writer, closes it when it has waited too long, and puts it back otherwise.</summary>
    private void SweepIdleWriter()
    {
        if (Interlocked.Exchange(ref _idleWriter, null) is not { } writer)
        {
            return;
        }

        if (Environment.TickCount64 - writer.LastUsedAt <= WriterIdleMaxMs && !_disposed
            && Interlocked.CompareExchange(ref _idleWriter, writer, null) is null)
        {
            return;
        }

        _ = CloseQuietlyAsync(writer);
    }

    /// <summary>
    /// Closes a writer that is done with. Closing only says goodbye to the server: a failure means
    /// the connection was gone already, and must neither fail a batch nor hide the batch's own error.
    /// </summary>
    private static async Task CloseQuietlyAsync(PostgresBatchWriter writer)
    {
        try
        {
            await writer.DisposeAsync();
        }
        catch (Exception e) when (e is NpgsqlException or IOException or ObjectDisposedException or InvalidOperationException)
        {
            // Gone already.
        }
    }

    /// <inheritdoc />
    public async Task MigrateAsync(CancellationToken cancellationToken)
    {
        await using NpgsqlConnection connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync(cancellationToken);
        await ExecuteAsync(connection, $"SELECT pg_advisory_xact_lock({MigrationLockKey});", cancellationToken);
        await ExecuteAsync(connection,
            "CREATE TABLE IF NOT EXISTS loyalty_schema_versions (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());",
            cancellationToken);
        var applied = new HashSet<int>();
        await using (var select = new NpgsqlCommand("SELECT version FROM loyalty_schema_versions;", connection))
        await using (NpgsqlDataReader reader = await select.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                applied.Add(reader.GetInt32(0));
            }
        }

        foreach (SchemaScripts.Script script in SchemaScripts.For("Postgres").Where(s => !applied.Contains(s.Version)))
        {
            await ExecuteAsync(connection, script.Text, cancellationToken);
            await using var record = new NpgsqlCommand("INSERT INTO loyalty_schema_versions (version, name) VALUES ($1, $2);", connection);
            record.Parameters.AddWithValue(script.Version);
            record.Parameters.AddWithValue(script.Name);
            await record.ExecuteNonQueryAsync(cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
    }

    /// <inheritdoc />
    public bool StoresDetailsAsJson => true;

    /// <inheritdoc />
    /// <remarks>
    /// Runs on the store's <see cref="PostgresBatchWriter"/> (an open connection with its
    /// statements prepared), which one caller at a time borrows; a caller that finds it lent out
    /// gets one of its own. A writer that failed is dropped, and one idle longer than
    /// <see cref="WriterIdleMaxMs"/> is replaced, so a connection the network or the server closed
    /// meanwhile does not fail the next batch.
    /// </remarks>
    public Task AppendBatchAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<DueChange> dues, IReadOnlyList<ReadOnlyMemory<byte>>? detailsJson,
        IReadOnlyList<EntryGroup> groups, CancellationToken cancellationToken) =>
        AppendBatchAsync(entries, inserted, dues, detailsJson, groups, [], cancellationToken);

    /// <inheritdoc />
    public async Task AppendBatchAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<DueChange> dues, IReadOnlyList<ReadOnlyMemory<byte>>? detailsJson,
        IReadOnlyList<EntryGroup> groups, IReadOnlyList<EntryFence> fences, CancellationToken cancellationToken)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                await AppendBatchOnceAsync(entries, inserted, dues, detailsJson, groups, fences, cancellationToken);
                return;
            }
            catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure
                && attempt < BatchAttemptsMax && !cancellationToken.IsCancellationRequested)
            {
                // The server chose this batch's transaction to end a deadlock (with another node's
                // batch, or a program change scheduling its members' due times): it was rolled back
                // whole, before its commit, so it is written again rather than every member in it
                // being answered UNAVAILABLE.
                BatchesRetried.Add(1);
            }
        }
    }

    private async Task AppendBatchOnceAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<DueChange> dues, IReadOnlyList<ReadOnlyMemory<byte>>? detailsJson,
        IReadOnlyList<EntryGroup> groups, IReadOnlyList<EntryFence> fences, CancellationToken cancellationToken)
    {
        Array.Clear(inserted);
        PostgresBatchWriter? writer = Interlocked.Exchange(ref _idleWriter, null);
        if (writer is not null && Environment.TickCount64 - writer.LastUsedAt > WriterIdleMaxMs)
        {
            await CloseQuietlyAsync(writer);
            writer = null;
        }

        writer ??= await PostgresBatchWriter.OpenAsync(WriterSource, cancellationToken);
        try
        {
            await writer.WriteAsync(entries, inserted, dues, detailsJson, groups, fences, cancellationToken);
        }
        catch
        {
            Array.Clear(inserted);
            await CloseQuietlyAsync(writer);
            throw;
        }

        if (Interlocked.CompareExchange(ref _idleWriter, writer, null) is not null)
        {
            // Another caller's writer is kept already.
            await writer.DisposeAsync();
        }
        else if (_disposed && ReferenceEquals(Interlocked.CompareExchange(ref _idleWriter, null, writer), writer))
        {
            // The store closed meanwhile, and did not take the writer itself.
            await writer.DisposeAsync();
        }
    }

    /// <summary>Gives the report totals slot a batch adds into.</summary>
    internal static short AnySlot() => (short)Random.Shared.Next(TotalsSlots);

    /// <summary>Adds totals into one slot of their rows, in the rows' order (so two engines sharing a slot cannot deadlock).</summary>
    private static async Task WriteTotalsAsync(NpgsqlConnection connection, ReportTotals totals, short slot, CancellationToken cancellationToken)
    {
        if (totals.Count == 0)
        {
            return;
        }

        int n = totals.Count, i = 0;
        var programs = new string[n];
        var days = new int[n];
        var metrics = new short[n];
        var keys = new string[n];
        var values = new long[n];
        foreach ((string program, ReportTotal total) in totals.Sorted)
        {
            (programs[i], days[i], metrics[i], keys[i], values[i]) = (program, total.Day, (short)total.Metric, total.Key, total.Value);
            i++;
        }

        await using var command = new NpgsqlCommand(UpsertTotalsSql, connection);
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = programs });
        command.Parameters.Add(new NpgsqlParameter<int[]> { TypedValue = days });
        command.Parameters.Add(new NpgsqlParameter<short[]> { TypedValue = metrics });
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = keys });
        command.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = values });
        command.Parameters.Add(new NpgsqlParameter<short> { TypedValue = slot });
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>A numeric expression held within bigint: a report total must never fail a commit or a read.</summary>
    private static string Saturated(string numeric) => $"LEAST(GREATEST({numeric}, {long.MinValue}), {long.MaxValue})::bigint";

    /// <summary>Adds a batch's totals (parallel arrays) into one slot; built once, not per batch.</summary>
    internal static readonly string UpsertTotalsSql =
        "INSERT INTO report_totals (program_id, day, metric, key, slot, value) " +
        "SELECT p, d, m, k, $6, v FROM unnest($1::text[], $2::int[], $3::smallint[], $4::text[], $5::bigint[]) AS t(p, d, m, k, v) " +
        "ON CONFLICT (program_id, day, metric, key, slot) DO UPDATE SET value = " + Saturated("report_totals.value::numeric + excluded.value") + ";";

    /// <inheritdoc />
    public async Task<IReadOnlyList<ReportTotal>> ReadTotalsAsync(string programId, int fromDay, int toDay, bool perDay, CancellationToken cancellationToken)
    {
        string day = perDay ? "day" : "$2";
        await using NpgsqlCommand command = _dataSource.CreateCommand(
            $"SELECT {day}, metric, key, {Saturated("sum(value)")} FROM report_totals WHERE program_id = $1 AND day >= $2 AND day < $3 GROUP BY {day}, metric, key ORDER BY 1, 2, 3;");
        command.Parameters.AddWithValue(programId);
        command.Parameters.AddWithValue(fromDay);
        command.Parameters.AddWithValue(toDay);
        var totals = new List<ReportTotal>();
        await using NpgsqlDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            totals.Add(new ReportTotal(reader.GetInt32(0), (ReportMetric)reader.GetInt16(1), reader.GetString(2), reader.GetInt64(3)));
        }

        return totals;
    }

    /// <inheritdoc />
    public async Task ReplaceTotalsAsync(string programId, ReportTotals totals, CancellationToken cancellationToken)
    {
        await using NpgsqlConnection connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync(cancellationToken);
        foreach (string sql in (string[])["DELETE FROM report_totals WHERE program_id = $1;", "DELETE FROM report_rebuilds WHERE program_id = $1;"])
        {
            await using var delete = new NpgsqlCommand(sql, connection);
            delete.Parameters.AddWithValue(programId);
            await delete.ExecuteNonQueryAsync(cancellationToken);
        }

        await WriteTotalsAsync(connection, totals, 0, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task MarkTotalsForRebuildAsync(string? programId, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(programId is null
            ? "INSERT INTO report_rebuilds (program_id) SELECT DISTINCT program_id FROM ledger_entries ON CONFLICT DO NOTHING;"
            : "INSERT INTO report_rebuilds (program_id) VALUES ($1) ON CONFLICT DO NOTHING;");
        if (programId is not null)
        {
            command.Parameters.AddWithValue(programId);
        }

        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<string>> ReadTotalsToRebuildAsync(CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand("SELECT program_id FROM report_rebuilds ORDER BY program_id;");
        var ids = new List<string>();
        await using NpgsqlDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            ids.Add(reader.GetString(0));
        }

        return ids;
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<LedgerEntry>> ReadAfterAsync(string programId, string memberId, long afterSequence, CancellationToken cancellationToken) =>
        ReadAfterAsync(programId, memberId, afterSequence, int.MaxValue, cancellationToken);

    /// <inheritdoc />
    public async Task<IReadOnlyList<LedgerEntry>> ReadAfterAsync(string programId, string memberId, long afterSequence, int limit, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(
            $"SELECT {Columns} FROM ledger_entries WHERE program_id = $1 AND member_id = $2 AND seq > $3 ORDER BY seq LIMIT $4;");
        command.Parameters.AddWithValue(programId);
        command.Parameters.AddWithValue(memberId);
        command.Parameters.AddWithValue(afterSequence);
        command.Parameters.AddWithValue((long)limit);
        return await LedgerRows.ReadAllAsync(command, ReadTime, cancellationToken);
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<LedgerEntry>> ReadPageAsync(string programId, string memberId, long beforeSequence, int limit, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(
            $"SELECT {Columns} FROM ledger_entries WHERE program_id = $1 AND member_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4;");
        command.Parameters.AddWithValue(programId);
        command.Parameters.AddWithValue(memberId);
        command.Parameters.AddWithValue(beforeSequence);
        command.Parameters.AddWithValue(limit);
        return await LedgerRows.ReadAllAsync(command, ReadTime, cancellationToken);
    }

    /// <summary>The oldest transaction id still running (or the next one): every row below it is final.</summary>
    private const string VisibleHorizonSql = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

    /// <inheritdoc />
    public Task<IReadOnlyList<PositionedEntry>> ReadEventsAsync(string programId, EventPosition after, int limit, CancellationToken cancellationToken) =>
        ReadPositionedAsync(programId, after, limit, $"AND commit_tx < {VisibleHorizonSql}", cancellationToken);

    /// <inheritdoc />
    public Task<IReadOnlyList<PositionedEntry>> ReadCommittedAsync(string programId, EventPosition after, int limit, CancellationToken cancellationToken) =>
        ReadPositionedAsync(programId, after, limit, "", cancellationToken);

    /// <summary>A program's entries after a position in commit order, <paramref name="horizon"/> (a condition on commit_tx, or none) limiting which.</summary>
    private async Task<IReadOnlyList<PositionedEntry>> ReadPositionedAsync(string programId, EventPosition after, int limit, string horizon, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(
            $"SELECT {Columns}, commit_tx, pos FROM ledger_entries WHERE program_id = $1 AND (commit_tx, pos) > ($2, $3) {horizon} ORDER BY commit_tx, pos LIMIT $4;");
        command.Parameters.AddWithValue(programId);
        command.Parameters.AddWithValue(after.Commit);
        command.Parameters.AddWithValue(after.Row);
        command.Parameters.AddWithValue(limit);
        return await LedgerRows.ReadPositionedAsync(command, ReadTime, cancellationToken);
    }

    /// <inheritdoc />
    public async Task<bool> HasEntriesAsync(string programId, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand("SELECT EXISTS (SELECT 1 FROM ledger_entries WHERE program_id = $1);");
        command.Parameters.AddWithValue(programId);
        return await command.ExecuteScalarAsync(cancellationToken) is true;
    }

    /// <inheritdoc />
    public async Task<PositionedEntry?> ReadEventAsync(string programId, string memberId, long sequence, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(
            $"SELECT {Columns}, commit_tx, pos FROM ledger_entries WHERE program_id = $1 AND member_id = $2 AND seq = $3;");
        command.Parameters.AddWithValue(programId);
        command.Parameters.AddWithValue(memberId);
        command.Parameters.AddWithValue(sequence);
        IReadOnlyList<PositionedEntry> rows = await LedgerRows.ReadPositionedAsync(command, ReadTime, cancellationToken);
        return rows.Count == 0 ? null : rows[0];
    }

    /// <inheritdoc />
    public async Task<EventPosition> ReadEventsEndAsync(string programId, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(
            $"SELECT commit_tx, pos FROM ledger_entries WHERE program_id = $1 AND commit_tx < {VisibleHorizonSql} ORDER BY commit_tx DESC, pos DESC LIMIT 1;");
        command.Parameters.AddWithValue(programId);
        await using NpgsqlDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? new EventPosition(reader.GetInt64(0), reader.GetInt64(1)) : EventPosition.Start;
    }

    /// <inheritdoc />
    public async Task<LedgerEntry?> FindTransactionAsync(string programId, string transactionId, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(
            $"SELECT {Columns} FROM ledger_entries WHERE program_id = $1 AND txn_id = $2;");
        command.Parameters.AddWithValue(programId);
        command.Parameters.AddWithValue(transactionId);
        IReadOnlyList<LedgerEntry> rows = await LedgerRows.ReadAllAsync(command, ReadTime, cancellationToken);
        return rows.Count == 0 ? null : rows[0];
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<LedgerEntry>> ReadReturnsOfAsync(string programId, string purchaseTransactionId, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(
            $"SELECT {Columns} FROM ledger_entries WHERE program_id = $1 AND reference = $2 AND kind = {(int)LedgerEntryKind.Return} ORDER BY recorded_at, member_id, seq;");
        command.Parameters.AddWithValue(programId);
        command.Parameters.AddWithValue(purchaseTransactionId);
        return await LedgerRows.ReadAllAsync(command, ReadTime, cancellationToken);
    }

    /// <summary>Removes entries this transaction inserted (the part of a group that could not go in whole).</summary>
    internal static async Task RemoveAsync(NpgsqlConnection connection, List<LedgerEntry> entries, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(
            "DELETE FROM ledger_entries e USING unnest($1::text[], $2::text[], $3::bigint[]) AS r(p, m, s) " +
            "WHERE e.program_id = r.p AND e.member_id = r.m AND e.seq = r.s;", connection);
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = [.. entries.Select(e => e.ProgramId)] });
        command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = [.. entries.Select(e => e.MemberId)] });
        command.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = [.. entries.Select(e => e.Sequence)] });
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<DueMember>> ClaimDueAsync(DateTimeOffset now, DateTimeOffset leaseUntil, int limit, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(
            // An UPDATE returns its rows in no particular order: the claimed are answered in their due order from the CTE.
            "WITH c AS (SELECT program_id, member_id, due_at FROM member_due WHERE due_at <= $1 " +
            "ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED), " +
            "u AS (UPDATE member_due d SET due_at = $2 FROM c " +
            "WHERE d.program_id = c.program_id AND d.member_id = c.member_id RETURNING d.program_id, d.member_id) " +
            "SELECT c.program_id, c.member_id FROM c JOIN u ON u.program_id = c.program_id AND u.member_id = c.member_id " +
            "ORDER BY c.due_at, c.program_id, c.member_id;");
        command.Parameters.AddWithValue(now.UtcDateTime);
        command.Parameters.AddWithValue(leaseUntil.UtcDateTime);
        command.Parameters.AddWithValue(limit);
        var claimed = new List<DueMember>();
        await using NpgsqlDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            claimed.Add(new DueMember(reader.GetString(0), reader.GetString(1)));
        }

        return claimed;
    }

    /// <inheritdoc />
    public async Task ScheduleProgramAsync(string programId, DateTimeOffset dueAt, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(
            // In key order, as the batch writer upserts due rows: two transactions then take shared rows in one order.
            // DISTINCT: an upsert may not touch one row twice, should a member ever have two enrolment entries.
            "INSERT INTO member_due (program_id, member_id, due_at) SELECT DISTINCT program_id, member_id, $2::timestamptz FROM ledger_entries WHERE program_id = $1 AND kind = 1 " +
            "ORDER BY member_id ON CONFLICT (program_id, member_id) DO UPDATE SET due_at = LEAST(member_due.due_at, excluded.due_at);");
        command.Parameters.AddWithValue(programId);
        command.Parameters.AddWithValue(dueAt.UtcDateTime);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<DateTimeOffset?> ReadDueAsync(string programId, string memberId, CancellationToken cancellationToken) =>
        await ReadMemberValueAsync("SELECT due_at FROM member_due WHERE program_id = $1 AND member_id = $2;", programId, memberId, cancellationToken)
            is DateTime due ? new DateTimeOffset(due, TimeSpan.Zero) : null;

    /// <inheritdoc />
    public async Task WriteProfileAsync(string programId, string memberId, string? fieldsJson, DateTimeOffset at, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(fieldsJson is null
            ? "DELETE FROM member_profiles WHERE program_id = $1 AND member_id = $2;"
            : "INSERT INTO member_profiles (program_id, member_id, fields, updated_at) VALUES ($1, $2, $3, $4) " +
              "ON CONFLICT (program_id, member_id) DO UPDATE SET fields = excluded.fields, updated_at = excluded.updated_at;");
        command.Parameters.AddWithValue(programId);
        command.Parameters.AddWithValue(memberId);
        if (fieldsJson is not null)
        {
            command.Parameters.AddWithValue(fieldsJson);
            command.Parameters.AddWithValue(at.UtcDateTime);
        }

        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<string?> ReadProfileAsync(string programId, string memberId, CancellationToken cancellationToken) =>
        await ReadMemberValueAsync("SELECT fields FROM member_profiles WHERE program_id = $1 AND member_id = $2;", programId, memberId, cancellationToken) as string;

    /// <summary>The one value <paramref name="sql"/> selects for a member ($1, $2); null when there is no row.</summary>
    private async Task<object?> ReadMemberValueAsync(string sql, string programId, string memberId, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(sql);
        command.Parameters.AddWithValue(programId);
        command.Parameters.AddWithValue(memberId);
        return await command.ExecuteScalarAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task AnonymiseAsync(string programId, string memberId, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand(
            "UPDATE ledger_entries SET reason = CASE WHEN kind IN (5, 17, 26, 34) THEN 'erased' WHEN kind IN (20, 23) THEN NULL ELSE reason END, details = CASE WHEN kind IN (6, 14) THEN NULL ELSE details END, " +
            "reference = CASE WHEN kind = 22 THEN NULL ELSE reference END " +
            "WHERE program_id = $1 AND member_id = $2 AND kind IN (5, 6, 14, 17, 20, 22, 23, 26, 34);");
        command.Parameters.AddWithValue(programId);
        command.Parameters.AddWithValue(memberId);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        _disposed = true;
        await _idleSweep.DisposeAsync();
        if (Interlocked.Exchange(ref _idleWriter, null) is { } writer)
        {
            await writer.DisposeAsync();
        }

        await WriterSource.DisposeAsync();
        await _dataSource.DisposeAsync();
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    /// <remarks>
    /// A transaction-scoped advisory lock on its own connection: released when the handle commits,
    /// and by PostgreSQL when the engine's connection dies with it, so a crash never leaves it held.
    /// </remarks>
    public async Task<HeldLock> LockAsync(string name, CancellationToken cancellationToken)
    {
        NpgsqlConnection connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        try
        {
            NpgsqlTransaction transaction = await connection.BeginTransactionAsync(cancellationToken);
            await using (var command = new NpgsqlCommand("SELECT pg_advisory_xact_lock(hashtextextended(@name, 0))", connection, transaction))
            {
                command.Parameters.AddWithValue("name", name);
                await command.ExecuteNonQueryAsync(cancellationToken);
            }

            // The epoch is taken once the lock is held, and the next holder gets the lock (and then
            // its epoch) only after this transaction ends; the lock's own session is asked after
            // the epoch is drawn, so it was still held then (a holder whose session died while it
            // drew would otherwise carry an epoch drawn after a later holder's). The epoch is drawn
            // and recorded on another connection, in transactions of their own: a write gives a
            // transaction an id, and the event readers wait for every open one (see
            // 019_lock_epochs.sql). From the batch writers' pool, which lock holders do not drain.
            // Recorded only if larger, so the latest never goes back.
            long drawn = await OnWriterConnectionAsync("SELECT nextval('lock_epochs')", null, cancellationToken) as long?
                ?? throw new InvalidOperationException("The sequence lock_epochs gave no value.");
            await using (var alive = new NpgsqlCommand("SELECT 1", connection, transaction))
            {
                await alive.ExecuteScalarAsync(cancellationToken);
            }

            if (await OnWriterConnectionAsync(
                "INSERT INTO lock_epochs_latest AS l (name, epoch) VALUES ($1, $2) " +
                "ON CONFLICT (name) DO UPDATE SET epoch = EXCLUDED.epoch WHERE l.epoch < EXCLUDED.epoch RETURNING epoch",
                [name, drawn], cancellationToken) is not long id)
            {
                throw new LedgerUnavailableException($"The lock '{name}' has a later holder than this one; it is not held.");
            }

            return new AdvisoryLock(connection, transaction, id);
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    /// <inheritdoc />
    public async Task<long> ReadLockEpochAsync(string name, CancellationToken cancellationToken)
    {
        await using NpgsqlCommand command = _dataSource.CreateCommand("SELECT epoch FROM lock_epochs_latest WHERE name = $1");
        command.Parameters.AddWithValue(name);
        return await command.ExecuteScalarAsync(cancellationToken) is long epoch ? epoch : 0;
    }

    /// <summary>One statement's scalar on a connection of the batch writers' pool, in a transaction of its own.</summary>
    private async Task<object?> OnWriterConnectionAsync(string sql, object[]? parameters, CancellationToken cancellationToken)
    {
        await using NpgsqlConnection connection = await WriterSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (object parameter in parameters ?? [])
        {
            command.Parameters.Add(new NpgsqlParameter { Value = parameter });
        }

        return await command.ExecuteScalarAsync(cancellationToken);
    }

    /// <summary>A held advisory lock: ending its transaction releases it.</summary>
    private sealed class AdvisoryLock(NpgsqlConnection connection, NpgsqlTransaction transaction, long epoch) : HeldLock
    {
        public override long Epoch => epoch;

        public override async ValueTask DisposeAsync()
        {
            try
            {
                await transaction.CommitAsync();
            }
            finally
            {
                await transaction.DisposeAsync();
                await connection.DisposeAsync();
            }
        }
    }
}
