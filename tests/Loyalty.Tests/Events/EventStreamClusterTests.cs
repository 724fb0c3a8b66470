using Grpc.Core;
using Loyalty.Host.Events;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Events;

/// <summary>
/// Two engines on one PostgreSQL commit at the same time; a subscriber on one of them, cut off
/// mid-way and reconnected to the other with its last cursor, misses nothing and sees each
/// member's events in the ledger's order.
/// </summary>
public sealed class EventStreamClusterTests
{
    private const string Program = "evcluster";
    private const int MembersPerEngine = 10, PurchasesPerMember = 12;

    [Fact]
    public async Task ASubscriberReconnectingToAnotherEngine_WithItsCursor_MissesNothing_WhileBothEnginesCommit()
    {
        StorageOptions storage = TestDatabases.Create(Backend.Postgres, "evcluster");
        await using InProcessEngine a = await InProcessEngine.StartAsync(storage);
        await using InProcessEngine b = await InProcessEngine.StartAsync(storage);
        await a.Programs.PutProgramAsync(EventStreamTests.TieredProgram(Program));
        string[] onA = [.. Enumerable.Range(0, MembersPerEngine).Select(i => "a" + i)];
        string[] onB = [.. Enumerable.Range(0, MembersPerEngine).Select(i => "b" + i)];

        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var seen = new List<V1.Event>();
        using (AsyncServerStreamingCall<V1.Event> first = new V1.Events.EventsClient(a.Invoker).Subscribe(
            new V1.SubscribeRequest { ProgramId = Program, FromBeginning = true }, cancellationToken: cancel.Token))
        {
            // Both engines write at once (each its own members, so each member lives on one engine).
            Task writing = Task.WhenAll(
                Task.Run(() => EventStreamTests.EnrolAndBuyAsync(a, onA, PurchasesPerMember, "p", Program)),
                Task.Run(() => EventStreamTests.EnrolAndBuyAsync(b, onB, PurchasesPerMember, "p", Program)));
            // Cut off after a part of what is coming, while the writers still write.
            seen.AddRange(await EventStreamTests.ReadAsync(first, 2 * MembersPerEngine * PurchasesPerMember / 3));
            Assert.False(writing.IsCompleted, "the writers finished before the subscriber was cut off; the test proves less");
            await writing;
        }

        int total = await EventStreamTests.ExpectedEventCountAsync(a, [.. onA, .. onB], Program);
        using AsyncServerStreamingCall<V1.Event> second = new V1.Events.EventsClient(b.Invoker).Subscribe(
            new V1.SubscribeRequest { ProgramId = Program, AfterCursor = seen[^1].Cursor }, cancellationToken: cancel.Token);
        seen.AddRange(await EventStreamTests.ReadAsync(second, total - seen.Count));

        EventStreamTests.AssertEachEntryOnceInLedgerOrder(seen);
        Assert.Equal(2 * MembersPerEngine, seen.Count(e => e.Type == "member.enrolled"));
        Assert.Equal(2 * MembersPerEngine * PurchasesPerMember, seen.Count(e => e.Type == "points.earned"));
        Assert.Contains(seen, e => e.Type == LoyaltyEvents.TierChanged);
    }
}
