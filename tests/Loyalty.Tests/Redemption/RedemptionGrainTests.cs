using System.Text.Json;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Loyalty.Tests.Redemption;

/// <summary>
/// Redemption, reservations, lots and expiry through real member grains on a real database.
/// The rules' clock is the fixture's fake clock; the silo's due scheduler polls the schedule
/// every 50 ms, so expiry happens as soon as the clock is moved past a due time.
/// </summary>
public abstract class RedemptionGrainTests(ClusterFixture fixture)
{
    private static readonly TimeSpan DueWaitMax = TimeSpan.FromSeconds(15);

    private readonly string _program = "x" + Guid.NewGuid().ToString("N")[..10];
    private int _txn;

    private static readonly Reward Coffee = new("coffee", "Free coffee", RewardKind.Product, 30, Sku: "COFFEE");
    private static readonly Reward TenOff = new("ten-off", "$10 off", RewardKind.Discount, 100, ValueMinor: 10_00);
    private static readonly Reward Trees = new("trees", "Plant a tree", RewardKind.Donation, 50, ValueMinor: 1_00, Cause: "Forests Now");

    private static ProgramSettings Shop => new("Shop", "USD", 2, 1, Rewards: [Coffee, TenOff, Trees]);

    private static ExpiryPolicy TwelveMonths => new(ExpiryMode.Lifespan, 12);

    private DateTimeOffset Now => fixture.Clock.GetUtcNow();

    /// <summary>When a lifespan ending at <paramref name="at"/> expires in a UTC program: as that day ends.</summary>
    private static DateTimeOffset EndOfDay(DateTimeOffset at) => new(at.UtcDateTime.Date.AddDays(1), TimeSpan.Zero);

    [Fact]
    public async Task Redeem_SpendsFromTheActiveBalance_AndAResendIsDuplicate()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 100 });

        RedemptionResult redeemed = await member.Redeem(new Loyalty.Redemption("r1", "coffee", 2));
        RedemptionResult resend = await member.Redeem(new Loyalty.Redemption("r1", "coffee", 2));

        Assert.Equal((AccrualStatus.Accepted, 60L, 40L), (redeemed.Status, redeemed.Points.Value, redeemed.Balance.Value));
        Assert.Equal(AccrualStatus.Duplicate, resend.Status);
        Assert.Equal(40L, (await member.Get())!.Balance.Value);
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Redeem_Refusals_NameTheProblemAndWriteNothing()
    {
        ProgramSettings settings = Shop with
        {
            PendingDays = 14,
            SignupBonusPoints = 40,
            Rewards =
            [
                Coffee, TenOff,
                new Reward("gold-lounge", "Lounge", RewardKind.Product, 10, Sku: "LOUNGE", Tiers: ["gold"]),
                new Reward("summer", "Summer", RewardKind.Product, 10, Sku: "SUN", AvailableFrom: Now.AddDays(30)),
                new Reward("rare", "Rare", RewardKind.Product, 10, Sku: "RARE", Stock: 0),
            ],
        };
        IMemberGrain member = await SetUpAsync(settings);
        await member.Accrue(Buy(500_00));
        long entries = await Sql.CountEntriesAsync(fixture.Storage, _program, "m");

        (string Reward, int Quantity, LoyaltyError Error, string Says)[] cases =
        [
            ("nope", 1, LoyaltyError.NotFound, "not in the catalogue"),
            ("ten-off", 1, LoyaltyError.FailedPrecondition, "40 points available"),   // 500 pending points are not spendable
            ("gold-lounge", 1, LoyaltyError.FailedPrecondition, "for tiers gold"),
            ("summer", 1, LoyaltyError.FailedPrecondition, "not available now"),
            ("rare", 1, LoyaltyError.FailedPrecondition, "out of stock"),
            ("coffee", 0, LoyaltyError.InvalidArgument, "quantity"),
        ];
        foreach ((string reward, int quantity, LoyaltyError error, string says) in cases)
        {
            RedemptionResult refused = await member.Redeem(new Loyalty.Redemption(Txn(), reward, quantity));
            Assert.True(refused.Error == error && refused.ErrorMessage!.Contains(says, StringComparison.Ordinal), $"{reward}: {refused.Error} {refused.ErrorMessage}");
        }

        Assert.Equal(entries, await Sql.CountEntriesAsync(fixture.Storage, _program, "m"));
        Assert.Equal(0L, await fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/rare").Taken());
    }

    [Fact]
    public async Task Redeem_ManyTillsAtOnce_NeverOverdraw()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 1_000 });

        RedemptionResult[] results = await Task.WhenAll(Enumerable.Range(0, 50).Select(i => member.Redeem(new Loyalty.Redemption($"till{i}", "coffee", 1, $"store-{i % 7}"))));
        MemberView view = (await member.Get())!;

        Assert.Equal(33, results.Count(r => r.Status == AccrualStatus.Accepted));
        Assert.All(results.Where(r => r.Status != AccrualStatus.Accepted), r => Assert.Equal(LoyaltyError.FailedPrecondition, r.Error));
        Assert.Equal(10L, view.Balance.Value);
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Redeem_WithStock_TakesUnitsUntilNoneAreLeft()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 1_000, Rewards = [Coffee with { Stock = 3 }] });

        RedemptionResult[] results = await Task.WhenAll(Enumerable.Range(0, 5).Select(i => member.Redeem(new Loyalty.Redemption($"s{i}", "coffee", 1))));

        Assert.Equal(3, results.Count(r => r.Status == AccrualStatus.Accepted));
        Assert.Equal(2, results.Count(r => r.ErrorMessage?.Contains("out of stock", StringComparison.Ordinal) == true));
        Assert.Equal(3L, await fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/coffee").Taken());
    }

    [Fact]
    public async Task Stock_TheFirstRedemptionAfterPendingPointsBecomeSpendable_TakesItsUnit()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 0, PendingDays = 14, Rewards = [Coffee with { Stock = 5 }] });
        Assert.Equal(AccrualStatus.Accepted, (await member.Accrue(Buy(40_00))).Status);
        fixture.Clock.Advance(TimeSpan.FromDays(15));

        // No change since the points became spendable: the member's lots still hold them as pending.
        RedemptionResult redeemed = await member.Redeem(new Loyalty.Redemption("after-pending", "coffee", 1));

        // Before: UNAVAILABLE, "the reward's stock could not be reserved", on every first try.
        Assert.Equal((AccrualStatus.Accepted, LoyaltyError.None), (redeemed.Status, redeemed.Error));
        Assert.Equal(1L, await Taken("coffee"));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Stock_TakenForARedemptionThatNeverReachedTheLedger_GoesBack_AndRecordedOnesStay()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 100, Rewards = [Coffee with { Stock = 5 }] });
        IRewardStockGrain stock = fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/coffee");
        await member.Redeem(new Loyalty.Redemption("kept", "coffee", 1));
        bool ghost = await stock.Take("m", "lost-in-a-crash", 2, 5);
        bool again = await stock.Take("m", "lost-in-a-crash", 2, 5);
        long before = await stock.Taken();

        fixture.Clock.Advance(TimeSpan.FromMinutes(11));
        await fixture.DeactivateAllAsync();
        long after = await stock.Taken();

        Assert.True(ghost && again);
        Assert.Equal((3L, 1L), (before, after));
    }

    [Fact]
    public async Task Commit_RecordsTheValueAndCauseOfWhenTheReservationWasMade_WhateverTheCatalogueSaysSince()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 500 });
        Assert.Equal(AccrualStatus.Accepted, (await member.Reserve(new Loyalty.Redemption("give", "trees", 2))).Status);
        Assert.Equal(AccrualStatus.Accepted, (await member.Reserve(new Loyalty.Redemption("off", "ten-off", 1))).Status);
        // The donation leaves the catalogue; the discount is raised.
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with { SignupBonusPoints = 500, Rewards = [Coffee, TenOff with { ValueMinor = 12_00 }] });

        RedemptionResult gave = await member.CommitReservation("give");
        RedemptionResult off = await member.CommitReservation("off");

        Assert.Equal((AccrualStatus.Accepted, AccrualStatus.Accepted), (gave.Status, off.Status));
        List<(string Txn, long Amount, string Currency, string Details)> spent = await Sql.RowsAsync(fixture.Storage,
            $"SELECT txn_id, amount_minor, currency, details FROM ledger_entries WHERE program_id = '{_program}' AND kind = {(int)LedgerEntryKind.Redeem} ORDER BY txn_id",
            r => (r.GetString(0), r.GetInt64(1), r.GetString(2), r.GetString(3)));
        // Before: the donation was recorded with no money and no cause, the discount at 12.00.
        Assert.Equal([("give#end", 2_00L, "USD"), ("off#end", 10_00L, "USD")], spent.Select(s => (s.Txn, s.Amount, s.Currency)));
        Assert.Contains("Forests Now", spent[0].Details, StringComparison.Ordinal);
        LedgerEntry reserved = (await Silo().GetRequiredService<ILedgerStore>().ReadAfterAsync(_program, "m", 0, CancellationToken.None)).First(e => e.Kind == LedgerEntryKind.Reserve);
        Loyalty.Api.V1.LedgerEntry shown = Loyalty.Host.Grpc.WireMapping.ToMessage(reserved);
        Assert.Equal((2_00L, "Forests Now"), (shown.AmountMinor, shown.Breakdown.Cause));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Stock_AskedToGiveBackMoreThanItTook_StaysAtZero_AndCountsTheDefect()
    {
        await SetUpAsync(Shop with { SignupBonusPoints = 100, Rewards = [Coffee with { Stock = 5 }] });
        IRewardStockGrain stock = fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/coffee");
        using var overReleased = new TaggedCount("loyalty.stock.over_released", "program", _program);
        // A unit taken and given back (no entry spent it), then a return of 2 units the stock never
        // counted as taken: a give-back twice, as a defect would ask for.
        Assert.True(await stock.Take("m", "never-written", 1, 5));
        await stock.Abandon("m", "never-written");
        long afterAbandon = await stock.Taken();

        await stock.Return("not-taken", 2, Now);

        Assert.Equal((0L, 0L), (afterAbandon, await stock.Taken()));
        // Before: clamped at 0 and nothing said.
        Assert.Equal(2L, overReleased.Value);
        Assert.True(await stock.Take("m", "next", 5, 5));
    }

    [Fact]
    public async Task Stock_AResentCancel_GivesBackUnitsTheFirstCancelCouldNotTellTheStockAbout()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 100, Rewards = [Coffee with { Stock = 5 }] });
        IRewardStockGrain stock = fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/coffee");
        Assert.Equal(AccrualStatus.Accepted, (await member.Reserve(new Loyalty.Redemption("res", "coffee", 2))).Status);
        Assert.Equal(AccrualStatus.Accepted, (await member.CancelReservation("res")).Status);
        long afterCancel = await Taken("coffee");
        // The cancel's call to the stock was lost: the claim is as the reservation left it.
        Assert.True(await stock.Take("m", "res", 2, 5));

        RedemptionResult resent = await member.CancelReservation("res");

        Assert.Equal((AccrualStatus.Duplicate, ReservationState.Cancelled), (resent.Status, resent.Reservation));
        // Before: 2 until the stock's own settling, after the reservation's lapse time.
        Assert.Equal((0L, 0L), (afterCancel, await Taken("coffee")));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Stock_TwoMembersRedeemingUnderOneId_TakeOneUnit_AndTheRefusedOneGivesBackOnlyItsOwn()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 100, Rewards = [Coffee with { Stock = 5 }] });
        IMemberGrain other = await EnrolAsync("other");

        RedemptionResult first = await member.Redeem(new Loyalty.Redemption("t1", "coffee", 1));
        RedemptionResult clash = await other.Redeem(new Loyalty.Redemption("t1", "coffee", 1));

        Assert.Equal(AccrualStatus.Accepted, first.Status);
        Assert.NotEqual(AccrualStatus.Accepted, clash.Status);
        // Before, the clash's give-back released the first member's unit: 0, and a sixth coffee sold.
        Assert.Equal(1L, await Taken("coffee"));
        fixture.Clock.Advance(TimeSpan.FromMinutes(11));
        await fixture.DeactivateAllAsync();
        Assert.Equal(1L, await Taken("coffee"));
    }

    [Fact]
    public async Task Stock_ARedeemWhoseCommitAnswerWasLost_KeepsItsUnit_SoACommitLandingLaterSellsItOnce()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 100, Rewards = [Coffee with { Stock = 1 }] });
        IMemberGrain other = await EnrolAsync("other");
        FaultInjector faults = Silo().GetRequiredService<FaultInjector>();
        faults.Arm((at, entry) => at == FaultStep.LateCommit && entry.ProgramId == _program && entry.Kind == LedgerEntryKind.Redeem);
        RedemptionResult lost;
        try
        {
            lost = await member.Redeem(new Loyalty.Redemption("r1", "coffee", 1));
        }
        finally
        {
            faults.Disarm();
        }

        // The COMMIT the engine saw fail lands a moment later, as a server that went on would.
        long entries = 0;
        for (int i = 0; i < 200 && (entries = await Sql.CountEntriesAsync(fixture.Storage, _program, "m")) < 2; i++)
        {
            await Task.Delay(50);
        }

        Assert.Equal(2L, entries);
        RedemptionResult second = await other.Redeem(new Loyalty.Redemption("r2", "coffee", 1));
        RedemptionResult resent = await member.Redeem(new Loyalty.Redemption("r1", "coffee", 1));

        Assert.Equal(LoyaltyError.Unavailable, lost.Error);
        // Before: the unit went back at once, before the entry was there to keep it, and the only coffee was sold twice.
        Assert.True(second.Error == LoyaltyError.FailedPrecondition && second.ErrorMessage!.Contains("out of stock", StringComparison.Ordinal), $"{second.Status} {second.ErrorMessage}");
        Assert.Equal(AccrualStatus.Duplicate, resent.Status);
        Assert.Equal(1L, await Taken("coffee"));
        fixture.Clock.Advance(TimeSpan.FromMinutes(11));
        await fixture.DeactivateAllAsync();
        Assert.Equal(1L, await Taken("coffee"));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Stock_ACommittedReservationResentAfterTheMemberForgotIt_GivesBackTheUnitItsResendTook()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 1_000, Rewards = [Coffee with { Stock = 5 }] });
        Assert.Equal(AccrualStatus.Accepted, (await member.Reserve(new Loyalty.Redemption("res", "coffee", 1))).Status);
        Assert.Equal(AccrualStatus.Accepted, (await member.CommitReservation("res")).Status);
        long committed = await Taken("coffee");
        await ForgetAsync(member);

        RedemptionResult resent = await member.Reserve(new Loyalty.Redemption("res", "coffee", 1));
        long afterResend = await Taken("coffee");
        fixture.Clock.Advance(TimeSpan.FromMinutes(11));
        await fixture.DeactivateAllAsync();

        Assert.Equal(AccrualStatus.Duplicate, resent.Status);
        // Before: the resend's unit was taken for good (2), as if the reservation's entry, older
        // than its claim, had been written for it.
        Assert.Equal((1L, 1L, 1L), (committed, afterResend, await Taken("coffee")));
    }

    [Fact]
    public async Task Stock_AClaimStoredBeforeHoldersWereCounted_JoinedByAResend_IsStillSettledByTheLedger()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 100, Rewards = [Coffee with { Stock = 5 }] });
        Assert.Equal(AccrualStatus.Accepted, (await member.Redeem(new Loyalty.Redemption("r1", "coffee", 1))).Status);
        await fixture.DeactivateAllAsync();
        // As a version that did not count holders stored it: the claim of the redeem, written, with 0 holders.
        IRewardStockGrain stock = fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/coffee");
        Orleans.Storage.IGrainStorage storage = Microsoft.Extensions.DependencyInjection.ServiceProviderKeyedServiceExtensions
            .GetRequiredKeyedService<Orleans.Storage.IGrainStorage>(Silo(), StorageSiloBuilderExtensions.SnapshotStorageName);
        var row = new Orleans.GrainState<Loyalty.Grains.RewardStockState>(new Loyalty.Grains.RewardStockState());
        await storage.ReadStateAsync("stock", stock.GetGrainId(), row);
        Assert.Equal(1, row.State!.Claims[Loyalty.Grains.StockClaim.Key("m", "r1")].Holders);
        row.State!.Claims[Loyalty.Grains.StockClaim.Key("m", "r1")].Holders = 0;
        await storage.WriteStateAsync("stock", stock.GetGrainId(), row);

        // A resend joins the claim and is answered as a duplicate: it abandons it.
        Assert.True(await stock.Take("m", "r1", 1, 5));
        await stock.Abandon("m", "r1");

        // Before: the join counted one holder, and its abandonment gave back the unit the redeem spent.
        Assert.Equal(1L, await Taken("coffee"));
    }

    [Fact]
    public async Task Stock_ARedeemSentTwiceAtOnce_OrResentAfterTheMemberForgotIt_TakesOneUnit()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 1_000, Rewards = [Coffee with { Stock = 5 }] });
        var redeem = new Loyalty.Redemption("r1", "coffee", 1);

        RedemptionResult[] both = await Task.WhenAll(member.Redeem(redeem), member.Redeem(redeem));
        long afterBoth = await Taken("coffee");
        await ForgetAsync(member);
        RedemptionResult resent = await member.Redeem(redeem);
        long afterResend = await Taken("coffee");
        // The first claim is settled; a resend after that takes a new claim, which the ledger shows
        // was not the one spent (the entry is older than it), so its unit goes back.
        fixture.Clock.Advance(TimeSpan.FromMinutes(11));
        await fixture.DeactivateAllAsync();
        await Taken("coffee");
        await ForgetAsync(member);
        RedemptionResult resentLater = await member.Redeem(redeem);

        Assert.Equal([AccrualStatus.Accepted, AccrualStatus.Duplicate], both.Select(r => r.Status).Order());
        Assert.Equal((AccrualStatus.Duplicate, AccrualStatus.Duplicate), (resent.Status, resentLater.Status));
        Assert.Equal((1L, 1L, 1L), (afterBoth, afterResend, await Taken("coffee")));
        Assert.Equal(970L, (await member.Get())!.Balance.Value - await BoughtAsync(member));
    }

    [Fact]
    public async Task Stock_ARetryAskingForMoreThanItsClaim_TakesTheDifference_OneAskingForLessGivesTheRestBack()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 1_000, Rewards = [Coffee with { Stock = 5 }] });
        IMemberGrain other = await EnrolAsync("other");
        IRewardStockGrain stock = fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/coffee");
        Assert.Equal(AccrualStatus.Accepted, (await other.Redeem(new Loyalty.Redemption("o1", "coffee", 2))).Status);
        // A request for one unit took its claim and was lost (its silo died before the entry).
        Assert.True(await stock.Take("m", "x", 1, 5));

        RedemptionResult more = await member.Redeem(new Loyalty.Redemption("x", "coffee", 5));
        long afterMore = await Taken("coffee");
        fixture.Clock.Advance(TimeSpan.FromMinutes(11));
        await fixture.DeactivateAllAsync();
        long settled = await Taken("coffee");
        // A request for three was lost; its retry asks for one.
        Assert.True(await stock.Take("m", "z", 3, 5));
        RedemptionResult fewer = await member.Redeem(new Loyalty.Redemption("z", "coffee", 1));
        long beforeSettling = await Taken("coffee");
        fixture.Clock.Advance(TimeSpan.FromMinutes(11));
        await fixture.DeactivateAllAsync();

        // Before, the retry shared the one-unit claim and spent five: seven sold of five.
        Assert.Equal(LoyaltyError.FailedPrecondition, more.Error);
        // Before: "out of stock", with two units left.
        Assert.Equal("reward 'coffee' has fewer than the 5 units asked for left in stock", more.ErrorMessage);
        Assert.Equal((3L, 2L), (afterMore, settled));
        Assert.Equal(AccrualStatus.Accepted, fewer.Status);
        Assert.Equal((5L, 3L), (beforeSettling, await Taken("coffee")));
    }

    [Fact]
    public async Task Stock_OfAReservationStaysTakenWhileHeld_AndWhenCommitted()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 150, Rewards = [TenOff with { Stock = 1 }] });
        await member.Reserve(new Loyalty.Redemption("res-1", "ten-off", 1));
        fixture.Clock.Advance(TimeSpan.FromMinutes(11));
        await fixture.DeactivateAllAsync();
        long held = await Taken("ten-off");

        RedemptionResult committed = await member.CommitReservation("res-1");
        fixture.Clock.Advance(TimeSpan.FromMinutes(30));
        await fixture.DeactivateAllAsync();

        Assert.Equal(AccrualStatus.Accepted, committed.Status);
        Assert.Equal((1L, 1L), (held, await Taken("ten-off")));
    }

    [Fact]
    public async Task Stock_OfAReservationRefusedAfterTakingIt_RetriedAndCancelled_AllGoesBack()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 10_000, Rewards = [Coffee, TenOff with { Stock = 1 }] });
        for (int i = 0; i < Limits.OpenReservationsMax; i++)
        {
            Assert.Equal(AccrualStatus.Accepted, (await member.Reserve(new Loyalty.Redemption($"res-{i}", "coffee", 1))).Status);
        }

        RedemptionResult refused = await member.Reserve(new Loyalty.Redemption("r-x", "ten-off", 1));
        await member.CancelReservation("res-0");
        RedemptionResult retried = await member.Reserve(new Loyalty.Redemption("r-x", "ten-off", 1));
        long whileHeld = await Taken("ten-off");
        RedemptionResult cancelled = await member.CancelReservation("r-x");

        Assert.Equal(LoyaltyError.FailedPrecondition, refused.Error);
        Assert.Equal((AccrualStatus.Accepted, AccrualStatus.Accepted), (retried.Status, cancelled.Status));
        // Before, the refusal's give-back was remembered and blocked the cancel's: the unit was lost.
        Assert.Equal((1L, 0L), (whileHeld, await Taken("ten-off")));
    }

    [Fact]
    public async Task Stock_OfACancelThatCommittedButWasNeverToldToTheStock_GoesBackWhenTheStockSettlesIt()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 150, ReservationHoldSeconds = 60, Rewards = [TenOff with { Stock = 1 }] });
        await member.Reserve(new Loyalty.Redemption("res-1", "ten-off", 1));
        FaultInjector faults = Silo().GetRequiredService<FaultInjector>();
        int fired = 0;
        faults.Arm((at, entry) => at == FaultStep.Acknowledge && entry.ProgramId == _program && entry.Kind == LedgerEntryKind.ReservationEnd
            && Interlocked.Exchange(ref fired, 1) == 0);
        try
        {
            // Durable, then the grain fails before it answers (as if its silo died there).
            await Assert.ThrowsAnyAsync<Exception>(() => member.CancelReservation("res-1"));
        }
        finally
        {
            faults.Disarm();
        }

        // No resend (which would settle it too): the stock settles the claim itself.
        long beforeSettling = await Taken("ten-off");
        fixture.Clock.Advance(TimeSpan.FromSeconds(61) + TimeSpan.FromMinutes(11));
        await fixture.DeactivateAllAsync();
        long settled = await Taken("ten-off");
        RedemptionResult again = await member.CancelReservation("res-1");

        Assert.Equal(1, fired);
        Assert.Equal(AccrualStatus.Duplicate, again.Status);
        Assert.Equal(1L, beforeSettling);
        // Before, the unit stayed taken for good: the claim's Reserve entry was in the ledger.
        Assert.Equal((0L, 0L), (settled, await Taken("ten-off")));
    }

    [Fact]
    public async Task RedeemsCommitsAndCancelsResent_AnswerAsTheFirstDid()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 500 });
        RedemptionResult redeemed = await member.Redeem(new Loyalty.Redemption("r-1", "coffee", 2));
        await member.Reserve(new Loyalty.Redemption("res-c", "ten-off", 1));
        RedemptionResult committed = await member.CommitReservation("res-c");
        await member.Reserve(new Loyalty.Redemption("res-x", "ten-off", 1));
        RedemptionResult cancelled = await member.CancelReservation("res-x");

        RedemptionResult redeemedAgain = await member.Redeem(new Loyalty.Redemption("r-1", "coffee", 2));
        RedemptionResult committedAgain = await member.CommitReservation("res-c");
        RedemptionResult cancelledAgain = await member.CancelReservation("res-x");
        await fixture.DeactivateAllAsync();
        RedemptionResult cancelledAfterRestart = await member.CancelReservation("res-x");

        static object Said(RedemptionResult r) => (r.Points.Value, r.RewardId, r.Quantity, r.Reservation, string.Join(",", r.Lots.Select(l => $"{l.LotId}:{l.Points}")));
        Assert.Equal(AccrualStatus.Duplicate, redeemedAgain.Status);
        Assert.Equal(Said(redeemed), Said(redeemedAgain));
        Assert.Equal(Said(committed), Said(committedAgain));
        Assert.Equal(Said(cancelled), Said(cancelledAgain));
        Assert.Equal(Said(cancelled), Said(cancelledAfterRestart));
        Assert.Equal(("ten-off", 1), (cancelledAgain.RewardId, cancelledAgain.Quantity));
        Assert.True(cancelledAgain.Points.Value > 0);
    }

    [Fact]
    public async Task CommitOrCancel_OnAnErasedMember_SaysTheMemberWasErased()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 500 });
        Assert.Equal(LoyaltyError.None, (await member.Erase("request 4")).Error);

        RedemptionResult commit = await member.CommitReservation("res-9");
        RedemptionResult cancel = await member.CancelReservation("res-9");

        Assert.Equal((LoyaltyError.FailedPrecondition, LoyaltyError.FailedPrecondition), (commit.Error, cancel.Error));
        Assert.Contains("was erased", cancel.ErrorMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Reserve_HoldsPoints_CommitSpendsThem_AndBothAreIdempotent()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 150 });

        RedemptionResult held = await member.Reserve(new Loyalty.Redemption("res-1", "ten-off", 1, "store-1"));
        MemberView during = (await member.Get())!;
        RedemptionResult tooMuch = await member.Redeem(new Loyalty.Redemption("r-x", "ten-off", 1));
        RedemptionResult committed = await member.CommitReservation("res-1");
        RedemptionResult again = await member.CommitReservation("res-1");
        RedemptionResult cancelAfter = await member.CancelReservation("res-1");
        RedemptionResult reserveResent = await member.Reserve(new Loyalty.Redemption("res-1", "ten-off", 1, "store-1"));
        MemberView after = (await member.Get())!;

        Assert.Equal((ReservationState.Held, 100L), (held.Reservation, held.Points.Value));
        Assert.Equal(Now.AddSeconds(ProgramSettings.ReservationHoldSecondsDefault), held.LapsesAt);
        Assert.Equal((150L, 100L, 50L), (during.Balance.Value, during.Held.Value, during.Available.Value));
        Assert.Equal(LoyaltyError.FailedPrecondition, tooMuch.Error);
        Assert.Equal((AccrualStatus.Accepted, ReservationState.Committed, 50L), (committed.Status, committed.Reservation, committed.Balance.Value));
        Assert.Equal((AccrualStatus.Duplicate, ReservationState.Committed), (again.Status, again.Reservation));
        Assert.Equal(LoyaltyError.FailedPrecondition, cancelAfter.Error);
        // The till's reservation resent after the commit says it was committed, not that nothing is held.
        Assert.Equal((AccrualStatus.Duplicate, ReservationState.Committed, 100L, "ten-off", held.Sequence),
            (reserveResent.Status, reserveResent.Reservation, reserveResent.Points.Value, reserveResent.RewardId, reserveResent.Sequence));
        Assert.Equal((50L, 0L, 100L), (after.Balance.Value, after.Held.Value, after.LifetimeRedeemed.Value));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task ARedeemUnderAReservationsId_OrAReservationUnderARedeemsId_IsAnotherRequest_NotAResend()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 150 });

        RedemptionResult held = await member.Reserve(new Loyalty.Redemption("both-1", "coffee", 1));
        RedemptionResult redeemUnderHold = await member.Redeem(new Loyalty.Redemption("both-1", "coffee", 1));
        RedemptionResult spent = await member.Redeem(new Loyalty.Redemption("both-2", "coffee", 1));
        RedemptionResult holdUnderRedeem = await member.Reserve(new Loyalty.Redemption("both-2", "coffee", 1));
        RedemptionResult heldAgain = await member.Reserve(new Loyalty.Redemption("both-1", "coffee", 1));
        MemberView after = (await member.Get())!;

        Assert.Equal((AccrualStatus.Accepted, ReservationState.Held), (held.Status, held.Reservation));
        Assert.Equal((AccrualStatus.Rejected, LoyaltyError.AlreadyExists), (redeemUnderHold.Status, redeemUnderHold.Error));
        Assert.Equal(AccrualStatus.Accepted, spent.Status);
        Assert.Equal((AccrualStatus.Rejected, LoyaltyError.AlreadyExists), (holdUnderRedeem.Status, holdUnderRedeem.Error));
        Assert.Equal((AccrualStatus.Duplicate, ReservationState.Held), (heldAgain.Status, heldAgain.Reservation));
        Assert.Equal((120L, 30L, 30L), (after.Balance.Value, after.Held.Value, after.LifetimeRedeemed.Value));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task ARedeemResentAfterTheMemberForgotIt_AndAfterItsPointsWereSpent_IsADuplicate_NotRefusedForThePointsItSpentItself()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 30 });
        RedemptionResult spent = await member.Redeem(new Loyalty.Redemption("old-redeem", "coffee", 1));
        for (int i = 0; i <= ClusterFixture.RecentTransactionsMax; i++)
        {
            Assert.Equal(AccrualStatus.Accepted, (await member.Accrue(Buy(1_00))).Status);
        }

        RedemptionResult resent = await member.Redeem(new Loyalty.Redemption("old-redeem", "coffee", 1));
        RedemptionResult otherContent = await member.Redeem(new Loyalty.Redemption("old-redeem", "coffee", 2));
        RedemptionResult fresh = await member.Redeem(new Loyalty.Redemption("new-redeem", "coffee", 1));

        Assert.Equal((AccrualStatus.Accepted, 0L), (spent.Status, spent.Balance.Value));
        Assert.Equal((AccrualStatus.Duplicate, spent.Sequence), (resent.Status, resent.Sequence));
        Assert.Equal(LoyaltyError.AlreadyExists, otherContent.Error);
        Assert.Equal(LoyaltyError.FailedPrecondition, fresh.Error);
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task EndingAnotherMembersReservation_OrInspectingAnotherMembersTradeIn_IsNotFound_AndShowsNothingOfIt()
    {
        IMemberGrain owner = await SetUpAsync(Shop with
        {
            SignupBonusPoints = 150,
            TradeIn = new TradeInPolicy([new TradeInRate("jackets", TradeInCondition.Good, 30_00)]),
        });
        IMemberGrain other = fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, "other"));
        Assert.Equal(LoyaltyError.None, (await other.Enrol(new Enrolment(_program, "other", null))).Error);
        Assert.Equal(AccrualStatus.Accepted, (await owner.Reserve(new Loyalty.Redemption("owners-hold", "coffee", 1))).Status);
        Assert.Equal(AccrualStatus.Accepted, (await owner.CommitReservation("owners-hold")).Status);
        Assert.Equal(AccrualStatus.Accepted, (await owner.SubmitTradeIn(new TradeIn("owners-jacket", "jackets", "store-1"))).Status);
        Assert.Equal(AccrualStatus.Accepted, (await owner.InspectTradeIn("owners-jacket", TradeInCondition.Good)).Status);

        RedemptionResult commit = await other.CommitReservation("owners-hold");
        RedemptionResult cancel = await other.CancelReservation("owners-hold");
        TradeInResult inspect = await other.InspectTradeIn("owners-jacket", TradeInCondition.Good);

        Assert.Equal((AccrualStatus.Rejected, LoyaltyError.NotFound, 0L), (commit.Status, commit.Error, commit.Points.Value));
        Assert.Equal((AccrualStatus.Rejected, LoyaltyError.NotFound), (cancel.Status, cancel.Error));
        Assert.Equal((LoyaltyError.NotFound, 0L), (inspect.Error, inspect.CreditMinor));
        MemberView untouched = (await other.Get())!;
        Assert.Equal((150L, 0L, 0L, 0L), (untouched.Balance.Value, untouched.Held.Value, untouched.LifetimeRedeemed.Value, untouched.WalletMinor));
    }

    [Fact]
    public async Task Reserve_BeyondTheOpenReservationsLimit_IsRefused()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 10_000 });
        for (int i = 0; i < Limits.OpenReservationsMax; i++)
        {
            Assert.Equal(AccrualStatus.Accepted, (await member.Reserve(new Loyalty.Redemption($"res-{i}", "coffee", 1))).Status);
        }

        RedemptionResult refused = await member.Reserve(new Loyalty.Redemption("one-too-many", "coffee", 1));

        Assert.Equal(LoyaltyError.FailedPrecondition, refused.Error);
        Assert.Contains($"{Limits.OpenReservationsMax} open reservations", refused.ErrorMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Reserve_Cancelled_FreesThePointsAndTheStock()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 150, Rewards = [TenOff with { Stock = 1 }] });

        await member.Reserve(new Loyalty.Redemption("res-1", "ten-off", 1));
        long takenWhileHeld = await fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/ten-off").Taken();
        RedemptionResult cancelled = await member.CancelReservation("res-1");
        RedemptionResult again = await member.CancelReservation("res-1");
        RedemptionResult commitAfter = await member.CommitReservation("res-1");
        RedemptionResult unknown = await member.CancelReservation("never");
        RedemptionResult reserveResent = await member.Reserve(new Loyalty.Redemption("res-1", "ten-off", 1));

        Assert.Equal((AccrualStatus.Duplicate, ReservationState.Cancelled, 100L), (reserveResent.Status, reserveResent.Reservation, reserveResent.Points.Value));
        Assert.Equal(1L, takenWhileHeld);
        Assert.Equal((AccrualStatus.Accepted, ReservationState.Cancelled, 150L), (cancelled.Status, cancelled.Reservation, cancelled.Available.Value));
        Assert.Equal(AccrualStatus.Duplicate, again.Status);
        Assert.Equal(LoyaltyError.FailedPrecondition, commitAfter.Error);
        Assert.Equal(LoyaltyError.NotFound, unknown.Error);
        Assert.Equal(0L, await fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/ten-off").Taken());
    }

    [Fact]
    public async Task Reserve_NeitherCommittedNorCancelled_LapsesOnItsOwn()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 150, ReservationHoldSeconds = 60, Rewards = [TenOff with { Stock = 5 }] });
        await member.Reserve(new Loyalty.Redemption("res-1", "ten-off", 1));
        await fixture.DeactivateAllAsync();

        fixture.Clock.Advance(TimeSpan.FromSeconds(61));
        await WaitForEntryAsync(LedgerEntryKind.ReservationEnd);
        RedemptionResult commit = await member.CommitReservation("res-1");
        MemberView view = (await member.Get())!;
        RedemptionResult reserveResent = await member.Reserve(new Loyalty.Redemption("res-1", "ten-off", 1));

        Assert.Equal((AccrualStatus.Duplicate, ReservationState.Lapsed), (reserveResent.Status, reserveResent.Reservation));
        Assert.Equal(LoyaltyError.FailedPrecondition, commit.Error);
        Assert.Equal((150L, 0L), (view.Available.Value, view.Held.Value));
        Assert.Equal(0L, await fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/ten-off").Taken());
        Assert.Contains("Lapsed", await DetailsOfAsync(LedgerEntryKind.ReservationEnd), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Purchase_CarryingARedemption_SpendsAndEarnsTogether_AndAResendIsDuplicate()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 100 });
        Purchase basket = Buy(50_00, "basket") with { RedeemRewardId = "coffee", RedeemQuantity = 1 };

        AccrualResult accepted = await member.Accrue(basket);
        AccrualResult resend = await member.Accrue(basket);
        List<(long Seq, int Kind, long Points)> rows = await Sql.RowsAsync(fixture.Storage,
            $"SELECT seq, kind, points FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'm' AND seq > 1 ORDER BY seq",
            r => (r.GetInt64(0), (int)r.GetInt64(1), r.GetInt64(2)));

        Assert.Equal((AccrualStatus.Accepted, 50L, 30L, 120L), (accepted.Status, accepted.Earned.Value, accepted.Redeemed.Value, accepted.Balance.Value));
        Assert.Equal("#signup", Assert.Single(accepted.RedeemedLots!).LotId);
        Assert.Equal(AccrualStatus.Duplicate, resend.Status);
        Assert.Equal([(2L, 7, -30L), (3L, 2, 50L)], rows);
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Purchase_WithARedemptionTheMemberCannotAfford_IsRefusedWhole()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 20 });
        long entries = await Sql.CountEntriesAsync(fixture.Storage, _program, "m");

        AccrualResult refused = await member.Accrue(Buy(50_00) with { RedeemRewardId = "coffee", RedeemQuantity = 1 });

        Assert.Equal(LoyaltyError.FailedPrecondition, refused.Error);
        Assert.Contains("redemption", refused.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(entries, await Sql.CountEntriesAsync(fixture.Storage, _program, "m"));
    }

    [Fact]
    public async Task Return_OfAFreeLineAfterThePurchaseCameBackWhole_GivesNoPointsBackASecondTime()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 100, Rewards = [Coffee] });
        await member.Accrue(Buy(50_00, "basket") with
        {
            RedeemRewardId = "coffee", RedeemQuantity = 1, LineItems = [new LineItem("tea", "food", 1, 50_00), new LineItem("gift", "free", 1, 0)],
        });
        PurchaseReturn ByLines(string txn, ReturnLine line) => new(txn, _program, "m", "basket", "store-1", new Money(0, "USD"), Now, [line]);

        ReturnResult whole = await member.Return(ByLines("r1", new ReturnLine("tea", 1, 50_00)));
        ReturnResult gift = await member.Return(ByLines("r2", new ReturnLine("gift", 1, 0)));
        MemberView view = (await member.Get())!;

        Assert.Equal((true, 30L), (whole.Details!.Full, whole.Details.Restored!.Sum(l => l.Points)));
        // Before, the gift's return counted as the full return again and gave the coffee's 30 points back twice.
        Assert.Equal((AccrualStatus.Accepted, false), (gift.Status, gift.Details!.Full));
        Assert.Null(gift.Details.Restored);
        Assert.Equal((100L, 0L), (view.Balance.Value, view.LifetimeRedeemed.Value));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Return_InFullOfAPurchasePaidPartlyInPoints_GivesThePointsBackToTheirLots()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 100, Expiry = TwelveMonths, Rewards = [Coffee with { Stock = 10 }] });
        DateTimeOffset signupExpiry = EndOfDay(Now.AddMonths(12));
        await member.Accrue(Buy(50_00, "basket") with { RedeemRewardId = "coffee", RedeemQuantity = 1 });

        ReturnResult half = await member.Return(new PurchaseReturn("r1", _program, "m", "basket", "store-1", new Money(25_00, "USD"), Now, []));
        ReturnResult rest = await member.Return(new PurchaseReturn("r2", _program, "m", "basket", "store-1", new Money(25_00, "USD"), Now, []));
        ReturnResult resent = await member.Return(new PurchaseReturn("r2", _program, "m", "basket", "store-1", new Money(25_00, "USD"), Now, []));
        MemberView view = (await member.Get())!;

        Assert.Null(half.Details!.Restored);
        Assert.Equal([new LotUse("#signup", 30, signupExpiry)], rest.Details!.Restored);
        // The resend answers as the return did: the points it reversed (not its net move, which counts
        // the points given back to the lots) and its breakdown.
        Assert.Equal((AccrualStatus.Duplicate, rest.Reversed, rest.Sequence), (resent.Status, resent.Reversed, resent.Sequence));
        Assert.Equal(rest.Details.Restored, resent.Details?.Restored);
        Assert.Equal((100L, 0L), (view.Balance.Value, view.LifetimeRedeemed.Value));
        Assert.Equal([(signupExpiry, 100L)], view.Expiring!.Select(e => (e.ExpiresAt, e.Points.Value)));
        Assert.Equal(0L, await fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/coffee").Taken());
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Return_InFullOfAPurchasePaidInPoints_BeforeItsRewardHadStock_GivesBackNoUnit()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 100, Rewards = [Coffee] });
        await member.Accrue(Buy(50_00, "basket") with { RedeemRewardId = "coffee", RedeemQuantity = 1 });
        // The coffee gets a stock of 5 afterwards; another member then takes one of them.
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with { SignupBonusPoints = 100, Rewards = [Coffee with { Stock = 5 }] });
        IMemberGrain other = await EnrolAsync("other");
        fixture.Clock.Advance(TimeSpan.FromSeconds(61) + TimeSpan.FromMinutes(1));
        Assert.Equal(AccrualStatus.Accepted, (await other.Redeem(new Loyalty.Redemption("o1", "coffee", 1))).Status);

        ReturnResult returned = await member.Return(new PurchaseReturn("r1", _program, "m", "basket", "store-1", new Money(50_00, "USD"), Now, []));

        Assert.True(returned.Details!.Full);
        // Before: 0, the other member's unit counted free, and six coffees could be sold of five.
        Assert.Equal(1L, await Taken("coffee"));
    }

    [Fact]
    public async Task Return_InFullOfABasketMadeWhileItsRewardsStockWasUnset_GivesBackNoUnit_OnceTheStockIsBack()
    {
        ProgramSettings stocked = Shop with { SignupBonusPoints = 100, Rewards = [Coffee with { Stock = 5 }] };
        IMemberGrain member = await SetUpAsync(stocked);
        IMemberGrain other = await EnrolAsync("other");
        Assert.Equal(AccrualStatus.Accepted, (await other.Redeem(new Loyalty.Redemption("o1", "coffee", 1))).Status);
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(stocked with { Rewards = [Coffee] });
        await member.Accrue(Buy(50_00, "basket") with { RedeemRewardId = "coffee", RedeemQuantity = 1 });
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(stocked);

        ReturnResult returned = await member.Return(new PurchaseReturn("r1", _program, "m", "basket", "store-1", new Money(50_00, "USD"), Now, []));

        Assert.True(returned.Details!.Full);
        // Before: 0, the other member's unit given back for one never taken, and six coffees could be sold of five.
        Assert.Equal(1L, await Taken("coffee"));
    }

    [Fact]
    public async Task Return_InFullOfABasketMadeWhileStocked_AfterTheStockWasUnset_GivesItsUnitBack()
    {
        ProgramSettings stocked = Shop with { SignupBonusPoints = 100, Rewards = [Coffee with { Stock = 5 }] };
        IMemberGrain member = await SetUpAsync(stocked);
        await member.Accrue(Buy(50_00, "basket") with { RedeemRewardId = "coffee", RedeemQuantity = 1 });
        IMemberGrain other = await EnrolAsync("other");
        Assert.Equal(AccrualStatus.Accepted, (await other.Redeem(new Loyalty.Redemption("o1", "coffee", 1))).Status);
        long takenBoth = await Taken("coffee");
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(stocked with { Rewards = [Coffee] });

        ReturnResult returned = await member.Return(new PurchaseReturn("r1", _program, "m", "basket", "store-1", new Money(50_00, "USD"), Now, []));
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(stocked);

        Assert.True(returned.Details!.Full);
        // Before: 2, the basket's unit lost to the stock for good.
        Assert.Equal((2L, 1L), (takenBoth, await Taken("coffee")));
    }

    [Fact]
    public async Task Return_InFull_AfterThePointsItSpentExpired_CountsThemAsExpired_NoLongerAsRedeemed()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 100, Expiry = TwelveMonths, Rewards = [Coffee] });
        await member.Accrue(Buy(50_00, "basket") with { RedeemRewardId = "coffee", RedeemQuantity = 1 });
        fixture.Clock.Advance(TimeSpan.FromDays(367));
        await WaitForEntryAsync(LedgerEntryKind.Expire);

        ReturnResult returned = await member.Return(new PurchaseReturn("r1", _program, "m", "basket", "store-1", new Money(50_00, "USD"), Now, []));
        await fixture.DeactivateAllAsync();
        MemberView view = (await member.Get())!;

        // The coffee's 30 points came from the sign-up lot, which expired before the basket came back.
        Assert.Equal(AccrualStatus.Accepted, returned.Status);
        Assert.Null(returned.Details!.Restored);
        Assert.Equal([("#signup", 30L)], returned.Details.ExpiredUnrestored!.Select(l => (l.LotId, l.Points)));
        Assert.Equal((0L, 150L), (view.LifetimeRedeemed.Value, view.LifetimeExpired.Value));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Return_InFullOfAPurchasePaidInPoints_UnderFloorAtZero_TakesBackTheEarnFromTheRestoredPoints()
    {
        IMemberGrain member = await SetUpAsync(Shop with { SignupBonusPoints = 500, NegativeBalance = NegativeBalancePolicy.FloorAtZero, Rewards = [Coffee with { PointsPrice = 500 }] });
        await member.Accrue(Buy(100_00, "basket") with { RedeemRewardId = "coffee", RedeemQuantity = 1 });
        await member.Adjust(new Adjustment("spend", new Points(-100), "spent elsewhere"));

        ReturnResult returned = await member.Return(new PurchaseReturn("r1", _program, "m", "basket", "store-1", new Money(100_00, "USD"), Now, []));
        MemberView view = (await member.Get())!;

        Assert.Equal((100L, 0L), (returned.Reversed.Value, returned.Details!.Shortfall));
        Assert.Equal((400L, 0L), (view.Balance.Value, view.Shortfall.Value));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Expiry_ALotExpiresAfterItsLifespan_EvenWhileTheMemberIsNotActive()
    {
        IMemberGrain member = await SetUpAsync(Shop with { Expiry = TwelveMonths });
        AccrualResult earned = await member.Accrue(Buy(100_00, "buy"));
        DateTimeOffset expected = EndOfDay(Now.AddMonths(12));
        await fixture.DeactivateAllAsync();

        fixture.Clock.Advance(TimeSpan.FromDays(367));
        await WaitForEntryAsync(LedgerEntryKind.Expire);
        long expiredPoints = await Sql.ScalarAsync(fixture.Storage, $"SELECT sum(points) FROM ledger_entries WHERE program_id = '{_program}' AND kind = 10");
        MemberView view = (await member.Get())!;

        Assert.Equal(expected, ((EarnDetails)earned.Details!).ExpiresAt);
        Assert.Equal(-100L, expiredPoints);
        Assert.Equal((0L, 100L), (view.Balance.Value, view.LifetimeExpired.Value));
        Assert.Empty(view.Expiring!);
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Spending_ConsumesTheSoonestExpiringPointsFirst_AndReturnsTakeBackTheirOwnLot()
    {
        IMemberGrain member = await SetUpAsync(Shop with { Expiry = TwelveMonths });
        await member.Accrue(Buy(100_00, "old"));
        fixture.Clock.Advance(TimeSpan.FromDays(60));
        await member.Accrue(Buy(100_00, "new"));
        fixture.Clock.Advance(TimeSpan.FromDays(1));
        await member.Accrue(Buy(100_00, "newest"));

        RedemptionResult redeemed = await member.Redeem(new Loyalty.Redemption("r1", "ten-off", 1));
        redeemed = await member.Redeem(new Loyalty.Redemption("r2", "coffee", 1));
        ReturnResult returned = await member.Return(new PurchaseReturn("ret", _program, "m", "newest", "store-1", new Money(50_00, "USD"), Now, []));
        MemberView view = (await member.Get())!;

        Assert.Equal([("new", 30L)], redeemed.Lots.Select(l => (l.LotId, l.Points)));
        Assert.Equal("newest", Assert.Single(returned.Details!.Lots!).LotId);
        Assert.Equal([70L, 50L], view.Expiring!.Select(e => e.Points.Value));
        await AssertLedgerMatchesAsync(member);
    }

    [Fact]
    public async Task Expiry_MembersAreWarnedBeforehand_Once()
    {
        IMemberGrain member = await SetUpAsync(Shop with { Expiry = TwelveMonths with { WarnDays = 30 } });
        await member.Accrue(Buy(100_00));

        // Within 30 days of the end of the day twelve months on (that may be 366 days away), not
        // past it; an hour more for the member's wake in the schedule's spread (at most 30 minutes).
        fixture.Clock.Advance(TimeSpan.FromDays(365 - 28) + TimeSpan.FromHours(1));
        await WaitForEntryAsync(LedgerEntryKind.ExpiryWarning);
        await Task.Delay(300);
        long warnings = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND kind = 11");
        MemberView view = (await member.Get())!;

        Assert.Equal(1, warnings);
        Assert.Equal(100L, view.Balance.Value);
        Assert.Equal(100L, Assert.Single(view.Expiring!).Points.Value);
    }

    [Fact]
    public async Task Expiry_ForInactivity_TakesEveryLot_AndActivityPostponesIt()
    {
        IMemberGrain member = await SetUpAsync(Shop with { Expiry = new ExpiryPolicy(ExpiryMode.None, 0, InactivityMonths: 6), SignupBonusPoints = 10 });
        await member.Accrue(Buy(100_00));
        fixture.Clock.Advance(TimeSpan.FromDays(150));
        await member.Accrue(Buy(20_00));
        fixture.Clock.Advance(TimeSpan.FromDays(150));
        await Task.Delay(300);
        long before = (await member.Get())!.Balance.Value;

        fixture.Clock.Advance(TimeSpan.FromDays(40));
        await WaitForEntryAsync(LedgerEntryKind.Expire);
        MemberView after = (await member.Get())!;

        Assert.Equal(130L, before);
        Assert.Equal((0L, 130L), (after.Balance.Value, after.LifetimeExpired.Value));
        Assert.Contains("inactivity", await ReasonOfAsync(LedgerEntryKind.Expire), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Expiry_AnInactivityRuleAddedLater_WarnsMembersLongIdleFirst_AndExpiresTheirPointsOnlyTheWarningDaysAfter()
    {
        IMemberGrain member = await SetUpAsync(Shop);
        await member.Accrue(Buy(100_00));
        fixture.Clock.Advance(TimeSpan.FromDays(700));
        DateTimeOffset added = Now;

        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with { Expiry = new ExpiryPolicy(ExpiryMode.None, 0, InactivityMonths: 6, WarnDays: 30) });
        await WaitForEntryAsync(LedgerEntryKind.ExpiryWarning);
        await Task.Delay(300);
        MemberView warned = (await member.Get())!;
        long expiredAtOnce = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND kind = {(int)LedgerEntryKind.Expire}");
        fixture.Clock.Advance(TimeSpan.FromDays(30) + TimeSpan.FromHours(1));
        await WaitForEntryAsync(LedgerEntryKind.Expire);
        MemberView after = (await member.Get())!;

        // Before, the member's 100 points expired the moment the rule arrived, with no warning.
        Assert.Equal((100L, 0L), (warned.Balance.Value, expiredAtOnce));
        Assert.Equal(added.AddDays(30), Assert.Single(warned.Expiring!).ExpiresAt);
        Assert.Equal((0L, 100L), (after.Balance.Value, after.LifetimeExpired.Value));
    }

    [Fact]
    public async Task Expiry_AMemberWhosePointsWerePendingWhenItLastChanged_IsWarnedOfInactivityBeforeTheyGo()
    {
        IMemberGrain member = await SetUpAsync(Shop with { PendingDays = 14, Expiry = new ExpiryPolicy(ExpiryMode.None, 0, InactivityMonths: 6, WarnDays: 30) });
        await member.Accrue(Buy(100_00));

        // About 7 days before the deadline (6 months after the purchase), well past its warning.
        fixture.Clock.Advance(TimeSpan.FromDays(175));
        // Before: nothing was due until the deadline itself, and the points went with no warning.
        await WaitForEntryAsync(LedgerEntryKind.ExpiryWarning);
        MemberView warned = (await member.Get())!;
        LedgerEntry warning = (await Silo().GetRequiredService<ILedgerStore>().ReadAfterAsync(_program, "m", 0, CancellationToken.None)).Single(e => e.Kind == LedgerEntryKind.ExpiryWarning);
        Loyalty.Api.V1.Event published = Loyalty.Host.Events.LoyaltyEvents.ToEvent(new PositionedEntry(EventPosition.Start, warning), 0);

        Assert.Equal(100L, warned.Balance.Value);
        Assert.Equal(0L, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND kind = {(int)LedgerEntryKind.Expire}"));
        UpcomingExpiry upcoming = Assert.Single(warned.Expiring!);
        Assert.Equal("inactivity", upcoming.Reason);
        // Before, the points.expiring event of an inactivity warning said 0 points.
        Assert.Equal(("points.expiring", 100L, upcoming.ExpiresAt), (published.Type, published.Expiring.Points, published.Expiring.ExpiresAt.ToDateTimeOffset()));
    }

    [Fact]
    public async Task Expiry_PointsGrantedToAMemberWhosePointsExpiredForInactivity_LiveTheirOwnPeriod()
    {
        IMemberGrain member = await SetUpAsync(Shop with { Expiry = new ExpiryPolicy(ExpiryMode.None, 0, InactivityMonths: 6), SignupBonusPoints = 10 });
        fixture.Clock.Advance(TimeSpan.FromDays(200));
        await WaitForEntryAsync(LedgerEntryKind.Expire);
        fixture.Clock.Advance(TimeSpan.FromDays(30));
        DateTimeOffset grantedAt = Now;
        await member.Adjust(new Adjustment("goodwill", new Points(50), "sorry"));
        fixture.Clock.Advance(TimeSpan.FromDays(30));
        // Into a balance that holds points: the clock the first grant started stays.
        await member.Adjust(new Adjustment("goodwill-2", new Points(20), "sorry again"));
        await Task.Delay(500);
        long kept = (await member.Get())!.Balance.Value;

        fixture.Clock.Advance(TimeSpan.FromDays(160));
        await WaitForEntryAsync(LedgerEntryKind.Expire, 2);
        IReadOnlyList<LedgerEntry> entries = await Silo().GetRequiredService<ILedgerStore>().ReadAfterAsync(_program, "m", 0, CancellationToken.None);
        LedgerEntry second = entries.Where(e => e.Kind == LedgerEntryKind.Expire).Last();

        // Before, the grant was expired at once, dated at the deadline that passed before it.
        Assert.Equal(70L, kept);
        Assert.Equal((-70L, grantedAt.AddMonths(6)), (second.Points.Value, second.OccurredAt));
        Assert.Equal(0L, (await member.Get())!.Balance.Value);
    }

    [Fact]
    public async Task Expiry_AnInactivityRuleAddedLater_ReachesMembersWhoNeverChangeAgain()
    {
        IMemberGrain member = await SetUpAsync(Shop);
        await member.Accrue(Buy(100_00));
        await fixture.DeactivateAllAsync();

        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with { Expiry = new ExpiryPolicy(ExpiryMode.None, 0, InactivityMonths: 6) });
        fixture.Clock.Advance(TimeSpan.FromDays(200));
        await WaitForEntryAsync(LedgerEntryKind.Expire);

        Assert.Equal((0L, 100L), ((await member.Get())!.Balance.Value, (await member.Get())!.LifetimeExpired.Value));
    }

    [Fact]
    public async Task Expiry_AnInactivityRuleWhoseSchedulingFailed_IsAnsweredAsMade_AndStillReachesMembersWhoNeverChangeAgain()
    {
        IMemberGrain member = await SetUpAsync(Shop);
        await member.Accrue(Buy(100_00));
        await fixture.DeactivateAllAsync();
        FaultInjector faults = Silo().GetRequiredService<FaultInjector>();
        int failed = 0;
        faults.ArmProgramSchedule(p => p == _program && Interlocked.Exchange(ref failed, 1) == 0);
        ProgramConfig changed;
        try
        {
            changed = await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with { Expiry = new ExpiryPolicy(ExpiryMode.None, 0, InactivityMonths: 6) });
        }
        finally
        {
            faults.Disarm();
        }

        fixture.Clock.Advance(TimeSpan.FromDays(200));
        await WaitForEntryAsync(LedgerEntryKind.Expire);

        Assert.Equal(1, failed);
        Assert.Equal(6, changed.Settings.Expiry!.InactivityMonths);
        Assert.Equal((0L, 100L), ((await member.Get())!.Balance.Value, (await member.Get())!.LifetimeExpired.Value));
    }

    [Theory]
    [InlineData(3)]
    [InlineData(4)]
    public async Task Property_RandomEarnRedeemReturnReserveAndExpiry_LedgerSumsToBalanceAndNoLotIsUsedTwice(int seed)
    {
        var random = new Random(seed);
        IMemberGrain member = await SetUpAsync(Shop with
        {
            Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 2, WarnDays: 7),
            PendingDays = 5,
            NegativeBalance = seed % 2 == 0 ? NegativeBalancePolicy.FloorAtZero : NegativeBalancePolicy.AllowNegative,
            ReservationHoldSeconds = 3_600,
        });
        var purchases = new List<string>();
        for (int step = 0; step < 60; step++)
        {
            await RandomStepAsync(random, member, purchases, step);
        }

        await Task.Delay(300);
        string before = JsonSerializer.Serialize(await member.Get());
        await fixture.DeactivateAllAsync();
        string after = JsonSerializer.Serialize(await member.Get());

        Assert.True(before == after, $"live:\n{before}\nreplayed:\n{after}");
        await AssertLedgerMatchesAsync(member);
        await AssertNoLotUsedTwiceAsync();
        long expired = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND kind = 10");
        long redeemed = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND kind = 7");
        Assert.True(expired >= 1 && redeemed >= 3, $"the run should expire and redeem: {expired} expiries, {redeemed} redemptions");
    }

    private async Task RandomStepAsync(Random random, IMemberGrain member, List<string> purchases, int step)
    {
        switch (random.Next(12))
        {
            case < 5:
                string txn = $"buy{step}";
                Purchase purchase = Buy(random.Next(1, 300) * 1_00L, txn);
                AccrualResult earned = await member.Accrue(random.Next(4) == 0 ? purchase with { RedeemRewardId = "coffee", RedeemQuantity = 1 } : purchase);
                Assert.True(earned.Status == AccrualStatus.Accepted || earned.Error == LoyaltyError.FailedPrecondition, earned.ErrorMessage);
                if (earned.Status == AccrualStatus.Accepted)
                {
                    purchases.Add(txn);
                }

                break;
            case 5 when purchases.Count > 0:
                ReturnResult r = await member.Return(new PurchaseReturn($"ret{step}", _program, "m", purchases[random.Next(purchases.Count)], "store-1", new Money(random.Next(1, 100_00), "USD"), Now, []));
                Assert.True(r.Status == AccrualStatus.Accepted || r.Error == LoyaltyError.FailedPrecondition, r.ErrorMessage);
                break;
            case 6:
            case 7:
                RedemptionResult redeemed = await member.Redeem(new Loyalty.Redemption($"red{step}", random.Next(2) == 0 ? "coffee" : "trees", random.Next(1, 4)));
                Assert.True(redeemed.Status == AccrualStatus.Accepted || redeemed.Error == LoyaltyError.FailedPrecondition, redeemed.ErrorMessage);
                break;
            case 8:
                RedemptionResult held = await member.Reserve(new Loyalty.Redemption($"res{step}", "coffee", 1));
                if (held.Status == AccrualStatus.Accepted && random.Next(3) > 0)
                {
                    RedemptionResult end = random.Next(2) == 0 ? await member.CommitReservation($"res{step}") : await member.CancelReservation($"res{step}");
                    Assert.Equal(AccrualStatus.Accepted, end.Status);
                }

                break;
            default:
                fixture.Clock.Advance(TimeSpan.FromDays(random.Next(1, 25)));
                await Task.Delay(150);
                break;
        }
    }

    /// <summary>
    /// No lot is consumed twice: per expiry instant (a lot holds the points that expire together),
    /// what entries spent, took back or expired never exceeds what was credited to it.
    /// </summary>
    private async Task AssertNoLotUsedTwiceAsync()
    {
        List<(int Kind, long Points, string? Details)> rows = await Sql.RowsAsync(fixture.Storage,
            $"SELECT kind, points, details FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'm' ORDER BY seq",
            r => ((int)r.GetInt64(0), r.GetInt64(1), r.IsDBNull(2) ? null : r.GetString(2)));
        var credited = new Dictionary<string, long>();
        var taken = new Dictionary<string, long>();
        foreach ((int kind, long points, string? json) in rows)
        {
            using JsonDocument details = JsonDocument.Parse(json ?? "{}");
            JsonElement root = details.RootElement;
            if (kind is 1 or 2 && points > 0)
            {
                string expiry = root.TryGetProperty("expires_at", out JsonElement e) ? e.GetString()! : "never";
                credited[expiry] = credited.GetValueOrDefault(expiry) + points;
            }

            // A full return of a purchase paid partly in points credits the spent points back to their lots.
            foreach (JsonElement lot in root.TryGetProperty("restored", out JsonElement restored) ? restored.EnumerateArray() : [])
            {
                string expiry = lot.TryGetProperty("expires_at", out JsonElement e) ? e.GetString()! : "never";
                credited[expiry] = credited.GetValueOrDefault(expiry) + lot.GetProperty("points").GetInt64();
            }

            if (kind is 4 or 7 or 10 && root.TryGetProperty("lots", out JsonElement lots))
            {
                foreach (JsonElement lot in lots.EnumerateArray())
                {
                    string expiry = lot.TryGetProperty("expires_at", out JsonElement e) ? e.GetString()! : "never";
                    taken[expiry] = taken.GetValueOrDefault(expiry) + lot.GetProperty("points").GetInt64();
                }
            }
        }

        Assert.NotEmpty(taken);
        foreach ((string expiry, long points) in taken)
        {
            Assert.True(points <= credited.GetValueOrDefault(expiry), $"lot expiring {expiry}: {points} taken of {credited.GetValueOrDefault(expiry)} credited");
        }
    }

    private async Task WaitForEntryAsync(LedgerEntryKind kind, int count = 1)
    {
        DateTime deadline = DateTime.UtcNow + DueWaitMax;
        while (await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND kind = {(int)kind}") < count)
        {
            Assert.True(DateTime.UtcNow < deadline, $"not {count} {kind} entries within {DueWaitMax.TotalSeconds} s");
            await Task.Delay(50);
        }
    }

    private async Task<string> DetailsOfAsync(LedgerEntryKind kind) =>
        (await Sql.RowsAsync(fixture.Storage, $"SELECT details FROM ledger_entries WHERE program_id = '{_program}' AND kind = {(int)kind}", r => r.GetString(0)))[0];

    private async Task<string> ReasonOfAsync(LedgerEntryKind kind) =>
        (await Sql.RowsAsync(fixture.Storage, $"SELECT reason FROM ledger_entries WHERE program_id = '{_program}' AND kind = {(int)kind}", r => r.GetString(0)))[0];

    private async Task AssertLedgerMatchesAsync(IMemberGrain member)
    {
        MemberView view = (await member.Get())!;
        Assert.Equal(view.Balance.Value + view.Pending.Value, await Sql.SumPointsAsync(fixture.Storage, _program, view.MemberId));
    }

    private string Txn() => $"t{Interlocked.Increment(ref _txn)}";

    private Task<long> Taken(string reward) => fixture.Grains.GetGrain<IRewardStockGrain>(_program + "/" + reward).Taken();

    /// <summary>Enough purchases of 1 point each that the member no longer remembers its earlier transactions.</summary>
    private async Task ForgetAsync(IMemberGrain member)
    {
        for (int i = 0; i < ClusterFixture.RecentTransactionsMax; i++)
        {
            Assert.Equal(AccrualStatus.Accepted, (await member.Accrue(Buy(1_00))).Status);
        }
    }

    /// <summary>The points all of the member's purchases earned.</summary>
    private async Task<long> BoughtAsync(IMemberGrain member) =>
        (await Sql.RowsAsync(fixture.Storage, $"SELECT points FROM ledger_entries WHERE program_id = '{_program}' AND member_id = '{(await member.Get())!.MemberId}' AND kind = {(int)LedgerEntryKind.Earn}", r => r.GetInt64(0))).Sum();

    private async Task<IMemberGrain> EnrolAsync(string memberId)
    {
        IMemberGrain member = fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, memberId));
        Assert.Equal(LoyaltyError.None, (await member.Enrol(new Enrolment(_program, memberId, null))).Error);
        return member;
    }

    private IServiceProvider Silo() => fixture.SiloServices;

    private Purchase Buy(long amountMinor, string? txn = null) =>
        new(txn ?? Txn(), _program, "m", "store-1", new Money(amountMinor, "USD"), Now.AddMinutes(-1), []);

    private async Task<IMemberGrain> SetUpAsync(ProgramSettings settings)
    {
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(settings);
        IMemberGrain member = fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, "m"));
        Assert.Equal(LoyaltyError.None, (await member.Enrol(new Enrolment(_program, "m", null))).Error);
        return member;
    }
}

public sealed class SqliteRedemptionGrainTests(SqliteClusterFixture fixture) : RedemptionGrainTests(fixture), IClassFixture<SqliteClusterFixture>;

public sealed class PostgresRedemptionGrainTests(PostgresClusterFixture fixture) : RedemptionGrainTests(fixture), IClassFixture<PostgresClusterFixture>;
