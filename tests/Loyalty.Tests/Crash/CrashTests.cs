using System.Collections.Concurrent;
using Grpc.Core;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Crash;

/// <summary>
/// The durability promise end to end: a host killed with SIGKILL while a stream is in flight
/// loses no acknowledged event, duplicates none, and resends change nothing.
/// </summary>
public sealed class CrashTests
{
    private const string Program = "crash";
    private const int MemberCount = 100;
    private const int EventCount = 30_000;
    private const int KillAfterAcks = 3_000;

    public static TheoryData<Backend> Backends => [Backend.Sqlite, Backend.Postgres];

    [Theory, MemberData(nameof(Backends))]
    public async Task SigkillMidStream_EveryAcknowledgedEventSurvivesExactlyOnce_AndResendsChangeNoBalance(Backend backend)
    {
        StorageOptions storage = TestDatabases.Create(backend, "crash");
        V1.Purchase[] events = [.. Enumerable.Range(0, EventCount).Select(i => Wire.Purchase(Program, $"m{i % MemberCount}", $"e{i}", 1_00 + (i % 5_000)))];

        // Arrange: a host with a program and members, then a stream killed mid-flight.
        Dictionary<string, long> acknowledged;
        await using (HostProcess first = await StartHostAsync(storage))
        {
            await first.Programs.PutProgramAsync(Wire.Program(Program, rate: 1));
            for (int m = 0; m < MemberCount; m++)
            {
                await first.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = $"m{m}" });
            }

            acknowledged = await StreamUntilKilledAsync(first, events);
        }

        Assert.InRange(acknowledged.Count, KillAfterAcks, EventCount - 1);

        await using HostProcess second = await StartHostAsync(storage);

        // Every acknowledged event is in the ledger, exactly once, with the acknowledged points.
        Dictionary<string, (long Points, long Copies)> ledger = await ReadLedgerAsync(storage);
        Assert.All(acknowledged, a => Assert.Equal((a.Value, 1L), ledger[a.Key]));
        await AssertBalancesEqualLedgerAsync(second, storage);

        // Resending everything completes the unacknowledged events and re-earns nothing acknowledged.
        Dictionary<string, V1.PurchaseAck> resent = await StreamAllAsync(second, events);
        string[] rejected = Rejections(resent.Values);
        Assert.True(rejected.Length == 0, $"Resends rejected:{Environment.NewLine}{string.Join(Environment.NewLine, rejected)}{Environment.NewLine}The engine's log:{Environment.NewLine}{second.RecentOutput}");
        Assert.All(acknowledged, a => Assert.Equal((V1.AckStatus.Duplicate, a.Value), (resent[a.Key].Status, resent[a.Key].PointsEarned)));
        Dictionary<string, long> balances = await AssertBalancesEqualLedgerAsync(second, storage);
        Assert.Equal(events.Sum(e => e.AmountMinor / 100), balances.Values.Sum());

        // A second full resend is all duplicates and changes no balance.
        Dictionary<string, V1.PurchaseAck> again = await StreamAllAsync(second, events);
        Assert.All(again.Values, ack => Assert.Equal(V1.AckStatus.Duplicate, ack.Status));
        Assert.Equal(balances, await AssertBalancesEqualLedgerAsync(second, storage));
    }

    /// <summary>The first rejections with their reasons, so a failure says why and not only how many.</summary>
    private static string[] Rejections(IEnumerable<V1.PurchaseAck> acks) =>
        [.. acks.Where(ack => ack.Status == V1.AckStatus.Rejected).Take(5).Select(ack => $"{ack.TransactionId}: {ack.ErrorCode} {ack.ErrorMessage}")];

    private static async Task<HostProcess> StartHostAsync(StorageOptions storage)
    {
        int port = Ports.Free();
        return await HostProcess.StartAsync(EngineArgs.For(storage, port), port);
    }

    private static async Task<Dictionary<string, long>> StreamUntilKilledAsync(HostProcess host, V1.Purchase[] events)
    {
        var acked = new ConcurrentDictionary<string, long>();
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> call = host.Purchases.Ingest(cancellationToken: cancel.Token);
        var killed = new TaskCompletionSource();
        Task reader = Task.Run(async () =>
        {
            try
            {
                await foreach (V1.PurchaseAck ack in call.ResponseStream.ReadAllAsync(cancel.Token))
                {
                    Assert.Equal(V1.AckStatus.Accepted, ack.Status);
                    acked[ack.TransactionId] = ack.PointsEarned;
                    if (acked.Count == KillAfterAcks)
                    {
                        host.Kill();
                        killed.SetResult();
                    }
                }
            }
            catch (RpcException)
            {
                // The connection died with the process: expected.
            }
        });
        try
        {
            foreach (V1.Purchase e in events)
            {
                if (killed.Task.IsCompleted)
                {
                    break;
                }

                await call.RequestStream.WriteAsync(e);
            }
        }
        catch (Exception e) when (e is RpcException or InvalidOperationException or IOException)
        {
            // Writing into a dead connection.
        }

        await killed.Task.WaitAsync(cancel.Token);
        await reader;
        return new Dictionary<string, long>(acked);
    }

    private static async Task<Dictionary<string, V1.PurchaseAck>> StreamAllAsync(HostProcess host, V1.Purchase[] events)
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(180));
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> call = host.Purchases.Ingest(cancellationToken: cancel.Token);
        var acks = new Dictionary<string, V1.PurchaseAck>();
        Task reader = Task.Run(async () =>
        {
            await foreach (V1.PurchaseAck ack in call.ResponseStream.ReadAllAsync(cancel.Token))
            {
                acks.Add(ack.TransactionId, ack);
            }
        });
        foreach (V1.Purchase e in events)
        {
            await call.RequestStream.WriteAsync(e);
        }

        await call.RequestStream.CompleteAsync();
        await reader;
        Assert.Equal(events.Length, acks.Count);
        return acks;
    }

    private static async Task<Dictionary<string, long>> AssertBalancesEqualLedgerAsync(HostProcess host, StorageOptions storage)
    {
        var balances = new Dictionary<string, long>();
        for (int m = 0; m < MemberCount; m++)
        {
            V1.Member member = await host.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = $"m{m}" });
            Assert.Equal(await Sql.SumPointsAsync(storage, Program, member.MemberId), member.Balance);
            balances[member.MemberId] = member.Balance;
        }

        return balances;
    }

    private static async Task<Dictionary<string, (long, long)>> ReadLedgerAsync(StorageOptions storage) =>
        (await Sql.RowsAsync(storage,
            "SELECT txn_id, sum(points), count(*) FROM ledger_entries WHERE program_id = 'crash' AND txn_id IS NOT NULL GROUP BY txn_id",
            r => (Txn: r.GetString(0), Points: r.GetInt64(1), Copies: r.GetInt64(2))))
        .ToDictionary(row => row.Txn, row => (row.Points, row.Copies));
}
