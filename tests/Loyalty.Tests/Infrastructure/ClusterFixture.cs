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

    /// <summary>The services of the cluster's silo (in this process), for its ledger store and fault injector.</summary>
    public IServiceProvider SiloServices =>
        (Cluster.Primary as InProcessSiloHandle ?? throw new InvalidOperationException("The test cluster's silo is not in process.")).SiloHost.Services;

    /// <summary>The clock of the loyalty rules in this cluster's silo; tests move it forward by days.</summary>
    /// <remarks>It starts on a whole second, so times the tests derive from it are whole microseconds like the ledger's.</remarks>
    public FakeTimeProvider Clock { get; } = new(DateTimeOffset.FromUnixTimeSeconds(DateTimeOffset.UtcNow.ToUnixTimeSeconds()));

    /// <summary>Clocks by fixture id: the silo configurator is created by the test cluster, not by us.</summary>
    private static readonly ConcurrentDictionary<string, FakeTimeProvider> Clocks = new();

    /// <summary>Orleans' default wait for a grain call's answer in this cluster's silo, when not its own default (30 s).</summary>
    protected virtual TimeSpan? ResponseTimeout => null;

    public async Task InitializeAsync()
    {
        Storage = TestDatabases.Create(Backend, "grains");
        var builder = new TestClusterBuilder(1);
        if (ResponseTimeout is { } timeout)
        {
            builder.Properties["Test:ResponseTimeoutMs"] = ((long)timeout.TotalMilliseconds).ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

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
            if (siloBuilder.Configuration["Test:ResponseTimeoutMs"] is { } ms)
            {
                siloBuilder.Configure<Orleans.Configuration.SiloMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromMilliseconds(long.Parse(ms, System.Globalization.CultureInfo.InvariantCulture)));
            }

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

/// <summary>A SQLite cluster whose grain calls give up after 2 s (Orleans' default is 30 s): for steps that outlast a call's wait.</summary>
public sealed class ShortTimeoutClusterFixture() : ClusterFixture(Backend.Sqlite)
{
    protected override TimeSpan? ResponseTimeout => TimeSpan.FromSeconds(2);
}
