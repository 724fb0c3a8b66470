using Loyalty.Api;
using Grpc.Core;
using Loyalty.Host.Events;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Events;

/// <summary>
/// The event stream: replay then live, resumable from any cursor, filtered by type, refusing what
/// it cannot serve, and carrying no personal data of an erased member.
/// </summary>
public sealed class EventStreamTests
{
    private const string Program = "ev";
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task Subscribe_ReplaysHistoryThenFollowsLive_AndResumesAfterAnyCursor(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "evlive"));
        await engine.Programs.PutProgramAsync(TieredProgram());
        await EnrolAndBuyAsync(engine, ["a", "b", "c"], purchases: 4, prefix: "h");
        var events = new V1.Events.EventsClient(engine.Invoker);

        // History: 3 enrolments, 12 purchases, and the tier changes they caused.
        using var cancel = new CancellationTokenSource(Wait);
        using AsyncServerStreamingCall<V1.Event> call = events.Subscribe(new V1.SubscribeRequest { ProgramId = Program, FromBeginning = true }, cancellationToken: cancel.Token);
        int historyCount = await ExpectedEventCountAsync(engine, ["a", "b", "c"]);
        List<V1.Event> seen = await ReadAsync(call, historyCount);

        // Live: purchases made while the stream is open arrive on it.
        await EnrolAndBuyAsync(engine, ["d"], purchases: 3, prefix: "l");
        await BuyAsync(engine, "a", 2, "l");
        int total = await ExpectedEventCountAsync(engine, ["a", "b", "c", "d"]);
        seen.AddRange(await ReadAsync(call, total - historyCount));

        AssertEachEntryOnceInLedgerOrder(seen);
        Assert.Contains(seen, e => e.Type == LoyaltyEvents.TierChanged && e.TierChange.FromTier == "base" && e.TierChange.ToTier == "silver");
        V1.Member a = await engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "a" });
        Assert.Equal(a.Balance, seen.Where(e => e.MemberId == "a" && e.Type != LoyaltyEvents.TierChanged).Sum(e => e.Entry.Points));

        // Resume after any event: the rest follows, exactly.
        foreach (int k in new[] { 0, 5, historyCount - 1, seen.Count - 2 })
        {
            using AsyncServerStreamingCall<V1.Event> resumed = events.Subscribe(new V1.SubscribeRequest { ProgramId = Program, AfterCursor = seen[k].Cursor }, cancellationToken: cancel.Token);
            List<V1.Event> rest = await ReadAsync(resumed, seen.Count - k - 1);
            Assert.Equal(seen.Skip(k + 1).Select(e => e.EventId), rest.Select(e => e.EventId));
        }
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task Subscribe_FromNow_SkipsHistory_AndTypesFilterWhatArrives(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "evnow"));
        await engine.Programs.PutProgramAsync(TieredProgram());
        await EnrolAndBuyAsync(engine, ["a"], purchases: 3, prefix: "h");
        var events = new V1.Events.EventsClient(engine.Invoker);
        using var cancel = new CancellationTokenSource(Wait);
        using AsyncServerStreamingCall<V1.Event> all = events.Subscribe(new V1.SubscribeRequest { ProgramId = Program }, cancellationToken: cancel.Token);
        using AsyncServerStreamingCall<V1.Event> tiers = events.Subscribe(
            new V1.SubscribeRequest { ProgramId = Program, FromBeginning = true, EventTypes = { LoyaltyEvents.TierChanged } }, cancellationToken: cancel.Token);
        // The stream's start is fixed when its headers arrive.
        await all.ResponseHeadersAsync;
        await tiers.ResponseHeadersAsync;

        await EnrolAndBuyAsync(engine, ["b"], purchases: 2, prefix: "n");

        List<V1.Event> fresh = await ReadAsync(all, await ExpectedEventCountAsync(engine, ["b"]));
        Assert.All(fresh, e => Assert.Equal("b", e.MemberId));
        List<V1.Event> tierChanges = await ReadAsync(tiers, 2);
        Assert.All(tierChanges, e => Assert.Equal(LoyaltyEvents.TierChanged, e.Type));
        Assert.Equal(["a", "b"], tierChanges.Select(e => e.MemberId));
    }

    [Fact]
    public async Task Subscribe_RefusesWhatItCannotServe_WithAStatusNamingTheProblem()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "evbad"));
        await engine.Programs.PutProgramAsync(TieredProgram());
        var events = new V1.Events.EventsClient(engine.Invoker);
        string pos = (await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = Program, Scope = V1.KeyScope.Pos, Name = "till" })).Secret;

        async Task<RpcException> Refused(V1.Events.EventsClient client, V1.SubscribeRequest request)
        {
            using AsyncServerStreamingCall<V1.Event> call = client.Subscribe(request, deadline: DateTime.UtcNow.Add(Wait));
            return await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext());
        }

        RpcException cursor = await Refused(events, new V1.SubscribeRequest { ProgramId = Program, AfterCursor = "v1.x.2.0" });
        RpcException type = await Refused(events, new V1.SubscribeRequest { ProgramId = Program, EventTypes = { "points.stolen" } });
        RpcException till = await Refused(new V1.Events.EventsClient(engine.Channel.WithKey(pos)), new V1.SubscribeRequest { ProgramId = Program });

        Assert.Equal(StatusCode.InvalidArgument, cursor.StatusCode);
        Assert.Contains("after_cursor", cursor.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.InvalidArgument, type.StatusCode);
        Assert.Contains("points.stolen", type.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.PermissionDenied, till.StatusCode);
    }

    [Fact]
    public async Task OneProgram_CannotTakeEveryStreamOfANode_OthersStillSubscribe()
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "evshare"), null, "--Events:SubscribersPerProgramMax=2");
        await engine.Programs.PutProgramAsync(TieredProgram("greedy"));
        await engine.Programs.PutProgramAsync(TieredProgram("other"));
        var events = new V1.Events.EventsClient(engine.Invoker);
        using var cancel = new CancellationTokenSource(Wait);
        AsyncServerStreamingCall<V1.Event> Open(string program) => events.Subscribe(new V1.SubscribeRequest { ProgramId = program }, cancellationToken: cancel.Token);

        // A stream from now with nothing happening waits for events: still waiting after a moment is served, a refusal ends it at once.
        static async Task<RpcException?> RefusalOf(AsyncServerStreamingCall<V1.Event> call)
        {
            Task<bool> next = call.ResponseStream.MoveNext();
            if (await Task.WhenAny(next, Task.Delay(TimeSpan.FromMilliseconds(500))) != next)
            {
                return null;
            }

            RpcException refused = await Assert.ThrowsAsync<RpcException>(() => next);
            return refused;
        }

        using AsyncServerStreamingCall<V1.Event> first = Open("greedy"), second = Open("greedy");
        Assert.Null(await RefusalOf(first));
        Assert.Null(await RefusalOf(second));
        using AsyncServerStreamingCall<V1.Event> third = Open("greedy"), other = Open("other");
        RpcException? refused = await RefusalOf(third);
        RpcException? otherRefused = await RefusalOf(other);

        // A closed stream gives its place back when its call ends on the server.
        first.Dispose();
        RpcException? afterClose = new(Status.DefaultCancelled);
        for (int i = 0; i < 20 && afterClose is not null; i++)
        {
            using AsyncServerStreamingCall<V1.Event> retry = Open("greedy");
            afterClose = await RefusalOf(retry);
        }

        Assert.Equal(StatusCode.ResourceExhausted, refused?.StatusCode);
        Assert.Contains("Events:SubscribersPerProgramMax", refused!.Status.Detail, StringComparison.Ordinal);
        Assert.Null(otherRefused);
        Assert.Null(afterClose);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task ASubscriberThatFallsBehind_ReadsTheLedgerInstead_AndMissesNothing(Backend backend)
    {
        // A buffer of 16 entries: the subscriber below falls out of live delivery many times over.
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "evslow"), null,
            "--Events:SubscriberBufferEntriesMax=16", "--Events:PageEntries=7");
        await engine.Programs.PutProgramAsync(TieredProgram());
        await EnrolAndBuyAsync(engine, ["a", "b"], purchases: 1, prefix: "h");
        var events = new V1.Events.EventsClient(engine.Invoker);
        using var cancel = new CancellationTokenSource(Wait * 2);
        using AsyncServerStreamingCall<V1.Event> call = events.Subscribe(new V1.SubscribeRequest { ProgramId = Program, FromBeginning = true }, cancellationToken: cancel.Token);
        List<V1.Event> seen = await ReadAsync(call, 1);

        // Purchases while the subscriber reads nothing, then it reads everything.
        string[] members = [.. Enumerable.Range(0, 12).Select(i => "s" + i)];
        await EnrolAndBuyAsync(engine, members, purchases: 8, prefix: "x");
        int total = await ExpectedEventCountAsync(engine, ["a", "b", .. members]);
        seen.AddRange(await ReadAsync(call, total - 1));

        AssertEachEntryOnceInLedgerOrder(seen);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AnErasedMembersEvents_CarryNoPersonalData(Backend backend)
    {
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "everase"));
        await engine.Programs.PutProgramAsync(TieredProgram());
        await EnrolAndBuyAsync(engine, ["a"], purchases: 1, prefix: "h");
        await engine.Members.SetMemberFlagsAsync(new V1.SetMemberFlagsRequest { ProgramId = Program, MemberId = "a", Flags = { "vip-jane-doe" } });
        await engine.Members.AdjustPointsAsync(new V1.AdjustPointsRequest { ProgramId = Program, MemberId = "a", Points = 5, Reason = "Jane Doe called about her order", TransactionId = "adj-1" });
        await engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = Program, MemberId = "a", Reason = "the member asked" });

        using var cancel = new CancellationTokenSource(Wait);
        using AsyncServerStreamingCall<V1.Event> call = new V1.Events.EventsClient(engine.Invoker).Subscribe(
            new V1.SubscribeRequest { ProgramId = Program, FromBeginning = true }, cancellationToken: cancel.Token);
        List<V1.Event> seen = await ReadAsync(call, await ExpectedEventCountAsync(engine, ["a"]));

        string everything = string.Join("\n", seen.Select(e => e.ToString()));
        Assert.DoesNotContain("Jane", everything, StringComparison.Ordinal);
        Assert.Contains(seen, e => e.Type == "member.erased");
        Assert.Contains(seen, e => e.Type == "points.adjusted" && e.Entry.Reason == "erased");
    }

    [Fact]
    public void EveryLedgerEntryKind_HasAnEventType_AndCursorsRoundTrip()
    {
        foreach (LedgerEntryKind kind in Enum.GetValues<LedgerEntryKind>())
        {
            Assert.True(LoyaltyEvents.TypeOfKind.ContainsKey(kind), $"{kind} has no event type");
        }

        var position = new EventPosition(123_456_789_012, 42);
        Assert.True(EventCursor.TryParse(EventCursor.Format(position, 1), out EventPosition parsed, out int index));
        Assert.Equal((position, 1), (parsed, index));
        Assert.False(EventCursor.TryParse("v1.-1.2.0", out _, out _));
        Assert.False(EventCursor.TryParse("v1.1.2.2", out _, out _));
        Assert.False(EventCursor.TryParse(new string('1', 100), out _, out _));
        Assert.Equal(("m-1", 7L, 1), LoyaltyEvents.ParseId(LoyaltyEvents.IdOf(Entries.Earn("p", "m-1", 7, 10), 1)));
        Assert.Null(LoyaltyEvents.ParseId("m/0"));
    }

    /// <summary>A program with two tiers, so that purchases cause tier changes: silver at 100 points.</summary>
    internal static V1.PutProgramRequest TieredProgram(string program = Program)
    {
        V1.PutProgramRequest request = Wire.Program(program);
        request.Settings.Tiers = new V1.TierLadder
        {
            Basis = V1.TierBasis.Points,
            WindowDays = 365,
            Tiers = { new V1.Tier { Name = "base", Threshold = 0 }, new V1.Tier { Name = "silver", Threshold = 100 } },
        };
        return request;
    }

    internal static async Task EnrolAndBuyAsync(InProcessEngine engine, IEnumerable<string> members, int purchases, string prefix, string program = Program)
    {
        foreach (string member in members)
        {
            await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = program, MemberId = member });
            await BuyAsync(engine, member, purchases, prefix, program);
        }
    }

    internal static async Task BuyAsync(InProcessEngine engine, string member, int purchases, string prefix, string program = Program)
    {
        for (int i = 0; i < purchases; i++)
        {
            await engine.Purchases.AccrueAsync(Wire.Purchase(program, member, $"{prefix}-{member}-{i}", 60_00));
        }
    }

    /// <summary>The events the members' ledgers give: one per entry, plus one per tier change.</summary>
    internal static async Task<int> ExpectedEventCountAsync(InProcessEngine engine, IEnumerable<string> members, string program = Program)
    {
        int count = 0;
        foreach (string member in members)
        {
            V1.ListLedgerResponse ledger = await engine.Members.ListLedgerAsync(new V1.ListLedgerRequest { ProgramId = program, MemberId = member, PageSize = 500 });
            count += ledger.Entries.Sum(e => e.Breakdown is { } b && b.TierAfter.Length > 0 && (b.DowngradedFrom.Length > 0 ? b.DowngradedFrom : b.TierBefore) != b.TierAfter ? 2 : 1);
        }

        return count;
    }

    internal static async Task<List<V1.Event>> ReadAsync(AsyncServerStreamingCall<V1.Event> call, int count)
    {
        var events = new List<V1.Event>(count);
        while (events.Count < count)
        {
            Assert.True(await call.ResponseStream.MoveNext(), $"the stream ended after {events.Count} of {count} events");
            events.Add(call.ResponseStream.Current);
        }

        return events;
    }

    /// <summary>Each entry's events once, per member in sequence order with no gap, cursors ascending.</summary>
    internal static void AssertEachEntryOnceInLedgerOrder(IReadOnlyList<V1.Event> events)
    {
        Assert.Equal(events.Count, events.Select(e => e.EventId).Distinct().Count());
        Assert.Equal(events.Count, events.Select(e => e.Cursor).Distinct().Count());
        foreach (IGrouping<string, V1.Event> member in events.Where(e => e.Type != LoyaltyEvents.TierChanged).GroupBy(e => e.MemberId))
        {
            Assert.Equal(Enumerable.Range(1, member.Count()).Select(i => (long)i), member.Select(e => e.Entry.Sequence));
        }
    }
}
