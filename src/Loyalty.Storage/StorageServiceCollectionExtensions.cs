using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Runtime;
using Orleans.Storage;

namespace Loyalty.Storage;

/// <summary>Wires the ledger, its group commit and the snapshot store into a silo.</summary>
public static class StorageSiloBuilderExtensions
{
    /// <summary>The name of the Orleans grain storage that holds member and program snapshots.</summary>
    public const string SnapshotStorageName = "loyalty";

    /// <summary>
    /// Adds the ledger store for the configured database, the group-commit queue (started and
    /// stopped with the silo, after the schema is migrated) and Orleans' ADO.NET grain storage
    /// for snapshots on the same database.
    /// </summary>
    public static ISiloBuilder AddLoyaltyStorage(this ISiloBuilder silo, StorageOptions storage, Action<LedgerCommitOptions>? configureLedger = null)
    {
        ArgumentNullException.ThrowIfNull(storage);
        storage = storage.Resolved();
        if (storage.Provider == StorageProvider.Sqlite)
        {
            // Before any connection opens: Orleans' snapshot storage opens its own (see SqliteBusyWait).
            SqliteBusyWait.Install();
        }

        silo.Services.AddSingleton(Options.Create(storage));
        silo.Services.AddOptions<LedgerCommitOptions>().Configure(o => configureLedger?.Invoke(o));
        silo.Services.AddSingleton(_ => CreateLedgerStore(storage));
        silo.Services.AddSingleton<IAccessStore>(services => storage.Provider switch
        {
            StorageProvider.Sqlite => new SqliteAccessStore(storage.ConnectionString),
            StorageProvider.Postgres => new PostgresAccessStore(storage.ConnectionString),
            _ => new MemoryAccessStore(services.GetService<TimeProvider>() ?? TimeProvider.System),
        });
        silo.Services.AddSingleton<IWebhookStore>(_ => storage.Provider switch
        {
            StorageProvider.Sqlite => new SqliteWebhookStore(storage.ConnectionString),
            StorageProvider.Postgres => new PostgresWebhookStore(storage.ConnectionString),
            _ => new MemoryWebhookStore(),
        });
        silo.Services.AddSingleton(services => new SnapshotSerializer(
            new OrleansGrainStorageSerializer(services.GetRequiredService<Orleans.Serialization.Serializer>()),
            services.GetRequiredService<ILogger<SnapshotSerializer>>(),
            services.GetService<TimeProvider>() ?? TimeProvider.System));
        silo.Services.AddSingleton<FaultInjector>();
        silo.Services.AddSingleton<LedgerCommits>();
        silo.Services.AddSingleton<LedgerCommitQueue>();
        silo.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>, LedgerLifecycle>();
        if (storage.Provider == StorageProvider.Memory)
        {
            silo.AddMemoryGrainStorage(SnapshotStorageName);
            return silo;
        }

        silo.AddAdoNetGrainStorage(SnapshotStorageName, (OptionsBuilder<AdoNetGrainStorageOptions> builder) =>
            builder.Configure<IServiceProvider>((o, services) =>
            {
                o.Invariant = storage.Provider == StorageProvider.Postgres ? "Npgsql" : "System.Data.SQLite";
                o.ConnectionString = storage.ConnectionString;
                // Orleans' own binary format: compact, versioned by [Id] attributes; a member's
                // snapshot that cannot be read is rebuilt from the ledger (see SnapshotSerializer).
                o.GrainStorageSerializer = services.GetRequiredService<SnapshotSerializer>();
            }));
        return silo;
    }

    /// <summary>The ledger store for resolved options (<see cref="StorageOptions.Resolved"/>).</summary>
    public static ILedgerStore CreateLedgerStore(StorageOptions storage) => storage.Provider switch
    {
        StorageProvider.Sqlite => new SqliteLedgerStore(storage.ConnectionString, storage.SqliteWalCheckpointPages, storage.SqliteCheckpointIntervalMs),
        StorageProvider.Postgres => new PostgresLedgerStore(storage.ConnectionString, storage.PostgresWriterIdleInTransactionMs),
        StorageProvider.Memory => new MemoryLedgerStore(),
        _ => throw new InvalidOperationException($"Unknown storage provider {storage.Provider}."),
    };

    /// <summary>Reads <see cref="StorageOptions"/> from the <c>Storage</c> configuration section.</summary>
    public static StorageOptions ReadStorageOptions(this IConfiguration configuration)
    {
        var options = new StorageOptions();
        configuration.GetSection(StorageOptions.SectionName).Bind(options);
        return options;
    }
}

/// <summary>Migrates the schema and runs the group commit for as long as the silo lives.</summary>
internal sealed partial class LedgerLifecycle(ILedgerStore store, LedgerCommitQueue queue, ILogger<LedgerLifecycle> logger)
    : ILifecycleParticipant<ISiloLifecycle>
{
    public void Participate(ISiloLifecycle lifecycle) =>
        // Before every Orleans provider: the membership table and the grain storage read their
        // queries from the schema this migrates (membership at RuntimeInitialize).
        lifecycle.Subscribe(nameof(LedgerLifecycle), ServiceLifecycleStage.RuntimeInitialize - 1, StartAsync, StopAsync);

    private async Task StartAsync(CancellationToken cancellationToken)
    {
        await store.MigrateAsync(cancellationToken);
        // Before the first commit: a rebuild must not race the writers of its program.
        (int programs, long entries) = await Reports.ReportRebuild.RunDueAsync(store, cancellationToken);
        if (programs > 0)
        {
            LogTotalsRebuilt(programs, entries);
        }

        queue.Start();
        LogStarted(store.GetType().Name);
        if (store is MemoryLedgerStore)
        {
            LogNotDurable();
        }
    }

    private async Task StopAsync(CancellationToken cancellationToken)
    {
        await queue.StopAsync();
        LogStopped(queue.EntryCount, queue.BatchCount);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Ledger ready on {Store}")]
    private partial void LogStarted(string store);

    [LoggerMessage(Level = LogLevel.Information, Message = "Report totals rebuilt from the ledger for {Programs} programs ({Entries} entries)")]
    private partial void LogTotalsRebuilt(int programs, long entries);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Storage:Provider is Memory: nothing is durable; for benchmarks only")]
    private partial void LogNotDurable();

    [LoggerMessage(Level = LogLevel.Information, Message = "Ledger stopped after {EntryCount} entries in {BatchCount} batches")]
    private partial void LogStopped(long entryCount, long batchCount);
}
