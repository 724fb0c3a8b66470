using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;
using static Loyalty.Tests.Programmes.Calls;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Programmes;

/// <summary>
/// What a till or an app asks without changing anything: an earn preview, the rewards within
/// reach, open reservations and a transaction by its id; on both databases, over gRPC, each answer
/// checked against what the change it previews then does.
/// </summary>
public sealed class TillQueriesTests
{
    private const string Program = "till";
    private static readonly DateTimeOffset Start = new(2026, 11, 24, 12, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task AQuote_IsWhatTheSamePurchaseThenEarns_AndWritesNothing(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "till-quote"), clock);
        await engine.Programs.PutProgramAsync(Catalogue());
        await EnrolAsync(engine, "q", 100);
        long entries = await EntriesAsync(engine);
        V1.Member before = await MemberAsync(engine, "q");

        V1.Purchase basket = Basket("q", "", 230_00);
        V1.PurchaseQuote quote = await engine.Purchases.QuoteAsync(basket);
        V1.Purchase withReward = Basket("q", "", 230_00);
        withReward.RedeemRewardId = "coffee";
        withReward.RedeemQuantity = 2;
        V1.PurchaseQuote quoteWithReward = await engine.Purchases.QuoteAsync(withReward);
        V1.Member unchanged = await MemberAsync(engine, "q");
        long entriesAfterQuotes = await EntriesAsync(engine);
        basket.TransactionId = "q-1";
        V1.PurchaseAck ack = await engine.Purchases.AccrueAsync(basket);

        Assert.Equal(entries, entriesAfterQuotes);
        Assert.Equal(before, unchanged);
        Assert.Equal((quote.Points, quote.Breakdown), (ack.PointsEarned, ack.Breakdown));
        Assert.Equal(("member", "silver"), (quote.Breakdown.TierBefore, quote.Breakdown.TierAfter));
        Assert.Equal((100, 100, 100 + quote.Points), (quote.Balance, quote.AvailablePoints, quote.AvailableAfter));
        Assert.Equal(ack.Balance, quote.AvailableAfter);
        Assert.Equal((2 * 50, quote.AvailableAfter - 100), (quoteWithReward.PointsRedeemed, quoteWithReward.AvailableAfter));

        // The rewards are judged against what the member holds after the purchase, in its tier after it.
        V1.RewardOption silverOnly = quote.Rewards.Single(r => r.Reward.Id == "silver-gift");
        Assert.True(silverOnly.Redeemable);
        Assert.Equal(quote.AvailableAfter / 50, quote.Rewards.Single(r => r.Reward.Id == "coffee").MaxUnits);

        V1.Purchase tooDear = Basket("q", "", 1_00);
        tooDear.RedeemRewardId = "bike";
        V1.Purchase foreign = Basket("q", "", 1_00);
        foreign.Currency = "EUR";
        V1.Purchase unknownReward = Basket("q", "", 1_00);
        unknownReward.RedeemRewardId = "nope";
        Assert.Equal(StatusCode.FailedPrecondition, (await RefusedAsync(engine.Purchases.QuoteAsync(tooDear).ResponseAsync)).StatusCode);
        Assert.Equal(StatusCode.FailedPrecondition, (await RefusedAsync(engine.Purchases.QuoteAsync(foreign).ResponseAsync)).StatusCode);
        Assert.Equal(StatusCode.NotFound, (await RefusedAsync(engine.Purchases.QuoteAsync(unknownReward).ResponseAsync)).StatusCode);
        Assert.Equal(StatusCode.NotFound, (await RefusedAsync(engine.Purchases.QuoteAsync(Basket("ghost", "", 1_00)).ResponseAsync)).StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, (await RefusedAsync(engine.Purchases.QuoteAsync(Basket("q", "", -5)).ResponseAsync)).StatusCode);
        Assert.Equal(entries + 1, await EntriesAsync(engine));
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task ListRewards_SaysWhyEachRewardIsOutOfReach_AndARedemptionAgreesWithIt(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "till-rewards"), clock);
        var redemptions = new V1.Redemptions.RedemptionsClient(engine.Invoker);
        await engine.Programs.PutProgramAsync(Catalogue());
        await EnrolAsync(engine, "r", 120);
        await EnrolAsync(engine, "other", 500);
        await redemptions.RedeemAsync(new V1.RedeemRequest { ProgramId = Program, MemberId = "other", TransactionId = "last-mug", RewardId = "mug" });

        V1.ListRewardsResponse all = await redemptions.ListRewardsAsync(new V1.ListRewardsRequest { ProgramId = Program, MemberId = "r" });
        V1.ListRewardsResponse reachable = await redemptions.ListRewardsAsync(new V1.ListRewardsRequest { ProgramId = Program, MemberId = "r", RedeemableOnly = true });

        Dictionary<string, V1.RewardOption> options = all.Rewards.ToDictionary(o => o.Reward.Id);
        Assert.Equal((120, "member"), (all.AvailablePoints, all.Tier));
        Assert.Equal((true, 2), (options["coffee"].Redeemable, options["coffee"].MaxUnits));
        Assert.Equal((V1.RewardBlock.Points, 880L), (options["bike"].BlockedBy, options["bike"].PointsShort));
        Assert.Equal(V1.RewardBlock.Tier, options["silver-gift"].BlockedBy);
        Assert.Equal(V1.RewardBlock.NotYet, options["winter"].BlockedBy);
        Assert.Equal(V1.RewardBlock.Ended, options["autumn"].BlockedBy);
        Assert.Equal((V1.RewardBlock.OutOfStock, 0L), (options["mug"].BlockedBy, options["mug"].StockLeft));
        Assert.Equal(new[] { "coffee" }, reachable.Rewards.Select(o => o.Reward.Id));

        // Each option's verdict is what a redemption of it then gets.
        foreach (V1.RewardOption option in all.Rewards)
        {
            var redeem = new V1.RedeemRequest { ProgramId = Program, MemberId = "r", TransactionId = "try-" + option.Reward.Id, RewardId = option.Reward.Id };
            Task<V1.RedemptionAck> call = redemptions.RedeemAsync(redeem).ResponseAsync;
            if (option.Redeemable)
            {
                Assert.Equal(V1.AckStatus.Accepted, (await call).Status);
            }
            else
            {
                Assert.Equal(StatusCode.FailedPrecondition, (await RefusedAsync(call)).StatusCode);
            }
        }

        Assert.Equal(StatusCode.NotFound, (await RefusedAsync(redemptions.ListRewardsAsync(new V1.ListRewardsRequest { ProgramId = Program, MemberId = "ghost" }).ResponseAsync)).StatusCode);
    }

    [Theory]
    [InlineData(Backend.Sqlite)]
    [InlineData(Backend.Postgres)]
    public async Task GetTransaction_ShowsAPurchasesReturnProgress_AndEachReservationsState(Backend backend)
    {
        var clock = new FakeTimeProvider(Start);
        await using InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(backend, "till-transactions"), clock);
        var redemptions = new V1.Redemptions.RedemptionsClient(engine.Invoker);
        await engine.Programs.PutProgramAsync(Catalogue());
        await EnrolAsync(engine, "t", 1_000);
        await EnrolAsync(engine, "u", 0);
        V1.Purchase lines = Basket("t", "p-1", 0);
        lines.LineItems.Clear();
        lines.LineItems.Add(new V1.LineItem { Sku = "shoe", Category = "shoes", Quantity = 2, AmountMinor = 80_00 });
        lines.LineItems.Add(new V1.LineItem { Sku = "sock", Category = "socks", Quantity = 1, AmountMinor = 20_00 });
        lines.AmountMinor = 100_00;
        V1.PurchaseAck bought = await engine.Purchases.AccrueAsync(lines);

        V1.Transaction fresh = await TransactionAsync(engine, "t", "p-1");
        await engine.Purchases.ReturnAsync(Return("r-1", "p-1", new V1.ReturnLine { Sku = "shoe", Quantity = 1, AmountMinor = 40_00 }));
        V1.Transaction half = await TransactionAsync(engine, "t", "p-1");
        await engine.Purchases.ReturnAsync(Return("r-2", "p-1", new V1.ReturnLine { Sku = "shoe", Quantity = 1, AmountMinor = 40_00 }, new V1.ReturnLine { Sku = "sock", Quantity = 1, AmountMinor = 20_00 }));
        V1.Transaction whole = await TransactionAsync(engine, "t", "p-1");
        V1.Transaction aReturn = await TransactionAsync(engine, "t", "r-1");

        Assert.Equal((V1.LedgerEntryKind.Earn, bought.PointsEarned), (fresh.Entry.Kind, fresh.Entry.Points));
        Assert.Equal((0L, 100_00L, 0L, bought.PointsEarned, false), Progress(fresh));
        Assert.Equal(new[] { ("shoe", 2L, 0L), ("sock", 1L, 0L) }, fresh.ReturnProgress.Lines.Select(l => (l.Sku, l.Quantity, l.ReturnedQuantity)));
        Assert.Equal((40_00L, 60_00L, false), (half.ReturnProgress.ReturnedMinor, half.ReturnProgress.ReturnableMinor, half.ReturnProgress.FullyReturned));
        Assert.Equal(new[] { 1L, 0L }, half.ReturnProgress.Lines.Select(l => l.ReturnedQuantity));
        Assert.Equal((100_00L, 0L, bought.PointsEarned, 0L, true), Progress(whole));
        Assert.Equal((V1.LedgerEntryKind.Return, "p-1", (V1.ReturnProgress?)null), (aReturn.Entry.Kind, aReturn.Entry.Reference, aReturn.ReturnProgress));

        // Reservations: one committed, one cancelled, one left to lapse, one still open.
        foreach (string id in new[] { "h-commit", "h-cancel", "h-lapse" })
        {
            await redemptions.ReserveAsync(new V1.ReserveRequest { ProgramId = Program, MemberId = "t", ReservationId = id, RewardId = "coffee" });
        }

        await redemptions.CommitReservationAsync(new V1.ReservationRequest { ProgramId = Program, MemberId = "t", ReservationId = "h-commit" });
        await redemptions.CancelReservationAsync(new V1.ReservationRequest { ProgramId = Program, MemberId = "t", ReservationId = "h-cancel" });
        V1.ListReservationsResponse openBefore = await redemptions.ListReservationsAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "t" });
        clock.Advance(TimeSpan.FromSeconds(ReservationHoldSeconds + 1));
        await redemptions.ReserveAsync(new V1.ReserveRequest { ProgramId = Program, MemberId = "t", ReservationId = "h-open", RewardId = "coffee", Quantity = 2 });
        V1.ListReservationsResponse openAfter = await redemptions.ListReservationsAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "t" });

        V1.Transaction committed = await TransactionAsync(engine, "t", "h-commit");
        Assert.Equal((V1.ReservationState.Committed, V1.LedgerEntryKind.Redeem, -50L), (committed.ReservationState, committed.Entry.Kind, committed.Entry.Points));
        Assert.Equal(V1.ReservationState.Cancelled, (await TransactionAsync(engine, "t", "h-cancel")).ReservationState);
        Assert.Equal(V1.ReservationState.Lapsed, (await TransactionAsync(engine, "t", "h-lapse")).ReservationState);
        Assert.Equal(V1.ReservationState.Held, (await TransactionAsync(engine, "t", "h-open")).ReservationState);
        Assert.Equal(new[] { "h-lapse" }, openBefore.Reservations.Select(r => r.ReservationId));
        V1.Reservation open = Assert.Single(openAfter.Reservations);
        Assert.Equal(("h-open", "coffee", 2, 100L), (open.ReservationId, open.RewardId, open.Quantity, open.Points));
        Assert.Equal(clock.GetUtcNow().AddSeconds(ReservationHoldSeconds), open.LapsesAt.ToDateTimeOffset());

        Assert.Equal(StatusCode.NotFound, (await RefusedAsync(redemptions.ListReservationsAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = "ghost" }).ResponseAsync)).StatusCode);

        // Another member's transaction, an unknown id and a malformed one are refused with their reason.
        Assert.Equal(StatusCode.NotFound, (await RefusedAsync(engine.Purchases.GetTransactionAsync(new V1.GetTransactionRequest { ProgramId = Program, MemberId = "u", TransactionId = "p-1" }).ResponseAsync)).StatusCode);
        Assert.Equal(StatusCode.NotFound, (await RefusedAsync(engine.Purchases.GetTransactionAsync(new V1.GetTransactionRequest { ProgramId = Program, MemberId = "t", TransactionId = "never" }).ResponseAsync)).StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, (await RefusedAsync(engine.Purchases.GetTransactionAsync(new V1.GetTransactionRequest { ProgramId = Program, MemberId = "t", TransactionId = "bad id" }).ResponseAsync)).StatusCode);
    }

    private const int ReservationHoldSeconds = 60;

    /// <summary>
    /// Points per dollar, a silver tier at 200 points, and a catalogue with one reward in reach,
    /// one too dear, one for silver members, one not yet open, one closed and one with one unit.
    /// </summary>
    private static V1.PutProgramRequest Catalogue()
    {
        V1.PutProgramRequest request = Wire.Program(Program);
        V1.ProgramSettings settings = request.Settings;
        settings.ReservationHoldSeconds = ReservationHoldSeconds;
        settings.Tiers = new V1.TierLadder { WindowDays = 365, Tiers = { new V1.Tier { Name = "member" }, new V1.Tier { Name = "silver", Threshold = 200, MultiplierBp = 15_000 } } };
        settings.Rewards.Add(new V1.Reward { Id = "coffee", Name = "Coffee", Kind = V1.RewardKind.Product, PointsPrice = 50, Sku = "coffee" });
        settings.Rewards.Add(new V1.Reward { Id = "bike", Name = "Bike", Kind = V1.RewardKind.Product, PointsPrice = 1_000, Sku = "bike" });
        settings.Rewards.Add(new V1.Reward { Id = "silver-gift", Name = "Gift", Kind = V1.RewardKind.Discount, PointsPrice = 10, ValueMinor = 5_00, Tiers = { "silver" } });
        settings.Rewards.Add(new V1.Reward { Id = "winter", Name = "Winter", Kind = V1.RewardKind.Discount, PointsPrice = 10, ValueMinor = 1_00, AvailableFrom = Timestamp.FromDateTimeOffset(Start.AddDays(30)) });
        settings.Rewards.Add(new V1.Reward { Id = "autumn", Name = "Autumn", Kind = V1.RewardKind.Discount, PointsPrice = 10, ValueMinor = 1_00, AvailableUntil = Timestamp.FromDateTimeOffset(Start.AddDays(-1)) });
        settings.Rewards.Add(new V1.Reward { Id = "mug", Name = "Mug", Kind = V1.RewardKind.Product, PointsPrice = 10, Sku = "mug", Stock = 1 });
        return request;
    }

    private static async Task EnrolAsync(InProcessEngine engine, string member, long points)
    {
        await engine.Members.EnrollAsync(new V1.EnrollRequest { ProgramId = Program, MemberId = member });
        if (points > 0)
        {
            await engine.Members.AdjustPointsAsync(new V1.AdjustPointsRequest { ProgramId = Program, MemberId = member, TransactionId = member + "-start", Points = points, Reason = "opening balance" });
        }
    }

    private static V1.Purchase Basket(string member, string txn, long amountMinor)
    {
        V1.Purchase purchase = Wire.Purchase(Program, member, txn, amountMinor);
        purchase.OccurredAt = Timestamp.FromDateTimeOffset(Start);
        return purchase;
    }

    private static V1.ReturnRequest Return(string txn, string original, params V1.ReturnLine[] lines) => new()
    {
        TransactionId = txn,
        ProgramId = Program,
        MemberId = "t",
        StoreId = "store-1",
        OriginalTransactionId = original,
        Currency = "USD",
        OccurredAt = Timestamp.FromDateTimeOffset(Start),
        Lines = { lines },
    };

    private static (long ReturnedMinor, long ReturnableMinor, long Reversed, long Reversible, bool Full) Progress(V1.Transaction t) =>
        (t.ReturnProgress.ReturnedMinor, t.ReturnProgress.ReturnableMinor, t.ReturnProgress.ReversedPoints, t.ReturnProgress.ReversiblePoints, t.ReturnProgress.FullyReturned);

    private static Task<V1.Member> MemberAsync(InProcessEngine engine, string member) =>
        engine.Members.GetMemberAsync(new V1.GetMemberRequest { ProgramId = Program, MemberId = member }).ResponseAsync;

    private static Task<V1.Transaction> TransactionAsync(InProcessEngine engine, string member, string txn) =>
        engine.Purchases.GetTransactionAsync(new V1.GetTransactionRequest { ProgramId = Program, MemberId = member, TransactionId = txn }).ResponseAsync;

    private static Task<long> EntriesAsync(InProcessEngine engine) =>
        Sql.ScalarAsync(engine.Storage, $"SELECT COUNT(*) FROM ledger_entries WHERE program_id = '{Program}'");

}
