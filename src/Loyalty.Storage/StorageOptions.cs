namespace Loyalty.Storage;

/// <summary>Which database backs the engine. Bound from the <c>Storage</c> configuration section.</summary>
public sealed class StorageOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Storage";

    /// <summary>The database kind.</summary>
    public StorageProvider Provider { get; set; } = StorageProvider.Sqlite;

    /// <summary>
    /// ADO.NET connection string. For SQLite, a relative <c>Data Source</c> is resolved against
    /// the working directory and its folder is created on start.
    /// </summary>
    public string ConnectionString { get; set; } = "Data Source=data/loyalty.db";

    /// <summary>
    /// Orleans' service id; rows in the grain storage table are scoped by it, so several
    /// deployments may share one database without seeing each other's snapshots.
    /// </summary>
    public string ServiceId { get; set; } = "loyaltygrains";

    /// <summary>
    /// SQLite only: how many pages the write-ahead log may hold before the ledger's writer copies
    /// them back into the database file (SQLite's <c>wal_autocheckpoint</c>). With members spread
    /// at random, every batch dirties about one index page per entry; at SQLite's default of 1,000
    /// pages the writer checkpointed after nearly every batch and wrote each page twice per batch.
    /// A larger log lets a page changed by many batches reach the file once per checkpoint, at the
    /// cost of a larger log file (pages of 4 KiB) and a longer pause when the checkpoint runs. It is
    /// set on the ledger writer's connection; Orleans' snapshot storage commits on its own
    /// connections with SQLite's default, so snapshots (every <c>Members:SnapshotEveryEntries</c>)
    /// can still start a checkpoint earlier.
    /// </summary>
    public int SqliteWalCheckpointPages { get; set; } = SqliteLedgerStore.WalCheckpointPagesDefault;

    /// <summary>
    /// SQLite only: how often, in milliseconds, a background connection copies the write-ahead log
    /// back into the database file (a passive checkpoint, beside the writer's commits), so that the
    /// ledger's writer does not stall a batch on a checkpoint of its own; 250 by default, 100..60000,
    /// or 0 to leave checkpoints to the writer at <see cref="SqliteWalCheckpointPages"/>.
    /// </summary>
    public int SqliteCheckpointIntervalMs { get; set; } = SqliteLedgerStore.CheckpointIntervalMsDefault;

    /// <summary>
    /// PostgreSQL only: how long, in milliseconds, a batch writer's transaction may wait between its
    /// statements before the server ends it (a node frozen or cut off half-way through a batch
    /// otherwise holds back every node's event reads); 10,000 by default, 1000..600000, or 0 to
    /// send no such setting (a pooler that refuses startup options, such as PgBouncer's default).
    /// </summary>
    public int PostgresWriterIdleInTransactionMs { get; set; } = PostgresLedgerStore.WriterIdleInTransactionMaxMs;

    /// <summary>
    /// A copy in which a relative SQLite path is made absolute (against the working directory),
    /// so the ledger and Orleans' snapshot storage open the same file whatever folder they run in.
    /// </summary>
    public StorageOptions Resolved()
    {
        if (Provider != StorageProvider.Sqlite)
        {
            return this;
        }

        var builder = new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(ConnectionString);
        builder.DataSource = Path.GetFullPath(builder.DataSource);
        return new StorageOptions { Provider = Provider, ConnectionString = builder.ToString(), ServiceId = ServiceId, SqliteWalCheckpointPages = SqliteWalCheckpointPages, SqliteCheckpointIntervalMs = SqliteCheckpointIntervalMs, PostgresWriterIdleInTransactionMs = PostgresWriterIdleInTransactionMs };
    }
}

/// <summary>The supported databases.</summary>
public enum StorageProvider
{
    /// <summary>An embedded SQLite file (the default; no server needed).</summary>
    Sqlite,

    /// <summary>A PostgreSQL server (production, and cluster mode).</summary>
    Postgres,

    /// <summary>
    /// Process memory, for benchmarks only: nothing is durable. It measures the engine without
    /// storage, the ceiling that SQLite and PostgreSQL are compared with.
    /// </summary>
    Memory,
}

/// <summary>
/// Limits of the group commit. A batch is flushed when it holds <see cref="BatchSizeMax"/>
/// entries or its first entry has waited <see cref="FlushIntervalMs"/>, whichever comes first.
/// </summary>
public sealed class LedgerCommitOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Ledger";

    /// <summary>
    /// Most entries in one database transaction, give or take one member's group (a merge's or a
    /// wake's entries, at most a few hundred), which is never split.
    /// </summary>
    public int BatchSizeMax { get; set; } = 4096;

    /// <summary>
    /// Longest time the first entry of a batch waits for company, in milliseconds. By default 0:
    /// the writer commits whatever is queued at once, and entries that arrive during a commit form
    /// the next batch, so batches still grow with load. Waiting only added latency: at 70 % of the
    /// maximum load, 2 ms doubled the median ack time on SQLite (4.2 ms at 0, 8.0 ms at 2) without
    /// raising the maximum throughput.
    /// </summary>
    public int FlushIntervalMs { get; set; }

    /// <summary>Most entries waiting for a commit; appenders wait when it is full (backpressure).</summary>
    public int QueueCapacity { get; set; } = 65_536;

    /// <summary>Throws when an option is out of range, naming it.</summary>
    public void Validate()
    {
        if (BatchSizeMax is < 1 or > 100_000)
        {
            throw new ArgumentOutOfRangeException(nameof(BatchSizeMax), BatchSizeMax, "Ledger:BatchSizeMax must be 1..100000.");
        }

        if (FlushIntervalMs is < 0 or > 1_000)
        {
            throw new ArgumentOutOfRangeException(nameof(FlushIntervalMs), FlushIntervalMs, "Ledger:FlushIntervalMs must be 0..1000.");
        }

        if (QueueCapacity < BatchSizeMax)
        {
            throw new ArgumentOutOfRangeException(nameof(QueueCapacity), QueueCapacity, "Ledger:QueueCapacity must be at least Ledger:BatchSizeMax.");
        }
    }
}
