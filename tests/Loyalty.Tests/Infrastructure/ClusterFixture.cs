using Loyalty.Grains;
using Loyalty.Storage;
using System.Collections.Concurrent;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
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

    /// <summary>The clock of the loyalty rules in this cluster's silo; tests move it forward by days.</summary>
    /// <remarks>It starts on a whole second, so times the tests derive from it are whole microseconds like the ledger's.</remarks>
    public FakeTimeProvider Clock { get; } = new(DateTimeOffset.FromUnixTimeSeconds(DateTimeOffset.UtcNow.ToUnixTimeSeconds()));

    /// <summary>Clocks by fixture id: the silo configurator is created by the test cluster, not by us.</summary>
    private static readonly ConcurrentDictionary<string, FakeTimeProvider> Clocks = new();

    public async Task InitializeAsync()
    {
        Storage = TestDatabases.Create(Backend, "grains");
        var builder = new TestClusterBuilder(1);
        builder.Properties["Storage:Provider"] = Storage.Provider.ToString();
        builder.Properties["Storage:ConnectionString"] = Storage.ConnectionString;
        string clockId = Guid.NewGuid().ToString("N");
        Clocks[clockId] = Clock;
        builder.Properties["Test:ClockId"] = clockId;
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
        public void Configure(ISiloBuilder siloBuilder)
        {
            siloBuilder.Services.AddSingleton(new EngineClock(Clocks[siloBuilder.Configuration["Test:ClockId"]!]));
            siloBuilder.AddLoyaltyGrains(
                siloBuilder.Configuration.ReadStorageOptions(),
                members =>
                {
                    members.SnapshotEveryEntries = SnapshotEveryEntries;
                    members.RecentTransactionsMax = RecentTransactionsMax;
                    members.SnapshotOnDeactivateMinEntries = 1;
                },
                ledger => ledger.FlushIntervalMs = 1,
                schedule => schedule.PollIntervalMs = 50);
        }
    }
}

public sealed class SqliteClusterFixture() : ClusterFixture(Backend.Sqlite);

public sealed class PostgresClusterFixture() : ClusterFixture(Backend.Postgres);
