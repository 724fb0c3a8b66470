using Loyalty.Grains;
using Loyalty.Storage;
using Microsoft.Extensions.Configuration;
using Orleans.TestingHost;

namespace Loyalty.Tests.Infrastructure;

/// <summary>
/// One in-process Orleans cluster (Microsoft.Orleans.TestingHost) per backend, shared by a test
/// class. Tests isolate themselves with their own program ids.
/// </summary>
public abstract class ClusterFixture(Backend backend) : IAsyncLifetime
{
    /// <summary>Small so that tests cross snapshot and memory boundaries quickly.</summary>
    public const int SnapshotEveryEntries = 5;

    public const int RecentTransactionsMax = 4;

    public Backend Backend { get; } = backend;

    public TestCluster Cluster { get; private set; } = null!;

    public StorageOptions Storage { get; private set; } = null!;

    public IGrainFactory Grains => Cluster.GrainFactory;

    public async Task InitializeAsync()
    {
        Storage = TestDatabases.Create(Backend, "grains");
        var builder = new TestClusterBuilder(1);
        builder.Properties["Storage:Provider"] = Storage.Provider.ToString();
        builder.Properties["Storage:ConnectionString"] = Storage.ConnectionString;
        builder.AddSiloBuilderConfigurator<SiloConfigurator>();
        Cluster = builder.Build();
        await Cluster.DeployAsync();
    }

    public async Task DisposeAsync()
    {
        await Cluster.StopAllSilosAsync();
        await Cluster.DisposeAsync();
    }

    /// <summary>Deactivates every idle grain, so the next call activates from storage.</summary>
    public Task DeactivateAllAsync() =>
        Grains.GetGrain<IManagementGrain>(0).ForceActivationCollection(TimeSpan.Zero);

    private sealed class SiloConfigurator : ISiloConfigurator
    {
        public void Configure(ISiloBuilder siloBuilder) =>
            siloBuilder.AddLoyaltyGrains(
                siloBuilder.Configuration.ReadStorageOptions(),
                members =>
                {
                    members.SnapshotEveryEntries = SnapshotEveryEntries;
                    members.RecentTransactionsMax = RecentTransactionsMax;
                },
                ledger => ledger.FlushIntervalMs = 1);
    }
}

public sealed class SqliteClusterFixture() : ClusterFixture(Backend.Sqlite);

public sealed class PostgresClusterFixture() : ClusterFixture(Backend.Postgres);
