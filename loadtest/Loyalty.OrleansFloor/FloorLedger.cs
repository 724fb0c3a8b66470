using Loyalty.Storage;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Loyalty.OrleansFloor;

/// <summary>
/// The ledger a floor run's calls commit to: the engine's own group-commit queue over its own SQLite
/// or PostgreSQL store, with their default settings. Each call appends one entry shaped like a
/// purchase's earn (details of one component and two lines, a transaction id, store and money),
/// so batches, indexes, report totals and the log write what the engine's would; only the rules,
/// the member's state and the gateway are missing. The program id is new for every run, so runs
/// can share a PostgreSQL database. Or, with <see cref="Kind.File"/>, no database at all: the
/// disk's floor under any ledger.
/// </summary>
public sealed class FloorLedger : IAsyncDisposable
{
    /// <summary>Which store the entries go to.</summary>
    public enum Kind
    {
        /// <summary>No ledger: calls answer without a commit.</summary>
        None,

        /// <summary>The engine's SQLite store (WAL, synchronous=FULL, the background checkpointer).</summary>
        Sqlite,

        /// <summary>The engine's PostgreSQL store.</summary>
        Postgres,

        /// <summary>No database: an ideal group commit to a file (<see cref="FileGroupCommit"/>), the disk's own floor.</summary>
        File,
    }

    /// <summary>
    /// The details every entry carries. Shared, since they are immutable: the store still encodes
    /// them once per entry, as it does a purchase's.
    /// </summary>
    private static readonly EarnDetails Details = new()
    {
        Components = [new BreakdownComponent(ComponentKind.Base, "base", 12)],
        TierBefore = "base",
        TierAfter = "base",
        EarnDay = 740_000,
        EarnMonth = 24_300,
        Lines = [new SkuAmount("sku-1", 800, 10_000, Quantity: 1), new SkuAmount("sku-2", 434, 10_000, Quantity: 2)],
    };

    private readonly ILedgerStore? _store;
    private readonly LedgerCommitQueue? _queue;
    private readonly FileGroupCommit? _log;
    private readonly string _runId;
    private readonly string? _ownFile;
    private long _transactions;
    private long _entriesBefore;
    private long _batchesBefore;

    private FloorLedger(ILedgerStore store, string? ownFile)
    {
        _runId = Guid.NewGuid().ToString("N")[..12];
        ProgramId = "floor-" + _runId;
        _store = store;
        _ownFile = ownFile;
        _queue = new LedgerCommitQueue(store, Options.Create(new LedgerCommitOptions()), NullLogger<LedgerCommitQueue>.Instance);
    }

    private FloorLedger(FileGroupCommit log) => (_log, _runId, ProgramId) = (log, "", "");

    /// <summary>The program the run's entries belong to; made once, so that no call pays for the string.</summary>
    public string ProgramId { get; }

    /// <summary>Entries committed since <see cref="StartClock"/> (or since the ledger opened, before it).</summary>
    public long EntriesCommitted => AllEntries - _entriesBefore;

    /// <summary>Batches committed since <see cref="StartClock"/> (or since the ledger opened, before it).</summary>
    public long BatchesCommitted => AllBatches - _batchesBefore;

    /// <summary>With <see cref="Kind.File"/>, the duration of its syncs since <see cref="StartClock"/> at a percentile (ms); otherwise null.</summary>
    public double? SyncMs(double percentile) => _log?.SyncMs(percentile);

    private long AllEntries => _log?.Entries ?? _queue!.EntryCount;

    private long AllBatches => _log?.Batches ?? _queue!.BatchCount;

    /// <summary>
    /// Counts from here on: the warm-up's entries (one per member, many to a batch) would
    /// otherwise outnumber a run's and describe batches and syncs the measured rate never makes.
    /// Call it with nothing in flight.
    /// </summary>
    public void StartClock()
    {
        (_entriesBefore, _batchesBefore) = (AllEntries, AllBatches);
        _log?.ForgetSyncs();
    }

    /// <summary>Opens the store the options name (a new SQLite file when none is named), brings its schema up to date and starts the queue.</summary>
    public static async Task<FloorLedger> OpenAsync(FloorOptions options)
    {
        if (options.Ledger == Kind.File)
        {
            return new FloorLedger(new FileGroupCommit(options.LedgerConnection ?? Path.GetTempPath()));
        }

        string? ownFile = null;
        ILedgerStore store;
        if (options.Ledger == Kind.Sqlite)
        {
            string connection = options.LedgerConnection
                ?? "Data Source=" + (ownFile = Path.Combine(Path.GetTempPath(), $"loyalty-floor-{Guid.NewGuid():N}.db"));
            store = new SqliteLedgerStore(connection);
        }
        else
        {
            store = new PostgresLedgerStore(options.LedgerConnection!);
        }

        var ledger = new FloorLedger(store, ownFile);
        try
        {
            await store.MigrateAsync(CancellationToken.None);
        }
        catch
        {
            await ledger.CloseAsync();
            throw;
        }

        ledger._queue!.Start();
        return ledger;
    }

    /// <summary>
    /// Commits entry <paramref name="sequence"/> of member <paramref name="memberId"/>; true when
    /// written. Transaction ids are numbered across the run, as the load tester's tills number theirs.
    /// </summary>
    public Task<bool> AppendAsync(string memberId, long sequence)
    {
        if (_log is not null)
        {
            return _log.AppendAsync();
        }

        long transaction = Interlocked.Increment(ref _transactions);
        DateTimeOffset now = DateTimeOffset.UtcNow;
        var entry = new LedgerEntry(ProgramId, memberId, sequence, LedgerEntryKind.Earn, new Points(12), _runId + "-" + transaction, transaction,
            "store-0", 1_234, "USD", null, null, now, now, 1, null, Details);
        return _queue!.AppendAsync(entry);
    }

    /// <summary>
    /// The failure of an append that answered false: the entry's transaction id was in the ledger
    /// already, which a run that numbers its own ids never causes, so it ends the run.
    /// </summary>
    public static InvalidOperationException NotWritten(string memberId, long sequence) =>
        new($"Entry {sequence} of member {memberId} was not written: its key was taken.");

    /// <summary>Commits what is queued, stops the queue, closes the store and deletes a SQLite file the run made.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_log is not null)
        {
            _log.Dispose();
            return;
        }

        try
        {
            await _queue!.StopAsync();
        }
        finally
        {
            await CloseAsync();
        }
    }

    /// <summary>Closes the store and deletes a SQLite file the run made (with its log, shared memory and lock).</summary>
    private async Task CloseAsync()
    {
        try
        {
            switch (_store)
            {
                case IAsyncDisposable closing:
                    await closing.DisposeAsync();
                    break;
                case IDisposable closing:
                    closing.Dispose();
                    break;
            }
        }
        finally
        {
            if (_ownFile is not null)
            {
                Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
                foreach (string file in new[] { _ownFile, _ownFile + "-wal", _ownFile + "-shm", _ownFile + ".lock" })
                {
                    File.Delete(file);
                }
            }
        }
    }
}
