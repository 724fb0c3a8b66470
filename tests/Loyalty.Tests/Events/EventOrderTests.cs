using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Npgsql;

namespace Loyalty.Tests.Events;

/// <summary>
/// The ledger's event order never lets a reader skip an entry: an entry positioned before one
/// already read can never appear later, even while several writers commit at once.
/// </summary>
public sealed class EventOrderTests
{
    private const string Program = "order";

    [Fact]
    public async Task Postgres_AnEntryOfATransactionStillRunning_HoldsBackEveryEntryCommittedAfterIt()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "evorder");
        await using var store = new PostgresLedgerStore(storage.ConnectionString);
        await store.MigrateAsync(CancellationToken.None);

        // An early writer takes its transaction id first and commits last.
        await using var early = new NpgsqlConnection(storage.ConnectionString);
        await early.OpenAsync();
        await using NpgsqlTransaction running = await early.BeginTransactionAsync();
        await using (var insert = new NpgsqlCommand(
            "INSERT INTO ledger_entries (program_id, member_id, seq, kind, points, fingerprint, amount_minor, occurred_at, recorded_at) " +
            "VALUES ('order', 'early', 1, 1, 0, 0, 0, now(), now());", early, running))
        {
            await insert.ExecuteNonQueryAsync();
        }

        await store.AppendBatchAsync([Entries.Earn(Program, "late", 1, 10)], new bool[1], [], null, [], CancellationToken.None);

        Assert.Empty(await store.ReadEventsAsync(Program, EventPosition.Start, 100, CancellationToken.None));
        Assert.Equal(EventPosition.Start, await store.ReadEventsEndAsync(Program, CancellationToken.None));
        Assert.Single(await Sql.RowsAsync(storage, "SELECT member_id FROM ledger_entries;", r => r.GetString(0)));

        await running.CommitAsync();
        // Any transaction of the server holds the horizon back while it runs (other tests' too), so
        // wait for both; but never may "late" be read without "early" before it.
        IReadOnlyList<PositionedEntry> read = [];
        for (int attempt = 0; attempt < 200 && read.Count < 2; attempt++)
        {
            read = await store.ReadEventsAsync(Program, EventPosition.Start, 100, CancellationToken.None);
            Assert.True(read.Count == 0 || read[0].Entry.MemberId == "early", "an entry was read before one positioned ahead of it");
            await Task.Delay(read.Count < 2 ? 50 : 0);
        }

        Assert.Equal(["early", "late"], read.Select(e => e.Entry.MemberId));
        Assert.True(read[0].Position < read[1].Position);
        EventPosition end = EventPosition.Start;
        for (int attempt = 0; attempt < 200 && end != read[1].Position; attempt++)
        {
            end = await store.ReadEventsEndAsync(Program, CancellationToken.None);
            await Task.Delay(end != read[1].Position ? 50 : 0);
        }

        Assert.Equal(read[1].Position, end);
    }

    /// <remarks>
    /// A node frozen half-way through a batch (paused, swapped out, its network cut) keeps a
    /// transaction with an id open; every event read stops at it. Here its connection is one of the
    /// store's writer connections, left idle inside a transaction that wrote an entry.
    /// </remarks>
    [Fact]
    public async Task Postgres_AWriterLeftWaitingInsideItsTransaction_IsEndedByTheServer_AndHoldsBackNoEventsAfterThat()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "evstall");
        await using var store = new PostgresLedgerStore(storage.ConnectionString, writerIdleInTransactionMaxMs: 1_000);
        await store.MigrateAsync(CancellationToken.None);
        await using NpgsqlConnection frozen = await store.WriterSource.OpenConnectionAsync();
        await using NpgsqlTransaction running = await frozen.BeginTransactionAsync();
        await using (var insert = new NpgsqlCommand(
            "INSERT INTO ledger_entries (program_id, member_id, seq, kind, points, fingerprint, amount_minor, occurred_at, recorded_at) " +
            "VALUES ('order', 'frozen', 1, 1, 0, 0, 0, now(), now());", frozen, running))
        {
            await insert.ExecuteNonQueryAsync();
        }

        await store.AppendBatchAsync([Entries.Earn(Program, "late", 1, 10)], new bool[1], [], null, [], CancellationToken.None);
        IReadOnlyList<PositionedEntry> read = [];
        for (int attempt = 0; attempt < 300 && read.Count == 0; attempt++)
        {
            read = await store.ReadEventsAsync(Program, EventPosition.Start, 100, CancellationToken.None);
            await Task.Delay(read.Count == 0 ? 50 : 0);
        }

        Assert.Equal(["late"], read.Select(e => e.Entry.MemberId));
        await Assert.ThrowsAnyAsync<NpgsqlException>(() => running.CommitAsync());
        Assert.Equal(["late"], await Sql.RowsAsync(storage, "SELECT member_id FROM ledger_entries;", r => r.GetString(0)));
    }

    [Theory]
    [InlineData(999)]
    [InlineData(600_001)]
    [InlineData(-1)]
    public void Postgres_AWriterIdleInTransactionLimitOutOfRange_IsRefusedNamingTheSetting(int milliseconds)
    {
        ArgumentOutOfRangeException refused = Assert.Throws<ArgumentOutOfRangeException>(() => new PostgresLedgerStore("Host=127.0.0.1", milliseconds));

        Assert.Contains("Storage:PostgresWriterIdleInTransactionMs must be 0 (off) or 1000..600000", refused.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AReaderFollowingConcurrentWriters_SeesEveryEntryOnce_InAscendingPositions(Backend backend)
    {
        StorageOptions storage = TestDatabases.Create(backend, "evfollow");
        ILedgerStore store = backend == Backend.Postgres
            ? new PostgresLedgerStore(storage.ConnectionString)
            : new SqliteLedgerStore(storage.ConnectionString);
        await store.MigrateAsync(CancellationToken.None);
        const int Writers = 6, BatchesPerWriter = 40, EntriesPerBatch = 25;
        // PostgreSQL takes the writers' transactions at once (as several engines would); one
        // SQLite engine commits one batch at a time, as its contract says.
        using var oneAtATime = new SemaphoreSlim(backend == Backend.Postgres ? Writers : 1);

        async Task WriteAsync(int writer)
        {
            for (int batch = 0; batch < BatchesPerWriter; batch++)
            {
                LedgerEntry[] entries = [.. Enumerable.Range(0, EntriesPerBatch)
                    .Select(i => Entries.Earn(Program, $"w{writer}-m{i}", batch + 1, 1, txn: $"w{writer}-{batch}-{i}"))];
                await oneAtATime.WaitAsync();
                try
                {
                    await store.AppendBatchAsync(entries, new bool[entries.Length], [], null, [], CancellationToken.None);
                }
                finally
                {
                    oneAtATime.Release();
                }
            }
        }

        var seen = new List<PositionedEntry>();
        Task writing = Task.WhenAll(Enumerable.Range(0, Writers).Select(w => Task.Run(() => WriteAsync(w))));
        EventPosition last = EventPosition.Start;
        int expected = Writers * BatchesPerWriter * EntriesPerBatch;
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        while (seen.Count < expected)
        {
            IReadOnlyList<PositionedEntry> page = await store.ReadEventsAsync(Program, last, 97, deadline.Token);
            seen.AddRange(page);
            last = page.Count > 0 ? page[^1].Position : last;
            if (page.Count == 0 && writing.IsCompleted && (await store.ReadEventsAsync(Program, last, 1, deadline.Token)).Count == 0)
            {
                break;
            }
        }

        await writing;
        Assert.Equal(expected, seen.Count);
        Assert.Equal(expected, seen.Select(e => (e.Entry.MemberId, e.Entry.Sequence)).Distinct().Count());
        for (int i = 1; i < seen.Count; i++)
        {
            Assert.True(seen[i - 1].Position < seen[i].Position, $"position {i} is not after position {i - 1}");
        }

        if (store is IAsyncDisposable disposable)
        {
            await disposable.DisposeAsync();
        }
        else if (store is IDisposable sync)
        {
            sync.Dispose();
        }
    }
}
