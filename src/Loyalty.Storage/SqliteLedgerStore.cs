using Loyalty.Storage.Reports;
using Microsoft.Data.Sqlite;

namespace Loyalty.Storage;

/// <summary>
/// The ledger in an embedded SQLite file, in WAL mode with synchronous=FULL so that a committed
/// batch survives a crash of the process and of the machine. One connection is kept for the
/// writer; readers use pooled connections, which WAL lets run beside the writer.
/// </summary>
public sealed class SqliteLedgerStore : ILedgerStore, IDisposable
{
    private const string Columns = LedgerRows.Columns;

    /// <summary>Timestamps are stored as microseconds since the Unix epoch.</summary>
    private static readonly Func<System.Data.Common.DbDataReader, int, DateTimeOffset> ReadTime =
        static (r, i) => UnixMicros.To(r.GetInt64(i));

    /// <summary>The default of <see cref="StorageOptions.SqliteWalCheckpointPages"/> (80 MiB of 4 KiB pages).</summary>
    public const int WalCheckpointPagesDefault = 20_000;

    /// <summary>The smallest and largest accepted <see cref="StorageOptions.SqliteWalCheckpointPages"/>.</summary>
    public const int WalCheckpointPagesMin = 100, WalCheckpointPagesMax = 1_000_000;

    /// <summary>
    /// The default of <see cref="StorageOptions.SqliteCheckpointIntervalMs"/>. At 2,000 purchases/s
    /// with 100,000 members it took away a stall of 20–30 ms every 2 s (docs/performance.md,
    /// 2026-12-03, night).
    /// </summary>
    public const int CheckpointIntervalMsDefault = 250;

    /// <summary>The accepted <see cref="StorageOptions.SqliteCheckpointIntervalMs"/> other than 0 (off).</summary>
    public const int CheckpointIntervalMsMin = 100, CheckpointIntervalMsMax = 60_000;

    private readonly string _connectionString;
    private readonly int _walCheckpointPages;
    private readonly TimeSpan? _checkpointInterval;
    private readonly CancellationTokenSource _stopping = new();
    private Task? _checkpointer;

    /// <summary>1 when the checkpointer has finished a pass that the writer has not yet completed (see <see cref="CompleteCheckpointPass"/>).</summary>
    private int _checkpointPassed;
    private int _disposed;
    /// <summary>The ledger writer's connection and prepared statements; made by the first batch, and again after a failed one.</summary>
    private SqliteWriter? _writer;
    private FileStream? _owner;

    /// <summary>The writer's batch's report totals, one instance reused (batches are written one at a time).</summary>
    private readonly ReportTotals _batchTotals = new();

    /// <summary>Creates the store; the database file's folder is created if missing.</summary>
    /// <param name="connectionString">The ADO.NET connection string; it needs a Data Source.</param>
    /// <param name="walCheckpointPages">See <see cref="StorageOptions.SqliteWalCheckpointPages"/>.</param>
    /// <param name="checkpointIntervalMs">See <see cref="StorageOptions.SqliteCheckpointIntervalMs"/>.</param>
    public SqliteLedgerStore(string connectionString, int walCheckpointPages = WalCheckpointPagesDefault, int checkpointIntervalMs = CheckpointIntervalMsDefault)
    {
        if (checkpointIntervalMs != 0 && checkpointIntervalMs is < CheckpointIntervalMsMin or > CheckpointIntervalMsMax)
        {
            throw new ArgumentOutOfRangeException(nameof(checkpointIntervalMs), checkpointIntervalMs,
                $"Storage:SqliteCheckpointIntervalMs must be 0 (off) or {CheckpointIntervalMsMin}..{CheckpointIntervalMsMax}.");
        }

        _checkpointInterval = checkpointIntervalMs == 0 ? null : TimeSpan.FromMilliseconds(checkpointIntervalMs);
        if (walCheckpointPages is < WalCheckpointPagesMin or > WalCheckpointPagesMax)
        {
            throw new ArgumentOutOfRangeException(nameof(walCheckpointPages), walCheckpointPages,
                $"Storage:SqliteWalCheckpointPages must be {WalCheckpointPagesMin}..{WalCheckpointPagesMax}.");
        }

        _walCheckpointPages = walCheckpointPages;
        var builder = new SqliteConnectionStringBuilder(connectionString);
        if (string.IsNullOrWhiteSpace(builder.DataSource))
        {
            throw new ArgumentException("The SQLite connection string needs a Data Source.", nameof(connectionString));
        }

        string? folder = Path.GetDirectoryName(Path.GetFullPath(builder.DataSource));
        if (!string.IsNullOrEmpty(folder))
        {
            Directory.CreateDirectory(folder);
        }

        builder.Pooling = true;
        builder.DefaultTimeout = SqliteConnections.BusyTimeoutSeconds;
        _connectionString = builder.ToString();
    }

    /// <inheritdoc />
    public async Task MigrateAsync(CancellationToken cancellationToken)
    {
        TakeFile();
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        // WAL is a property of the file, so it is set once here for every later connection.
        await ExecuteAsync(connection, "PRAGMA journal_mode=WAL;", cancellationToken);
        await ExecuteAsync(connection, "BEGIN IMMEDIATE;", cancellationToken);
        try
        {
            await ExecuteAsync(connection,
                "CREATE TABLE IF NOT EXISTS loyalty_schema_versions (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);",
                cancellationToken);
            var applied = new HashSet<long>();
            await using (SqliteCommand select = connection.CreateCommand())
            {
                select.CommandText = "SELECT version FROM loyalty_schema_versions;";
                await using SqliteDataReader reader = await select.ExecuteReaderAsync(cancellationToken);
                while (await reader.ReadAsync(cancellationToken))
                {
                    applied.Add(reader.GetInt64(0));
                }
            }

            foreach (SchemaScripts.Script script in SchemaScripts.For("Sqlite").Where(s => !applied.Contains(s.Version)))
            {
                await ExecuteAsync(connection, script.Text, cancellationToken);
                await using SqliteCommand record = connection.CreateCommand();
                record.CommandText = "INSERT INTO loyalty_schema_versions (version, name, applied_at) VALUES ($v, $n, CURRENT_TIMESTAMP);";
                record.Parameters.AddWithValue("$v", script.Version);
                record.Parameters.AddWithValue("$n", script.Name);
                await record.ExecuteNonQueryAsync(cancellationToken);
            }

            await ExecuteAsync(connection, "COMMIT;", cancellationToken);
        }
        catch
        {
            await ExecuteAsync(connection, "ROLLBACK;", CancellationToken.None);
            throw;
        }
    }

    /// <inheritdoc />
    public bool StoresDetailsAsJson => true;

    /// <inheritdoc />
    public async Task AppendBatchAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<DueChange> dues, IReadOnlyList<ReadOnlyMemory<byte>>? detailsJson,
        IReadOnlyList<EntryGroup> groups, CancellationToken cancellationToken)
    {
        try
        {
            SqliteWriter writer = _writer ?? await PrepareWriterAsync(cancellationToken);
            CompleteCheckpointPass(writer);
            writer.Begin();
            if (dues.Count > 0)
            {
                writer.WriteDues(dues);
            }

            for (int i = 0; i < entries.Count; i++)
            {
                inserted[i] = writer.Insert(entries[i], detailsJson is null ? DetailsJson.WriteUtf8(entries[i].Details) : detailsJson[i].Span);
            }

            if (groups.Count > 0 && EntryGroups.TakeBackPartial(entries, inserted, groups) is { } partial)
            {
                writer.Remove(partial);
            }

            _batchTotals.Clear();
            _batchTotals.AddWritten(entries, inserted);
            writer.AddTotals(_batchTotals);
            writer.Commit();
        }
        catch
        {
            // The connection may be in any state; the next batch starts from a fresh one.
            Array.Clear(inserted);
            _writer?.Abandon();
            _writer = null;
            throw;
        }
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<LedgerEntry>> ReadAfterAsync(string programId, string memberId, long afterSequence, CancellationToken cancellationToken) =>
        ReadAfterAsync(programId, memberId, afterSequence, int.MaxValue, cancellationToken);

    /// <inheritdoc />
    public async Task<IReadOnlyList<LedgerEntry>> ReadAfterAsync(string programId, string memberId, long afterSequence, int limit, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = $"SELECT {Columns} FROM ledger_entries WHERE program_id = $p AND member_id = $m AND seq > $s ORDER BY seq LIMIT $l;";
        command.Parameters.AddWithValue("$p", programId);
        command.Parameters.AddWithValue("$m", memberId);
        command.Parameters.AddWithValue("$s", afterSequence);
        command.Parameters.AddWithValue("$l", limit);
        return await LedgerRows.ReadAllAsync(command, ReadTime, cancellationToken);
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<LedgerEntry>> ReadPageAsync(string programId, string memberId, long beforeSequence, int limit, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = $"SELECT {Columns} FROM ledger_entries WHERE program_id = $p AND member_id = $m AND seq < $s ORDER BY seq DESC LIMIT $l;";
        command.Parameters.AddWithValue("$p", programId);
        command.Parameters.AddWithValue("$m", memberId);
        command.Parameters.AddWithValue("$s", beforeSequence);
        command.Parameters.AddWithValue("$l", limit);
        return await LedgerRows.ReadAllAsync(command, ReadTime, cancellationToken);
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<PositionedEntry>> ReadEventsAsync(string programId, EventPosition after, int limit, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = $"SELECT {Columns}, 0, rowid FROM ledger_entries WHERE program_id = $p AND rowid > $r ORDER BY rowid LIMIT $l;";
        command.Parameters.AddWithValue("$p", programId);
        command.Parameters.AddWithValue("$r", after.Row);
        command.Parameters.AddWithValue("$l", limit);
        return await LedgerRows.ReadPositionedAsync(command, ReadTime, cancellationToken);
    }

    /// <inheritdoc />
    public async Task<PositionedEntry?> ReadEventAsync(string programId, string memberId, long sequence, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = $"SELECT {Columns}, 0, rowid FROM ledger_entries WHERE program_id = $p AND member_id = $m AND seq = $s;";
        command.Parameters.AddWithValue("$p", programId);
        command.Parameters.AddWithValue("$m", memberId);
        command.Parameters.AddWithValue("$s", sequence);
        IReadOnlyList<PositionedEntry> rows = await LedgerRows.ReadPositionedAsync(command, ReadTime, cancellationToken);
        return rows.Count == 0 ? null : rows[0];
    }

    /// <inheritdoc />
    public async Task<EventPosition> ReadEventsEndAsync(string programId, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "SELECT max(rowid) FROM ledger_entries WHERE program_id = $p;";
        command.Parameters.AddWithValue("$p", programId);
        return await command.ExecuteScalarAsync(cancellationToken) is long row ? new EventPosition(0, row) : EventPosition.Start;
    }

    /// <inheritdoc />
    public async Task<LedgerEntry?> FindTransactionAsync(string programId, string transactionId, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = $"SELECT {Columns} FROM ledger_entries WHERE program_id = $p AND txn_id = $t;";
        command.Parameters.AddWithValue("$p", programId);
        command.Parameters.AddWithValue("$t", transactionId);
        IReadOnlyList<LedgerEntry> rows = await LedgerRows.ReadAllAsync(command, ReadTime, cancellationToken);
        return rows.Count == 0 ? null : rows[0];
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<LedgerEntry>> ReadReturnsOfAsync(string programId, string purchaseTransactionId, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = $"SELECT {Columns} FROM ledger_entries WHERE program_id = $p AND reference = $r AND kind = {(int)LedgerEntryKind.Return} ORDER BY recorded_at, member_id, seq;";
        command.Parameters.AddWithValue("$p", programId);
        command.Parameters.AddWithValue("$r", purchaseTransactionId);
        return await LedgerRows.ReadAllAsync(command, ReadTime, cancellationToken);
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<DueMember>> ClaimDueAsync(DateTimeOffset now, DateTimeOffset leaseUntil, int limit, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText =
            "UPDATE member_due SET due_at = $lease WHERE rowid IN " +
            "(SELECT rowid FROM member_due WHERE due_at <= $now ORDER BY due_at LIMIT $n) RETURNING program_id, member_id;";
        command.Parameters.AddWithValue("$lease", UnixMicros.From(leaseUntil));
        command.Parameters.AddWithValue("$now", UnixMicros.From(now));
        command.Parameters.AddWithValue("$n", limit);
        var claimed = new List<DueMember>();
        await using SqliteDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            claimed.Add(new DueMember(reader.GetString(0), reader.GetString(1)));
        }

        return claimed;
    }

    /// <inheritdoc />
    public Task ScheduleProgramAsync(string programId, DateTimeOffset dueAt, CancellationToken cancellationToken) =>
        ExecuteOnceAsync(
            "INSERT INTO member_due (program_id, member_id, due_at) SELECT program_id, member_id, $d FROM ledger_entries WHERE program_id = $p AND kind = 1 " +
            "ON CONFLICT (program_id, member_id) DO UPDATE SET due_at = min(member_due.due_at, excluded.due_at);",
            cancellationToken, ("$p", programId), ("$d", UnixMicros.From(dueAt)));

    /// <inheritdoc />
    public async Task<DateTimeOffset?> ReadDueAsync(string programId, string memberId, CancellationToken cancellationToken) =>
        await ReadMemberValueAsync("SELECT due_at FROM member_due WHERE program_id = $p AND member_id = $m;", programId, memberId, cancellationToken)
            is long micros ? UnixMicros.To(micros) : null;

    /// <inheritdoc />
    public Task WriteProfileAsync(string programId, string memberId, string? fieldsJson, DateTimeOffset at, CancellationToken cancellationToken) =>
        ExecuteOnceAsync(
            fieldsJson is null
                ? "DELETE FROM member_profiles WHERE program_id = $p AND member_id = $m;"
                : "INSERT INTO member_profiles (program_id, member_id, fields, updated_at) VALUES ($p, $m, $f, $t) " +
                  "ON CONFLICT (program_id, member_id) DO UPDATE SET fields = excluded.fields, updated_at = excluded.updated_at;",
            cancellationToken, ("$p", programId), ("$m", memberId), ("$f", fieldsJson ?? ""), ("$t", UnixMicros.From(at)));

    /// <inheritdoc />
    public async Task<string?> ReadProfileAsync(string programId, string memberId, CancellationToken cancellationToken) =>
        await ReadMemberValueAsync("SELECT fields FROM member_profiles WHERE program_id = $p AND member_id = $m;", programId, memberId, cancellationToken) as string;

    /// <summary>The one value <paramref name="sql"/> selects for a member ($p, $m); null when there is no row.</summary>
    private async Task<object?> ReadMemberValueAsync(string sql, string programId, string memberId, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        command.Parameters.AddWithValue("$p", programId);
        command.Parameters.AddWithValue("$m", memberId);
        return await command.ExecuteScalarAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<bool> HasEntriesAsync(string programId, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "SELECT EXISTS (SELECT 1 FROM ledger_entries WHERE program_id = $p);";
        command.Parameters.AddWithValue("$p", programId);
        return await command.ExecuteScalarAsync(cancellationToken) is long and not 0;
    }

    /// <inheritdoc />
    public Task AnonymiseAsync(string programId, string memberId, CancellationToken cancellationToken) =>
        ExecuteOnceAsync(
            "UPDATE ledger_entries SET reason = CASE WHEN kind IN (5, 17, 26, 34) THEN 'erased' WHEN kind IN (20, 23) THEN NULL ELSE reason END, details = CASE WHEN kind IN (6, 14) THEN NULL ELSE details END, " +
            "reference = CASE WHEN kind = 22 THEN NULL ELSE reference END " +
            "WHERE program_id = $p AND member_id = $m AND kind IN (5, 6, 14, 17, 20, 22, 23, 26, 34);",
            cancellationToken, ("$p", programId), ("$m", memberId));

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        _stopping.Cancel();
        bool stopped = true;
        try
        {
            // A checkpoint under way cannot be interrupted; the loop stops after it.
            stopped = _checkpointer?.Wait(CheckpointerStopWait) ?? true;
        }
        catch (AggregateException)
        {
            // The loop failed; nothing it did needs undoing.
        }

        if (stopped)
        {
            // Otherwise still in the loop's hands (it reads the wait handle), so left undisposed.
            _stopping.Dispose();
        }

        _writer?.Dispose();
        _writer = null;
        _owner?.Dispose();
        _owner = null;
    }

    /// <summary>
    /// Claims the database file for this engine with an exclusive lock on a file beside it, held
    /// while the engine runs (the operating system drops it if the process dies). A second engine
    /// on the same file would keep its own members' state in memory beside the first's, and their
    /// ledger writes would collide: it refuses to start instead.
    /// </summary>
    private void TakeFile()
    {
        if (_owner is not null)
        {
            return;
        }

        string path = new SqliteConnectionStringBuilder(_connectionString).DataSource + ".lock";
        try
        {
            _owner = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException)
        {
            throw new InvalidOperationException(
                $"{Path.GetFullPath(path)} is held by another engine: an SQLite database serves one engine. " +
                "To run several, use PostgreSQL (Storage:Provider=Postgres) with Orleans:Membership=Postgres.");
        }
    }

    private async Task ExecuteOnceAsync(string sql, CancellationToken cancellationToken, params (string Name, object Value)[] parameters)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        foreach ((string name, object value) in parameters)
        {
            command.Parameters.AddWithValue(name, value);
        }

        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private async Task<SqliteWriter> PrepareWriterAsync(CancellationToken cancellationToken)
    {
        SqliteConnection connection = await OpenAsync(cancellationToken);
        try
        {
            await ConfigureWriterAsync(connection, cancellationToken);
            _writer = new SqliteWriter(connection);
        }
        catch
        {
            SqliteConnection.ClearPool(connection);
            await connection.DisposeAsync();
            throw;
        }

        if (_checkpointInterval is { } interval && _checkpointer is null)
        {
            _checkpointer = StartCheckpointer(interval);
        }

        return _writer;
    }

    private async Task ConfigureWriterAsync(SqliteConnection connection, CancellationToken cancellationToken)
    {
        await ExecuteAsync(connection, "PRAGMA synchronous=FULL;", cancellationToken);
        // The writer, like every connection in the process, waits for the write lock in the
        // engine's busy handler (see SqliteBusyWait); its waits are counted apart.
        SqliteBusyWait.Mark(connection.Handle!, ledgerWriter: true);
        // A per-connection setting: the writer commits the ledger's batches, so without the
        // checkpointer its threshold decides when checkpoints run, and with it bounds the log.
        // Other connections that commit (Orleans' snapshot storage, due claims, webhook leases) keep
        // SQLite's 1,000 pages and may checkpoint sooner; they also bound the log while the writer idles.
        await ExecuteAsync(connection, $"PRAGMA wal_autocheckpoint={_walCheckpointPages};", cancellationToken);
    }

    private static readonly TimeSpan CheckpointerStopWait = TimeSpan.FromSeconds(10);

    /// <summary>Starts the checkpointer's thread (once); it stops when the store is disposed.</summary>
    private Task StartCheckpointer(TimeSpan interval)
    {
        CancellationToken stopping = _stopping.Token;
        return DedicatedThread.Start("Loyalty WAL checkpointer", () => CheckpointLoop(interval, stopping));
    }

    /// <summary>
    /// Copies the write-ahead log back into the database file from a connection of its own, every
    /// <paramref name="interval"/>. Left to the writer, a checkpoint runs inside the commit of the
    /// batch that fills the log (20,000 pages by default): at 2,000 purchases/s with members spread
    /// at random that was every 2 s, and that batch, with every purchase waiting for the next one,
    /// waited the 20–30 ms the copy took. A passive checkpoint here copies what is committed
    /// without taking the writer's lock, so batches go on committing beside it; the log then starts
    /// over from its beginning, and the writer's own <c>wal_autocheckpoint</c> remains only as the
    /// bound should this loop fall behind or fail. Its own thread, because Microsoft.Data.Sqlite
    /// runs the copy synchronously (see DedicatedThread).
    /// </summary>
    private void CheckpointLoop(TimeSpan interval, CancellationToken stopping)
    {
        SqliteConnection? connection = null;
        try
        {
            while (!stopping.IsCancellationRequested && !stopping.WaitHandle.WaitOne(interval))
            {
                try
                {
                    connection ??= OpenAsync(stopping).GetAwaiter().GetResult();
                    CheckpointPass(connection);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // Busy or failing this time: the next tick tries again on a fresh connection, and
                    // the writer's own wal_autocheckpoint bound holds meanwhile.
                    connection?.Dispose();
                    connection = null;
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            // The store is being disposed.
        }
        finally
        {
            connection?.Dispose();
        }
    }

    /// <summary>
    /// One pass of the checkpointer. Under steady load batches commit while it copies, so SQLite
    /// finds the log not wholly copied when the pass ends and, in that case, leaves the pages it
    /// wrote to the database file unsynced (its checkpoint syncs the file only once it has copied
    /// every frame); whoever completes the checkpoint later would wait for all of them to reach
    /// the disk (7–10 ms at 2,000 purchases/s with 100,000 members). The pass therefore syncs them
    /// itself, here, beside the writer: by the file system (Linux's <c>syncfs</c>, through the lock
    /// file's handle), because the database file's descriptors are SQLite's, and closing another
    /// one on it would drop the locks SQLite holds on it. Then it hands the rest to the writer.
    /// </summary>
    private void CheckpointPass(SqliteConnection connection)
    {
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        // Whether SQLite synced cannot be told from outside: the frame count it returns is the
        // log as the pass began, not as it ended. When it did, this sync finds nothing to write.
        long copied = SqliteWriter.CopyLogBack(connection);
        long synced = System.Diagnostics.Stopwatch.GetTimestamp();
        SqliteWriter.RecordCheckpoint(SqliteWriter.CheckpointStepCopy, started, synced);
        if (copied > 0 && _owner is { } owner)
        {
            FileSystemSync.TryFlush(owner.SafeFileHandle);
            SqliteWriter.RecordCheckpoint(SqliteWriter.CheckpointStepSync, synced, System.Diagnostics.Stopwatch.GetTimestamp());
        }

        Volatile.Write(ref _checkpointPassed, 1);
    }

    /// <summary>
    /// After each pass of the checkpointer, the writer copies the rest of the log itself, between
    /// two batches. A log starts over from its beginning only when a write finds every frame in
    /// it copied; under steady load batches commit while the checkpointer copies (2–21 ms a pass
    /// at 2,000 purchases/s with 100,000 members), so its passes alone never got there. The log
    /// then grew to the writer's <c>wal_autocheckpoint</c> bound, and about every 1.75 s one commit
    /// carried a checkpoint of its own that held the purchases queued behind it for 10–37 ms
    /// (docs/performance.md, 2026-12-04). What is left after a pass is what was committed during
    /// it, a few dozen pages; copied here, where no batch commits meanwhile, it leaves nothing
    /// behind, SQLite syncs the file, and the next batch starts the log over. A passive checkpoint,
    /// so a reader still on an older snapshot only defers the start-over to a later pass.
    /// </summary>
    private void CompleteCheckpointPass(SqliteWriter writer)
    {
        if (Volatile.Read(ref _checkpointPassed) == 1 && Interlocked.Exchange(ref _checkpointPassed, 0) == 1)
        {
            long started = System.Diagnostics.Stopwatch.GetTimestamp();
            writer.CopyLogBack();
            SqliteWriter.RecordCheckpoint(SqliteWriter.CheckpointStepFinish, started, System.Diagnostics.Stopwatch.GetTimestamp());
        }
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<ReportTotal>> ReadTotalsAsync(string programId, int fromDay, int toDay, bool perDay, CancellationToken cancellationToken)
    {
        string day = perDay ? "day" : "$f";
        const string Range = "FROM report_totals WHERE program_id = $p AND day >= $f AND day < $t";
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        try
        {
            return await QueryTotalsAsync(connection, $"SELECT {day}, metric, key, sum(value) {Range} GROUP BY {day}, metric, key ORDER BY 1, 2, 3;",
                programId, fromDay, toDay, cancellationToken);
        }
        catch (SqliteException e) when (e.Message.Contains("integer overflow", StringComparison.Ordinal))
        {
            // A sum past 64 bits (no real programme gets near; a hostile one can): the rows are
            // read one by one and added here, held at the bounds as PostgreSQL's read is.
            IReadOnlyList<ReportTotal> rows = await QueryTotalsAsync(connection, $"SELECT day, metric, key, value {Range};", programId, fromDay, toDay, cancellationToken);
            return [.. rows
                .GroupBy(r => (Day: perDay ? r.Day : fromDay, r.Metric, r.Key))
                .Select(g => new ReportTotal(g.Key.Day, g.Key.Metric, g.Key.Key, g.Aggregate(0L, (sum, r) => ReportTotals.SaturatingAdd(sum, r.Value))))
                .OrderBy(t => t.Day).ThenBy(t => t.Metric).ThenBy(t => t.Key, StringComparer.Ordinal)];
        }
    }

    private static async Task<IReadOnlyList<ReportTotal>> QueryTotalsAsync(SqliteConnection connection, string sql, string programId, int fromDay, int toDay, CancellationToken cancellationToken)
    {
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        command.Parameters.AddWithValue("$p", programId);
        command.Parameters.AddWithValue("$f", fromDay);
        command.Parameters.AddWithValue("$t", toDay);
        var totals = new List<ReportTotal>();
        await using SqliteDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            totals.Add(new ReportTotal(reader.GetInt32(0), (ReportMetric)reader.GetInt16(1), reader.GetString(2), reader.GetInt64(3)));
        }

        return totals;
    }

    /// <inheritdoc />
    public async Task ReplaceTotalsAsync(string programId, ReportTotals totals, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteTransaction transaction = (SqliteTransaction)await connection.BeginTransactionAsync(cancellationToken);
        await using (SqliteCommand delete = connection.CreateCommand())
        {
            delete.Transaction = transaction;
            delete.CommandText = "DELETE FROM report_totals WHERE program_id = $p; DELETE FROM report_rebuilds WHERE program_id = $p;";
            delete.Parameters.AddWithValue("$p", programId);
            await delete.ExecuteNonQueryAsync(cancellationToken);
        }

        using (var addTotal = new SqliteStatement(connection, SqliteWriter.AddTotalSql, parameterCount: 5))
        {
            SqliteWriter.AddTotals(addTotal, totals);
        }

        await transaction.CommitAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task MarkTotalsForRebuildAsync(string? programId, CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = programId is null
            ? "INSERT OR IGNORE INTO report_rebuilds (program_id) SELECT DISTINCT program_id FROM ledger_entries;"
            : "INSERT OR IGNORE INTO report_rebuilds (program_id) VALUES ($p);";
        command.Parameters.AddWithValue("$p", (object?)programId ?? DBNull.Value);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<string>> ReadTotalsToRebuildAsync(CancellationToken cancellationToken)
    {
        await using SqliteConnection connection = await OpenAsync(cancellationToken);
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "SELECT program_id FROM report_rebuilds ORDER BY program_id;";
        var ids = new List<string>();
        await using SqliteDataReader reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            ids.Add(reader.GetString(0));
        }

        return ids;
    }

    private Task<SqliteConnection> OpenAsync(CancellationToken cancellationToken) => SqliteConnections.OpenAsync(_connectionString, cancellationToken);

    private static async Task ExecuteAsync(SqliteConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc />
    public Task<HeldLock> LockAsync(string name, CancellationToken cancellationToken) => OneEngineLock.Take();

    /// <inheritdoc />
    /// <remarks>One engine: 0, as nothing is fenced here.</remarks>
    public Task<long> ReadLockEpochAsync(string name, CancellationToken cancellationToken) => Task.FromResult(0L);

    /// <inheritdoc />
    /// <remarks>One engine: the fences are not checked (a lock's holder dies with the steps it started).</remarks>
    public Task AppendBatchAsync(IReadOnlyList<LedgerEntry> entries, bool[] inserted, IReadOnlyList<DueChange> dues, IReadOnlyList<ReadOnlyMemory<byte>>? detailsJson,
        IReadOnlyList<EntryGroup> groups, IReadOnlyList<EntryFence> fences, CancellationToken cancellationToken) =>
        AppendBatchAsync(entries, inserted, dues, detailsJson, groups, cancellationToken);
}
