using Loyalty.Storage.Reports;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Loyalty.Tests.Storage;

/// <summary>The ledger store and the group commit against real SQLite and real PostgreSQL.</summary>
public sealed class LedgerStoreTests : IAsyncLifetime
{
    /// <summary>The SQLite stores a test made, disposed after it: each has a checkpointer thread.</summary>
    private readonly List<IDisposable> _made = [];

    /// <summary>The PostgreSQL stores a test made, disposed after it: each keeps a connection and a timer.</summary>
    private readonly List<IAsyncDisposable> _madeAsync = [];

    public static TheoryData<Backend> Backends => [Backend.Sqlite, Backend.Postgres];

    [Theory, MemberData(nameof(Backends))]
    public async Task Migrate_RunTwice_IsIdempotent(Backend backend)
    {
        ILedgerStore store = await CreateStoreAsync(backend);

        await store.MigrateAsync(CancellationToken.None);
        await store.AppendBatchAsync([Entries.Earn("p", "m", 1, 10)], new bool[1], [], null, [], CancellationToken.None);
        await store.MigrateAsync(CancellationToken.None);

        Assert.Single(await store.ReadAfterAsync("p", "m", 0, CancellationToken.None));
    }

    [Fact]
    public async Task MemoryStore_SameConstraintsAsTheDatabases()
    {
        var store = new MemoryLedgerStore();
        bool[] first = new bool[3], second = new bool[3];

        await store.AppendBatchAsync([Entries.Earn("p", "m", 1, 10, "t1"), Entries.Earn("p", "m", 2, 20, "t2"), Entries.Earn("p", "n", 1, 5, "t3")], first, [], null, [], CancellationToken.None);
        await store.AppendBatchAsync([Entries.Earn("p", "m", 2, 99, "t9"), Entries.Earn("p", "x", 1, 99, "t1"), Entries.Earn("p", "m", 3, 30, "t4")], second, [], null, [], CancellationToken.None);

        Assert.Equal([true, true, true], first);
        Assert.Equal([false, false, true], second);
        Assert.Equal([10L, 20L, 30L], (await store.ReadAfterAsync("p", "m", 0, CancellationToken.None)).Select(e => e.Points.Value));
        Assert.Equal([30L, 20L], (await store.ReadPageAsync("p", "m", 4, 2, CancellationToken.None)).Select(e => e.Points.Value));
        Assert.Equal("n", (await store.FindTransactionAsync("p", "t3", CancellationToken.None))!.MemberId);
    }

    [Fact]
    public async Task Migrate_SqliteLedgerWithoutRowid_MovesToInsertionOrderKeepingEveryRow()
    {
        StorageOptions options = TestDatabases.Create(Backend.Sqlite, "upgrade");
        string scripts = Path.Combine(RepoPaths.Root(), "src", "Loyalty.Storage", "Sql", "Sqlite");
        await Sql.ExecuteAsync(options, "CREATE TABLE loyalty_schema_versions (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);");
        foreach (string file in Directory.GetFiles(scripts, "*.sql").Where(f => string.CompareOrdinal(Path.GetFileName(f), "004") < 0).Order(StringComparer.Ordinal))
        {
            await Sql.ExecuteAsync(options, await File.ReadAllTextAsync(file));
            await Sql.ExecuteAsync(options, $"INSERT INTO loyalty_schema_versions VALUES ({Path.GetFileName(file)[..3]}, 'old', 'then');");
        }

        await Sql.ExecuteAsync(options,
            "INSERT INTO ledger_entries (program_id, member_id, seq, kind, points, txn_id, fingerprint, amount_minor, occurred_at, recorded_at) " +
            "VALUES ('p', 'm', 1, 2, 10, 't1', 42, 1000, 1, 1), ('p', 'm', 2, 2, 5, 't2', 43, 500, 2, 2);");
        using var store = new SqliteLedgerStore(options.ConnectionString);

        await store.MigrateAsync(CancellationToken.None);
        bool[] inserted = new bool[1];
        await store.AppendBatchAsync([Entries.Earn("p", "m", 3, 1, "t1")], inserted, [], null, [], CancellationToken.None);

        Assert.Equal([10L, 5L], (await store.ReadAfterAsync("p", "m", 0, CancellationToken.None)).Select(e => e.Points.Value));
        Assert.False(inserted[0]); // the transaction-id index came along
        Assert.Equal(0, await Sql.ScalarAsync(options, "SELECT count(*) FROM sqlite_master WHERE name = 'ledger_entries' AND sql LIKE '%WITHOUT ROWID%'"));
    }

    [Theory]
    [InlineData(SqliteLedgerStore.WalCheckpointPagesMin, true)]
    [InlineData(SqliteLedgerStore.WalCheckpointPagesMax, false)]
    public async Task SqliteWalCheckpointPages_DecidesWhenCommittedPagesReachTheDatabaseFile(int pages, bool copiedBack)
    {
        StorageOptions options = TestDatabases.Create(Backend.Sqlite, $"checkpoint{pages}");
        using var store = new SqliteLedgerStore(options.ConnectionString, pages, checkpointIntervalMs: 0);
        await store.MigrateAsync(CancellationToken.None);
        string file = new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(options.ConnectionString).DataSource;
        long migrated = new FileInfo(file).Length;

        // Close to 1 MB of pages: far more than the small log allows, far less than the large one.
        for (int batch = 0; batch < 4; batch++)
        {
            LedgerEntry[] entries = [.. Enumerable.Range(0, 2_000).Select(i => Entries.Earn("p", $"m{i}", batch + 1, 10, $"t{batch}-{i}"))];
            await store.AppendBatchAsync(entries, new bool[entries.Length], [], null, [], CancellationToken.None);
        }

        long grown = new FileInfo(file).Length - migrated;
        Assert.True(copiedBack ? grown > 500_000 : grown < 100_000, $"the database file grew by {grown} bytes");
        Assert.Equal(8_000, await Sql.ScalarAsync(options, "SELECT count(*) FROM ledger_entries"));
    }

    [Theory]
    [InlineData(SqliteLedgerStore.CheckpointIntervalMsMin, true)]
    [InlineData(SqliteLedgerStore.CheckpointIntervalMsDefault, true)]
    [InlineData(0, false)]
    public async Task SqliteCheckpointInterval_CopiesCommittedPagesIntoTheFile_BesideTheWriter(int intervalMs, bool copiedBack)
    {
        StorageOptions options = TestDatabases.Create(Backend.Sqlite, $"bgcheckpoint{intervalMs}");
        // The writer's own bound is as large as it goes: only the background loop can copy pages back.
        using var store = new SqliteLedgerStore(options.ConnectionString, SqliteLedgerStore.WalCheckpointPagesMax, intervalMs);
        await store.MigrateAsync(CancellationToken.None);
        string file = new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(options.ConnectionString).DataSource;
        long migrated = new FileInfo(file).Length;

        LedgerEntry[] entries = [.. Enumerable.Range(0, 4_000).Select(i => Entries.Earn("p", $"m{i}", 1, 10, $"t{i}"))];
        await store.AppendBatchAsync(entries, new bool[entries.Length], [], null, [], CancellationToken.None);
        long grown = 0;
        for (var waited = System.Diagnostics.Stopwatch.StartNew(); waited.Elapsed < TimeSpan.FromSeconds(3) && grown <= 200_000; await Task.Delay(50))
        {
            grown = new FileInfo(file).Length - migrated;
        }

        Assert.True(copiedBack ? grown > 200_000 : grown < 100_000, $"the database file grew by {grown} bytes");
        Assert.Equal(4_000, await Sql.ScalarAsync(options, "SELECT count(*) FROM ledger_entries"));
    }

    [Fact]
    public async Task SqliteCheckpointer_UnderSteadyCommits_LetsTheLogStartOver()
    {
        // The writer's own bound is never reached: only a completed checkpoint can start the log over.
        (uint starts, int batches, TimeSpan took) = await LogStartsUnderSteadyCommitsAsync("log-starts-over", SqliteLedgerStore.CheckpointIntervalMsMin, startsWanted: 3);

        Assert.True(starts >= 3, $"the log started over {starts} times in {batches} batches, {took.TotalSeconds:F1} s");
    }

    [Fact]
    public async Task SqliteWithoutCheckpointer_UnderSteadyCommits_TheLogNeverStartsOver_BelowTheWritersBound()
    {
        // The same commits with the checkpointer off: nothing copies the log back, so it only grows.
        (uint starts, int batches, _) = await LogStartsUnderSteadyCommitsAsync("log-grows", checkpointIntervalMs: 0, startsWanted: 1, runFor: TimeSpan.FromSeconds(2));

        Assert.True(batches >= 100, $"only {batches} batches committed"); // enough that a checkpointer would have started it over
        Assert.Equal(0u, starts);
    }

    /// <summary>
    /// Commits small batches back to back, with the writer's bound as large as it goes, until the
    /// log has started over <paramref name="startsWanted"/> times or the time is up; how many times it
    /// did, after how many batches.
    /// </summary>
    private static async Task<(uint Starts, int Batches, TimeSpan Took)> LogStartsUnderSteadyCommitsAsync(string name, int checkpointIntervalMs, uint startsWanted, TimeSpan? runFor = null)
    {
        StorageOptions options = TestDatabases.Create(Backend.Sqlite, name);
        using var store = new SqliteLedgerStore(options.ConnectionString, SqliteLedgerStore.WalCheckpointPagesMax, checkpointIntervalMs);
        await store.MigrateAsync(CancellationToken.None);
        string log = new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(options.ConnectionString).DataSource + "-wal";

        // Batches commit back to back, so every pass of the checkpointer overlaps commits.
        const int BatchesMax = 5_000;
        TimeSpan limit = runFor ?? TimeSpan.FromSeconds(10);
        uint first = LogStarts(log), starts = 0;
        var running = System.Diagnostics.Stopwatch.StartNew();
        int batch = 0;
        for (; batch < BatchesMax && starts < startsWanted && running.Elapsed < limit; batch++)
        {
            LedgerEntry[] entries = [.. Enumerable.Range(0, 20).Select(i => Entries.Earn("p", $"m{batch}-{i}", 1, 10, $"t{batch}-{i}"))];
            await store.AppendBatchAsync(entries, new bool[entries.Length], [], null, [], CancellationToken.None);
            starts = LogStarts(log) - first;
        }

        return (starts, batch, running.Elapsed);
    }

    /// <summary>The write-ahead log header's checkpoint sequence number: one more each time the log starts over.</summary>
    private static uint LogStarts(string walPath)
    {
        using var file = new FileStream(walPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        Span<byte> header = stackalloc byte[16];
        file.ReadExactly(header);
        return System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(header[12..]);
    }

    [Fact]
    public async Task Sqlite_DisposedTwice_WithItsCheckpointerRunning_SecondTimeDoesNothing()
    {
        StorageOptions options = TestDatabases.Create(Backend.Sqlite, "disposed-twice");
        var store = new SqliteLedgerStore(options.ConnectionString, checkpointIntervalMs: SqliteLedgerStore.CheckpointIntervalMsMin);
        await store.MigrateAsync(CancellationToken.None);
        await store.AppendBatchAsync([Entries.Earn("p", "m", 1, 10)], new bool[1], [], null, [], CancellationToken.None);

        store.Dispose();
        Exception? second = Record.Exception(store.Dispose);

        Assert.Null(second);
        Assert.Equal(1, await Sql.ScalarAsync(options, "SELECT count(*) FROM ledger_entries"));
    }

    [Theory]
    [InlineData(SqliteLedgerStore.CheckpointIntervalMsMin - 1)]
    [InlineData(SqliteLedgerStore.CheckpointIntervalMsMax + 1)]
    public void SqliteCheckpointInterval_OutOfRange_IsRefusedNamingTheSetting(int intervalMs)
    {
        StorageOptions options = TestDatabases.Create(Backend.Sqlite, "bgcheckpoint-refused");

        var refused = Assert.Throws<ArgumentOutOfRangeException>(() => new SqliteLedgerStore(options.ConnectionString, checkpointIntervalMs: intervalMs));

        Assert.Contains("Storage:SqliteCheckpointIntervalMs", refused.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(SqliteLedgerStore.WalCheckpointPagesMin - 1)]
    [InlineData(SqliteLedgerStore.WalCheckpointPagesMax + 1)]
    public void SqliteWalCheckpointPages_OutOfRange_IsRefusedNamingTheSetting(int pages)
    {
        StorageOptions options = TestDatabases.Create(Backend.Sqlite, "checkpoint-refused");

        var refused = Assert.Throws<ArgumentOutOfRangeException>(() => new SqliteLedgerStore(options.ConnectionString, pages));

        Assert.Contains("Storage:SqliteWalCheckpointPages", refused.Message, StringComparison.Ordinal);
    }

    [Theory, MemberData(nameof(Backends))]
    public async Task ReportTotals_PastSixtyFourBits_AreHeldAtTheBound_WhenAddedAndWhenRead(Backend backend)
    {
        ILedgerStore store = await CreateStoreAsync(backend);
        const long Huge = 5_000_000_000_000_000_000;
        LedgerEntry HugeEarn(string member, DateTimeOffset at) => Entries.Earn("p", member, 1, 1) with { Points = new Points(Huge), AmountMinor = 1, RecordedAt = at, OccurredAt = at };
        DateTimeOffset first = Entries.Now, second = Entries.Now.AddDays(1);
        int day = ReportFacts.DayOf(first);

        // Separate batches: the second adds into the row the first wrote, in the database.
        foreach (LedgerEntry entry in (LedgerEntry[])[HugeEarn("a", first), HugeEarn("b", first), HugeEarn("c", second), Entries.Earn("p", "d", 1, 7) with { RecordedAt = second }])
        {
            Assert.True(await store.AppendGroupAsync([entry], CancellationToken.None));
        }

        IReadOnlyList<ReportTotal> perDay = await store.ReadTotalsAsync("p", day, day + 2, perDay: true, CancellationToken.None);
        IReadOnlyList<ReportTotal> whole = await store.ReadTotalsAsync("p", day, day + 2, perDay: false, CancellationToken.None);

        long Issued(IReadOnlyList<ReportTotal> totals, int at) => totals.Single(t => t.Day == at && t.Metric == ReportMetric.IssuedPurchases).Value;
        Assert.Equal((long.MaxValue, Huge + 7), (Issued(perDay, day), Issued(perDay, day + 1)));
        Assert.Equal(long.MaxValue, Issued(whole, day));
        Assert.Equal(4, whole.Single(t => t.Metric == ReportMetric.Purchases).Value);
    }

    [Theory, MemberData(nameof(Backends))]
    public async Task Append_EntryWithDetails_ReadsBackTheSameBreakdownVersionAndAvailability(Backend backend)
    {
        ILedgerStore store = await CreateStoreAsync(backend);
        var details = new EarnDetails
        {
            Components = [new BreakdownComponent(ComponentKind.Base, "base", 100), new BreakdownComponent(ComponentKind.Campaign, "double", 100)],
            CapsHit = ["daily"],
            CappedPoints = 5,
            TierBefore = "member",
            TierAfter = "gold",
            TierReviewAt = Entries.Now.AddDays(365),
            EarnDay = 740_000,
            EarnMonth = 24_322,
            Lines = [new SkuAmount("a", 100_00, 10_000, "base")],
        };
        LedgerEntry plain = Entries.Earn("p", "m", 1, 10) with { Details = new EarnDetails { TierBefore = "member", TierAfter = "member" } };
        LedgerEntry rich = Entries.Earn("p", "m", 2, 200) with { ProgramVersion = 7, AvailableAt = Entries.Now.AddDays(14), Details = details };

        await store.AppendBatchAsync([plain, rich], new bool[2], [], null, [], CancellationToken.None);
        IReadOnlyList<LedgerEntry> read = await store.ReadAfterAsync("p", "m", 0, CancellationToken.None);

        Assert.Equal((7L, Entries.Now.AddDays(14)), (read[1].ProgramVersion, read[1].AvailableAt!.Value));
        Assert.Equal(DetailsJson.Write(details), DetailsJson.Write(read[1].Details));
        Assert.Equal(("member", "member", null), (read[0].DetailsAs<EarnDetails>()!.TierBefore, read[0].DetailsAs<EarnDetails>()!.TierAfter, read[0].AvailableAt));
        Assert.DoesNotContain("tier_before", DetailsJson.Write(plain.Details), StringComparison.Ordinal);
        Assert.DoesNotContain("caps_hit", DetailsJson.Write(plain.Details), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Migrate_ConcurrentSilosOnOnePostgres_AllSucceed()
    {
        StorageOptions options = TestDatabases.Create(Backend.Postgres, "migrate");
        PostgresLedgerStore[] stores = [.. Enumerable.Range(0, 4).Select(_ => new PostgresLedgerStore(options.ConnectionString))];

        await Task.WhenAll(stores.Select(s => s.MigrateAsync(CancellationToken.None)));

        // One row per PostgreSQL migration script, each applied once.
        int scripts = Directory.GetFiles(Path.Combine(RepoPaths.Root(), "src", "Loyalty.Storage", "Sql", "Postgres"), "*.sql").Length;
        Assert.Equal(scripts, await Sql.ScalarAsync(options, "SELECT count(*) FROM loyalty_schema_versions"));
    }

    [Theory, MemberData(nameof(Backends))]
    public async Task AppendBatch_TakenSequenceOrTransaction_IsSkippedAndReported(Backend backend)
    {
        ILedgerStore store = await CreateStoreAsync(backend);
        await store.AppendBatchAsync([Entries.Earn("p", "a", 1, 10, "t1")], new bool[1], [], null, [], CancellationToken.None);
        LedgerEntry[] batch =
        [
            Entries.Earn("p", "a", 2, 20, "t2"),
            Entries.Earn("p", "a", 1, 99, "t-other"), // sequence taken
            Entries.Earn("p", "b", 1, 30, "t1"),      // transaction id taken by another member
            Entries.Earn("q", "b", 1, 40, "t1"),      // same transaction id in another program is fine
        ];
        var inserted = new bool[batch.Length];

        await store.AppendBatchAsync(batch, inserted, [], null, [], CancellationToken.None);

        Assert.Equal([true, false, false, true], inserted);
        IReadOnlyList<LedgerEntry> a = await store.ReadAfterAsync("p", "a", 0, CancellationToken.None);
        Assert.Equal([10L, 20L], a.Select(e => e.Points.Value));
        Assert.Empty(await store.ReadAfterAsync("p", "b", 0, CancellationToken.None));
    }

    [Theory, MemberData(nameof(Backends))]
    public async Task AppendBatch_SameKeyTwiceInOneBatch_WritesTheFirstOnly(Backend backend)
    {
        ILedgerStore store = await CreateStoreAsync(backend);
        LedgerEntry[] batch =
        [
            Entries.Earn("p", "a", 1, 10, "t1"),
            Entries.Earn("p", "a", 1, 20, "t2"), // the same member and sequence again
            Entries.Earn("p", "b", 1, 30, "t3"),
            Entries.Earn("p", "c", 1, 40, "t3"), // the same transaction id again
        ];
        var inserted = new bool[batch.Length];

        await store.AppendBatchAsync(batch, inserted, [], null, [], CancellationToken.None);

        Assert.Equal([true, false, true, false], inserted);
        Assert.Equal([10L], (await store.ReadAfterAsync("p", "a", 0, CancellationToken.None)).Select(e => e.Points.Value));
        Assert.Empty(await store.ReadAfterAsync("p", "c", 0, CancellationToken.None));
    }

    [Theory, MemberData(nameof(Backends))]
    public async Task AppendBatch_EntrySkippedForItsTransaction_IsNotReportedWritten_WhenALaterOneWithItsSequenceGoesIn(Backend backend)
    {
        ILedgerStore store = await CreateStoreAsync(backend);
        await store.AppendBatchAsync([Entries.Earn("p", "x", 1, 5, "taken")], new bool[1], [], null, [], CancellationToken.None);
        LedgerEntry[] batch =
        [
            Entries.Earn("p", "a", 1, 10, "taken"), // skipped: another member has its transaction id
            Entries.Earn("p", "a", 1, 20, "free"),  // the same member and sequence, another id: written
        ];
        var inserted = new bool[batch.Length];

        await store.AppendBatchAsync(batch, inserted, [], null, [], CancellationToken.None);

        Assert.Equal([false, true], inserted);
        Assert.Equal([20L], (await store.ReadAfterAsync("p", "a", 0, CancellationToken.None)).Select(e => e.Points.Value));
    }

    [Fact]
    public async Task Postgres_WriterConnectionKilledBetweenBatches_FailsOneBatch_WritingNothing_AndTheNextWrites()
    {
        StorageOptions options = TestDatabases.Create(Backend.Postgres, "killed");
        ILedgerStore store = await CreateStoreAsync(options);
        await store.AppendBatchAsync([Entries.Earn("p", "m", 1, 10, "t1")], new bool[1], [], null, [], CancellationToken.None);

        // The server ends every other session of the database, the batch writer's included.
        await Sql.ExecuteAsync(options, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid();");
        int failures = 0;
        bool[] inserted = new bool[1];
        for (int attempt = 0; attempt < 2 && !inserted[0]; attempt++)
        {
            try
            {
                await store.AppendBatchAsync([Entries.Earn("p", "m", 2, 20, "t2")], inserted, [], null, [], CancellationToken.None);
            }
            catch (NpgsqlException)
            {
                failures++;
                Assert.False(inserted[0]);
                Assert.Equal([10L], await PointsOfMAsync());
            }
        }

        Assert.True(inserted[0]);
        // The writer's connection was kept between the batches, so the kill cost exactly one.
        Assert.Equal(1, failures);
        Assert.Equal([10L, 20L], await PointsOfMAsync());

        // Read on a connection of the test's own (the store's readers have a pool of their own,
        // whose idle connections the kill ended too).
        Task<List<long>> PointsOfMAsync() =>
            Sql.RowsAsync(options, "SELECT points FROM ledger_entries WHERE member_id = 'm' ORDER BY seq;", r => r.GetInt64(0));
    }

    [Theory, MemberData(nameof(Backends))]
    public async Task Entry_RoundTrips_EveryField(Backend backend)
    {
        ILedgerStore store = await CreateStoreAsync(backend);
        var at = new DateTimeOffset(2026, 3, 4, 5, 6, 7, 123, TimeSpan.Zero);
        var entry = new LedgerEntry("p", "m", 7, LedgerEntryKind.Earn, new Points(-5), "tx", long.MinValue + 3, "s", 1234, "EUR", "why", "ref", at, at.AddSeconds(1));

        await store.AppendBatchAsync([entry], new bool[1], [], null, [], CancellationToken.None);

        Assert.Equal(entry, await store.FindTransactionAsync("p", "tx", CancellationToken.None));
        Assert.Null(await store.FindTransactionAsync("p", "nope", CancellationToken.None));
    }

    [Theory, MemberData(nameof(Backends))]
    public async Task ReadPage_PagesNewestFirst(Backend backend)
    {
        ILedgerStore store = await CreateStoreAsync(backend);
        LedgerEntry[] entries = [.. Enumerable.Range(1, 5).Select(i => Entries.Earn("p", "m", i, i))];
        await store.AppendBatchAsync(entries, new bool[5], [], null, [], CancellationToken.None);

        IReadOnlyList<LedgerEntry> first = await store.ReadPageAsync("p", "m", long.MaxValue, 2, CancellationToken.None);
        IReadOnlyList<LedgerEntry> second = await store.ReadPageAsync("p", "m", first[^1].Sequence, 2, CancellationToken.None);

        Assert.Equal([5L, 4L], first.Select(e => e.Sequence));
        Assert.Equal([3L, 2L], second.Select(e => e.Sequence));
    }

    public static TheoryData<Backend, int> BackendsAndFlushWaits => new()
    {
        { Backend.Sqlite, 0 }, { Backend.Sqlite, 5 }, { Backend.Postgres, 0 }, { Backend.Postgres, 5 },
    };

    /// <remarks>With no flush wait, entries queued while a commit runs share the next batch.</remarks>
    [Theory, MemberData(nameof(BackendsAndFlushWaits))]
    public async Task GroupCommit_ManyConcurrentAppends_ShareFewTransactions(Backend backend, int flushIntervalMs)
    {
        ILedgerStore store = await CreateStoreAsync(backend);
        LedgerCommitQueue queue = CreateQueue(store, batchSizeMax: 500, flushIntervalMs);
        queue.Start();
        const int count = 2_000;

        bool[] results = await Task.WhenAll(Enumerable.Range(1, count).Select(i => queue.AppendAsync(Entries.Earn("p", $"m{i % 100}", (i / 100) + 1, 1))));
        await queue.StopAsync();

        Assert.All(results, Assert.True);
        Assert.Equal(count, queue.EntryCount);
        // One commit per entry would be 2000 batches; group commit needs a handful.
        Assert.InRange(queue.BatchCount, 4, 200);
        long total = 0;
        for (int m = 0; m < 100; m++)
        {
            total += (await store.ReadAfterAsync("p", $"m{m}", 0, CancellationToken.None)).Count;
        }

        Assert.Equal(count, total);
    }

    [Theory, MemberData(nameof(Backends))]
    public async Task GroupCommit_DetailsEncodedIntoPooledArrays_ReadBackExactly_AfterFailedBatchesToo(Backend backend)
    {
        // The queue encodes earns' details into pooled arrays and takes them back after each
        // batch: an array given back too early, or twice, would show here as another entry's
        // bytes. Sizes vary (so arrays of several sizes are reused), entries come alone and in
        // groups, concurrently, and some batches fail (their arrays go back too).
        ILedgerStore store = await CreateStoreRefusingBigPointsAsync(backend, "pooled-details");
        LedgerCommitQueue queue = CreateQueue(store, batchSizeMax: 50, flushIntervalMs: 2);
        queue.Start();
        const int members = 60, rounds = 12;
        var random = new Random(7);
        var written = new System.Collections.Concurrent.ConcurrentDictionary<(string, long), LedgerEntry>();

        async Task MemberAsync(int m)
        {
            long sequence = 0;
            for (int round = 0; round < rounds; round++)
            {
                LedgerEntry[] group = [.. Enumerable.Range(0, 1 + (round % 3 == 0 ? 1 : 0)).Select(_ => WithDetails(Entries.Earn("p", $"m{m}", ++sequence, 1 + ((m * 31 + round) % 900)), m, round, sequence))];
                bool spoiled = (m + round) % 17 == 0;
                if (spoiled)
                {
                    // A batch with this entry fails as a whole; the member's sequence is used again.
                    await Assert.ThrowsAsync<LedgerUnavailableException>(() => queue.AppendAsync(Entries.Earn("p", $"m{m}", sequence + 1, 5_000)));
                }

                bool ok = group.Length == 1 ? await Retry(() => queue.AppendAsync(group[0])) : await Retry(() => queue.AppendGroupAsync(group));
                Assert.True(ok);
                foreach (LedgerEntry e in group)
                {
                    written[(e.MemberId, e.Sequence)] = e;
                }

                await Task.Yield();
            }
        }

        // A batch that failed because of another member's spoiled entry is simply sent again.
        static async Task<bool> Retry(Func<Task<bool>> append)
        {
            for (int attempt = 0; ; attempt++)
            {
                try
                {
                    return await append();
                }
                catch (LedgerUnavailableException) when (attempt < 50)
                {
                }
            }
        }

        LedgerEntry WithDetails(LedgerEntry e, int m, int round, long sequence)
        {
            int lines;
            lock (random)
            {
                lines = random.Next(0, 40);
            }

            return e with
            {
                Details = new EarnDetails
                {
                    Components = [new BreakdownComponent(ComponentKind.Base, $"m{m}-r{round}", e.Points.Value)],
                    TierAfter = $"tier-{m}-{sequence}",
                    Lines = [.. Enumerable.Range(0, lines).Select(i => new SkuAmount($"sku-{m}-{round}-{i}-{new string('x', i * 7)}", i + 1, 100 * (i + 1), "base", 1))],
                },
            };
        }

        await Task.WhenAll(Enumerable.Range(0, members).Select(m => Task.Run(() => MemberAsync(m))));
        await queue.StopAsync();

        int compared = 0;
        for (int m = 0; m < members; m++)
        {
            foreach (LedgerEntry read in await store.ReadAfterAsync("p", $"m{m}", 0, CancellationToken.None))
            {
                LedgerEntry expected = written[(read.MemberId, read.Sequence)];
                Assert.Equal(System.Text.Encoding.UTF8.GetString(DetailsJson.WriteUtf8BySerializer(expected.Details!)),
                    System.Text.Encoding.UTF8.GetString(DetailsJson.WriteUtf8BySerializer(read.Details!)));
                compared++;
            }
        }

        Assert.Equal(written.Count, compared);
    }

    [Fact]
    public async Task GroupCommit_FlushWait_HoldsTheFirstEntryUntilCompanyArrives()
    {
        ILedgerStore store = await CreateStoreAsync(Backend.Sqlite);
        LedgerCommitQueue queue = CreateQueue(store, batchSizeMax: 2, flushIntervalMs: 1_000);
        queue.Start();

        Task<bool> first = queue.AppendAsync(Entries.Earn("p", "a", 1, 10));
        await Task.Delay(100);
        Assert.False(first.IsCompleted);
        Task<bool> second = queue.AppendAsync(Entries.Earn("p", "b", 1, 10));

        Assert.True(await first);
        Assert.True(await second);
        Assert.Equal(1, queue.BatchCount);
        await queue.StopAsync();
    }

    [Fact]
    public async Task GroupCommit_BatchSizeMax_CountsEntries_NotQueuedGroups()
    {
        ILedgerStore store = await CreateStoreAsync(Backend.Sqlite);
        LedgerCommitQueue queue = CreateQueue(store, batchSizeMax: 3, flushIntervalMs: 1_000);
        queue.Start();

        // Three members' groups of two entries each, queued at once: six entries, three items.
        Task<bool>[] groups = [.. new[] { "a", "b", "c" }.Select(m =>
            queue.AppendGroupAsync([Entries.Earn("p", m, 1, 10), Entries.Earn("p", m, 2, 10)]))];

        Assert.All(await Task.WhenAll(groups), Assert.True);
        // Before: one transaction of six entries (three items); now the first two groups (four
        // entries, the limit reached) go together and the third alone.
        Assert.Equal(2, queue.BatchCount);
        await queue.StopAsync();
    }

    [Fact]
    public async Task CommitQueue_RefusesADueChangeNoStoreMayRead_EvenMadeByWithOrDefault_AndQueuesNothing()
    {
        ILedgerStore store = await CreateStoreAsync(Backend.Sqlite);
        LedgerCommitQueue queue = CreateQueue(store, batchSizeMax: 100, flushIntervalMs: 1);
        queue.Start();
        DateTimeOffset t0 = new(2026, 3, 1, 0, 0, 0, TimeSpan.Zero);
        // The constructor refuses a mark without a time; these two never ran it. The queue refuses
        // them at once (a caller's mistake), not through the task.
        DueChange markWithoutTime = new DueChange("p", "a", t0, Exact: false) with { DueAt = null };
        DueChange nobody = default;
        Assert.NotNull(markWithoutTime.Check());
        Assert.NotNull(nobody.Check());
        Assert.Null(new DueChange("p", "a", null, Exact: true).Check());

        Assert.Throws<ArgumentException>(() => { _ = queue.AppendAsync(Entries.Earn("p", "a", 1, 10), markWithoutTime); });
        Assert.Throws<ArgumentException>(() => { _ = queue.AppendGroupAsync([Entries.Earn("p", "a", 1, 10), Entries.Earn("p", "a", 2, 10)], nobody); });
        Assert.Throws<ArgumentException>(() => { _ = queue.ScheduleAsync(markWithoutTime); });

        // Nothing of them was queued: the next good append is the first batch, and the member's
        // sequence starts at 1.
        Assert.True(await queue.AppendAsync(Entries.Earn("p", "a", 1, 10), new DueChange("p", "a", t0, Exact: true)));
        Assert.Equal(1, queue.BatchCount);
        await queue.StopAsync();
        Assert.Single(await store.ReadAfterAsync("p", "a", 0, CancellationToken.None));
    }

    [Fact]
    public async Task GroupCommit_FlushWaitThatRunsOut_CommitsAloneAndTheWriterStillWakesForTheNext()
    {
        ILedgerStore store = await CreateStoreAsync(Backend.Sqlite);
        LedgerCommitQueue queue = CreateQueue(store, batchSizeMax: 100, flushIntervalMs: 20);
        queue.Start();

        Assert.True(await queue.AppendAsync(Entries.Earn("p", "a", 1, 10)));
        Assert.Equal(1, queue.BatchCount);
        // The timed-out wait was left behind; the next entry must still be picked up.
        Assert.True(await queue.AppendAsync(Entries.Earn("p", "a", 2, 10)).WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(2, queue.BatchCount);
        await queue.StopAsync();
        Assert.Equal(2, (await store.ReadAfterAsync("p", "a", 0, CancellationToken.None)).Count);
    }

    [Theory, MemberData(nameof(Backends))]
    public async Task GroupCommit_FailedTransaction_FailsEveryEntryOfTheBatchAndWritesNone(Backend backend)
    {
        ILedgerStore store = await CreateStoreRefusingBigPointsAsync(backend, "fail");
        LedgerCommitQueue queue = CreateQueue(store, batchSizeMax: 100, flushIntervalMs: 200);
        queue.Start();

        Task<bool> good = queue.AppendAsync(Entries.Earn("p", "a", 1, 10));
        Task<bool> bad = queue.AppendAsync(Entries.Earn("p", "b", 1, 5_000));

        await Assert.ThrowsAsync<LedgerUnavailableException>(() => good);
        await Assert.ThrowsAsync<LedgerUnavailableException>(() => bad);
        Assert.Empty(await store.ReadAfterAsync("p", "a", 0, CancellationToken.None));

        // The writer carries on with the next batch.
        Assert.True(await queue.AppendAsync(Entries.Earn("p", "a", 1, 10)));
        await queue.StopAsync();
        Assert.Single(await store.ReadAfterAsync("p", "a", 0, CancellationToken.None));
    }

    [Theory, MemberData(nameof(Backends))]
    public async Task GroupCommit_Stop_CommitsEverythingQueued(Backend backend)
    {
        ILedgerStore store = await CreateStoreAsync(backend);
        LedgerCommitQueue queue = CreateQueue(store, batchSizeMax: 10, flushIntervalMs: 50);
        queue.Start();

        Task<bool>[] appends = [.. Enumerable.Range(1, 95).Select(i => queue.AppendAsync(Entries.Earn("p", "m", i, 1)))];
        await queue.StopAsync();

        Assert.All(appends, t => Assert.True(t.IsCompletedSuccessfully && t.Result));
        Assert.Equal(95, (await store.ReadAfterAsync("p", "m", 0, CancellationToken.None)).Count);
    }

    [Theory]
    [InlineData(0, 2, 100, "BatchSizeMax")]
    [InlineData(100, -1, 100, "FlushIntervalMs")]
    [InlineData(100, 1_001, 100, "FlushIntervalMs")]
    [InlineData(100, 2, 99, "QueueCapacity")]
    public void CommitOptions_OutOfRange_AreRefusedNamingTheKey(int batch, int flushMs, int capacity, string key)
    {
        var options = new LedgerCommitOptions { BatchSizeMax = batch, FlushIntervalMs = flushMs, QueueCapacity = capacity };

        ArgumentOutOfRangeException e = Assert.Throws<ArgumentOutOfRangeException>(options.Validate);

        Assert.Equal(key, e.ParamName);
    }

    [Theory]
    [InlineData("sqlite")]
    [InlineData("postgres")]
    [InlineData("memory")]
    public async Task DueSchedule_MarksOnlyMoveEarlier_ExactSetsReplace_AndAClaimLeasesTheRow(string kind)
    {
        ILedgerStore store = await StoreOfKindAsync(kind);
        var t0 = new DateTimeOffset(2026, 11, 24, 12, 0, 0, TimeSpan.Zero);

        await store.AppendBatchAsync([], [], [new DueChange("p", "a", t0.AddDays(2), false), new DueChange("p", "a", t0.AddDays(1), false), new DueChange("p", "a", t0.AddDays(3), false)], null, [], CancellationToken.None);
        await store.AppendBatchAsync([], [], [new DueChange("p", "b", t0.AddDays(9), false), new DueChange("p", "c", t0, false)], null, [], CancellationToken.None);
        await store.AppendBatchAsync([], [], [new DueChange("p", "b", t0.AddDays(5), true), new DueChange("p", "c", null, true)], null, [], CancellationToken.None);
        // A later mark of a member with a row keeps the earlier time, beside a new member's row, in one batch.
        await store.AppendBatchAsync([], [], [new DueChange("p", "d", t0.AddDays(8), false), new DueChange("p", "a", t0.AddDays(4), false), new DueChange("p", "f", t0.AddDays(12), false)], null, [], CancellationToken.None);
        // A removal, an exact time and a mark of a new member, in one batch.
        await store.AppendBatchAsync([], [], [new DueChange("p", "f", null, true), new DueChange("p", "d", t0.AddDays(9), true), new DueChange("p", "e", t0.AddDays(10), false)], null, [], CancellationToken.None);
        DateTimeOffset? d = await store.ReadDueAsync("p", "d", CancellationToken.None);
        DateTimeOffset? e = await store.ReadDueAsync("p", "e", CancellationToken.None);
        DateTimeOffset? f = await store.ReadDueAsync("p", "f", CancellationToken.None);
        DateTimeOffset? a = await store.ReadDueAsync("p", "a", CancellationToken.None);
        DateTimeOffset? b = await store.ReadDueAsync("p", "b", CancellationToken.None);
        DateTimeOffset? c = await store.ReadDueAsync("p", "c", CancellationToken.None);
        IReadOnlyList<DueMember> first = await store.ClaimDueAsync(t0.AddDays(6), t0.AddDays(6).AddMinutes(1), 10, CancellationToken.None);
        IReadOnlyList<DueMember> whileLeased = await store.ClaimDueAsync(t0.AddDays(6), t0.AddDays(6).AddMinutes(1), 10, CancellationToken.None);
        IReadOnlyList<DueMember> afterLease = await store.ClaimDueAsync(t0.AddDays(6).AddMinutes(2), t0.AddDays(7), 1, CancellationToken.None);

        Assert.Equal((t0.AddDays(1), t0.AddDays(5), (DateTimeOffset?)null), (a, b, c));
        Assert.Equal((t0.AddDays(9), t0.AddDays(10), (DateTimeOffset?)null), (d, e, f));
        Assert.Equal([new DueMember("p", "a"), new DueMember("p", "b")], first);
        Assert.Empty(whileLeased);
        Assert.Single(afterLease);
    }

    [Theory]
    [InlineData("sqlite")]
    [InlineData("postgres")]
    [InlineData("memory")]
    public async Task ScheduleProgram_MarksEachEnrolledMemberOfThatProgramOnce_OnlyEarlier(string kind)
    {
        ILedgerStore store = await StoreOfKindAsync(kind);
        DateTimeOffset t0 = Entries.Now;
        static LedgerEntry Enrol(string program, string member, long sequence) =>
            new(program, member, sequence, LedgerEntryKind.Enrol, new Points(0), null, 0, null, 0, null, null, null, Entries.Now, Entries.Now);

        // b has two enrolment entries (as an import could write): an upsert may touch its row only once.
        LedgerEntry[] entries = [Enrol("p", "a", 1), Enrol("p", "b", 1), Enrol("p", "b", 2), Enrol("p", "c", 1), Enrol("q", "d", 1)];
        await store.AppendBatchAsync(entries, new bool[entries.Length], [new DueChange("p", "a", t0.AddDays(1), true), new DueChange("p", "b", t0.AddDays(9), true)],
            null, [], CancellationToken.None);

        await store.ScheduleProgramAsync("p", t0.AddDays(3), CancellationToken.None);

        var due = new List<DateTimeOffset?>();
        foreach ((string program, string member) in new[] { ("p", "a"), ("p", "b"), ("p", "c"), ("q", "d") })
        {
            due.Add(await store.ReadDueAsync(program, member, CancellationToken.None));
        }

        Assert.Equal([t0.AddDays(1), t0.AddDays(3), t0.AddDays(3), null], due);
    }

    [Theory]
    [InlineData("sqlite")]
    [InlineData("postgres")]
    [InlineData("memory")]
    public async Task AppendGroup_IsAllOrNothing(string kind)
    {
        ILedgerStore store = await StoreOfKindAsync(kind);
        await store.AppendBatchAsync([Entries.Earn("p", "other", 1, 5, "taken")], new bool[1], [], null, [], CancellationToken.None);

        bool clash = await store.AppendGroupAsync([Entries.Earn("p", "m", 1, -3, "taken#redeem"), Entries.Earn("p", "m", 2, 10, "taken")], CancellationToken.None);
        IReadOnlyList<LedgerEntry> afterClash = await store.ReadAfterAsync("p", "m", 0, CancellationToken.None);
        bool clean = await store.AppendGroupAsync([Entries.Earn("p", "m", 1, -3, "ok#redeem"), Entries.Earn("p", "m", 2, 10, "ok")], CancellationToken.None);

        Assert.False(clash);
        Assert.Empty(afterClash);
        Assert.True(clean);
        Assert.Equal([1L, 2L], (await store.ReadAfterAsync("p", "m", 0, CancellationToken.None)).Select(e => e.Sequence));
    }

    [Fact]
    public void DueChanges_CollapsePerMemberInOrder()
    {
        var t0 = new DateTimeOffset(2026, 11, 24, 12, 0, 0, TimeSpan.Zero);

        IReadOnlyList<DueChange> collapsed = DueChange.Collapse(
        [
            new DueChange("p", "a", t0.AddDays(3), true), new DueChange("p", "a", t0.AddDays(1), false),
            new DueChange("p", "b", t0.AddDays(1), false), new DueChange("p", "b", t0.AddDays(4), true),
            new DueChange("p", "c", null, true), new DueChange("p", "c", t0, false),
        ]);

        Assert.Equal(
            [new DueChange("p", "a", t0.AddDays(1), true), new DueChange("p", "b", t0.AddDays(4), true), new DueChange("p", "c", t0, true)],
            collapsed);
    }

    [Fact]
    public void DueMark_WithoutATime_IsRefused_WhileAnExactChangeWithoutOneRemovesTheRow()
    {
        ArgumentException refused = Assert.Throws<ArgumentException>(() => new DueChange("p", "a", null, Exact: false));
        Assert.Equal("DueAt", refused.ParamName);
        Assert.Null(new DueChange("p", "a", null, Exact: true).DueAt);
    }

    [Fact]
    public async Task PostgresLock_IsExclusiveAcrossStores_UntilReleased_AndOtherNamesDoNotWait()
    {
        StorageOptions options = TestDatabases.Create(Backend.Postgres, "lock");
        var first = (PostgresLedgerStore)await CreateStoreAsync(options);
        var second = (PostgresLedgerStore)await CreateStoreAsync(options);
        await using (first)
        await using (second)
        {
            HeldLock held = await first.LockAsync("links/p", CancellationToken.None);
            Task<HeldLock> waiting = second.LockAsync("links/p", CancellationToken.None);
            long other;
            await using (HeldLock otherName = await second.LockAsync("links/q", CancellationToken.None))
            {
                await Task.Delay(300);
                Assert.False(waiting.IsCompleted, "a second engine took a lock the first still held");
                other = otherName.Epoch;
            }

            await held.DisposeAsync();
            await using HeldLock taken = await waiting.WaitAsync(TimeSpan.FromSeconds(10));

            // The fencing token: the engine that takes the lock next has the larger epoch, taken
            // once it holds the lock (not when it asked: another lock was taken in between).
            Assert.True(taken.Epoch > held.Epoch, $"epochs {held.Epoch} then {taken.Epoch}");
            Assert.True(taken.Epoch > other, $"the waiting engine's epoch {taken.Epoch} was taken before {other}, while it waited");
        }
    }

    [Fact]
    public async Task PostgresLock_ANewHolderRecordsItsEpoch_OnlyOnceABatchFencedByTheLockHasCommitted()
    {
        StorageOptions options = TestDatabases.Create(Backend.Postgres, "lockorder");
        var store = (PostgresLedgerStore)await CreateStoreAsync(options);
        long first;
        await using (HeldLock held = await store.LockAsync("links/p", CancellationToken.None))
        {
            first = held.Epoch;
        }

        // A fenced batch's transaction, still open: it read the lock's row FOR SHARE.
        await using var batch = new Npgsql.NpgsqlConnection(options.ConnectionString);
        await batch.OpenAsync();
        await using Npgsql.NpgsqlTransaction transaction = await batch.BeginTransactionAsync();
        await using (var read = new Npgsql.NpgsqlCommand("SELECT epoch FROM lock_epochs_latest WHERE name = 'links/p' FOR SHARE", batch, transaction))
        {
            Assert.Equal(first, (long)(await read.ExecuteScalarAsync())!);
        }

        Task<HeldLock> next = store.LockAsync("links/p", CancellationToken.None);
        await Task.Delay(500);
        Assert.False(next.IsCompleted, "a new holder recorded its epoch while a batch fenced by the lock had not committed");

        await transaction.CommitAsync();
        await using HeldLock taken = await next.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(taken.Epoch > first);
    }

    [Fact]
    public async Task PostgresLock_WhoseEpochIsNotTheLatest_IsNotHeld_AndIsLetGo()
    {
        StorageOptions options = TestDatabases.Create(Backend.Postgres, "lockstale");
        var store = (PostgresLedgerStore)await CreateStoreAsync(options);
        await (await store.LockAsync("links/p", CancellationToken.None)).DisposeAsync();

        // As if another holder had recorded a later epoch while this one took its own (its
        // connection died after it took the lock): this hold must not put the latest back.
        await Sql.ExecuteAsync(options, "UPDATE lock_epochs_latest SET epoch = 9000000000000000000 WHERE name = 'links/p'");
        await Assert.ThrowsAsync<LedgerUnavailableException>(() => store.LockAsync("links/p", CancellationToken.None));
        Assert.Equal(9_000_000_000_000_000_000, await store.ReadLockEpochAsync("links/p", CancellationToken.None));

        // The refused hold let the lock go: the next one takes it at once.
        await Sql.ExecuteAsync(options, "UPDATE lock_epochs_latest SET epoch = 0 WHERE name = 'links/p'");
        await using HeldLock next = await store.LockAsync("links/p", CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(next.Epoch > 0);
    }

    [Fact]
    public async Task PostgresBatch_LeavesOutAnEntryWhoseLockHasANewerHolder_WithItsGroup_AndWritesTheRest()
    {
        var store = (PostgresLedgerStore)await CreateStoreAsync(Backend.Postgres);
        long older, newer;
        await using (HeldLock first = await store.LockAsync("links/p", CancellationToken.None))
        {
            older = first.Epoch;
        }

        await using (HeldLock second = await store.LockAsync("links/p", CancellationToken.None))
        {
            newer = second.Epoch;
        }

        LedgerEntry[] entries =
        [
            Entries.Earn("p", "a", 1, 10, "ta"),
            Entries.Earn("p", "b", 1, 10, "tb"),
            Entries.Earn("p", "c", 1, 10, "tc"),
            Entries.Earn("p", "d", 1, 10, "td1"),
            Entries.Earn("p", "d", 2, 10, "td2"),
            Entries.Earn("p", "e", 1, 10, "te"),
        ];
        bool[] inserted = new bool[entries.Length];
        EntryFence[] fences =
        [
            new(0, "links/p", older),
            new(1, "links/p", newer),
            new(4, "links/p", older),
            new(5, "links/never-held", 1),
        ];

        await store.AppendBatchAsync(entries, inserted, [], null, [new EntryGroup(3, 2)], fences, CancellationToken.None);

        // a's step came from the older holder; d's group holds such a step; b's is the newest
        // holder's; c is no step; e's lock was never held.
        Assert.Equal([false, true, true, false, false, true], inserted);
        Assert.Equal(["b", "c", "e"], (await Task.WhenAll(new[] { "a", "b", "c", "d", "e" }.Select(async m => (m, (await store.ReadAfterAsync("p", m, 0, CancellationToken.None)).Count))))
            .Where(x => x.Count > 0).Select(x => x.m));
        Assert.Equal(newer, await store.ReadLockEpochAsync("links/p", CancellationToken.None));
        Assert.Equal(0, await store.ReadLockEpochAsync("links/never-held", CancellationToken.None));
    }

    [Theory]
    [InlineData("memory")]
    [InlineData("sqlite")]
    [InlineData("postgres")]
    public async Task Lock_EachHoldHasALargerEpochThanTheOneBefore(string kind)
    {
        ILedgerStore store = await StoreOfKindAsync(kind);
        var epochs = new List<long>();
        for (int i = 0; i < 5; i++)
        {
            await using HeldLock held = await store.LockAsync("links/p", CancellationToken.None);
            epochs.Add(held.Epoch);
        }

        Assert.Equal(epochs.Order(), epochs);
        Assert.Equal(epochs.Count, epochs.Distinct().Count());
        Assert.All(epochs, e => Assert.True(e > 0));
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (IDisposable store in _made)
        {
            store.Dispose();
        }

        foreach (IAsyncDisposable store in _madeAsync)
        {
            await store.DisposeAsync();
        }
    }

    /// <summary>A store of the kind a theory names: "memory", "sqlite" or "postgres".</summary>
    private async Task<ILedgerStore> StoreOfKindAsync(string kind) => kind switch
    {
        "memory" => new MemoryLedgerStore(),
        "sqlite" => await CreateStoreAsync(Backend.Sqlite),
        _ => await CreateStoreAsync(Backend.Postgres),
    };

    private async Task<ILedgerStore> CreateStoreAsync(Backend backend) =>
        await CreateStoreAsync(TestDatabases.Create(backend, "ledger"));

    [Theory]
    [InlineData("sqlite")]
    [InlineData("postgres")]
    public async Task ABatchFailingHalfWay_LeavesNothing_DueTimesIncluded_AndTheNextBatchCommits(string kind)
    {
        StorageOptions options = TestDatabases.Create(kind == "sqlite" ? Backend.Sqlite : Backend.Postgres, "halfway");
        ILedgerStore store = await CreateStoreAsync(options);
        DueChange due = new("p", "m", DateTimeOffset.UtcNow.AddDays(30), Exact: true);
        // The second entry has no program: the NOT NULL column refuses it after the first is written.
        LedgerEntry broken = Entries.Earn("p", "m", 2, 20) with { ProgramId = null! };
        bool[] inserted = new bool[2];

        await Assert.ThrowsAnyAsync<System.Data.Common.DbException>(() =>
            store.AppendBatchAsync([Entries.Earn("p", "m", 1, 10), broken], inserted, [due], null, [], CancellationToken.None));
        bool[] next = new bool[1];
        await store.AppendBatchAsync([Entries.Earn("p", "n", 1, 5)], next, [], null, [], CancellationToken.None);

        Assert.Equal([false, false], inserted);
        Assert.Equal([true], next);
        Assert.Empty(await store.ReadAfterAsync("p", "m", 0, CancellationToken.None));
        Assert.Single(await store.ReadAfterAsync("p", "n", 0, CancellationToken.None));
        Assert.Equal(0, await Sql.ScalarAsync(options, "SELECT count(*) FROM member_due"));
        Assert.Equal(5, await Sql.ScalarAsync(options, "SELECT coalesce(sum(value), 0) FROM report_totals WHERE metric = 1"));
    }

    [Fact]
    public async Task APostgresBatchTheServerEndsToBreakADeadlock_IsWrittenAgain_NotFailed()
    {
        StorageOptions options = TestDatabases.Create(Backend.Postgres, "deadlock");
        ILedgerStore store = await CreateStoreAsync(options);
        DateTimeOffset at = new(2027, 1, 1, 0, 0, 0, TimeSpan.Zero);
        await store.AppendBatchAsync([], [], [new DueChange("p", "m1", at, Exact: true), new DueChange("p", "m2", at, Exact: true)], null, [], CancellationToken.None);

        // Another transaction (a program change scheduling its members, say) holds m2 and then
        // asks for m1, while the batch, which takes its rows in key order, holds m1 and waits for m2.
        await using var other = new NpgsqlConnection(options.ConnectionString);
        await other.OpenAsync();
        await using NpgsqlTransaction otherTransaction = await other.BeginTransactionAsync();
        await using (var lockM2 = new NpgsqlCommand("SELECT 1 FROM member_due WHERE program_id = 'p' AND member_id = 'm2' FOR UPDATE", other, otherTransaction))
        {
            await lockM2.ExecuteNonQueryAsync();
        }

        DateTimeOffset later = at.AddDays(1);
        Task batch = store.AppendBatchAsync([Entries.Earn("p", "m1", 1, 10), Entries.Earn("p", "m2", 1, 10)], new bool[2],
            [new DueChange("p", "m1", later, Exact: true), new DueChange("p", "m2", later, Exact: true)], null, [], CancellationToken.None);
        await Task.Delay(TimeSpan.FromMilliseconds(300));
        Assert.False(batch.IsCompleted, "the batch waits for m2");
        await using (var lockM1 = new NpgsqlCommand("SELECT 1 FROM member_due WHERE program_id = 'p' AND member_id = 'm1' FOR UPDATE", other, otherTransaction))
        {
            // The server finds the deadlock after deadlock_timeout (1 s) and ends the batch, which waited first.
            await lockM1.ExecuteNonQueryAsync();
        }

        await otherTransaction.CommitAsync();
        await batch;

        Assert.Single(await store.ReadAfterAsync("p", "m1", 0, CancellationToken.None));
        Assert.Single(await store.ReadAfterAsync("p", "m2", 0, CancellationToken.None));
        Assert.Equal(later, await store.ReadDueAsync("p", "m2", CancellationToken.None));
    }

    private async Task<ILedgerStore> CreateStoreAsync(StorageOptions options)
    {
        ILedgerStore store = options.Provider == StorageProvider.Sqlite
            ? new SqliteLedgerStore(options.ConnectionString)
            : new PostgresLedgerStore(options.ConnectionString);
        if (store is IDisposable disposable)
        {
            _made.Add(disposable);
        }
        else if (store is IAsyncDisposable asyncDisposable)
        {
            _madeAsync.Add(asyncDisposable);
        }

        await store.MigrateAsync(CancellationToken.None);
        return store;
    }

    /// <summary>A store whose database refuses an entry of more than 1,000 points, aborting the whole transaction (a real constraint).</summary>
    private async Task<ILedgerStore> CreateStoreRefusingBigPointsAsync(Backend backend, string name)
    {
        StorageOptions options = TestDatabases.Create(backend, name);
        ILedgerStore store = await CreateStoreAsync(options);
        await ExecuteAsync(options, "CREATE TRIGGER no_big_points BEFORE INSERT ON ledger_entries WHEN NEW.points > 1000 BEGIN SELECT RAISE(ABORT, 'too big'); END;",
            "ALTER TABLE ledger_entries ADD CONSTRAINT no_big_points CHECK (points <= 1000);");
        return store;
    }

    private static LedgerCommitQueue CreateQueue(ILedgerStore store, int batchSizeMax, int flushIntervalMs) =>
        new(store, Options.Create(new LedgerCommitOptions { BatchSizeMax = batchSizeMax, FlushIntervalMs = flushIntervalMs, QueueCapacity = 10_000 }),
            NullLogger<LedgerCommitQueue>.Instance);

    private static Task ExecuteAsync(StorageOptions options, string sqliteSql, string postgresSql) =>
        Sql.ExecuteAsync(options, options.Provider == StorageProvider.Sqlite ? sqliteSql : postgresSql);
}
