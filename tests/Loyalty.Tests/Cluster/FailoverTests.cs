using System.Collections.Concurrent;
using System.Diagnostics;
using Grpc.Core;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Xunit.Abstractions;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Cluster;

/// <summary>
/// Three engines on one PostgreSQL; purchases stream through two of them to members spread over
/// all three, and the third is killed (SIGKILL) at a seeded point. After the cluster has declared
/// it dead, the till resends everything: every acknowledged purchase is in the ledger exactly
/// once with its points, and balances equal ledger sums.
/// </summary>
public sealed class FailoverTests(ITestOutputHelper output)
{
    private const string Program = "failover";
    private const int MembersCount = 60;
    private const int PurchasesCount = 600;

    /// <summary>How long after the kill every member must answer again (the engine's detection is tuned to about 6 s).</summary>
    private static readonly TimeSpan FailoverMax = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public async Task NodeKilledMidStream_LosesAndDoublesNothing_AndItsMembersAnswerElsewhere(int seed)
    {
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "failover");
        await using ClusterNodes cluster = await ClusterNodes.StartAsync(storage, 3);
        IReadOnlyList<HostProcess> nodes = cluster.Nodes;
        await ClusterLedger.EnrolAcrossAsync(nodes, Program, MembersCount);

        V1.Purchase[] purchases = [.. Enumerable.Range(0, PurchasesCount).Select(i => Wire.Purchase(Program, $"m{i % MembersCount}", $"p{seed}-{i}", 1_00 + i))];
        int killAfter = new Random(seed).Next(50, PurchasesCount - 50);
        var acked = new ConcurrentDictionary<string, long>();
        var clock = Stopwatch.StartNew();
        TimeSpan killedAt = TimeSpan.Zero;
        await StreamAsync(nodes[0], nodes[1], purchases, acked, sentSoFar =>
        {
            if (sentSoFar == killAfter)
            {
                nodes[2].Kill();
                killedAt = clock.Elapsed;
            }
        });

        await UntilEveryMemberAnswersAsync(nodes[0]);
        TimeSpan failover = clock.Elapsed - killedAt;
        int refusedBeforeResend = PurchasesCount - acked.Count;
        Dictionary<string, long> final = await ResendUntilAllAnsweredAsync(nodes[0], purchases, acked);

        output.WriteLine($"seed {seed}: killed after {killAfter} purchases; every member answered {failover.TotalSeconds:F1} s after the kill; " +
            $"{refusedBeforeResend} of {PurchasesCount} not acknowledged before the resend");
        Assert.True(failover < FailoverMax, $"members answered again only {failover} after the kill");
        Assert.All(acked, a => Assert.Equal(a.Value, final[a.Key]));
        Assert.Equal(PurchasesCount, final.Count);
        await ClusterLedger.AssertEachPurchaseOnceAsync(storage, Program, final, MembersCount, nodes[0]);
    }

    [Fact]
    public async Task StreamWhoseNodeDies_FailsFast_WithUnavailable_AndAnotherNodeTakesTheResend()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "streamdies");
        await using ClusterNodes cluster = await ClusterNodes.StartAsync(storage, 2);
        HostProcess doomed = cluster.Nodes[1], survivor = cluster.Nodes[0];
        await survivor.Programs.PutProgramAsync(Wire.Program(Program));
        await survivor.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = "m0" });
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream = doomed.Purchases.Ingest();
        await stream.RequestStream.WriteAsync(Wire.Purchase(Program, "m0", "before", 1_00));
        Assert.True(await stream.ResponseStream.MoveNext(CancellationToken.None));

        var clock = Stopwatch.StartNew();
        doomed.Kill();
        RpcException cut = await Assert.ThrowsAsync<RpcException>(() => stream.ResponseStream.MoveNext(CancellationToken.None));
        TimeSpan failed = clock.Elapsed;
        // The member may have lived on the killed node: until the cluster declares it dead, the resend is refused UNAVAILABLE.
        V1.PurchaseAck? resent = null;
        while (resent is null && clock.Elapsed < TimeSpan.FromSeconds(60))
        {
            try
            {
                resent = await survivor.Purchases.AccrueAsync(Wire.Purchase(Program, "m0", "before", 1_00), deadline: DateTime.UtcNow.AddSeconds(30));
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable)
            {
                await Task.Delay(200);
            }
        }

        output.WriteLine($"the stream failed {failed.TotalMilliseconds:F0} ms after its node was killed, with {cut.StatusCode}");
        Assert.Equal(StatusCode.Unavailable, cut.StatusCode);
        Assert.True(failed < TimeSpan.FromSeconds(5), $"the stream failed only after {failed}");
        Assert.Equal(V1.AckStatus.Duplicate, resent?.Status);
    }

    /// <summary>Sends the purchases over one stream to each of two nodes, alternately; records the accepted ones.</summary>
    private static async Task StreamAsync(HostProcess a, HostProcess b, V1.Purchase[] purchases, ConcurrentDictionary<string, long> acked, Action<int> sent)
    {
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> first = a.Purchases.Ingest(deadline: DateTime.UtcNow.AddMinutes(2));
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> second = b.Purchases.Ingest(deadline: DateTime.UtcNow.AddMinutes(2));
        Task[] readers = [ReadAsync(first, acked), ReadAsync(second, acked)];
        for (int i = 0; i < purchases.Length; i++)
        {
            await (i % 2 == 0 ? first : second).RequestStream.WriteAsync(purchases[i]);
            sent(i + 1);
            await Task.Delay(2);
        }

        await first.RequestStream.CompleteAsync();
        await second.RequestStream.CompleteAsync();
        await Task.WhenAll(readers);
    }

    private static async Task ReadAsync(AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> stream, ConcurrentDictionary<string, long> acked)
    {
        try
        {
            while (await stream.ResponseStream.MoveNext(CancellationToken.None))
            {
                V1.PurchaseAck ack = stream.ResponseStream.Current;
                if (ack.Status is V1.AckStatus.Accepted or V1.AckStatus.Duplicate)
                {
                    acked[ack.TransactionId] = ack.PointsEarned;
                }
            }
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Cancelled)
        {
            // A stream cut by the failure: its unacknowledged purchases are resent below.
        }
    }

    /// <summary>Waits until every member answers a read through <paramref name="node"/>; returns when.</summary>
    private static async Task<TimeSpan> UntilEveryMemberAnswersAsync(HostProcess node)
    {
        var clock = Stopwatch.StartNew();
        for (int m = 0; m < MembersCount; m++)
        {
            while (true)
            {
                try
                {
                    await node.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = $"m{m}" }, deadline: DateTime.UtcNow.AddSeconds(5));
                    break;
                }
                catch (RpcException) when (clock.Elapsed < TimeSpan.FromSeconds(90))
                {
                    await Task.Delay(100);
                }
            }
        }

        return clock.Elapsed;
    }

    /// <summary>The till's recovery: every purchase again, until each is answered ACCEPTED or DUPLICATE; the points each answer gave.</summary>
    private static async Task<Dictionary<string, long>> ResendUntilAllAnsweredAsync(HostProcess node, V1.Purchase[] purchases, ConcurrentDictionary<string, long> acked)
    {
        var final = new Dictionary<string, long>();
        for (int round = 0; round < 20 && final.Count < purchases.Length; round++)
        {
            foreach (V1.Purchase purchase in purchases.Where(p => !final.ContainsKey(p.TransactionId)))
            {
                try
                {
                    V1.PurchaseAck ack = await node.Purchases.AccrueAsync(purchase, deadline: DateTime.UtcNow.AddSeconds(10));
                    Assert.True(!acked.ContainsKey(purchase.TransactionId) || ack.Status == V1.AckStatus.Duplicate,
                        $"{purchase.TransactionId} was acknowledged before the kill, and its resend answered {ack.Status}");
                    final[purchase.TransactionId] = ack.PointsEarned;
                }
                catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded)
                {
                    await Task.Delay(200);
                }
            }
        }

        Assert.Equal(purchases.Length, final.Count);
        return final;
    }
}
