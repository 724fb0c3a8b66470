using Grpc.Core;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Cluster;

/// <summary>Several engines on one PostgreSQL form one Orleans cluster; SQLite serves one engine only.</summary>
public sealed class ClusterTests
{
    private const string Program = "cluster";
    private const int MembersCount = 30;

    [Fact]
    public async Task ThreeEngines_OnOnePostgres_FormOneCluster_AndServeEveryMemberFromAnyNode()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "cluster");
        await using ClusterNodes cluster = await ClusterNodes.StartAsync(storage, 3);
        IReadOnlyList<HostProcess> nodes = cluster.Nodes;
        long active = await ActiveSilosAsync(storage, expected: 3);
        await nodes[0].Programs.PutProgramAsync(Wire.Program(Program));
        for (int m = 0; m < MembersCount; m++)
        {
            await nodes[m % 2].Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = $"m{m}" });
        }

        long acked = 0;
        foreach (HostProcess node in nodes.Take(2))
        {
            using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream = node.Purchases.Ingest();
            for (int i = 0; i < 150; i++)
            {
                await stream.RequestStream.WriteAsync(Wire.Purchase(Program, $"m{i % MembersCount}", $"{node.GetHashCode()}-{i}", 1_00 + i));
            }

            await stream.RequestStream.CompleteAsync();
            while (await stream.ResponseStream.MoveNext(CancellationToken.None))
            {
                Assert.Equal(V1.AckStatus.Accepted, stream.ResponseStream.Current.Status);
                acked += stream.ResponseStream.Current.PointsEarned;
            }
        }

        long balances = 0;
        for (int m = 0; m < MembersCount; m++)
        {
            balances += (await nodes[2].Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = $"m{m}" })).Balance;
        }

        Assert.Equal(3, active);
        Assert.Equal(acked, balances);
        Assert.Equal(acked, await Sql.ScalarAsync(storage, $"SELECT coalesce(sum(points), 0) FROM ledger_entries WHERE program_id = '{Program}' AND kind = 2"));
    }

    [Fact]
    public async Task SecondEngine_OnTheSameSqliteFile_RefusesToStart_WithAClearMessage()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Sqlite, "one-engine");
        await using InProcessEngine first = await InProcessEngine.StartAsync(storage);

        Exception refused = await Assert.ThrowsAnyAsync<Exception>(() => InProcessEngine.StartAsync(storage));

        string messages = string.Join(" | ", Chain(refused).Select(e => e.Message));
        Assert.Contains("is held by another engine: an SQLite database serves one engine", messages, StringComparison.Ordinal);
        Assert.Equal("cluster-free", (await first.Programs.PutProgramAsync(Wire.Program("cluster-free"))).ProgramId);
    }

    [Theory]
    [InlineData("--Members:RecentTransactionsMax=0", "Members:RecentTransactionsMax must be 1..1024")]
    [InlineData("--Members:SnapshotEveryEntries=-5", "Members:SnapshotEveryEntries must be 1..1000000")]
    public async Task Engine_WithAMemberSettingOutOfRange_RefusesToStart_NamingIt(string setting, string message)
    {
        // With no transaction remembered, every purchase's entry would fail to apply, and every
        // member with one in its ledger would fail to load: the engine does not start instead.
        StorageOptions storage = TestDatabases.Create(Backend.Sqlite, "bad-members");

        Exception refused = await Assert.ThrowsAnyAsync<Exception>(() => InProcessEngine.StartAsync(storage, null, setting));

        Assert.Contains(message, string.Join(" | ", Chain(refused).Select(e => e.Message)), StringComparison.Ordinal);
    }

    /// <summary>The silos the membership table shows active, once it shows <paramref name="expected"/> (or after 60 s).</summary>
    private static async Task<long> ActiveSilosAsync(StorageOptions storage, int expected)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        long active;
        do
        {
            active = await Sql.ScalarAsync(storage, "SELECT count(*) FROM orleansmembershiptable WHERE status = 3");
            if (active >= expected)
            {
                break;
            }

            await Task.Delay(250);
        }
        while (clock.Elapsed < TimeSpan.FromSeconds(60));
        return active;
    }

    private static IEnumerable<Exception> Chain(Exception e)
    {
        for (Exception? current = e; current is not null; current = current.InnerException)
        {
            yield return current;
        }

        if (e is AggregateException aggregate)
        {
            foreach (Exception inner in aggregate.InnerExceptions.SelectMany(Chain))
            {
                yield return inner;
            }
        }
    }
}
