using System.Text.Json;
using Loyalty.Grains;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Loyalty.Tests.Grains;

/// <summary>
/// The loyalty rules through real member grains on a real database: pending points, returns,
/// the negative-balance policies, tiers, caps, flags and configuration versions. The rules'
/// clock is the fixture's fake clock, moved forward by days.
/// </summary>
public abstract class RulesGrainTests(ClusterFixture fixture)
{
    private readonly string _program = "r" + Guid.NewGuid().ToString("N")[..10];
    private int _txn;

    private static readonly TierLadder Ladder = new(TierBasis.Points, 365, 30,
    [
        new TierDefinition("member", 0, Multipliers.One, []),
        new TierDefinition("silver", 150, 15_000, ["free delivery"]),
    ]);

    private static ProgramSettings Shop => new("Shop", "USD", 2, 1);

    private DateTimeOffset Now => fixture.Clock.GetUtcNow();

    [Fact]
    public async Task Enrol_WithSignupBonus_IsSpendableAtOnceAndRecordsTheProgramVersion()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 250 });

        MemberView view = (await member.Get())!;
        List<long> versions = await Sql.RowsAsync(fixture.Storage, $"SELECT program_version FROM ledger_entries WHERE program_id = '{_program}'", r => r.GetInt64(0));

        Assert.Equal((250L, 0L), (view.Balance.Value, view.Pending.Value));
        Assert.Equal([1L], versions);
    }

    [Fact]
    public async Task Pending_PointsBecomeSpendableAfterThePendingPeriod_WithoutAnyCall()
    {
        IMemberGrain member = await SetUpAsync(Shop with { PendingDays = 14 });
        DateTimeOffset at = Now;
        AccrualResult earned = await member.Accrue(Buy(100_00));

        // Spendable as the (UTC, the program's) day after the fourteenth begins.
        var dayAfter = new DateTimeOffset(at.AddDays(14).UtcDateTime.Date.AddDays(1), TimeSpan.Zero);
        fixture.Clock.Advance(dayAfter - at - TimeSpan.FromSeconds(1));
        MemberView during = (await member.Get())!;
        fixture.Clock.Advance(TimeSpan.FromSeconds(1));
        MemberView after = (await member.Get())!;

        Assert.Equal(dayAfter, earned.AvailableAt);
        Assert.Equal((0L, 100L), (during.Balance.Value, during.Pending.Value));
        Assert.Equal((100L, 0L), (after.Balance.Value, after.Pending.Value));
        Assert.Equal(1, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND available_at IS NOT NULL"));
    }

    [Fact]
    public async Task Return_WhilePending_ReversesThePendingPointsFirst()
    {
        IMemberGrain member = await SetUpAsync(Shop with { PendingDays = 30, SignupBonusPoints = 10 });
        await member.Accrue(Buy(100_00, "buy"));

        ReturnResult returned = await member.Return(ReturnOf("buy", 40_00));

        Assert.Equal(AccrualStatus.Accepted, returned.Status);
        Assert.Equal((40L, 40L, 0L), (returned.Reversed.Value, returned.Details!.PendingReversed, returned.Details.ActiveReversed));
        Assert.Equal((10L, 60L), (returned.Balance.Value, returned.Pending.Value));
        await AssertLedgerMatchesAsync(member);
    }

    [Theory]
    [InlineData(NegativeBalancePolicy.AllowNegative, -80L, 0L)]
    [InlineData(NegativeBalancePolicy.FloorAtZero, 0L, 80L)]
    public async Task Return_OfSpentPoints_FollowsTheNegativeBalancePolicy(NegativeBalancePolicy policy, long balance, long shortfall)
    {
        IMemberGrain member = await SetUpAsync(Shop with { NegativeBalance = policy });
        await member.Accrue(Buy(100_00, "buy"));
        await member.Adjust(new Adjustment("spend", new Points(-80), "spent at the till"));

        ReturnResult returned = await member.Return(ReturnOf("buy", 100_00));
        MemberView view = (await member.Get())!;

        Assert.Equal((balance, shortfall), (view.Balance.Value, view.Shortfall.Value));
        Assert.Equal(shortfall, returned.Details!.Shortfall);
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Adjust_BelowZeroUnderFloorAtZero_IsRefusedAndWritesNothing_AndAResendIsDuplicate()
    {
        IMemberGrain member = await SetUpAsync(Shop with { NegativeBalance = NegativeBalancePolicy.FloorAtZero, SignupBonusPoints = 50 });
        long entries = await Sql.CountEntriesAsync(fixture.Storage, _program, "m");

        AccrualResult tooMuch = await member.Adjust(new Adjustment("adj-1", new Points(-51), "correction"));
        AccrualResult allowed = await member.Adjust(new Adjustment("adj-2", new Points(-50), "correction"));
        AccrualResult resend = await member.Adjust(new Adjustment("adj-2", new Points(-50), "correction"));

        Assert.Equal(LoyaltyError.FailedPrecondition, tooMuch.Error);
        Assert.Contains("below zero", tooMuch.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal((AccrualStatus.Accepted, 0L), (allowed.Status, allowed.Balance.Value));
        Assert.Equal(AccrualStatus.Duplicate, resend.Status);
        Assert.Equal(entries + 1, await Sql.CountEntriesAsync(fixture.Storage, _program, "m"));
    }

    [Fact]
    public async Task AGoldMemberWhoStopsBuying_IsRecordedOneTierLowerAtEachReview_WithoutAnotherChange()
    {
        TierLadder ladder = new(TierBasis.Points, 365, 30,
            [new TierDefinition("member", 0, Multipliers.One, []), new TierDefinition("silver", 100, 12_500, []), new TierDefinition("gold", 200, 15_000, [])]);
        IMemberGrain member = await SetUpAsync(Shop with { Tiers = ladder });
        await member.Accrue(Buy(250_00));
        IMemberGrain keeps = await EnrolAsync("keeps");
        await keeps.Accrue(Buy(250_00, memberId: "keeps"));
        DateTimeOffset firstReview = (await member.Get())!.TierReviewAt!.Value;
        await fixture.DeactivateAllAsync();

        // The first review (at the held window's end and its grace): gold to silver. "keeps" buys
        // again within the window, and stays gold, with an entry that records the review.
        fixture.Clock.Advance(TimeSpan.FromDays(300));
        await keeps.Accrue(Buy(250_00, memberId: "keeps"));
        fixture.Clock.Advance(TimeSpan.FromDays(96) + TimeSpan.FromHours(1));
        List<(string Member, string Details)> first = await ReviewsAsync(2);
        string keptAtFirst = (await keeps.Get())!.Tier;
        // A window on, neither bought: each drops a tier ("m" to the entry tier).
        fixture.Clock.Advance(TimeSpan.FromDays(365));
        List<(string Member, string Details)> second = await ReviewsAsync(4);
        MemberView live = (await member.Get())!;
        await fixture.DeactivateAllAsync();
        MemberView replayed = (await member.Get())!;

        Assert.Equal(["keeps", "m"], first.Select(r => r.Member).Order());
        (string _, string lowered) = Assert.Single(first, r => r.Member == "m");
        Assert.Contains("gold", lowered, StringComparison.Ordinal);
        Assert.Contains("silver", lowered, StringComparison.Ordinal);
        (string _, string kept) = Assert.Single(first, r => r.Member == "keeps");
        Assert.Contains("gold", kept, StringComparison.Ordinal);
        Assert.DoesNotContain("silver", kept, StringComparison.Ordinal);
        Assert.Equal(["keeps", "keeps", "m", "m"], second.Select(r => r.Member).Order());
        Assert.Equal(("member", (DateTimeOffset?)null), (live.Tier, live.TierReviewAt));
        Assert.Equal(live.Tier, replayed.Tier);
        Assert.Equal(("gold", "silver"), (keptAtFirst, (await keeps.Get())!.Tier));
        Assert.True(firstReview < fixture.Clock.GetUtcNow());
        await AssertLedgerMatchesAsync(member);

        async Task<List<(string Member, string Details)>> ReviewsAsync(int count)
        {
            DateTime deadline = DateTime.UtcNow.AddSeconds(20);
            List<(string, string)> rows = [];
            while (rows.Count < count && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
                rows = await Sql.RowsAsync(fixture.Storage,
                    $"SELECT member_id, CAST(details AS TEXT) FROM ledger_entries WHERE program_id = '{_program}' AND kind = {(int)LedgerEntryKind.TierReviewed} ORDER BY recorded_at",
                    r => (r.GetString(0), r.IsDBNull(1) ? "" : r.GetString(1)));
            }

            Assert.Equal(count, rows.Count);
            return rows;
        }
    }

    [Fact]
    public async Task AWake_WhileThisSilosCopyOfTheProgramIsOlder_DecidesUnderTheNewestPolicy()
    {
        ProgramSettings warned = Shop with { Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 1, WarnDays: 7) };
        IMemberGrain member = await SetUpAsync(warned);
        await member.Accrue(Buy(50_00));
        ProgramConfig old = (await fixture.Grains.GetGrain<IProgramGrain>(_program).Get())!;
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(warned with { Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 1) });
        // The change brings every member due once: let that wake pass before this silo's copy goes back.
        await Task.Delay(500);

        // As a silo that fetched the program just before another silo stopped the warnings.
        Silo().GetRequiredService<ProgramDirectory>().Hold(old);
        fixture.Clock.Advance(TimeSpan.FromDays(26));
        await member.Wake();

        Assert.Equal(0, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND kind = {(int)LedgerEntryKind.ExpiryWarning}"));
    }

    [Fact]
    public async Task ATierRenamedOnAnotherSilo_WhileThisSilosCopyIsOlder_IsReadFresh_NotAsTheEntryTier()
    {
        TierLadder before = new(TierBasis.Points, 365, 30, [new TierDefinition("member", 0, Multipliers.One, []), new TierDefinition("gold", 100, 20_000, [])]);
        IMemberGrain member = await SetUpAsync(Shop with { Tiers = before });
        await member.Accrue(Buy(150_00));
        ProgramConfig old = (await fixture.Grains.GetGrain<IProgramGrain>(_program).Get())!;
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with
        {
            Tiers = before with { Tiers = [before.Tiers[0], before.Tiers[1] with { Name = "Gold" }], Renamed = new Dictionary<string, string> { ["gold"] = "Gold" } },
        });
        AccrualResult renamed = await member.Accrue(Buy(10_00));

        // This silo's copy goes back to the one before the rename: as a silo that fetched it just
        // before another silo renamed the tier, and then took in the member (which holds "Gold").
        Silo().GetRequiredService<ProgramDirectory>().Hold(old);
        MemberView view = (await member.Get())!;
        Silo().GetRequiredService<ProgramDirectory>().Hold(old);
        QuoteResult quote = await member.Quote(Buy(10_00));
        Silo().GetRequiredService<ProgramDirectory>().Hold(old);
        AccrualResult stale = await member.Accrue(Buy(10_00));
        string tierLive = (await member.Get())!.Tier;
        await fixture.DeactivateAllAsync();
        string tierWritten = (await member.Get())!.Tier;

        // Read with the old copy, the member was "member": a view showed it, and a purchase earned at x1 and wrote it.
        Assert.Equal((20L, "Gold"), (renamed.Earned.Value, view.Tier));
        Assert.Equal(20L, quote.Points.Value);
        Assert.Equal((AccrualStatus.Accepted, 20L), (stale.Status, stale.Earned.Value));
        Assert.Equal(("Gold", "Gold"), (tierLive, tierWritten));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task ResendsOfIdsOlderThanTheMemberRemembers_AreAnsweredAsDuplicates_AndTheirWarningsAreWithinTheSilosBudget()
    {
        IMemberGrain member = await SetUpAsync(Shop);
        for (int i = 0; i < 20; i++)
        {
            await member.Accrue(Buy(10_00, $"old{i}"));
        }

        long entries = await Sql.CountEntriesAsync(fixture.Storage, _program, "m");
        LogBudget warnings = Silo().GetRequiredService<MemberServices>().Warnings;
        long asked = warnings.Asked;
        var answers = new List<AccrualResult>();
        for (int i = 0; i < 30; i++)
        {
            // The ledger refuses the id (the member remembers only its last 16), and the member reloads.
            answers.Add(await member.Accrue(Buy(10_00, "old0")));
        }

        Assert.All(answers, a => Assert.Equal(AccrualStatus.Duplicate, a.Status));
        Assert.Equal(entries, await Sql.CountEntriesAsync(fixture.Storage, _program, "m"));
        Assert.Equal(30, warnings.Asked - asked);
        Assert.Equal(MemberServices.WarningLinesPerSecondMax, warnings.LinesPerSecond);
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Flags_MoreThanTheLimit_AreRefused()
    {
        IMemberGrain member = await SetUpAsync(Shop);

        MemberResult refused = await member.SetFlags([.. Enumerable.Range(0, Limits.FlagRulesMax + 1).Select(i => $"f{i}")]);

        Assert.Equal(LoyaltyError.InvalidArgument, refused.Error);
        Assert.Empty((await member.Get())!.Flags);
    }

    [Fact]
    public async Task Return_Refusals_NameTheProblemAndWriteNothing()
    {
        IMemberGrain member = await SetUpAsync(Shop);
        IMemberGrain other = await EnrolAsync("other");
        await member.Accrue(Buy(100_00, "buy"));
        await other.Accrue(Buy(50_00, "theirs", "other"));
        long entries = await Sql.CountEntriesAsync(fixture.Storage, _program, "m");

        ReturnResult unknown = await member.Return(ReturnOf("nope", 1_00));
        ReturnResult othersPurchase = await member.Return(ReturnOf("theirs", 1_00));
        ReturnResult tooMuch = await member.Return(ReturnOf("buy", 100_01));
        ReturnResult ok = await member.Return(ReturnOf("buy", 30_00, "ret"));
        ReturnResult resend = await member.Return(ReturnOf("buy", 30_00, "ret"));
        ReturnResult reused = await member.Return(ReturnOf("buy", 31_00, "ret"));

        Assert.Equal(LoyaltyError.NotFound, unknown.Error);
        Assert.Equal(LoyaltyError.NotFound, othersPurchase.Error);
        Assert.Contains("exceeds the purchase", tooMuch.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(LoyaltyError.FailedPrecondition, tooMuch.Error);
        Assert.Equal((AccrualStatus.Accepted, 30L), (ok.Status, ok.Reversed.Value));
        Assert.Equal((AccrualStatus.Duplicate, 30L), (resend.Status, resend.Reversed.Value));
        Assert.Equal(LoyaltyError.AlreadyExists, reused.Error);
        Assert.Equal(entries + 1, await Sql.CountEntriesAsync(fixture.Storage, _program, "m"));
        Assert.Equal(70L, (await member.Get())!.Balance.Value);
    }

    [Fact]
    public async Task Return_ByLines_OfMoreUnitsThanBought_OrDatedBeforeThePurchase_IsRefusedAndWritesNothing()
    {
        IMemberGrain member = await SetUpAsync(Shop);
        await member.Accrue(Buy(30_00, "basket") with { LineItems = [new LineItem("mug", "kitchen", 2, 20_00), new LineItem("tea", "food", 1, 10_00)] });
        long entries = await Sql.CountEntriesAsync(fixture.Storage, _program, "m");
        PurchaseReturn ByLines(string txn, int quantity, long amountMinor, DateTimeOffset? at = null) =>
            new(txn, _program, "m", "basket", "store-1", new Money(0, "USD"), at ?? Now, [new ReturnLine("mug", quantity, amountMinor)]);

        ReturnResult threeOfTwo = await member.Return(ByLines("r1", 3, 15_00));
        ReturnResult early = await member.Return(ByLines("r2", 1, 10_00, Now.AddDays(-1)));
        ReturnResult one = await member.Return(ByLines("r3", 1, 5_00));
        ReturnResult twoMore = await member.Return(ByLines("r4", 2, 5_00));
        ReturnResult last = await member.Return(ByLines("r5", 1, 15_00));

        Assert.Equal((LoyaltyError.FailedPrecondition, LoyaltyError.FailedPrecondition), (threeOfTwo.Error, early.Error));
        Assert.Contains("sku 'mug': 3 returned now and 0 before, of 2 units bought", threeOfTwo.ErrorMessage, StringComparison.Ordinal);
        Assert.Contains("is before the purchase's occurred_at", early.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(AccrualStatus.Accepted, one.Status);
        Assert.Contains("1 before, of 2 units bought", twoMore.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(AccrualStatus.Accepted, last.Status);
        Assert.Equal(entries + 2, await Sql.CountEntriesAsync(fixture.Storage, _program, "m"));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Return_ByLines_TakesAFreeLineBackWithoutMoney_AndThePurchaseIsReturnedInFullOnce()
    {
        IMemberGrain member = await SetUpAsync(Shop);
        LineItem[] lines = [new LineItem("mug", "kitchen", 1, 30_00), new LineItem("gift", "free", 1, 0)];
        await member.Accrue(Buy(30_00, "basket") with { LineItems = lines });
        await member.Accrue(Buy(30_00, "basket-2") with { LineItems = lines });
        PurchaseReturn ByLines(string txn, string purchase, params ReturnLine[] returned) => new(txn, _program, "m", purchase, "store-1", new Money(0, "USD"), Now, returned);

        // The gift first, then the mug: the mug's return completes the purchase.
        ReturnResult gift = await member.Return(ByLines("r1", "basket", new ReturnLine("gift", 1, 0)));
        ReturnResult giftAgain = await member.Return(ByLines("r2", "basket", new ReturnLine("gift", 1, 0)));
        ReturnResult rest = await member.Return(ByLines("r3", "basket", new ReturnLine("mug", 1, 30_00)));
        // The mug first (the purchase is whole: the gift cost nothing), then the gift: it completes nothing again.
        ReturnResult mug = await member.Return(ByLines("r4", "basket-2", new ReturnLine("mug", 1, 30_00)));
        ReturnResult giftAfter = await member.Return(ByLines("r5", "basket-2", new ReturnLine("gift", 1, 0)));

        Assert.Equal((AccrualStatus.Accepted, 0L, false), (gift.Status, gift.Reversed.Value, gift.Details!.Full));
        Assert.Contains("sku 'gift': 1 returned now and 1 before, of 1 units bought", giftAgain.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal((AccrualStatus.Accepted, 30L, true), (rest.Status, rest.Reversed.Value, rest.Details!.Full));
        Assert.Equal((AccrualStatus.Accepted, 30L, true), (mug.Status, mug.Reversed.Value, mug.Details!.Full));
        Assert.Equal((AccrualStatus.Accepted, 0L, false), (giftAfter.Status, giftAfter.Reversed.Value, giftAfter.Details!.Full));
        Assert.Equal(0L, (await member.Get())!.Balance.Value);
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Tier_UpgradesOnTheCrossingPurchase_AndTheNextPurchaseEarnsFaster()
    {
        IMemberGrain member = await SetUpAsync(Shop with { Tiers = Ladder });

        AccrualResult crossing = await member.Accrue(Buy(160_00));
        AccrualResult next = await member.Accrue(Buy(100_00));
        MemberView view = (await member.Get())!;

        Assert.Equal(("member", "silver", 160L), (((EarnDetails)crossing.Details!).TierBefore, ((EarnDetails)crossing.Details!).TierAfter, crossing.Earned.Value));
        Assert.Equal(150L, next.Earned.Value); // 100 x 1.5
        Assert.Equal(("silver", Now.AddDays(365)), (view.Tier, view.TierReviewAt!.Value));
        Assert.Equal(["free delivery"], view.Perks);
    }

    [Fact]
    public async Task Tier_DowngradesOneTierAfterTheWindowAndGrace_NotBefore()
    {
        IMemberGrain member = await SetUpAsync(Shop with { Tiers = Ladder });
        await member.Accrue(Buy(160_00));

        fixture.Clock.Advance(TimeSpan.FromDays(365 + 29));
        string inGrace = (await member.Get())!.Tier;
        fixture.Clock.Advance(TimeSpan.FromDays(1));
        string afterGrace = (await member.Get())!.Tier;
        AccrualResult next = await member.Accrue(Buy(10_00));

        Assert.Equal(("silver", "member"), (inGrace, afterGrace));
        // The review has its own entry, written by the member's wake or, first, with the purchase;
        // the purchase starts from it (before, it recorded the downgrade in its own earn, and no
        // review entry or tier.reviewed event was written when the purchase came first).
        Assert.Equal((null, "member", 10L), (((EarnDetails)next.Details!).DowngradedFrom, ((EarnDetails)next.Details!).TierBefore, next.Earned.Value));
        TierReviewedDetails review = Assert.Single(await ReviewsAsync()).DetailsAs<TierReviewedDetails>()!;
        Assert.Equal(("silver", "member"), (review.TierBefore, review.TierAfter));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Tier_APurchaseBeforeTheReviewsWake_WritesTheKeptReviewFirst_InItsCommit()
    {
        IMemberGrain member = await SetUpAsync(Shop with { Tiers = Ladder });
        await member.Accrue(Buy(160_00));
        fixture.Clock.Advance(TimeSpan.FromDays(300));
        await member.Accrue(Buy(200_00));
        // The review falls due at the window's end and 30 days of grace; the member's wake for it
        // comes up to 30 minutes later (its place in the spread of wakes).
        fixture.Clock.Advance(TimeSpan.FromDays(95));

        AccrualResult next = await member.Accrue(Buy(10_00));
        IReadOnlyList<LedgerEntry> reviews = await ReviewsAsync();

        TierReviewedDetails review = Assert.Single(reviews).DetailsAs<TierReviewedDetails>()!;
        Assert.Equal(("silver", "silver"), (review.TierBefore, review.TierAfter));
        Assert.True(reviews[0].Sequence < next.Sequence);
        Assert.Equal(("silver", "silver", 15L), (((EarnDetails)next.Details!).TierBefore, ((EarnDetails)next.Details!).TierAfter, next.Earned.Value));
        Assert.Equal(review.TierReviewAt, (await member.Get())!.TierReviewAt);
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Tier_APurchaseThatCrossesBackOverTheTierItsDueReviewLowered_HasTheReviewAndTheUpgrade()
    {
        IMemberGrain member = await SetUpAsync(Shop with { Tiers = Ladder });
        await member.Accrue(Buy(160_00));
        // Past the window and its grace: silver is due to fall to member.
        fixture.Clock.Advance(TimeSpan.FromDays(365 + 31));

        AccrualResult next = await member.Accrue(Buy(200_00));
        IReadOnlyList<LedgerEntry> reviews = await ReviewsAsync();
        MemberView view = (await member.Get())!;

        // The review is written first, then the purchase starts from its tier and crosses back:
        // two tier changes (down, then up), each with its own entry.
        TierReviewedDetails review = Assert.Single(reviews).DetailsAs<TierReviewedDetails>()!;
        Assert.Equal(("silver", "member"), (review.TierBefore, review.TierAfter));
        Assert.True(reviews[0].Sequence < next.Sequence);
        EarnDetails earn = (EarnDetails)next.Details!;
        Assert.Equal(("member", "silver", null, 200L), (earn.TierBefore, earn.TierAfter, earn.DowngradedFrom, next.Earned.Value));
        Assert.Equal(("silver", Now.AddDays(365)), (view.Tier, view.TierReviewAt!.Value));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Quote_WhileAReviewIsDueAndNotWrittenYet_AnswersFromTheReviewedTier_AndWritesNothing()
    {
        await SetUpAsync(Shop with { Tiers = Ladder });
        // A member whose wake for the review comes at least 5 minutes after it falls due, so the quote comes first.
        string id = WokenAtLeastFiveMinutesLate("q");
        IMemberGrain member = await EnrolAsync(id);
        await member.Accrue(Buy(160_00, memberId: id));
        // Just past the review's time (the window and its grace), before the member's wake.
        fixture.Clock.Advance(TimeSpan.FromDays(365 + 30) + TimeSpan.FromMinutes(1));
        long entries = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = '{id}'");

        // Before: the quote staged the review and the earn and checked the earn alone, out of
        // sequence, and failed with an internal error.
        QuoteResult quote = await member.Quote(Buy(10_00, memberId: id));

        Assert.True(quote.Error == LoyaltyError.None, quote.ErrorMessage);
        // 10 points at the reviewed tier (member, 1x), not silver's 15.
        Assert.Equal((10L, "member"), (quote.Points.Value, ((EarnDetails)quote.Details!).TierBefore));
        Assert.Equal(entries, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = '{id}'"));
    }

    [Fact]
    public async Task Tier_ABasketWithARedemption_WhileAReviewIsDue_RecordsTheReviewInItsEarn()
    {
        var coffee = new Reward("coffee", "Free coffee", RewardKind.Product, 30, Sku: "COFFEE");
        await SetUpAsync(Shop with { Tiers = Ladder, Rewards = [coffee] });
        // A member whose wake for the review comes at least 5 minutes after it falls due (its place
        // in the 30-minute spread of wakes), so the basket comes first.
        string id = WokenAtLeastFiveMinutesLate("b");
        IMemberGrain member = await EnrolAsync(id);
        await member.Accrue(Buy(160_00, memberId: id));
        // Just past the review's time (the window and its grace), before the member's wake.
        fixture.Clock.Advance(TimeSpan.FromDays(365 + 30) + TimeSpan.FromMinutes(1));

        AccrualResult basket = await member.Accrue(Buy(10_00, memberId: id) with { RedeemRewardId = "coffee", RedeemQuantity = 1 });
        IReadOnlyList<LedgerEntry> reviews = await ReviewsAsync(id);
        MemberView view = (await member.Get())!;

        // Documented: the redemption and the earn are one commit of their own, so the review goes
        // into the earn (downgraded_from) rather than an entry before them.
        Assert.True(basket.Status == AccrualStatus.Accepted, basket.ErrorMessage);
        Assert.Empty(reviews);
        EarnDetails earn = (EarnDetails)basket.Details!;
        Assert.Equal(("silver", "member", "member"), (earn.DowngradedFrom, earn.TierBefore, earn.TierAfter));
        Assert.Equal(("member", 160L - 30L + 10L), (view.Tier, view.Balance.Value));
        await AssertLedgerMatchesAsync(member);
    }

    /// <summary>A member id whose wake comes at least five minutes after its due time, in the silo's spread of wakes.</summary>
    private string WokenAtLeastFiveMinutesLate(string prefix)
    {
        TimeSpan spread = Silo().GetRequiredService<Microsoft.Extensions.Options.IOptions<ScheduleOptions>>().Value.ExpirySpread;
        Assert.True(spread >= TimeSpan.FromMinutes(10), $"the test needs a spread of wakes of 10 minutes or more; the silo's is {spread}");
        return Enumerable.Range(0, 1000).Select(i => $"{prefix}{i}").First(id => Expiring.WakeLateBy(_program, id, spread) >= TimeSpan.FromMinutes(5));
    }

    private async Task<IReadOnlyList<LedgerEntry>> ReviewsAsync(string memberId = "m") =>
        [.. (await Silo().GetRequiredService<ILedgerStore>().ReadAfterAsync(_program, memberId, 0, CancellationToken.None)).Where(e => e.Kind == LedgerEntryKind.TierReviewed)];

    [Fact]
    public async Task Tier_AReviewThatKeepsTheTier_IsRecorded_SoAThresholdRaisedLaterDoesNotTakeItMidWindow()
    {
        IMemberGrain member = await SetUpAsync(Shop with { Tiers = Ladder });
        DateTimeOffset start = Now;
        await member.Accrue(Buy(160_00));
        fixture.Clock.Advance(TimeSpan.FromDays(300));
        await member.Accrue(Buy(200_00));
        // Past the review (the window's end and 30 days of grace): 200 in the window keeps silver (150).
        fixture.Clock.Advance(TimeSpan.FromDays(95) + TimeSpan.FromHours(1));
        string sql = $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'm' AND kind = {(int)LedgerEntryKind.TierReviewed}";
        DateTime deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (await Sql.ScalarAsync(fixture.Storage, sql) == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "the kept review was not recorded within 15 s");
            await Task.Delay(50);
        }

        MemberView kept = (await member.Get())!;
        TierReviewedDetails recorded = (await member.GetLedger(null, 10))!.Entries.Single(e => e.Kind == LedgerEntryKind.TierReviewed).DetailsAs<TierReviewedDetails>()!;
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with { Tiers = Ladder with { Tiers = [Ladder.Tiers[0], Ladder.Tiers[1] with { Threshold = 300 }] } });
        MemberView afterRaise = (await member.Get())!;

        // Held for another window from the review's window end: 365 + 365 days after the upgrade.
        Assert.Equal(("silver", start.AddDays(730)), (kept.Tier, kept.TierReviewAt!.Value));
        // Read back from the ledger, the kept review names its tier before and after alike.
        Assert.Equal(("silver", "silver", kept.TierReviewAt), (recorded.TierBefore, recorded.TierAfter, recorded.TierReviewAt));
        // Before, the kept review was judged again under the raised threshold: the member fell to "member" mid-window.
        Assert.Equal(("silver", kept.TierReviewAt), (afterRaise.Tier, afterRaise.TierReviewAt));
    }

    [Fact]
    public async Task Tier_OnSpend_QualifiesByMoneyNotPoints()
    {
        TierLadder bySpend = Ladder with { Basis = TierBasis.Spend, Tiers = [Ladder.Tiers[0], Ladder.Tiers[1] with { Threshold = 200_00 }] };
        IMemberGrain member = await SetUpAsync(Shop with { EarnPointsPerUnit = 0, Tiers = bySpend });

        AccrualResult small = await member.Accrue(Buy(150_00));
        AccrualResult crossing = await member.Accrue(Buy(60_00));

        Assert.Equal(("member", "silver"), (((EarnDetails)small.Details!).TierAfter, ((EarnDetails)crossing.Details!).TierAfter));
        Assert.Equal(210_00L, (await member.Get())!.TierQualifying);
    }

    [Fact]
    public async Task Tier_QualificationCountsTheNetOfReturns()
    {
        IMemberGrain member = await SetUpAsync(Shop with { Tiers = Ladder });
        await member.Accrue(Buy(100_00, "buy"));
        await member.Return(ReturnOf("buy", 60_00));

        AccrualResult next = await member.Accrue(Buy(100_00));

        Assert.Equal("member", ((EarnDetails)next.Details!).TierAfter); // 40 + 100 < 150
        Assert.Equal(140L, (await member.Get())!.TierQualifying);
    }

    [Fact]
    public async Task Tier_AFullReturnByLines_TakesBackThePurchasesWholeSpend_ThoughItsLinesRefundLess()
    {
        TierLadder bySpend = Ladder with { Basis = TierBasis.Spend, Tiers = [Ladder.Tiers[0], Ladder.Tiers[1] with { Threshold = 200_00 }] };
        IMemberGrain member = await SetUpAsync(Shop with { Tiers = bySpend });
        // 1,100.00 with tax; the line itself is 1,000.00, and the till refunds it in two parts, the last for less.
        await member.Accrue(Buy(1_100_00, "buy") with { LineItems = [new LineItem("coat", "wear", 10, 1_000_00)] });
        ReturnResult first = await member.Return(ReturnOf("buy", 0) with { Lines = [new ReturnLine("coat", 4, 400_00)] });
        long afterFirst = (await member.Get())!.TierQualifying;

        ReturnResult last = await member.Return(ReturnOf("buy", 0) with { Lines = [new ReturnLine("coat", 6, 1_00)] });
        MemberView after = (await member.Get())!;

        Assert.Equal((LoyaltyError.None, LoyaltyError.None), (first.Error, last.Error));
        Assert.Equal(700_00L, afterFirst);
        Assert.True(((ReturnDetails)last.Details!).Full);
        // Before: 699.00 of a purchase returned in full stayed counted toward the tier.
        Assert.Equal(0L, after.TierQualifying);
    }

    [Fact]
    public async Task Caps_CampaignAndDailyCaps_HoldAcrossPurchases()
    {
        Campaign bonus = new("welcome", "Welcome", Now.AddDays(-1), Now.AddDays(10), [], 0, 0, [], [], [], 0, 50, 80, 0);
        IMemberGrain member = await SetUpAsync(Shop with { Campaigns = [bonus], DailyEarnCapPoints = 300 });

        AccrualResult first = await member.Accrue(Buy(100_00));
        AccrualResult second = await member.Accrue(Buy(100_00));
        AccrualResult third = await member.Accrue(Buy(100_00));

        Assert.Equal((150L, 130L, 20L), (first.Earned.Value, second.Earned.Value, third.Earned.Value));
        Assert.Contains("campaign:welcome", ((EarnDetails)second.Details!).CapsHit);
        Assert.Contains("daily", ((EarnDetails)third.Details!).CapsHit);
    }

    [Fact]
    public async Task Flags_SetThroughTheGrain_MakeTheMemberEarnFaster()
    {
        IMemberGrain member = await SetUpAsync(Shop with { FlagRules = [new FlagRule("storecard", 15_000)] });

        MemberResult flagged = await member.SetFlags(["storecard"]);
        MemberResult again = await member.SetFlags(["storecard"]);
        AccrualResult earned = await member.Accrue(Buy(100_00));
        MemberResult refused = await member.SetFlags(["not a flag"]);

        Assert.Equal(["storecard"], flagged.Member!.Flags);
        Assert.Equal(flagged.Member.LastSequence, again.Member!.LastSequence);
        Assert.Equal(150L, earned.Earned.Value);
        Assert.Equal(LoyaltyError.InvalidArgument, refused.Error);
    }

    [Fact]
    public async Task Configuration_ChangeAppliesToLaterEventsOnly_AndReplayKeepsEarlierPoints()
    {
        IMemberGrain member = await SetUpAsync(Shop);
        AccrualResult before = await member.Accrue(Buy(100_00));
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with { EarnPointsPerUnit = 3 });
        AccrualResult after = await member.Accrue(Buy(100_00));

        await fixture.DeactivateAllAsync();
        MemberView replayed = (await member.Get())!;

        Assert.Equal((100L, 1L), (before.Earned.Value, before.ProgramVersion));
        Assert.Equal((300L, 2L), (after.Earned.Value, after.ProgramVersion));
        Assert.Equal(400L, replayed.Balance.Value);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Property_RandomPurchasesReturnsAndTime_LedgerSumsToBalancePlusPendingAndReplayAgrees(int seed)
    {
        var random = new Random(seed);
        ProgramSettings settings = Shop with
        {
            PendingDays = 7,
            NegativeBalance = seed % 2 == 0 ? NegativeBalancePolicy.FloorAtZero : NegativeBalancePolicy.AllowNegative,
            ProductRules = [new ProductRule(null, "wine", 30_000, false), new ProductRule("GIFT", null, 0, true)],
            Campaigns = [new Campaign("double", "Double", Now.AddDays(-1), Now.AddDays(20), [], 0, 0, [], [], [], 20_000, 5, 400, 0)],
            Tiers = Ladder,
        };
        IMemberGrain member = await SetUpAsync(settings);
        var purchases = new List<(string Txn, long Amount, long Food)>();
        for (int step = 0; step < 60; step++)
        {
            await RandomStepAsync(random, member, purchases, step);
        }

        string before = JsonSerializer.Serialize(await member.Get());
        await fixture.DeactivateAllAsync();
        string after = JsonSerializer.Serialize(await member.Get());

        Assert.True(before == after, $"live:\n{before}\nreplayed:\n{after}");
        await AssertLedgerMatchesAsync(member);
        long overReversed = await Sql.ScalarAsync(fixture.Storage,
            $"SELECT count(*) FROM ledger_entries e WHERE e.program_id = '{_program}' AND e.kind = 2 AND e.points < " +
            $"(SELECT coalesce(sum(-r.points), 0) FROM ledger_entries r WHERE r.program_id = e.program_id AND r.kind = 4 AND r.reference = e.txn_id)");
        Assert.Equal(0, overReversed);
        Assert.True(await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND kind = 4") >= 5);
    }

    private async Task RandomStepAsync(Random random, IMemberGrain member, List<(string Txn, long Amount, long Food)> purchases, int step)
    {
        switch (random.Next(10))
        {
            case < 5:
                string txn = $"buy{step}";
                long a = random.Next(1, 200) * 1_00L, b = random.Next(1, 100) * 1_00L;
                Purchase p = Buy(a + b, txn) with { LineItems = [new LineItem("food", "food", 1, a), new LineItem(random.Next(2) == 0 ? "w1" : "GIFT", "wine", 1, b)] };
                Assert.Equal(AccrualStatus.Accepted, (await member.Accrue(p)).Status);
                purchases.Add((txn, a + b, a));
                break;
            case < 8 when purchases.Count > 0:
                (string original, long amount, long food) = purchases[random.Next(purchases.Count)];
                PurchaseReturn request = ReturnOf(original, random.Next(1, (int)Math.Min(amount, 150_00)), $"ret{step}");
                if (random.Next(2) == 0)
                {
                    request = request with { Amount = new Money(0, "USD"), Lines = [new ReturnLine("food", 1, random.Next(1, (int)food + 1))] };
                }

                ReturnResult r = await member.Return(request);
                Assert.True(r.Status == AccrualStatus.Accepted || r.Error == LoyaltyError.FailedPrecondition, r.ErrorMessage);
                break;
            case 8:
                await member.Adjust(new Adjustment($"adj{step}", new Points(-random.Next(1, 50)), "redeemed"));
                break;
            default:
                fixture.Clock.Advance(TimeSpan.FromDays(random.Next(1, 10)));
                break;
        }
    }

    [Fact]
    public async Task APurchaseAndAReturnResentAfterTheBackdatingLimit_AreAnsweredAsDuplicates_NotRefusedAsTooOld()
    {
        IMemberGrain member = await SetUpAsync(Shop with { MaxBackdateDays = 7 });
        Purchase purchase = Buy(50_00, "old");
        PurchaseReturn partReturn = ReturnOf("old", 10_00, "old-back");
        AccrualResult bought = await member.Accrue(purchase);
        ReturnResult returned = await member.Return(partReturn);
        for (int i = 0; i < ClusterFixture.RecentTransactionsMax; i++)
        {
            await member.Accrue(Buy(1_00));
        }

        fixture.Clock.Advance(TimeSpan.FromDays(8));
        AccrualResult resent = await member.Accrue(purchase);
        ReturnResult resentReturn = await member.Return(partReturn);
        AccrualResult fresh = await member.Accrue(Buy(50_00, "new-but-old") with { OccurredAt = Now.AddDays(-8) });

        Assert.Equal((AccrualStatus.Accepted, AccrualStatus.Accepted), (bought.Status, returned.Status));
        // Before: INVALID_ARGUMENT "occurred_at is more than 7 days in the past", and the till
        // could take the sale as failed.
        Assert.Equal((AccrualStatus.Duplicate, LoyaltyError.None, 50L), (resent.Status, resent.Error, resent.Earned.Value));
        Assert.Equal((AccrualStatus.Duplicate, LoyaltyError.None), (resentReturn.Status, resentReturn.Error));
        Assert.Equal(LoyaltyError.InvalidArgument, fresh.Error);
        Assert.Contains("more than 7 days in the past", fresh.ErrorMessage, StringComparison.Ordinal);
        await AssertLedgerMatchesAsync(member);
    }

    /// <summary>The ledger is the truth: its sum is the balance plus the pending points.</summary>
    private async Task AssertLedgerMatchesAsync(IMemberGrain member)
    {
        MemberView view = (await member.Get())!;
        Assert.Equal(view.Balance.Value + view.Pending.Value, await Sql.SumPointsAsync(fixture.Storage, _program, view.MemberId));
    }

    private IServiceProvider Silo() => fixture.SiloServices;

    private Purchase Buy(long amountMinor, string? txn = null, string memberId = "m") =>
        new(txn ?? $"t{Interlocked.Increment(ref _txn)}", _program, memberId, "store-1", new Money(amountMinor, "USD"), Now.AddMinutes(-1), []);

    private PurchaseReturn ReturnOf(string original, long amountMinor, string? txn = null) =>
        new(txn ?? $"ret{Interlocked.Increment(ref _txn)}", _program, "m", original, "store-1", new Money(amountMinor, "USD"), Now.AddMinutes(-1), []);

    private async Task<IMemberGrain> SetUpAsync(ProgramSettings settings)
    {
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(settings);
        return await EnrolAsync("m");
    }

    private async Task<IMemberGrain> EnrolAsync(string memberId)
    {
        IMemberGrain member = fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, memberId));
        Assert.Equal(LoyaltyError.None, (await member.Enrol(new Enrolment(_program, memberId, null))).Error);
        return member;
    }
}

public sealed class SqliteRulesGrainTests(SqliteClusterFixture fixture) : RulesGrainTests(fixture), IClassFixture<SqliteClusterFixture>;

public sealed class PostgresRulesGrainTests(PostgresClusterFixture fixture) : RulesGrainTests(fixture), IClassFixture<PostgresClusterFixture>;
