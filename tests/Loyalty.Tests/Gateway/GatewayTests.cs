using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Gateway;

public sealed class EngineFixture : IAsyncLifetime
{
    public InProcessEngine Engine { get; private set; } = null!;

    public async Task InitializeAsync() => Engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, "gateway"));

    public async Task DisposeAsync() => await Engine.DisposeAsync();
}

/// <summary>The gRPC API over a real HTTP/2 channel against the real host.</summary>
public sealed class GatewayTests(EngineFixture fixture) : IClassFixture<EngineFixture>
{
    private readonly string _program = "g" + Guid.NewGuid().ToString("N")[..10];

    private InProcessEngine Engine => fixture.Engine;

    [Fact]
    public async Task Ingest_StreamOfPurchases_AcksEachOnceAfterCommit()
    {
        await SetUpAsync(members: 10);
        const int count = 500;

        List<V1.PurchaseAck> acks = await StreamAsync(Enumerable.Range(0, count)
            .Select(i => Wire.Purchase(_program, $"m{i % 10}", $"t{i}", 10_00 + i)));

        Assert.Equal(count, acks.Count);
        Assert.Equal(count, acks.Select(a => a.TransactionId).Distinct().Count());
        Assert.All(acks, a => Assert.Equal(V1.AckStatus.Accepted, a.Status));
        Assert.All(acks, a => Assert.Equal(a.PointsEarned, a.Breakdown.Components.Sum(c => c.Points)));
        long acked = acks.Sum(a => a.PointsEarned);
        long balances = 0;
        for (int m = 0; m < 10; m++)
        {
            balances += (await Engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = _program, MemberId = $"m{m}" })).Balance;
        }

        Assert.Equal(acked, balances);
        Assert.Equal(acked, await Sql.ScalarAsync(Engine.Storage, $"SELECT sum(points) FROM ledger_entries WHERE program_id = '{_program}'"));
    }

    [Fact]
    public async Task Ingest_TimesEachPurchaseInTheGateway_AndEachChangesWaitForTheLedger_AndEachBatchsWait()
    {
        await SetUpAsync(members: 10);
        const int count = 200;
        var recorded = new Dictionary<string, List<double>> { ["loyalty.gateway.purchase_duration"] = [], ["loyalty.ledger.append_duration"] = [], ["loyalty.ledger.batch_wait"] = [] };
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (recorded.ContainsKey(instrument.Name))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        var statuses = new List<object?>();
        listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) =>
        {
            lock (recorded)
            {
                recorded[instrument.Name].Add(value);
                foreach (KeyValuePair<string, object?> tag in tags)
                {
                    if (tag.Key == "status")
                    {
                        statuses.Add(tag.Value);
                    }
                }
            }
        });
        listener.Start();

        List<V1.PurchaseAck> acks = await StreamAsync(Enumerable.Range(0, count)
            .Select(i => Wire.Purchase(_program, $"m{i % 10}", $"timed-{i}", 10_00 + i)));

        Assert.All(acks, a => Assert.Equal(V1.AckStatus.Accepted, a.Status));
        lock (recorded)
        {
            // Other tests' engines in this process may add to the counts, never take from them.
            Assert.True(recorded["loyalty.gateway.purchase_duration"].Count >= count, $"{recorded["loyalty.gateway.purchase_duration"].Count} gateway timings for {count} purchases");
            // One per queued item: a change, or a member's changes committed as one group; at least one per member.
            Assert.True(recorded["loyalty.ledger.append_duration"].Count >= 10, $"{recorded["loyalty.ledger.append_duration"].Count} append timings for 10 members");
            Assert.NotEmpty(recorded["loyalty.ledger.batch_wait"]);
            Assert.True(statuses.Count(s => Equals(s, "accepted")) >= count, "each accepted purchase is timed with status=accepted");
            Assert.All(recorded.Values.SelectMany(v => v), ms => Assert.True(ms >= 0 && double.IsFinite(ms)));
        }
    }

    [Fact]
    public async Task Ingest_BadEventsAreRejectedWithAReason_AndTheStreamGoesOn()
    {
        await SetUpAsync(members: 1);
        V1.Purchase good = Wire.Purchase(_program, "m0", "ok-1", 5_00);
        V1.Purchase[] events =
        [
            Wire.Purchase(_program, "m0", "", 5_00),
            Wire.Purchase(_program, "m0", "neg", -1),
            Wire.Purchase(_program, "ghost", "ghost-1", 5_00),
            Wire.Purchase(_program, "m0", "bad id!", 5_00),
            Wire.Purchase(_program, "m0", "eur", 5_00, "EUR"),
            Wire.Purchase(_program, "m0", new string('x', 65), 5_00),
            Wire.Purchase(_program + "nope", "m0", "np-1", 5_00),
            good,
            good,
            Wire.Purchase(_program, "m0", "ok-1", 6_00),
        ];

        Dictionary<int, V1.PurchaseAck> acks = (await StreamAsync(events, inOrder: true)).Select((a, i) => (a, i)).ToDictionary(x => x.i, x => x.a);

        Assert.Equal(("INVALID_ARGUMENT", true), (acks[0].ErrorCode, acks[0].ErrorMessage.Contains("transaction_id", StringComparison.Ordinal)));
        Assert.Equal(("INVALID_ARGUMENT", true), (acks[1].ErrorCode, acks[1].ErrorMessage.Contains("amount_minor", StringComparison.Ordinal)));
        Assert.Equal("NOT_FOUND", acks[2].ErrorCode);
        Assert.Equal("INVALID_ARGUMENT", acks[3].ErrorCode);
        Assert.Equal("FAILED_PRECONDITION", acks[4].ErrorCode);
        Assert.Equal(("INVALID_ARGUMENT", true), (acks[5].ErrorCode, acks[5].ErrorMessage.Contains("longer than", StringComparison.Ordinal)));
        Assert.Equal("NOT_FOUND", acks[6].ErrorCode);
        Assert.Equal(V1.AckStatus.Accepted, acks[7].Status);
        Assert.Equal((V1.AckStatus.Duplicate, 5L), (acks[8].Status, acks[8].PointsEarned));
        Assert.Equal("ALREADY_EXISTS", acks[9].ErrorCode);
        Assert.Equal(5, (await Engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = _program, MemberId = "m0" })).Balance);
        Assert.Equal(1, await PurchaseEntriesAsync());
    }

    [Fact]
    public async Task IngestBatches_AnswersEachBatchInOrder_OneAckPerPurchaseInTheBatchOrder()
    {
        await SetUpAsync(members: 10);
        V1.PurchaseBatch[] batches =
        [
            Batch(Enumerable.Range(0, 400).Select(i => Wire.Purchase(_program, $"m{i % 10}", $"a{i}", 10_00 + i))),
            Batch([Wire.Purchase(_program, "m0", "a0", 10_00), Wire.Purchase(_program, "ghost", "g1", 5_00), Wire.Purchase(_program, "m1", "", 5_00), Wire.Purchase(_program, "m2", "b1", 7_00)]),
            Batch(Enumerable.Range(0, 250).Select(i => Wire.Purchase(_program, $"m{i % 10}", $"c{i}", 3_00))),
        ];

        List<V1.PurchaseBatchAck> answers = await StreamBatchesAsync(batches);

        Assert.Equal([400, 4, 250], answers.Select(a => a.Acks.Count));
        for (int b = 0; b < batches.Length; b++)
        {
            Assert.Equal(batches[b].Purchases.Select(p => p.TransactionId), answers[b].Acks.Select(a => a.TransactionId));
        }

        Assert.All(answers[0].Acks.Concat(answers[2].Acks), a => Assert.Equal(V1.AckStatus.Accepted, a.Status));
        Assert.Equal([V1.AckStatus.Duplicate, V1.AckStatus.Rejected, V1.AckStatus.Rejected, V1.AckStatus.Accepted], answers[1].Acks.Select(a => a.Status));
        Assert.Equal(["", "NOT_FOUND", "INVALID_ARGUMENT", ""], answers[1].Acks.Select(a => a.ErrorCode));
        long acked = answers.SelectMany(a => a.Acks).Where(a => a.Status == V1.AckStatus.Accepted).Sum(a => a.PointsEarned);
        Assert.Equal(acked, await Sql.ScalarAsync(Engine.Storage, $"SELECT sum(points) FROM ledger_entries WHERE program_id = '{_program}'"));
        Assert.Equal(651, await PurchaseEntriesAsync());
    }

    [Fact]
    public async Task IngestBatches_ClientCancelsMidStream_ResendingTheBatchesCountsEveryPurchaseOnce()
    {
        await SetUpAsync(members: 10);
        V1.PurchaseBatch[] batches = [.. Enumerable.Range(0, 20).Select(b =>
            Batch(Enumerable.Range(0, 500).Select(i => Wire.Purchase(_program, $"m{i % 10}", $"x{b}-{i}", 10_00 + i))))];
        using (var cancel = new CancellationTokenSource())
        using (AsyncDuplexStreamingCall<V1.PurchaseBatch, V1.PurchaseBatchAck> call = Engine.Purchases.IngestBatches(cancellationToken: cancel.Token))
        {
            foreach (V1.PurchaseBatch batch in batches)
            {
                await call.RequestStream.WriteAsync(batch);
            }

            // The till goes away without reading an answer, once the first of its purchases are committed.
            await WaitUntilAsync(async () => await PurchaseEntriesAsync() > 0);
            await cancel.CancelAsync();
        }

        // The till does not know what was recorded, so it sends the same batches again.
        List<V1.PurchaseBatchAck> answers = await StreamBatchesAsync(batches);

        V1.PurchaseAck[] acks = [.. answers.SelectMany(a => a.Acks)];
        Assert.Equal(batches.SelectMany(b => b.Purchases).Select(p => p.TransactionId), acks.Select(a => a.TransactionId));
        Assert.All(acks, a => Assert.Contains(a.Status, new[] { V1.AckStatus.Accepted, V1.AckStatus.Duplicate }));
        Assert.Contains(acks, a => a.Status == V1.AckStatus.Duplicate);
        Assert.Equal(10_000, await PurchaseEntriesAsync());
        Assert.Equal(await Sql.ScalarAsync(Engine.Storage, $"SELECT sum(points) FROM ledger_entries WHERE program_id = '{_program}' AND kind = 2"), acks.Sum(a => a.PointsEarned));
        long balances = 0;
        for (int m = 0; m < 10; m++)
        {
            balances += (await Engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = _program, MemberId = $"m{m}" })).Balance;
        }

        Assert.Equal(await Sql.ScalarAsync(Engine.Storage, $"SELECT sum(points) FROM ledger_entries WHERE program_id = '{_program}'"), balances);
    }

    [Fact]
    public async Task IngestBatches_OversizedBatch_EndsTheStreamWithInvalidArgument_AfterAnsweringTheBatchesBefore_AndWritesNothingOfIt()
    {
        await SetUpAsync(members: 1);
        V1.PurchaseBatch oversized = Batch(Enumerable.Range(0, Limits.IngestBatchPurchasesMax + 1).Select(i => Wire.Purchase(_program, "m0", $"o{i}", 1_00)));
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using AsyncDuplexStreamingCall<V1.PurchaseBatch, V1.PurchaseBatchAck> call = Engine.Purchases.IngestBatches(cancellationToken: cancel.Token);

        await call.RequestStream.WriteAsync(Batch([Wire.Purchase(_program, "m0", "before", 2_00)]));
        await call.RequestStream.WriteAsync(oversized);
        Assert.True(await call.ResponseStream.MoveNext(cancel.Token));
        V1.PurchaseBatchAck before = call.ResponseStream.Current;
        RpcException ended = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext(cancel.Token));

        Assert.Equal(V1.AckStatus.Accepted, Assert.Single(before.Acks).Status);
        Assert.Equal(StatusCode.InvalidArgument, ended.StatusCode);
        Assert.Contains("batch 2 of the stream has more than 1000 purchases", ended.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("at most 1000", ended.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(1, await PurchaseEntriesAsync());
        Assert.Equal(2, (await Engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = _program, MemberId = "m0" })).Balance);
    }

    /// <remarks>Two bytes a purchase: one message of 4 MiB names two million; answered each, they were a few hundred MB per message.</remarks>
    [Fact]
    public async Task IngestBatches_AMillionEmptyPurchases_EndTheStreamWithOneShortStatus()
    {
        await SetUpAsync(members: 1);
        var flood = new V1.PurchaseBatch();
        flood.Purchases.AddRange(Enumerable.Range(0, 1_000_000).Select(_ => new V1.Purchase()));

        RpcException ended = await Assert.ThrowsAsync<RpcException>(() => StreamBatchesAsync([flood]));

        Assert.Equal(StatusCode.InvalidArgument, ended.StatusCode);
        Assert.True(ended.Status.Detail.Length < 400, ended.Status.Detail);
        Assert.Equal(0, await PurchaseEntriesAsync());
    }

    [Fact]
    public async Task IngestBatches_MessageOverTheOtherServicesOneMiB_IsStillRead()
    {
        await SetUpAsync(members: 1);
        V1.PurchaseBatch large = Batch(Enumerable.Range(0, 40).Select(i => FullBasket($"l{i}")));

        List<V1.PurchaseBatchAck> answers = await StreamBatchesAsync([large]);

        Assert.True(large.CalculateSize() > Loyalty.Host.GatewayOptions.MessageBytesMax);
        Assert.All(answers[0].Acks, a => Assert.Equal(V1.AckStatus.Accepted, a.Status));
    }

    [Fact]
    public async Task IngestBatches_MessageOverFourMiB_EndsTheCallWithResourceExhausted_AndWritesNothing()
    {
        await SetUpAsync(members: 1);
        // 100 purchases at the line-item limit: well within the purchase count, over 6 MB on the wire.
        V1.PurchaseBatch huge = Batch(Enumerable.Range(0, 100).Select(i => FullBasket($"h{i}")));
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using AsyncDuplexStreamingCall<V1.PurchaseBatch, V1.PurchaseBatchAck> call = Engine.Purchases.IngestBatches(cancellationToken: cancel.Token);

        // Not awaited before the answer: the server refuses the message from its length prefix and
        // ends the call, and the rest of a 6 MB write can then wait on HTTP/2 flow control until
        // the call is disposed (awaiting it first once hung a CI run for good).
        Task write = call.RequestStream.WriteAsync(huge);
        RpcException refused = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext(cancel.Token));
        _ = write.ContinueWith(static t => t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);

        Assert.True(huge.CalculateSize() > Loyalty.Host.GatewayOptions.PurchaseMessageBytesMax);
        Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
        Assert.Equal(0, await PurchaseEntriesAsync());
    }

    [Fact]
    public async Task Accrue_Unary_MapsRefusalsToStatusCodes()
    {
        await SetUpAsync(members: 1);

        V1.PurchaseAck ok = await Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "m0", "u1", 3_00));
        V1.PurchaseAck dup = await Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "m0", "u1", 3_00));
        RpcException invalid = await Assert.ThrowsAsync<RpcException>(() => Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "", "u2", 3_00)).ResponseAsync);
        RpcException missing = await Assert.ThrowsAsync<RpcException>(() => Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "ghost", "u3", 3_00)).ResponseAsync);
        RpcException conflict = await Assert.ThrowsAsync<RpcException>(() => Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "m0", "u1", 4_00)).ResponseAsync);
        RpcException noTime = await Assert.ThrowsAsync<RpcException>(() => Engine.Purchases.AccrueAsync(new V1.Purchase(Wire.Purchase(_program, "m0", "u4", 3_00)) { OccurredAt = null }).ResponseAsync);

        Assert.Equal((V1.AckStatus.Accepted, 3L, 3L), (ok.Status, ok.PointsEarned, ok.Balance));
        Assert.Equal(V1.AckStatus.Duplicate, dup.Status);
        Assert.Equal((StatusCode.InvalidArgument, true), (invalid.StatusCode, invalid.Status.Detail.Contains("member_id", StringComparison.Ordinal)));
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
        Assert.Equal(StatusCode.AlreadyExists, conflict.StatusCode);
        Assert.Equal((StatusCode.InvalidArgument, true), (noTime.StatusCode, noTime.Status.Detail.Contains("occurred_at", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Accrue_TooManyLineItems_IsInvalidArgument()
    {
        await SetUpAsync(members: 1);
        V1.Purchase purchase = Wire.Purchase(_program, "m0", "big-basket", 1_000_00);
        purchase.LineItems.Clear();
        purchase.LineItems.Add(Enumerable.Range(0, Limits.LineItemsMax + 1).Select(i => new V1.LineItem { Sku = $"s{i}", Quantity = 1, AmountMinor = 1 }));

        RpcException e = await Assert.ThrowsAsync<RpcException>(() => Engine.Purchases.AccrueAsync(purchase).ResponseAsync);

        Assert.Equal((StatusCode.InvalidArgument, true), (e.StatusCode, e.Status.Detail.Contains("line_items", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task GetReferralCode_OfAClosedMember_SaysWhy()
    {
        await SetUpAsync(members: 0);
        foreach (string m in new[] { "gone", "kept", "erased" })
        {
            await Engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = _program, MemberId = m });
        }

        await Engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = _program, MemberId = "erased", Reason = "request 7" });
        await Engine.Members.MergeMembersAsync(new V1.MergeMembersRequest { ProgramId = _program, SurvivorId = "kept", DuplicateId = "gone", Reason = "duplicate" });

        RpcException erased = await Assert.ThrowsAsync<RpcException>(() => Engine.Members.GetReferralCodeAsync(new V1.GetMemberRequest { ProgramId = _program, MemberId = "erased" }).ResponseAsync);
        RpcException merged = await Assert.ThrowsAsync<RpcException>(() => Engine.Members.GetReferralCodeAsync(new V1.GetMemberRequest { ProgramId = _program, MemberId = "gone" }).ResponseAsync);
        RpcException ghost = await Assert.ThrowsAsync<RpcException>(() => Engine.Members.GetReferralCodeAsync(new V1.GetMemberRequest { ProgramId = _program, MemberId = "ghost" }).ResponseAsync);

        Assert.Equal((StatusCode.FailedPrecondition, "member 'erased' was erased and has no referral code"), (erased.StatusCode, erased.Status.Detail));
        Assert.Equal((StatusCode.FailedPrecondition, "member 'gone' was merged into 'kept'; use 'kept'"), (merged.StatusCode, merged.Status.Detail));
        Assert.Equal(StatusCode.NotFound, ghost.StatusCode);
    }

    [Fact]
    public async Task Members_EnrolGetAndPageTheLedger()
    {
        await SetUpAsync(members: 1);
        V1.EnrollResponse referred = await Engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = _program, MemberId = "m1", ReferredBy = "m0" });
        V1.EnrollResponse again = await Engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = _program, MemberId = "m1", ReferredBy = "m0" });
        for (int i = 0; i < 3; i++)
        {
            await Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "m0", $"l{i}", 1_00));
        }

        V1.Member referrer = await Engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = _program, MemberId = "m0" });
        V1.ListLedgerResponse page1 = await Engine.Members.ListLedgerAsync(new V1.ListLedgerRequest { ProgramId = _program, MemberId = "m0", PageSize = 3 });
        V1.ListLedgerResponse page2 = await Engine.Members.ListLedgerAsync(new V1.ListLedgerRequest { ProgramId = _program, MemberId = "m0", PageSize = 3, PageToken = page1.NextPageToken });
        RpcException badToken = await Assert.ThrowsAsync<RpcException>(() => Engine.Members.ListLedgerAsync(new V1.ListLedgerRequest { ProgramId = _program, MemberId = "m0", PageToken = "zz" }).ResponseAsync);
        RpcException unknown = await Assert.ThrowsAsync<RpcException>(() => Engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = _program, MemberId = "ghost" }).ResponseAsync);

        Assert.Equal(("m0", false, true), (referred.Member.ReferredBy, referred.AlreadyEnrolled, again.AlreadyEnrolled));
        Assert.Equal(["m1"], referrer.Referrals);
        Assert.Equal(3, referrer.Balance);
        Assert.Equal([V1.LedgerEntryKind.Earn, V1.LedgerEntryKind.Earn, V1.LedgerEntryKind.Earn], page1.Entries.Select(e => e.Kind));
        Assert.Equal([V1.LedgerEntryKind.ReferralConfirmed, V1.LedgerEntryKind.ReferralLink, V1.LedgerEntryKind.Enrol], page2.Entries.Select(e => e.Kind));
        Assert.Equal("", page2.NextPageToken);
        Assert.Equal(StatusCode.InvalidArgument, badToken.StatusCode);
        Assert.Equal(StatusCode.NotFound, unknown.StatusCode);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(Limits.LedgerPageSizeMax + 1)]
    public async Task ListLedger_PageSizeOutOfRange_IsInvalidArgument(int pageSize)
    {
        await SetUpAsync(members: 1);

        RpcException e = await Assert.ThrowsAsync<RpcException>(() => Engine.Members.ListLedgerAsync(
            new V1.ListLedgerRequest { ProgramId = _program, MemberId = "m0", PageSize = pageSize }).ResponseAsync);

        Assert.Equal((StatusCode.InvalidArgument, true), (e.StatusCode, e.Status.Detail.Contains("page_size", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Programs_PutGetAndRefuseInvalid()
    {
        V1.Program created = await Engine.Programs.PutProgramAsync(Wire.Program(_program, 3));
        V1.Program read = await Engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = _program });
        V1.PutProgramRequest invalid = Wire.Program(_program);
        invalid.Settings.Currency = "dollars";
        RpcException badCurrency = await Assert.ThrowsAsync<RpcException>(() => Engine.Programs.PutProgramAsync(invalid).ResponseAsync);
        RpcException missing = await Assert.ThrowsAsync<RpcException>(() => Engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = _program + "x" }).ResponseAsync);

        Assert.Equal((1L, 3L), (created.Version, read.Settings.EarnPointsPerUnit));
        Assert.Equal((StatusCode.InvalidArgument, true), (badCurrency.StatusCode, badCurrency.Status.Detail.Contains("currency", StringComparison.Ordinal)));
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
    }

    [Fact]
    public async Task Programs_RulesRoundTripAndInvalidRulesNameTheField()
    {
        V1.PutProgramRequest request = Wire.Program(_program);
        request.Settings.PendingDays = 14;
        request.Settings.ProductRules.Add(new V1.ProductRule { Sku = "GIFT", Exclude = true });
        request.Settings.Tiers = new V1.TierLadder { WindowDays = 365, Tiers = { new V1.Tier { Name = "base" }, new V1.Tier { Name = "gold", Threshold = 100, MultiplierBp = 15_000 } } };
        V1.PutProgramRequest badWeekday = request.Clone();
        badWeekday.Settings.Campaigns.Add(new V1.Campaign
        {
            Id = "c", MultiplierBp = 20_000, Weekdays = { V1.Weekday.Unspecified },
            StartsAt = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow), EndsAt = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow.AddDays(1)),
        });
        V1.PutProgramRequest badTier = request.Clone();
        badTier.Settings.Tiers.Tiers[1].Threshold = 0;

        V1.Program created = await Engine.Programs.PutProgramAsync(request);
        RpcException weekday = await Assert.ThrowsAsync<RpcException>(() => Engine.Programs.PutProgramAsync(badWeekday).ResponseAsync);
        RpcException tier = await Assert.ThrowsAsync<RpcException>(() => Engine.Programs.PutProgramAsync(badTier).ResponseAsync);

        Assert.Equal(request.Settings.ProductRules, created.Settings.ProductRules);
        Assert.Equal(("gold", 15_000, V1.TierBasis.Points), (created.Settings.Tiers.Tiers[1].Name, created.Settings.Tiers.Tiers[1].MultiplierBp, created.Settings.Tiers.Basis));
        Assert.Equal((StatusCode.InvalidArgument, true), (weekday.StatusCode, weekday.Status.Detail.Contains("campaigns[0].weekdays", StringComparison.Ordinal)));
        Assert.Equal((StatusCode.InvalidArgument, true), (tier.StatusCode, tier.Status.Detail.Contains("tiers.tiers[1].threshold", StringComparison.Ordinal)));
        Assert.Equal(1L, (await Engine.Programs.GetProgramAsync(new V1.GetProgramRequest { ProgramId = _program })).Version);
    }

    [Fact]
    public async Task APurchaseAck_CarriesThePendingPoints_ThatItsBalanceDoesNotShow()
    {
        V1.PutProgramRequest request = Wire.Program(_program);
        request.Settings.PendingDays = 14;
        await Engine.Programs.PutProgramAsync(request);
        await Engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = _program, MemberId = "pend" });

        V1.PurchaseAck first = await Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "pend", "pend-1", 60_00));
        V1.PurchaseAck second = await Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "pend", "pend-2", 40_00));
        V1.PurchaseAck resent = await Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "pend", "pend-1", 60_00));

        Assert.Equal((V1.AckStatus.Accepted, 60, 0, 60), (first.Status, first.PointsEarned, first.Balance, first.PendingPoints));
        Assert.NotNull(first.AvailableAt);
        Assert.Equal((0, 100), (second.Balance, second.PendingPoints));
        Assert.Equal((V1.AckStatus.Duplicate, 0), (resent.Status, resent.PendingPoints));
    }

    [Fact]
    public async Task Members_FlagsAdjustmentsAndReturns_OverGrpc_WithRefusalsAsStatuses()
    {
        await SetUpAsync(members: 2);
        var m0 = new V1.GetMemberRequest { ProgramId = _program, MemberId = "m0" };

        V1.Member flagged = await Engine.Members.SetMemberFlagsAsync(new V1.SetMemberFlagsRequest { ProgramId = _program, MemberId = "m0", Flags = { "storecard" } });
        V1.AdjustPointsResponse adjusted = await Engine.Members.AdjustPointsAsync(new V1.AdjustPointsRequest { ProgramId = _program, MemberId = "m0", TransactionId = "adj-1", Points = 25, Reason = "goodwill" });
        RpcException noReason = await Assert.ThrowsAsync<RpcException>(() => Engine.Members.AdjustPointsAsync(new V1.AdjustPointsRequest { ProgramId = _program, MemberId = "m0", TransactionId = "adj-2", Points = 5 }).ResponseAsync);
        await Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "m1", "theirs", 10_00));
        await Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "m0", "mine", 10_00));
        V1.ReturnRequest returnOf = new() { TransactionId = "r1", ProgramId = _program, MemberId = "m0", StoreId = "s", OriginalTransactionId = "theirs", AmountMinor = 1_00, Currency = "USD", OccurredAt = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow) };
        RpcException notTheirs = await Assert.ThrowsAsync<RpcException>(() => Engine.Purchases.ReturnAsync(returnOf).ResponseAsync);
        RpcException malformed = await Assert.ThrowsAsync<RpcException>(() => Engine.Purchases.ReturnAsync(new V1.ReturnRequest(returnOf) { OriginalTransactionId = "mine", AmountMinor = 0 }).ResponseAsync);
        V1.ReturnAck returned = await Engine.Purchases.ReturnAsync(new V1.ReturnRequest(returnOf) { OriginalTransactionId = "mine", AmountMinor = 5_00 });
        V1.ListLedgerResponse ledger = await Engine.Members.ListLedgerAsync(new V1.ListLedgerRequest { ProgramId = _program, MemberId = "m0" });

        Assert.Equal(["storecard"], flagged.Flags);
        Assert.Equal((V1.AckStatus.Accepted, 25L), (adjusted.Status, adjusted.Balance));
        Assert.Equal((StatusCode.InvalidArgument, true), (noReason.StatusCode, noReason.Status.Detail.Contains("reason", StringComparison.Ordinal)));
        Assert.Equal(StatusCode.NotFound, notTheirs.StatusCode);
        Assert.Equal((StatusCode.InvalidArgument, true), (malformed.StatusCode, malformed.Status.Detail.Contains("amount_minor", StringComparison.Ordinal)));
        Assert.Equal((V1.AckStatus.Accepted, 5L, 30L), (returned.Status, returned.PointsReversed, returned.Balance));
        Assert.Equal(
            [V1.LedgerEntryKind.Return, V1.LedgerEntryKind.Earn, V1.LedgerEntryKind.Adjust, V1.LedgerEntryKind.Flags, V1.LedgerEntryKind.Enrol],
            ledger.Entries.Select(e => e.Kind));
        Assert.Equal(("mine", 1L), (ledger.Entries[0].Reference, ledger.Entries[0].ProgramVersion));
        Assert.Equal("base", ledger.Entries[1].Breakdown.Components[0].Code);
        Assert.Equal(30L, (await Engine.Members.GetMemberAsync(m0)).Balance);
    }

    [Fact]
    public async Task Redemptions_BadInputAndRefusals_GetAStatusNamingTheProblem_AndWriteNothing()
    {
        V1.PutProgramRequest program = Wire.Program(_program);
        program.Settings.SignupBonusPoints = 20;
        program.Settings.Rewards.Add(new V1.Reward { Id = "coffee", Name = "Coffee", Kind = V1.RewardKind.Product, PointsPrice = 30, Sku = "COFFEE" });
        await Engine.Programs.PutProgramAsync(program);
        await Engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = _program, MemberId = "m0" });
        var redemptions = new V1.Redemptions.RedemptionsClient(Engine.Invoker);
        V1.RedeemRequest Redeem(string txn, string reward, int quantity = 1) =>
            new() { TransactionId = txn, ProgramId = _program, MemberId = "m0", RewardId = reward, Quantity = quantity };

        (Func<Task>, StatusCode, string)[] cases =
        [
            (() => redemptions.RedeemAsync(Redeem("", "coffee")).ResponseAsync, StatusCode.InvalidArgument, "transaction_id"),
            (() => redemptions.RedeemAsync(Redeem("r1", "coffee", 1_001)).ResponseAsync, StatusCode.InvalidArgument, "quantity"),
            (() => redemptions.RedeemAsync(Redeem("r1", "nope")).ResponseAsync, StatusCode.NotFound, "reward 'nope'"),
            (() => redemptions.RedeemAsync(Redeem("r1", "coffee")).ResponseAsync, StatusCode.FailedPrecondition, "20 points available"),
            (() => redemptions.ReserveAsync(new V1.ReserveRequest { ReservationId = "bad id!", ProgramId = _program, MemberId = "m0", RewardId = "coffee" }).ResponseAsync,
                StatusCode.InvalidArgument, "reservation_id"),
            (() => redemptions.CommitReservationAsync(new V1.ReservationRequest { ProgramId = _program, MemberId = "m0", ReservationId = "never" }).ResponseAsync,
                StatusCode.NotFound, "no reservation 'never'"),
            (() => redemptions.CancelReservationAsync(new V1.ReservationRequest { ProgramId = _program, MemberId = "ghost", ReservationId = "r" }).ResponseAsync,
                StatusCode.NotFound, "not enrolled"),
        ];
        foreach ((Func<Task> call, StatusCode code, string says) in cases)
        {
            RpcException e = await Assert.ThrowsAsync<RpcException>(call);
            Assert.True(e.StatusCode == code && e.Status.Detail.Contains(says, StringComparison.Ordinal), $"{code} '{says}': got {e.StatusCode} {e.Status.Detail}");
        }

        Assert.Equal(1, await Sql.ScalarAsync(Engine.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}'"));
    }

    [Fact]
    public async Task PutProgram_WithABadExpiryOrReward_IsInvalidArgumentNamingTheField()
    {
        V1.PutProgramRequest badExpiry = Wire.Program(_program);
        badExpiry.Settings.Expiry = new V1.ExpiryPolicy { Mode = V1.ExpiryMode.Lifespan, LifespanMonths = 0 };
        V1.PutProgramRequest badReward = Wire.Program(_program);
        badReward.Settings.Rewards.Add(new V1.Reward { Id = "gift", Name = "Gift", Kind = V1.RewardKind.Discount, PointsPrice = 10 });

        RpcException expiry = await Assert.ThrowsAsync<RpcException>(() => Engine.Programs.PutProgramAsync(badExpiry).ResponseAsync);
        RpcException reward = await Assert.ThrowsAsync<RpcException>(() => Engine.Programs.PutProgramAsync(badReward).ResponseAsync);

        Assert.Equal((StatusCode.InvalidArgument, StatusCode.InvalidArgument), (expiry.StatusCode, reward.StatusCode));
        Assert.StartsWith("expiry.lifespan_months", expiry.Status.Detail, StringComparison.Ordinal);
        Assert.StartsWith("rewards[0].value_minor", reward.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Lifecycle_ProfileMergeAndErase_OverGrpc()
    {
        await SetUpAsync(members: 2);
        var profile = new V1.SetProfileRequest { ProgramId = _program, MemberId = "m0" };
        profile.Fields.Add("name", "Mia Lund");
        await Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "m1", "dup-1", 30_00));

        V1.Member withProfile = await Engine.Members.SetProfileAsync(profile);
        V1.Member merged = await Engine.Members.MergeMembersAsync(new V1.MergeMembersRequest { ProgramId = _program, SurvivorId = "m0", DuplicateId = "m1", Reason = "duplicate" });
        V1.Member pointer = await Engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = _program, MemberId = "m1" });
        // The duplicate's purchase is the survivor's now: found through it, and returned through it.
        V1.ReturnAck returned = await Engine.Purchases.ReturnAsync(new V1.ReturnRequest
        {
            ProgramId = _program, MemberId = "m0", TransactionId = "dup-1-r", OriginalTransactionId = "dup-1", StoreId = "s1",
            AmountMinor = 10_00, Currency = "USD", OccurredAt = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
        });
        V1.Transaction bought = await Engine.Purchases.GetTransactionAsync(new V1.GetTransactionRequest { ProgramId = _program, MemberId = "m0", TransactionId = "dup-1" });
        V1.Member erased = await Engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = _program, MemberId = "m0", Reason = "request 7" });
        RpcException noReason = await Assert.ThrowsAsync<RpcException>(() => Engine.Members.EraseMemberAsync(new V1.EraseMemberRequest { ProgramId = _program, MemberId = "m0" }).ResponseAsync);

        Assert.Equal("Mia Lund", withProfile.Profile["name"]);
        Assert.Equal((30L, "m1"), (merged.Balance, Assert.Single(merged.MergedFrom)));
        Assert.Equal("m0", pointer.MergedInto);
        Assert.Equal((10L, 20L), (returned.PointsReversed, returned.Balance));
        Assert.Equal((30L, 10_00L, 10L), (bought.Entry.Points, bought.ReturnProgress.ReturnedMinor, bought.ReturnProgress.ReversedPoints));
        Assert.True(erased.Erased);
        Assert.Empty(erased.Profile);
        Assert.Equal(20L, erased.Balance);
        Assert.Equal(StatusCode.InvalidArgument, noReason.StatusCode);
    }

    [Fact]
    public async Task AMemberThatCannotBeLoaded_IsAnsweredUnavailable_NamingIt_ForReadsAndWrites()
    {
        await SetUpAsync(members: 0);
        // The only entry of a member never loaded is of a kind this version does not know (as a
        // newer version would write it during a rolling upgrade).
        await Sql.ExecuteAsync(Engine.Storage,
            "INSERT INTO ledger_entries (program_id, member_id, seq, kind, points, fingerprint, amount_minor, occurred_at, recorded_at) " +
            $"VALUES ('{_program}', 'newer', 1, 999, 0, 0, 0, '2026-12-01T00:00:00Z', '2026-12-01T00:00:00Z');");
        var member = new V1.GetMemberRequest { ProgramId = _program, MemberId = "newer" };

        RpcException first = await Assert.ThrowsAsync<RpcException>(() => Engine.Members.GetMemberAsync(member).ResponseAsync);
        RpcException again = await Assert.ThrowsAsync<RpcException>(() => Engine.Members.GetMemberAsync(member).ResponseAsync);
        RpcException purchase = await Assert.ThrowsAsync<RpcException>(() => Engine.Purchases.AccrueAsync(Wire.Purchase(_program, "newer", "p1", 1_00)).ResponseAsync);

        Assert.Equal(StatusCode.Unavailable, first.StatusCode);
        Assert.Equal(StatusCode.Unavailable, again.StatusCode);
        Assert.Contains("the member cannot be loaded now", again.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(StatusCode.Unavailable, purchase.StatusCode);
        Assert.Contains("could not be loaded", purchase.Status.Detail, StringComparison.Ordinal);
        Assert.Equal(1, await Sql.ScalarAsync(Engine.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'newer'"));
    }

    private async Task SetUpAsync(int members)
    {
        await Engine.Programs.PutProgramAsync(Wire.Program(_program));
        for (int m = 0; m < members; m++)
        {
            await Engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = _program, MemberId = $"m{m}" });
        }
    }

    /// <summary>A valid purchase of m0 at the line-item limit, with long codes: about 65 KB on the wire.</summary>
    private V1.Purchase FullBasket(string transactionId)
    {
        V1.Purchase purchase = Wire.Purchase(_program, "m0", transactionId, Limits.LineItemsMax);
        purchase.LineItems.Clear();
        purchase.LineItems.Add(Enumerable.Range(0, Limits.LineItemsMax).Select(l =>
            new V1.LineItem { Sku = $"sku-{l:D3}-{new string('s', 52)}", Category = new string('c', 40), Quantity = 1, AmountMinor = 1 }));
        return purchase;
    }

    /// <summary>How many purchase entries the test's program has in the ledger.</summary>
    private Task<long> PurchaseEntriesAsync() =>
        Sql.ScalarAsync(Engine.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND kind = 2");

    /// <summary>Polls <paramref name="condition"/> every few milliseconds, for at most ten seconds.</summary>
    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        long deadline = Environment.TickCount64 + 10_000;
        while (!await condition())
        {
            Assert.True(Environment.TickCount64 < deadline, "The condition did not hold within ten seconds.");
            await Task.Delay(5);
        }
    }

    private static V1.PurchaseBatch Batch(IEnumerable<V1.Purchase> purchases)
    {
        var batch = new V1.PurchaseBatch();
        batch.Purchases.Add(purchases);
        return batch;
    }

    /// <summary>Sends the batches one at a time, each answer read before the next batch is sent.</summary>
    private async Task<List<V1.PurchaseBatchAck>> StreamBatchesAsync(IEnumerable<V1.PurchaseBatch> batches)
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using AsyncDuplexStreamingCall<V1.PurchaseBatch, V1.PurchaseBatchAck> call = Engine.Purchases.IngestBatches(cancellationToken: cancel.Token);
        return await InLockstepAsync(call, batches, cancel.Token);
    }

    /// <summary>Writes each request and reads its one answer before the next; then the stream must end.</summary>
    private static async Task<List<TResponse>> InLockstepAsync<TRequest, TResponse>(AsyncDuplexStreamingCall<TRequest, TResponse> call, IEnumerable<TRequest> requests, CancellationToken cancel)
    {
        var answers = new List<TResponse>();
        foreach (TRequest request in requests)
        {
            await call.RequestStream.WriteAsync(request);
            Assert.True(await call.ResponseStream.MoveNext(cancel));
            answers.Add(call.ResponseStream.Current);
        }

        await call.RequestStream.CompleteAsync();
        Assert.False(await call.ResponseStream.MoveNext(cancel));
        return answers;
    }

    private async Task<List<V1.PurchaseAck>> StreamAsync(IEnumerable<V1.Purchase> events, bool inOrder = false)
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using AsyncDuplexStreamingCall<V1.Purchase, V1.PurchaseAck> call = Engine.Purchases.Ingest(cancellationToken: cancel.Token);
        if (inOrder)
        {
            return await InLockstepAsync(call, events, cancel.Token);
        }

        var acks = new List<V1.PurchaseAck>();
        Task reader = Task.Run(async () =>
        {
            await foreach (V1.PurchaseAck ack in call.ResponseStream.ReadAllAsync(cancel.Token))
            {
                acks.Add(ack);
            }
        });
        foreach (V1.Purchase e in events)
        {
            await call.RequestStream.WriteAsync(e);
        }

        await call.RequestStream.CompleteAsync();
        await reader;
        return acks;
    }
}
