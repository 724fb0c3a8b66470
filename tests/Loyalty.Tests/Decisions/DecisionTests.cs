using Loyalty.Grains;
using Loyalty.Tests.Infrastructure;

namespace Loyalty.Tests.Decisions;

/// <summary>
/// The deciders without a cluster: each is a pure function of the member's state, the program and
/// the request; it returns the entry to write or a refusal naming its reason, and never changes
/// the state it reads.
/// </summary>
public sealed class DecisionTests
{
    private static readonly DateTimeOffset Now = new(2026, 6, 1, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public void Accrual_Decided_LeavesTheStateAsItWas_AndItsEntryAppliesAsTheNextOne()
    {
        MemberState state = Enrolled();
        string before = Snapshots.Describe(state);

        LedgerEntry earn = AccrualDecision.Decide(Decider(state), Purchase("t1", 25_00), 7, before: null);

        Assert.Equal(before, Snapshots.Describe(state));
        Assert.Equal((2L, LedgerEntryKind.Earn, 25L, "t1", 7L), (earn.Sequence, earn.Kind, earn.Points.Value, earn.TransactionId, earn.Fingerprint));
        state.Apply(earn, 8);
        Assert.Equal(25, state.Balance.Value);
    }

    [Fact]
    public void Accrual_InAnotherCurrency_IsRefusedNamingBothCurrencies()
    {
        Purchase euros = Purchase("t1", 25_00) with { Amount = new Money(25_00, "EUR") };

        Decision? refused = AccrualDecision.Check(Decider(Enrolled()), euros);

        Assert.Equal(LoyaltyError.FailedPrecondition, refused?.Error);
        Assert.Equal("currency 'EUR' does not match the program's currency 'USD'", refused?.Message);
    }

    [Fact]
    public void Accrual_DatedBeyondTheDaysADailyCapLooksBackOn_IsRefused_WithoutACapTheProgramsLimitHolds()
    {
        ProgramSettings capped = Settings() with { DailyEarnCapPoints = 500 };
        Purchase old = Purchase("t1", 25_00) with { OccurredAt = Now.AddDays(-(AccrualDecision.DailyCapBackdateDaysMax + 1)) };
        Purchase recent = Purchase("t2", 25_00) with { OccurredAt = Now.AddDays(-(AccrualDecision.DailyCapBackdateDaysMax - 1)) };

        Decision? refused = AccrualDecision.Check(Decider(Enrolled(), capped), old);

        // Before: accepted, and a day the member no longer remembered earned its whole cap again.
        Assert.Equal(LoyaltyError.InvalidArgument, refused?.Error);
        Assert.Contains("a program with a daily earn cap", refused?.Message, StringComparison.Ordinal);
        Assert.Null(AccrualDecision.Check(Decider(Enrolled(), capped), recent));
        Assert.Null(AccrualDecision.Check(Decider(Enrolled()), old));
    }

    [Fact]
    public void Accrual_DatedBeyondTheMonthsAMonthlyCapLooksBackOn_IsRefused_TheDefaultLimitIsWithinThem()
    {
        ProgramSettings capped = Settings() with { MonthlyEarnCapPoints = 5_000, MaxBackdateDays = 730 };
        Purchase old = Purchase("t1", 25_00) with { OccurredAt = Now.AddMonths(-AccrualDecision.MonthlyCapBackdateMonthsMax).AddDays(-1) };
        Purchase yearOld = Purchase("t2", 25_00) with { OccurredAt = Now.AddDays(-ProgramSettings.MaxBackdateDaysDefault) };

        Decision? refused = AccrualDecision.Check(Decider(Enrolled(), capped), old);

        // Before: accepted, and a month the member no longer remembered earned its whole cap again.
        Assert.Equal(LoyaltyError.InvalidArgument, refused?.Error);
        Assert.Contains("a program with a monthly earn cap", refused?.Message, StringComparison.Ordinal);
        Assert.Null(AccrualDecision.Check(Decider(Enrolled(), capped), yearOld));
        Assert.Null(AccrualDecision.Check(Decider(Enrolled(), Settings() with { MaxBackdateDays = 730 }), old));
    }

    [Fact]
    public void Accrual_SpendingMoreStoreCreditThanTheMemberHolds_IsRefused()
    {
        Decision? refused = AccrualDecision.Check(Decider(Enrolled()), Purchase("t1", 25_00) with { WalletMinor = 1 });

        Assert.Equal(LoyaltyError.FailedPrecondition, refused?.Error);
        Assert.StartsWith("wallet_minor 1: the member has 0", refused?.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Accrual_FirstQualifyingPurchaseOfAReferredMember_CarriesBothRewards_TheSecondNeither()
    {
        MemberState state = Enrolled(referredBy: "ann");
        ProgramSettings settings = Settings() with { Referrals = new ReferralPolicy(ReferrerPoints: 100, ReferredPoints: 50, MinPurchaseMinor: 10_00) };

        LedgerEntry small = AccrualDecision.Decide(Decider(state, settings), Purchase("t0", 5_00), 1, null);
        LedgerEntry first = AccrualDecision.Decide(Decider(state, settings), Purchase("t1", 25_00), 1, null);
        state.Apply(first, 8);
        LedgerEntry second = AccrualDecision.Decide(Decider(state, settings), Purchase("t2", 25_00), 1, null);

        Assert.Equal((5L, 0L), (small.Points.Value, small.DetailsAs<EarnDetails>()!.ReferrerReward));
        Assert.Equal((75L, 100L), (first.Points.Value, first.DetailsAs<EarnDetails>()!.ReferrerReward));
        Assert.Contains(first.DetailsAs<EarnDetails>()!.Components, c => c is { Kind: ComponentKind.Referral, Code: "referral:ann", Points: 50 });
        Assert.Equal((25L, 0L), (second.Points.Value, second.DetailsAs<EarnDetails>()!.ReferrerReward));
    }

    [Fact]
    public void Return_OfAPurchaseOfAnotherMember_IsNotFound()
    {
        LedgerEntry theirs = Earned("t1", 25_00) with { MemberId = "someone-else" };

        Decision? refused = ReturnDecision.Check(Decider(Enrolled()), Return("r1", "t1", 5_00), theirs);

        Assert.Equal(LoyaltyError.NotFound, refused?.Error);
        Assert.Equal("original_transaction_id 't1' is not a purchase of member 'm' in program 'p'", refused?.Message);
    }

    [Fact]
    public void Return_DatedBeforeItsPurchase_IsRefused()
    {
        Decision? refused = ReturnDecision.Check(Decider(Enrolled()), Return("r1", "t1", 5_00) with { OccurredAt = Now.AddHours(-2) }, Earned("t1", 25_00));

        Assert.Equal(LoyaltyError.FailedPrecondition, refused?.Error);
        Assert.Contains("a return cannot precede its purchase", refused?.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Return_OfMoreThanIsLeft_IsRefused_AndOfTheRest_TakesBackTheRest()
    {
        MemberState state = Enrolled();
        LedgerEntry purchase = AccrualDecision.Decide(Decider(state), Purchase("t1", 20_00), 1, null);
        state.Apply(purchase, 8);
        LedgerEntry firstReturn = ReturnDecision.Decide(Decider(state), Return("r1", "t1", 15_00), 2, purchase, null, null).Entry!;
        state.Apply(firstReturn, 8);
        ReturnProgress progress = ReturnProgress.Of(purchase, [firstReturn]);

        Decision tooMuch = ReturnDecision.Decide(Decider(state), Return("r2", "t1", 10_00), 3, purchase, null, progress);
        Decision rest = ReturnDecision.Decide(Decider(state), Return("r3", "t1", 5_00), 4, purchase, null, progress);

        Assert.Equal(LoyaltyError.FailedPrecondition, tooMuch.Error);
        Assert.Equal((-15L, -5L), (firstReturn.Points.Value, rest.Entry!.Points.Value));
    }

    [Fact]
    public void Return_OfAnEarnWithoutDetails_InTwoHalves_TakesBackWhatItEarned_NotMore()
    {
        MemberState state = Enrolled();
        // An earn row without details (written by an older engine, or imported).
        LedgerEntry purchase = AccrualDecision.Decide(Decider(state), Purchase("t1", 20_00), 1, null) with { Details = null };
        state.Apply(purchase, 8);
        LedgerEntry firstHalf = ReturnDecision.Decide(Decider(state), Return("r1", "t1", 10_00), 2, purchase, null, null).Entry!;
        state.Apply(firstHalf, 8);

        Decision secondHalf = ReturnDecision.Decide(Decider(state), Return("r2", "t1", 10_00), 3, purchase, null, ReturnProgress.Of(purchase, [firstHalf]));

        // Before: the second half reversed all 20 again (30 for a purchase that earned 20).
        Assert.Equal(-purchase.Points.Value, firstHalf.Points.Value + secondHalf.Entry!.Points.Value);
    }

    [Fact]
    public void Return_OfAPendingPurchase_TakesItsPendingPointsFirst_AndNothingFromTheBalance()
    {
        ProgramSettings pending = Settings() with { PendingDays = 30 };
        MemberState state = Enrolled();
        state.Apply(AdjustmentDecision.Decide(Decider(state, pending), new Adjustment("a1", new Points(40), "goodwill"), 1).Entry!, 8);
        LedgerEntry purchase = AccrualDecision.Decide(Decider(state, pending), Purchase("t1", 20_00), 1, null);
        state.Apply(purchase, 8);

        ReturnDetails details = ReturnDecision.Decide(Decider(state, pending), Return("r1", "t1", 10_00), 2, purchase, null, null).Entry!.DetailsAs<ReturnDetails>()!;

        Assert.Equal((10L, 0L, 0L), (details.PendingReversed, details.ActiveReversed, details.Shortfall));
        Assert.Equal(new DateTimeOffset(Now.AddDays(30).UtcDateTime.Date.AddDays(1), TimeSpan.Zero), details.PendingAvailableAt);
        Assert.Equal("t1", details.PendingLot);
    }

    [Fact]
    public void Adjustment_BelowZeroWhereBalancesAreFloored_IsRefused_WhereNegativeIsAllowed_IsWritten()
    {
        MemberState state = Enrolled();
        var adjustment = new Adjustment("a1", new Points(-10), "correction");

        Decision floored = AdjustmentDecision.Decide(Decider(state, Settings() with { NegativeBalance = NegativeBalancePolicy.FloorAtZero }), adjustment, 1);
        Decision allowed = AdjustmentDecision.Decide(Decider(state), adjustment, 1);

        Assert.Equal(LoyaltyError.FailedPrecondition, floored.Error);
        Assert.Equal("the adjustment would take the active balance (0) below zero, and the program floors balances at zero", floored.Message);
        Assert.Equal((-10L, "correction"), (allowed.Entry!.Points.Value, allowed.Entry.Reason));
    }

    [Fact]
    public void Feedback_CarriesTheScoreAndTheMembersTier_AndTheProgramsReward()
    {
        Decision decision = FeedbackDecision.Decide(Decider(Enrolled(), Settings() with { FeedbackRewardPoints = 5 }), new Feedback("f1", 9, "great", "app"), 1);

        Assert.Equal((5L, 9, MemberState.DefaultTier, "app"), (decision.Entry!.Points.Value, decision.Entry.DetailsAs<FeedbackDetails>()!.Score, decision.Entry.DetailsAs<FeedbackDetails>()!.TierAfter, decision.Entry.Reference));
    }

    [Fact]
    public void Redeem_OfMoreThanTheAvailablePoints_IsRefusedNamingBoth_AndPointsHeldByAReservationAreNotAvailable()
    {
        MemberState state = WithPoints(100);
        LedgerEntry hold = RedemptionDecision.SpendOrHold(Decider(state, Catalogue()), new Loyalty.Redemption("h1", "mug", 1), reserve: true, 1, RedemptionDecision.Stock.Secured).Entry!;
        state.Apply(hold, 8);

        Decision refused = RedemptionDecision.SpendOrHold(Decider(state, Catalogue()), new Loyalty.Redemption("d1", "mug", 1), reserve: false, 2, RedemptionDecision.Stock.Secured);

        Assert.Equal((LedgerEntryKind.Reserve, 0L, 60L), (hold.Kind, hold.Points.Value, hold.DetailsAs<ReserveDetails>()!.HeldPoints));
        Assert.Equal(LoyaltyError.FailedPrecondition, refused.Error);
        Assert.Equal("the member has 40 points available; 1 x 'mug' needs 60", refused.Message);
    }

    [Fact]
    public void Redeem_OfARewardOutOfStock_IsRefused_WithStockUnknown_IsUnavailable()
    {
        MemberState state = WithPoints(100);

        Decision outOfStock = RedemptionDecision.SpendOrHold(Decider(state, Catalogue()), new Loyalty.Redemption("d1", "mug", 1), false, 1, RedemptionDecision.Stock.OutOfStock);
        Decision unknown = RedemptionDecision.SpendOrHold(Decider(state, Catalogue()), new Loyalty.Redemption("d1", "mug", 1), false, 1, RedemptionDecision.Stock.Unknown);
        Decision missing = RedemptionDecision.SpendOrHold(Decider(state, Catalogue()), new Loyalty.Redemption("d1", "yacht", 1), false, 1, RedemptionDecision.Stock.Secured);

        Assert.Equal((LoyaltyError.FailedPrecondition, "reward 'mug' is out of stock"), (outOfStock.Error, outOfStock.Message));
        Assert.Equal(LoyaltyError.Unavailable, unknown.Error);
        Assert.Equal((LoyaltyError.NotFound, "reward 'yacht' is not in the catalogue of program 'p'"), (missing.Error, missing.Message));
    }

    [Theory]
    [InlineData(1, null, "reward 'mug' is out of stock")]
    [InlineData(3, null, "reward 'mug' has fewer than the 3 units asked for left in stock")]
    [InlineData(3, 0L, "reward 'mug' is out of stock")]
    [InlineData(3, 2L, "reward 'mug' has 2 units left in stock; 3 were asked for")]
    public void OutOfStock_SaysOutOfStockOnlyWhenNoneAreLeft(int quantity, long? left, string message) =>
        Assert.Equal(message, RedemptionDecision.OutOfStock("mug", quantity, left));

    [Theory]
    [InlineData(false, RewardBlock.Points, "needs 60")]
    [InlineData(true, RewardBlock.Ended, "is not available now")]
    public void TheRewardsListing_BlocksARewardForTheReasonARedemptionIsRefused(bool forGoldOnlyAndEnded, RewardBlock block, string redeemSays)
    {
        // Out of stock and too dear; and maybe also for another tier and past its window.
        MemberState state = WithPoints(40);
        Reward mug = new("mug", "Mug", RewardKind.Product, 60, 5_00, Stock: 1);
        mug = forGoldOnlyAndEnded ? mug with { Tiers = ["gold"], AvailableUntil = Now.AddDays(-1) } : mug;
        ProgramSettings settings = Settings() with { Rewards = [mug] };

        Decision redeem = RedemptionDecision.SpendOrHold(Decider(state, settings), new Loyalty.Redemption("d1", "mug", 1), false, 1, RedemptionDecision.Stock.OutOfStock);
        RewardOption listed = RewardChoice.Options(settings.Rewards!, state.Tier, 40, Now, new Dictionary<string, long> { ["mug"] = 1 })[0];

        Assert.Contains(redeemSays, redeem.Message, StringComparison.Ordinal);
        Assert.Equal(block, listed.Block);
    }

    [Fact]
    public void ReservationEnd_ALapsedHold_CannotBeCommitted_AndIsReleasedAsLapsed()
    {
        MemberState state = WithPoints(100);
        LedgerEntry held = RedemptionDecision.SpendOrHold(Decider(state, Catalogue()), new Loyalty.Redemption("h1", "mug", 1), true, 1, RedemptionDecision.Stock.Secured).Entry!;
        state.Apply(held, 8);
        Hold hold = state.Lots.FindHold("h1")!;
        Decider later = new("p", "m", state, new ProgramConfig("p", Catalogue(), 1), hold.LapsesAt.AddSeconds(1));

        Decision commit = RedemptionDecision.End(later, hold, commit: true, "h1#end", 1);
        Decision release = RedemptionDecision.End(later, hold, commit: false, "h1#end", 2);

        Assert.Equal(LoyaltyError.FailedPrecondition, commit.Error);
        Assert.Contains("lapsed", commit.Message, StringComparison.Ordinal);
        Assert.Equal((ReservationState.Lapsed, "h1"), (release.Entry!.DetailsAs<ReservationEndDetails>()!.EndedAs, release.Entry.Reference));
    }

    [Fact]
    public void Referrable_ItselfAlreadyReferredOrAfterAPurchase_IsRefusedNamingTheReason()
    {
        MemberState purchased = Enrolled();
        purchased.Apply(AccrualDecision.Decide(Decider(purchased), Purchase("t1", 25_00), 1, null), 8);

        Decision? self = ReferralDecision.Referrable(Decider(Enrolled()), "m");
        Decision? already = ReferralDecision.Referrable(Decider(Enrolled(referredBy: "ann")), "bob");
        Decision? late = ReferralDecision.Referrable(Decider(purchased), "bob");
        Decision? notEnrolled = ReferralDecision.Referrable(Decider(new MemberState()), "bob");

        Assert.Equal((LoyaltyError.InvalidArgument, "a member cannot refer itself"), (self?.Error, self?.Message));
        Assert.Equal((LoyaltyError.AlreadyExists, "member 'm' was already referred by 'ann'"), (already?.Error, already?.Message));
        Assert.Equal(LoyaltyError.FailedPrecondition, late?.Error);
        Assert.Contains("already made a purchase", late?.Message, StringComparison.Ordinal);
        Assert.Equal((LoyaltyError.NotFound, "member 'm' is not enrolled in program 'p'"), (notEnrolled?.Error, notEnrolled?.Message));
        Assert.Null(ReferralDecision.Referrable(Decider(Enrolled()), "bob"));
    }

    [Fact]
    public void Referred_ToTheSameReferrerAgain_WritesNothing_ToAnother_IsRefused()
    {
        MemberState state = Enrolled();
        Decision first = ReferralDecision.Referred(Decider(state), "ann");
        state.Apply(first.Entry!, 8);

        Decision again = ReferralDecision.Referred(Decider(state), "ann");
        Decision other = ReferralDecision.Referred(Decider(state), "bob");

        Assert.Equal((LedgerEntryKind.Referred, "ann"), (first.Entry!.Kind, first.Entry.Reference));
        Assert.Equal("ann", state.Referral.ReferredBy);
        Assert.True(again.Done);
        Assert.Equal(LoyaltyError.AlreadyExists, other.Error);
    }

    [Fact]
    public void Referral_AtTheReferrer_BeyondTheProgramsCap_IsRefusedNamingIt_AnExistingLinkWritesNothing()
    {
        MemberState state = Enrolled();
        ProgramSettings settings = Settings() with { Referrals = new ReferralPolicy(100, 50, CapPerPeriod: 2, PeriodDays: 30) };
        foreach (string referred in new[] { "r1", "r2" })
        {
            state.Apply(ReferralDecision.Referral(Decider(state, settings), referred).Entry!, 8);
        }

        Decision third = ReferralDecision.Referral(Decider(state, settings), "r3");
        Decision repeated = ReferralDecision.Referral(Decider(state, settings), "r1");

        Assert.Equal(LoyaltyError.FailedPrecondition, third.Error);
        Assert.Equal("referrer 'm' has reached the program's cap of 2 referrals in 30 days", third.Message);
        Assert.True(repeated.Done);
        Assert.Equal(["r1", "r2"], state.Referral.Referrals);
    }

    [Fact]
    public void ReferralsTakenOverInAMerge_CountInTheCapOnTheDaysTheyWereMade_NotOnTheMergesDay()
    {
        // The duplicate made two referrals a year ago; the survivor, with a cap of 2 in 30 days,
        // still has room for two this month.
        ProgramSettings settings = Settings() with { Referrals = new ReferralPolicy(100, 50, CapPerPeriod: 2, PeriodDays: 30) };
        MemberState duplicate = Enrolled();
        DateTimeOffset yearAgo = Now.AddYears(-1);
        foreach (string referred in new[] { "r1", "r2" })
        {
            var then = new Decider("p", "m", duplicate, new ProgramConfig("p", settings, 1), yearAgo);
            duplicate.Apply(ReferralDecision.Referral(then, referred).Entry!, 8);
            duplicate.Apply(ReferralDecision.LinkSettled(then, referred, stands: true, changeEnded: true).Entry!, 8);
        }

        MergeTransfer transfer = LifecycleDecision.Detach(Decider(duplicate, settings), "s").Entry!.DetailsAs<MergedAwayDetails>()!.Merge!;
        MemberState survivor = Enrolled();
        survivor.Apply(ReferralDecision.Referral(Decider(survivor, settings), "r0").Entry!, 8);
        survivor.Apply(LifecycleDecision.MergeIn(Decider(survivor, settings), "m", transfer, "same person").Entry!, 8);
        Decision second = ReferralDecision.Referral(Decider(survivor, settings), "r3");
        survivor.Apply(second.Entry!, 8);
        Decision third = ReferralDecision.Referral(Decider(survivor, settings), "r4");

        Assert.Equal(["r1", "r2", "r0", "r3"], survivor.Referral.Referrals);
        Assert.Equal([yearAgo, yearAgo], survivor.Referral.ReferredAt.Take(2));
        Assert.Equal(LoyaltyError.None, second.Error);
        Assert.Equal(LoyaltyError.FailedPrecondition, third.Error);
    }

    [Fact]
    public void ReferralLink_IsUnconfirmedUntilSettled_AWithdrawalFreesItsPlaceUnderTheCap_AndASecondSettlementWritesNothing()
    {
        ProgramSettings settings = Settings() with { Referrals = new ReferralPolicy(100, 50, CapPerPeriod: 1, PeriodDays: 30) };
        MemberState referrer = Enrolled();
        LedgerEntry link = ReferralDecision.Referral(Decider(referrer, settings), "mia").Entry!;
        referrer.Apply(link, 8);
        Decision overCap = ReferralDecision.Referral(Decider(referrer, settings), "ned");
        Decision detach = LifecycleDecision.Detach(Decider(referrer, settings), "s");
        // Checked from the schedule, a link is withdrawn only once it is a minute old: after an
        // UNAVAILABLE the referred member's commit may still land. Once its change has ended, at once.
        Decision tooYoung = ReferralDecision.LinkSettled(Decider(referrer, settings), "mia", stands: false, changeEnded: false);
        LedgerEntry withdrawn = ReferralDecision.LinkSettled(At(referrer, settings, Now + ReferralDecision.LinkCheckDelay), "mia", stands: false, changeEnded: false).Entry!;
        referrer.Apply(withdrawn, 8);
        Decision again = ReferralDecision.LinkSettled(Decider(referrer, settings), "mia", stands: true, changeEnded: true);
        LedgerEntry ned = ReferralDecision.Referral(Decider(referrer, settings), "ned").Entry!;
        referrer.Apply(ned, 8);
        LedgerEntry confirmed = ReferralDecision.LinkSettled(Decider(referrer, settings), "ned", stands: true, changeEnded: false).Entry!;
        referrer.Apply(confirmed, 8);

        Assert.True(link.DetailsAs<ReferralLinkDetails>()!.Unconfirmed);
        Assert.Equal(LoyaltyError.FailedPrecondition, overCap.Error);
        Assert.Equal(LoyaltyError.Unavailable, detach.Error);
        Assert.Contains("the referral of 'mia' by member 'm' is not settled yet", detach.Message, StringComparison.Ordinal);
        Assert.Null(tooYoung.Entry);
        Assert.Equal((LedgerEntryKind.ReferralWithdrawn, "mia"), (withdrawn.Kind, withdrawn.Reference));
        Assert.Null(again.Entry);
        Assert.Equal((LedgerEntryKind.ReferralConfirmed, "ned"), (confirmed.Kind, confirmed.Reference));
        Assert.Equal(["ned"], referrer.Referral.Referrals);
        Assert.Empty(referrer.Referral.Unconfirmed);
        Assert.Null(referrer.Referral.UnconfirmedSince);
        Assert.Equal(LoyaltyError.None, LifecycleDecision.Detach(Decider(referrer, settings), "s").Error);
    }

    [Fact]
    public void AMergeStarted_IsOpenUntilSettled_OneAtATime_AndTheSurvivorDoesNotCloseMeanwhile()
    {
        ProgramSettings settings = Settings();
        MemberState survivor = Enrolled();
        LedgerEntry started = LifecycleDecision.MergeStart(Decider(survivor, settings), "d1", "same person").Entry!;
        survivor.Apply(started, 8);
        Decision again = LifecycleDecision.MergeStart(Decider(survivor, settings), "d1", "same person");
        Decision another = LifecycleDecision.MergeStart(Decider(survivor, settings), "d2", "same person");
        Decision erase = LifecycleDecision.Erase(Decider(survivor, settings), "request");
        Decision detach = LifecycleDecision.Detach(Decider(survivor, settings), "c");
        Decision settleOther = LifecycleDecision.MergeSettle(Decider(survivor, settings), "d2", null);
        string why = new('x', Limits.ReasonLengthMax + 20);
        LedgerEntry abandoned = LifecycleDecision.MergeSettle(Decider(survivor, settings), "d1", why).Entry!;
        DateTimeOffset? checkAt = survivor.MergeCheckAt;
        string? reasonKept = survivor.MergingReason;
        survivor.Apply(abandoned, 8);

        Assert.Equal((LedgerEntryKind.MergeStarted, "d1", 0L, "same person"), (started.Kind, started.Reference, started.Points.Value, started.Reason));
        Assert.Equal("same person", reasonKept);
        Assert.Equal(Now + LifecycleDecision.MergeCheckDelay, checkAt);
        Assert.True(again.Done);
        Assert.Equal((LoyaltyError.Unavailable, LoyaltyError.Unavailable, LoyaltyError.Unavailable), (another.Error, erase.Error, detach.Error));
        Assert.Contains("the merge of 'd1' into member 'm' is not finished", erase.Message, StringComparison.Ordinal);
        Assert.True(settleOther.Done);
        Assert.Equal((LedgerEntryKind.MergeSettled, "d1", true), (abandoned.Kind, abandoned.Reference, abandoned.DetailsAs<MergeSettledDetails>()!.Abandoned));
        Assert.Equal(Limits.ReasonLengthMax, abandoned.Reason!.Length);
        Assert.Null(survivor.MergingFrom);
        Assert.Null(survivor.MergeCheckAt);
        Assert.True(LifecycleDecision.MergeSettle(Decider(survivor, settings), "d1", null).Done);
        Assert.Equal(LoyaltyError.None, LifecycleDecision.MergeStart(Decider(survivor, settings), "d2", "same person").Error);
        Assert.Equal(LoyaltyError.None, LifecycleDecision.Erase(Decider(survivor, settings), "request").Error);
    }

    [Fact]
    public void AMergeTakenIn_IsNotAbandoned_ByARefusalJudgedBeforeTheDuplicateLetGo_OnlySettled()
    {
        ProgramSettings settings = Settings();
        MemberState duplicate = Enrolled();
        var atDuplicate = new Decider("p", "d1", duplicate, new ProgramConfig("p", settings, 1), Now);
        MergeTransfer transfer = LifecycleDecision.Detach(atDuplicate, "m").Entry!.DetailsAs<MergedAwayDetails>()!.Merge!;
        MemberState survivor = Enrolled();
        survivor.Apply(LifecycleDecision.MergeStart(Decider(survivor, settings), "d1", "same person").Entry!, 8);
        survivor.Apply(LifecycleDecision.MergeIn(Decider(survivor, settings), "d1", transfer, "same person").Entry!, 8);

        // A desk's abandonment, decided while the duplicate had not let go, reaches the survivor
        // after a newer desk's merge took the duplicate in (its links still to move).
        Decision abandon = LifecycleDecision.MergeSettle(Decider(survivor, settings), "d1", "would close a referral cycle");
        LedgerEntry settled = LifecycleDecision.MergeSettle(Decider(survivor, settings), "d1", null).Entry!;

        Assert.True(abandon.Done);
        Assert.Null(abandon.Entry);
        Assert.Equal("d1", survivor.MergingFrom);
        Assert.False(settled.DetailsAs<MergeSettledDetails>()!.Abandoned);
    }

    [Fact]
    public void ReferralReward_IsWrittenOnce_ItsReversalTakesBackWhatIsLeft_WhereBalancesAreFloored()
    {
        MemberState state = Enrolled();
        ProgramSettings floored = Settings() with { NegativeBalance = NegativeBalancePolicy.FloorAtZero };
        Decision reward = ReferralDecision.Reward(Decider(state, floored), "bob", "#ref:bob", 100, reverse: false);
        state.Apply(reward.Entry!, 8);
        state.Apply(RedemptionFree(state, 70), 8);

        Decision again = ReferralDecision.Reward(Decider(state, floored), "bob", "#ref:bob", 100, reverse: false);
        Decision reversal = ReferralDecision.Reward(Decider(state, floored), "bob", "#ref:bob:reversed", 0, reverse: true);
        Decision unfloored = ReferralDecision.Reward(Decider(state), "bob", "#ref:bob:reversed", 0, reverse: true);

        Assert.Equal((100L, "bob"), (reward.Entry!.Points.Value, reward.Entry.Reference));
        Assert.True(again.Done);
        Assert.Equal((-30L, 70L, true), (reversal.Entry!.Points.Value, reversal.Entry.DetailsAs<ReferralRewardDetails>()!.Shortfall, reversal.Entry.DetailsAs<ReferralRewardDetails>()!.ReferralReversed));
        Assert.Equal((-100L, 0L), (unfloored.Entry!.Points.Value, unfloored.Entry.DetailsAs<ReferralRewardDetails>()!.Shortfall));
    }

    [Fact]
    public void ReferralReward_ForItselfOrForAMemberItAbsorbed_WritesNothing()
    {
        Assert.True(ReferralDecision.Reward(Decider(Enrolled()), "m", "#ref:m", 100, reverse: false).Done);
        Assert.True(ReferralDecision.Reward(Decider(new MemberState()), "bob", "#ref:bob", 100, reverse: false).Refused);
    }

    [Fact]
    public void ReferralSettled_WhenNothingIsOwed_WritesNothing()
    {
        Assert.True(ReferralDecision.Settled(Decider(Enrolled(referredBy: "ann")), "ann", reward: true, reversal: false).Done);
    }

    [Fact]
    public void ReferralRefused_NamesWhatTheReferrerRefused_SettlesBothSteps_AndIsWrittenOnce()
    {
        ProgramSettings settings = Settings() with { Referrals = new ReferralPolicy(ReferrerPoints: 100, ReferredPoints: 50, MinPurchaseMinor: 10_00) };
        MemberState owed = Enrolled(referredBy: "ann");
        LedgerEntry qualifying = AccrualDecision.Decide(Decider(owed, settings), Purchase("t1", 25_00), 1, null);
        owed.Apply(qualifying, 8);
        MemberState reversed = Enrolled(referredBy: "ann");
        reversed.Apply(qualifying, 8);
        reversed.Apply(ReferralDecision.Settled(Decider(reversed, settings), "ann", reward: true, reversal: false).Entry!, 8);
        reversed.Apply(ReturnDecision.Decide(Decider(reversed, settings), Return("r1", "t1", 25_00), 1, qualifying, null, null).Entry!, 8);

        Decision reward = ReferralDecision.Refused(Decider(owed, settings), "ann", LoyaltyError.FailedPrecondition, rewarded: false, reversalRefused: false);
        Decision reversal = ReferralDecision.Refused(Decider(reversed, settings), "ann", LoyaltyError.InvalidArgument, rewarded: false, reversalRefused: true);
        owed.Apply(reward.Entry!, 8);
        reversed.Apply(reversal.Entry!, 8);

        Assert.True(reversed.Referral.Reversed);
        Assert.Equal("the referrer 'ann' refused the reward (FailedPrecondition); it is not offered again", reward.Entry!.Reason);
        Assert.Equal("the referrer 'ann' refused the reward's reversal (InvalidArgument); it is not offered again", reversal.Entry!.Reason);
        Assert.Equal((true, 0L), (reward.Entry.DetailsAs<ReferralSettledDetails>()!.ReferrerRefused, reward.Entry.DetailsAs<ReferralSettledDetails>()!.ReferrerReward));
        Assert.False(owed.Referral.Owed);
        Assert.False(reversed.Referral.Owed);
        Assert.True(ReferralDecision.Refused(Decider(owed, settings), "ann", LoyaltyError.FailedPrecondition, rewarded: false, reversalRefused: false).Done);
        Assert.True(ReferralDecision.Settled(Decider(reversed, settings), "ann", reward: false, reversal: true).Done);
    }

    [Fact]
    public void Lots_UnderALifespan_AreOnePerDay_HoweverOftenTheMemberBuys()
    {
        ProgramSettings settings = Expiring12();
        MemberState state = Enrolled();
        var day = new DateTimeOffset(2026, 6, 2, 0, 0, 30, TimeSpan.Zero);
        for (int i = 0; i < 48; i++)
        {
            state.Apply(AccrualDecision.Decide(At(state, settings, day.AddMinutes(30 * i)), Purchase("p" + i, 10_00), 1, null), 8);
        }

        state.Apply(AccrualDecision.Decide(At(state, settings, day.AddDays(1)), Purchase("next", 10_00), 1, null), 8);

        // Before, each purchase made a lot of its own (its exact instant twelve months on): 49 lots.
        Assert.Equal(
            [(480L, new DateTimeOffset(2027, 6, 3, 0, 0, 0, TimeSpan.Zero)), (10L, new DateTimeOffset(2027, 6, 4, 0, 0, 0, TimeSpan.Zero))],
            state.Lots.Spendable.Select(l => (l.Points.Value, l.ExpiresAt!.Value)));
    }

    [Fact]
    public void PendingPoints_AreOneLotPerDay_AndAReturnTakesItsOwnPurchasesPointsFromIt()
    {
        ProgramSettings settings = Settings() with { PendingDays = 14 };
        MemberState state = Enrolled();
        var day = new DateTimeOffset(2026, 6, 2, 0, 0, 30, TimeSpan.Zero);
        var purchases = new List<LedgerEntry>();
        for (int i = 0; i < 48; i++)
        {
            purchases.Add(AccrualDecision.Decide(At(state, settings, day.AddMinutes(30 * i)), Purchase("p" + i, 10_00), 1, null));
            state.Apply(purchases[^1], 8);
        }

        state.Apply(AccrualDecision.Decide(At(state, settings, day.AddDays(1)), Purchase("next", 10_00), 1, null), 8);
        var seventeenth = new DateTimeOffset(2026, 6, 17, 0, 0, 0, TimeSpan.Zero);
        var lotsBefore = state.Lots.Pending.Select(l => (l.TransactionId, l.Points.Value, l.AvailableAt)).ToList();

        // Two returns of the sixth purchase, the second after the first was applied.
        LedgerEntry first = ReturnDecision.Decide(At(state, settings, day.AddDays(3)), Return("r1", "p5", 6_00), 2, purchases[5], null, null).Entry!;
        state.Apply(first, 8);
        LedgerEntry second = ReturnDecision.Decide(At(state, settings, day.AddDays(3)), Return("r2", "p5", 4_00), 3, purchases[5], null,
            ReturnProgress.Of(purchases[5], [first])).Entry!;
        state.Apply(second, 8);
        ReturnDetails d1 = first.DetailsAs<ReturnDetails>()!, d2 = second.DetailsAs<ReturnDetails>()!;
        state.Lots.Mature(seventeenth);

        // Before, each purchase had a lot of its own, spendable at its exact instant 14 days on: 49 lots.
        Assert.Equal([("p0", 480L, seventeenth), ("next", 10L, seventeenth.AddDays(1))], lotsBefore);
        Assert.Equal(seventeenth, purchases[47].AvailableAt);
        Assert.Equal((6L, 0L, "p0", (DateTimeOffset?)seventeenth), (d1.PendingReversed, d1.ActiveReversed, d1.PendingLot, d1.PendingAvailableAt));
        Assert.Equal((4L, 0L, "p0"), (d2.PendingReversed, d2.ActiveReversed, d2.PendingLot));
        Assert.Equal((470L, 10L), (state.Balance.Value, state.Lots.PendingTotal.Value));
    }

    [Fact]
    public void PendingPoints_InAProgramsTimeZone_BecomeSpendableAsTheLocalDayBegins()
    {
        ProgramSettings newYork = Settings() with { PendingDays = 14, TimeZone = "America/New_York" };

        // 22:30 in New York on 1 March (03:30 UTC on the 2nd) is 15 March there 14 days on; spendable as
        // the 16th begins, in daylight saving time by then (UTC-4).
        DateTimeOffset? evening = newYork.PendingUntil(new DateTimeOffset(2026, 3, 2, 3, 30, 0, TimeSpan.Zero));
        DateTimeOffset? midnight = newYork.PendingUntil(new DateTimeOffset(2026, 3, 2, 5, 0, 0, TimeSpan.Zero));

        Assert.Equal(new DateTimeOffset(2026, 3, 16, 4, 0, 0, TimeSpan.Zero), evening);
        Assert.Equal(new DateTimeOffset(2026, 3, 17, 4, 0, 0, TimeSpan.Zero), midnight);
        Assert.Null((Settings() with { PendingDays = 0 }).PendingUntil(Now));
    }

    [Fact]
    public void ALocalDay_ThatBeginsTwice_BeginsAtTheFirstMidnight_AndOneThatSkipsMidnight_AnHourLater()
    {
        // Havana leaves summer time at 01:00, back to 00:00: 1 November 2026 begins at 00:00 UTC-4.
        TimeZoneInfo havana = TimeZoneInfo.FindSystemTimeZoneById("America/Havana");

        Assert.True(havana.IsAmbiguousTime(new DateTime(2026, 11, 1, 0, 30, 0)), "the zone's rules changed; pick another day");
        Assert.Equal(new DateTimeOffset(2026, 11, 1, 4, 0, 0, TimeSpan.Zero), LocalDay.Begins(new DateTime(2026, 11, 1), havana));
        Assert.Equal(new DateTimeOffset(2026, 3, 8, 5, 0, 0, TimeSpan.Zero), LocalDay.Begins(new DateTime(2026, 3, 8), havana));
    }

    [Fact]
    public void AnErasedMembersPoints_ExpireOnTime_WithNoWarningBefore()
    {
        ProgramSettings settings = Catalogue() with { Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 1, WarnDays: 35) };
        MemberState state = Enrolled();
        state.Apply(AccrualDecision.Decide(At(state, settings, Now), Purchase("p1", 30_00), 1, null), 8);
        DueWork warnedWhileKept = Expiring.Next(state, settings.ExpiryRules, Now)!;
        state.Apply(LifecycleDecision.Erase(At(state, settings, Now), "asked by the member").Entry!, 8);

        DueWork? now = Expiring.Next(state, settings.ExpiryRules, Now);
        DateTimeOffset? due = Expiring.NextDue(state, settings.ExpiryRules, Now);
        DueWork? atExpiry = Expiring.Next(state, settings.ExpiryRules, due!.Value);

        Assert.Equal(DueKind.Warn, warnedWhileKept.Kind);
        Assert.Null(now);
        Assert.Equal(state.Lots.Spendable[0].ExpiresAt, due);
        Assert.Equal((DueKind.Expire, 30L), (atExpiry!.Kind, atExpiry.Lots.Sum(l => l.Points)));
    }

    [Fact]
    public void PointsThatJoinALotAlreadyWarnedAbout_AreWarnedAboutAgain_WithTheLotsTotal()
    {
        // Warned 35 days ahead of a month's lifespan: at once, before the day's next purchase joins the lot.
        ProgramSettings settings = Catalogue() with { Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 1, WarnDays: 35) };
        MemberState state = Enrolled();
        state.Apply(AccrualDecision.Decide(At(state, settings, Now), Purchase("p1", 30_00), 1, null), 8);
        DueWork first = Expiring.Next(state, settings.ExpiryRules, Now)!;
        state.Apply(DueDecision.Of(At(state, settings, Now), first, "#end", 2).Entry!, 8);
        DueWork? none = Expiring.Next(state, settings.ExpiryRules, Now);
        state.Apply(AccrualDecision.Decide(At(state, settings, Now.AddHours(2)), Purchase("p2", 20_00), 3, null), 8);

        DueWork? again = Expiring.Next(state, settings.ExpiryRules, Now.AddHours(2));

        // Before, the lot stayed warned and the 20 points joining it were never warned about.
        Assert.Equal((DueKind.Warn, 30L), (first.Kind, first.Lots.Sum(l => l.Points)));
        Assert.Null(none);
        Assert.Single(state.Lots.Spendable);
        Assert.Equal((DueKind.Warn, 50L), (again!.Kind, again.Lots.Sum(l => l.Points)));
    }

    [Fact]
    public void ALotPastItsExpiry_HeldByAReservation_IsNotWarnedAbout_AndIsNotDueForIt()
    {
        ProgramSettings settings = Expiring12() with { ReservationHoldSeconds = 86_400, Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 12, WarnDays: 30) };
        DateTimeOffset lapses = OldExpiry.AddMinutes(-1).AddDays(1);
        MemberState state = Enrolled();
        state.Apply(AccrualDecision.Decide(At(state, settings, Now), Purchase("old", 60_00), 1, null), 8);
        // The member was not woken for its warning; a mug reserved a minute before the lot expired holds it all.
        state.Apply(RedemptionDecision.SpendOrHold(At(state, settings, OldExpiry.AddMinutes(-1)), new Loyalty.Redemption("h1", "mug", 1), true, 1, RedemptionDecision.Stock.Secured).Entry!, 8);
        DateTimeOffset after = OldExpiry.AddSeconds(1);

        DueWork? work = Expiring.Next(state, settings.ExpiryRules, after);
        DateTimeOffset? due = Expiring.NextDue(state, settings.ExpiryRules, after);

        // Before, the expired lot was warned about as "expiring soon", and was due for it in the past.
        Assert.Null(work);
        Assert.Equal(lapses, due);
        DueWork warnedBefore = Expiring.Next(state, settings.ExpiryRules, OldExpiry.AddMinutes(-1))!;
        Assert.Equal((DueKind.Warn, 60L), (warnedBefore.Kind, warnedBefore.Lots.Sum(l => l.Points)));
    }

    [Fact]
    public void ExpiriesAndTheirWarnings_AreDueAtTheMembersOffset_AndLapsesOnTheInstant()
    {
        ProgramSettings settings = Expiring12() with { ReservationHoldSeconds = 3_600, Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 12, WarnDays: 30) };
        TimeSpan late = TimeSpan.FromMinutes(7);
        MemberState state = Enrolled();
        state.Apply(AccrualDecision.Decide(At(state, settings, Now), Purchase("old", 100_00), 1, null), 8);
        DateTimeOffset warnAt = OldExpiry.AddDays(-30);

        DateTimeOffset? warning = Expiring.NextDue(state, settings.ExpiryRules, Now, late);
        state.Apply(DueDecision.Of(At(state, settings, warnAt + late), Expiring.Next(state, settings.ExpiryRules, warnAt + late)!, "#end", 2).Entry!, 8);
        DateTimeOffset? expiry = Expiring.NextDue(state, settings.ExpiryRules, warnAt + late, late);
        LedgerEntry expired = DueDecision.Of(At(state, settings, OldExpiry + late), Expiring.Next(state, settings.ExpiryRules, OldExpiry + late)!, "#end", 2).Entry!;
        DateTimeOffset reserved = OldExpiry.AddHours(-3);
        state.Apply(RedemptionDecision.SpendOrHold(At(state, settings, reserved), new Loyalty.Redemption("h1", "pen", 1), true, 3, RedemptionDecision.Stock.Secured).Entry!, 8);
        DateTimeOffset? lapse = Expiring.NextDue(state, settings.ExpiryRules, reserved, late);

        Assert.Equal(warnAt + late, warning);
        Assert.Equal(OldExpiry + late, expiry);
        Assert.Equal(reserved.AddHours(1), lapse);
        // The write-off itself records the lot's own expiry, whenever the wake comes.
        Assert.Equal((LedgerEntryKind.Expire, -100L, OldExpiry), (expired.Kind, expired.Points.Value, expired.OccurredAt));
    }

    [Fact]
    public void ALotThatExpiredBeforeTheInactivityDeadline_ExpiresAsItsOwn_WhenItsWakeComesAfterTheDeadline()
    {
        ProgramSettings settings = Catalogue() with { Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 12, InactivityMonths: 12) };
        MemberState state = Enrolled();
        state.Apply(AccrualDecision.Decide(At(state, settings, new DateTimeOffset(2026, 6, 1, 0, 0, 30, TimeSpan.Zero)), Purchase("a", 100_00), 1, null), 8);
        state.Apply(AccrualDecision.Decide(At(state, settings, new DateTimeOffset(2026, 6, 2, 0, 10, 0, TimeSpan.Zero)), Purchase("b", 50_00), 2, null), 8);
        var lotA = new DateTimeOffset(2027, 6, 2, 0, 0, 0, TimeSpan.Zero);
        DateTimeOffset deadline = lotA.AddMinutes(10);
        DateTimeOffset wake = lotA.AddMinutes(20); // the member's offset in the spread: after the deadline

        DueWork own = Expiring.Next(state, settings.ExpiryRules, wake)!;
        state.Apply(DueDecision.Of(At(state, settings, wake), own, "#end", 2).Entry!, 8);
        DueWork inactive = Expiring.Next(state, settings.ExpiryRules, wake)!;

        // Before, inactivity came first and took both lots at the deadline, lot a's lifespan unrecorded.
        Assert.Equal(deadline, Expiring.InactivityDeadline(state, settings.ExpiryRules));
        Assert.Equal((DueKind.Expire, 100L, lotA, (DateTimeOffset?)null), (own.Kind, own.Lots.Sum(l => l.Points), own.At, own.InactivityDeadline));
        Assert.Equal((DueKind.Expire, 50L, deadline, (DateTimeOffset?)deadline), (inactive.Kind, inactive.Lots.Sum(l => l.Points), inactive.At, inactive.InactivityDeadline));
    }

    [Fact]
    public void PointsGranted_WhileEveryLotHeldIsPastItsExpiry_StartTheInactivityClockAgain()
    {
        ProgramSettings settings = Catalogue() with { Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 1, InactivityMonths: 6) };
        MemberState state = Enrolled();
        state.Apply(AccrualDecision.Decide(At(state, settings, Now), Purchase("a", 100_00), 1, null), 8);
        DateTimeOffset expiry = state.Lots.Spendable[0].ExpiresAt!.Value;
        // Five minutes after the lot expired, before the member's wake in the spread has written it off.
        DateTimeOffset granted = expiry.AddMinutes(5);
        state.Apply(AdjustmentDecision.Decide(At(state, settings, granted), new Adjustment("goodwill", new Points(50), "sorry"), 2).Entry!, 8);

        // Before, the expired lot still counted as points held: the 50 were due to expire at the purchase's deadline.
        Assert.Equal(granted, state.GrantedIntoEmptyAt);
        Assert.Equal(granted.AddMonths(6), Expiring.InactivityDeadline(state, settings.ExpiryRules));
    }

    [Fact]
    public void WakeLateBy_IsStablePerMember_WithinTheSpread_AndSpreadsADaysMembers()
    {
        TimeSpan spread = TimeSpan.FromMinutes(30);
        TimeSpan[] offsets = [.. Enumerable.Range(0, 3_000).Select(i => Expiring.WakeLateBy("shop", "member-" + i, spread))];

        int busiestMinute = offsets.GroupBy(o => (int)o.TotalMinutes).Max(g => g.Count());

        Assert.All(offsets, o => Assert.InRange(o, TimeSpan.Zero, spread - TimeSpan.FromSeconds(1)));
        Assert.Equal(offsets[17], Expiring.WakeLateBy("shop", "member-17", spread));
        Assert.NotEqual(offsets[17], Expiring.WakeLateBy("other-shop", "member-17", spread));
        // 3,000 members over 30 minutes: 100 a minute on average; none of the 30 minutes twice that.
        Assert.Equal(30, offsets.Select(o => (int)o.TotalMinutes).Distinct().Count());
        Assert.InRange(busiestMinute, 100, 199);
        Assert.Equal(TimeSpan.Zero, Expiring.WakeLateBy("shop", "member-17", TimeSpan.Zero));
    }

    [Fact]
    public void Redemption_AfterALotExpired_AndBeforeItsExpiryIsWritten_SpendsOnlyUnexpiredPoints()
    {
        ProgramSettings settings = Expiring12();
        MemberState state = WithTwoLots(settings);
        Decider later = At(state, settings, OldExpiry.AddHours(1));

        Decision tooMuch = RedemptionDecision.SpendOrHold(later, new Loyalty.Redemption("r1", "mug", 1), false, 1, RedemptionDecision.Stock.Secured);
        Decision pen = RedemptionDecision.SpendOrHold(later, new Loyalty.Redemption("r2", "pen", 1), false, 1, RedemptionDecision.Stock.Secured);

        // Before, the 100 expired points (their wake not run yet) paid for the mug.
        Assert.Equal(OldExpiry, state.Lots.Spendable[0].ExpiresAt);
        Assert.Equal((150L, 50L), (state.Balance.Value, state.AvailableAt(later.Now).Value));
        Assert.Equal("the member has 50 points available; 1 x 'mug' needs 60", tooMuch.Message);
        Assert.Equal(["new"], pen.Entry!.DetailsAs<RedeemDetails>()!.Lots!.Select(l => l.LotId));
    }

    [Fact]
    public void Expiry_WithAReservationOpen_TakesWhatTheReservationsDoNotNeedOnTime_AndKeepsOnlyWhatTheyDo()
    {
        ProgramSettings settings = Expiring12() with { ReservationHoldSeconds = 86_400 };
        DateTimeOffset expiry = OldExpiry;
        DateTimeOffset lapses = expiry.AddMinutes(-1).AddDays(1);
        MemberState partly = WithTwoLots(settings);
        partly.Apply(RedemptionDecision.SpendOrHold(At(partly, settings, expiry.AddMinutes(-1)), new Loyalty.Redemption("h1", "pen", 1), true, 1, RedemptionDecision.Stock.Secured).Entry!, 8);
        MemberState wholly = Enrolled();
        wholly.Apply(AccrualDecision.Decide(At(wholly, settings, Now), Purchase("old", 60_00), 1, null), 8);
        wholly.Apply(RedemptionDecision.SpendOrHold(At(wholly, settings, expiry.AddMinutes(-1)), new Loyalty.Redemption("h1", "mug", 1), true, 1, RedemptionDecision.Stock.Secured).Entry!, 8);
        DateTimeOffset after = expiry.AddSeconds(1);
        long availableBefore = partly.AvailableAt(after).Value;

        DueWork? partlyDue = Expiring.Next(partly, settings.ExpiryRules, after);
        DateTimeOffset? dueFirst = Expiring.NextDue(partly, settings.ExpiryRules, after);
        partly.Apply(DueDecision.Of(At(partly, settings, after), partlyDue!, "#end", 2).Entry!, 8);

        // Before, an open reservation put off every expiry until it ended: a day of spending expired
        // points. The unexpired 50 cover the reservation's 20, so all 100 expire on time; with
        // nothing else to meet it, a reservation keeps the expired points it needs.
        Assert.Equal(expiry, dueFirst);
        Assert.Equal((DueKind.Expire, 100L), (partlyDue!.Kind, partlyDue.Lots.Sum(l => l.Points)));
        Assert.Equal((30L, 30L), (availableBefore, partly.AvailableAt(after).Value));
        Assert.Equal(lapses, Expiring.NextDue(partly, settings.ExpiryRules, after));
        Assert.Null(Expiring.Next(partly, settings.ExpiryRules, after.AddHours(1)));
        Assert.Equal(lapses, Expiring.NextDue(wholly, settings.ExpiryRules, after));
        Assert.Null(Expiring.Next(wholly, settings.ExpiryRules, after));
    }

    [Fact]
    public void AReservationMadeAfterALotExpired_SitsOnlyOnUnexpiredPoints()
    {
        ProgramSettings settings = Expiring12();
        MemberState state = WithTwoLots(settings);
        DateTimeOffset later = OldExpiry.AddHours(1);
        Decision held = RedemptionDecision.SpendOrHold(At(state, settings, later), new Loyalty.Redemption("h1", "pen", 2), true, 1, RedemptionDecision.Stock.Secured);
        Assert.True(held.Entry is not null, held.Message);
        state.Apply(held.Entry, 8);

        Decision tooMuch = RedemptionDecision.SpendOrHold(At(state, settings, later.AddMinutes(5)), new Loyalty.Redemption("r1", "pen", 1), false, 1, RedemptionDecision.Stock.Secured);
        Decision committed = RedemptionDecision.End(At(state, settings, later.AddMinutes(5)), state.Lots.FindHold("h1")!, true, "h1#end", 1);

        // Before, the hold counted as sitting on the expired 100: the pen was sold from the 50 good
        // points and the commit then spent 40 expired ones, 80 spent of 50.
        Assert.Equal("the member has 10 points available; 1 x 'pen' needs 20", tooMuch.Message);
        Assert.Equal([("new", 40L)], committed.Entry!.DetailsAs<RedeemDetails>()!.Lots!.Select(l => (l.LotId, l.Points)));
        Assert.Equal([("old", 100L)], Expiring.Next(state, settings.ExpiryRules, later.AddMinutes(5))!.Lots.Select(l => (l.LotId, l.Points)));
    }

    [Fact]
    public void AnEntrySpendingALotThatMaturedOnAClockAhead_AppliesAndRebuilds()
    {
        ProgramSettings settings = Expiring12() with { PendingDays = 14 };
        MemberState live = Enrolled();
        LedgerEntry earned = AccrualDecision.Decide(At(live, settings, Now), Purchase("p1", 100_00), 1, null);
        live.Apply(earned, 8);
        DateTimeOffset matured = earned.AvailableAt!.Value;
        live.Lots.Mature(matured.AddMinutes(1));
        // Decided on a silo whose clock was ahead; recorded by one a minute behind the maturity.
        LedgerEntry spent = RedemptionDecision.SpendOrHold(At(live, settings, matured.AddMinutes(1)), new Loyalty.Redemption("r1", "mug", 1), false, 1, RedemptionDecision.Stock.Secured).Entry!
            with { RecordedAt = matured.AddMinutes(-1), OccurredAt = matured.AddMinutes(-1) };
        live.Apply(spent, 8);
        MemberState rebuilt = Enrolled();
        rebuilt.Apply(earned, 8);

        // Before, the rebuild threw "No lot expiring …", and the member could never load again.
        rebuilt.Apply(spent, 8);

        Assert.Equal((40L, 40L), (live.Balance.Value, rebuilt.Balance.Value));
        Assert.Equal(live.Lots.Spendable, rebuilt.Lots.Spendable);
    }

    [Fact]
    public void AnEntrySpendingALotOfTwoPendingPurchasesOfOneExpiry_MaturesBoth_AndRebuilds()
    {
        MemberState live = TwoPendingPurchasesOfOneExpiry(out ProgramSettings settings, out LedgerEntry first, out LedgerEntry second);
        DateTimeOffset bothMatured = second.AvailableAt!.Value.AddMinutes(1);
        live.Lots.Mature(bothMatured);
        MemberState rebuilt = RebuiltAfterASpendRecordedBeforeMaturity(live, settings, bothMatured, mugs: 2, first, second);

        Assert.Equal(first.DetailsAs<EarnDetails>()!.ExpiresAt, second.DetailsAs<EarnDetails>()!.ExpiresAt);
        Assert.Equal((80L, 80L), (live.Balance.Value, rebuilt.Balance.Value));
        Assert.Equal(live.Lots.Spendable, rebuilt.Lots.Spendable);
    }

    [Fact]
    public void AFullReturnAfterALotExpired_DoesNotGiveBackItsPoints_SoNoReservationCanSpendThem()
    {
        ProgramSettings settings = Expiring12() with { ReservationHoldSeconds = 86_400 };
        DateTimeOffset expiry = OldExpiry;
        MemberState state = Enrolled();
        state.Apply(AccrualDecision.Decide(At(state, settings, Now), Purchase("old", 60_00), 1, null), 8);
        state.Apply(AccrualDecision.Decide(At(state, settings, Now.AddMonths(6)), Purchase("new", 50_00), 1, null), 8);
        // A basket paid with the mug, from the 60 points about to expire; then a reservation, which can sit only on the rest.
        LedgerEntry basket = AccrualDecision.Decide(At(state, settings, expiry.AddHours(-2)), Purchase("basket", 10_00), 2, null);
        state.Apply(basket, 8);
        LedgerEntry paid = RedemptionDecision.SpendOrHold(At(state, settings, expiry.AddHours(-2)), new Loyalty.Redemption("basket#redeem", "mug", 1), false, 3, RedemptionDecision.Stock.Secured).Entry!;
        state.Apply(paid, 8);
        state.Apply(RedemptionDecision.SpendOrHold(At(state, settings, expiry.AddHours(-1)), new Loyalty.Redemption("h1", "pen", 1), true, 4, RedemptionDecision.Stock.Secured).Entry!, 8);
        DateTimeOffset later = expiry.AddHours(1);

        Decision returned = ReturnDecision.Decide(At(state, settings, later), Return("r1", "basket", 10_00), 5, basket, paid, null);
        state.Apply(returned.Entry!, 8);

        // Before, the 60 points came back into their expired lot, the reservation counted as sitting
        // on them, and the member could spend all 50 good points besides: 70 spent of 50.
        Assert.Equal(["old"], paid.DetailsAs<RedeemDetails>()!.Lots!.Select(l => l.LotId));
        Assert.Equal((true, null), (returned.Entry!.DetailsAs<ReturnDetails>()!.Full, returned.Entry.DetailsAs<ReturnDetails>()!.Restored));
        // Not given back, and no longer redeemed either: the mug came back with the basket; the points expired.
        Assert.Equal([("old", 60L)], returned.Entry.DetailsAs<ReturnDetails>()!.ExpiredUnrestored!.Select(l => (l.LotId, l.Points)));
        Assert.Equal((0L, 60L), (state.LifetimeRedeemed.Value, state.LifetimeExpired.Value));
        Assert.Equal(30L, state.AvailableAt(later).Value);
        Assert.Equal([("new", 20L)], RedemptionDecision.End(At(state, settings, later), state.Lots.FindHold("h1")!, true, "h1#end", 6).Entry!.DetailsAs<RedeemDetails>()!.Lots!.Select(l => (l.LotId, l.Points)));
    }

    [Fact]
    public void AnEntrySpendingALotOneOfTwoPendingPurchasesMade_MaturesOnlyThatOne()
    {
        MemberState live = TwoPendingPurchasesOfOneExpiry(out ProgramSettings settings, out LedgerEntry first, out LedgerEntry second);
        DateTimeOffset firstMatured = first.AvailableAt!.Value.AddMinutes(1);
        live.Lots.Mature(firstMatured);
        MemberState rebuilt = RebuiltAfterASpendRecordedBeforeMaturity(live, settings, firstMatured, mugs: 1, first, second);

        // Maturing every pending lot of that expiry would leave p2 spendable in the rebuild alone.
        Assert.Equal((40L, 40L), (live.Balance.Value, rebuilt.Balance.Value));
        Assert.Equal(live.Lots.Spendable, rebuilt.Lots.Spendable);
        Assert.Equal(["p2"], rebuilt.Lots.Pending.Select(p => p.TransactionId));
    }

    [Fact]
    public void PointsMergedInJustBeforeTheyExpire_CannotMeetAReservationTheSurvivorMadeEarlier()
    {
        ProgramSettings settings = Expiring12() with { ReservationHoldSeconds = 86_400 };
        DateTimeOffset expiry = OldExpiry;
        MemberState duplicate = Enrolled();
        duplicate.Apply(AccrualDecision.Decide(At(duplicate, settings, Now), Purchase("d1", 60_00), 1, null), 8);
        MemberState survivor = Enrolled();
        survivor.Apply(AccrualDecision.Decide(At(survivor, settings, Now.AddMonths(6)), Purchase("s1", 50_00), 1, null), 8);
        survivor.Apply(RedemptionDecision.SpendOrHold(At(survivor, settings, expiry.AddHours(-1)), new Loyalty.Redemption("h1", "pen", 2), true, 2, RedemptionDecision.Stock.Secured).Entry!, 8);
        MergeTransfer transfer = LifecycleDecision.Detach(At(duplicate, settings, expiry.AddSeconds(-1)), "s").Entry!.DetailsAs<MergedAwayDetails>()!.Merge!;
        survivor.Apply(LifecycleDecision.MergeIn(new Decider("p", "s", survivor, new ProgramConfig("p", settings, 1), expiry.AddSeconds(-1)), "m", transfer, "duplicate").Entry!, 8);
        DateTimeOffset after = expiry.AddSeconds(1);

        // Before, the reservation counted as sitting on the duplicate's lot, which expired a second
        // after it arrived, and the survivor could spend all 50 of its own points: 90 spent of 50.
        Assert.Equal((110L, 10L), (survivor.Balance.Value, survivor.AvailableAt(after).Value));
        Assert.Equal([("d1", 60L)], Expiring.Next(survivor, settings.ExpiryRules, after)!.Lots.Select(l => (l.LotId, l.Points)));
    }

    [Fact]
    public void AMergeHandedOverOnASiloAhead_MaturesTheSurvivorsLotsOfThoseDays_SoAReturnOfTheDuplicatesPurchaseTakesNoneOfThem()
    {
        ProgramSettings settings = Settings() with { PendingDays = 14 };
        var bought = new DateTimeOffset(2026, 6, 2, 10, 0, 0, TimeSpan.Zero);
        var spendable = new DateTimeOffset(2026, 6, 17, 0, 0, 0, TimeSpan.Zero);
        MemberState duplicate = Enrolled();
        LedgerEntry theirs = AccrualDecision.Decide(At(duplicate, settings, bought), Purchase("d1", 10_00), 1, null);
        duplicate.Apply(theirs, 8);
        MemberState survivor = Enrolled();
        survivor.Apply(AccrualDecision.Decide(At(survivor, settings, bought.AddHours(1)), Purchase("s1", 30_00), 1, null), 8);

        // The duplicate lets go on a silo whose clock has passed midnight; the survivor's is a minute short of it.
        duplicate.Lots.Mature(spendable.AddMinutes(1));
        MergeTransfer transfer = LifecycleDecision.Detach(At(duplicate, settings, spendable.AddMinutes(1)), "s").Entry!.DetailsAs<MergedAwayDetails>()!.Merge!;
        var behind = new Decider("p", "s", survivor, new ProgramConfig("p", settings, 1), spendable.AddMinutes(-1));
        survivor.Apply(LifecycleDecision.MergeIn(behind, "m", transfer, "duplicate").Entry!, 8);
        ReturnDetails returned = ReturnDecision.Decide(new Decider("p", "s", survivor, new ProgramConfig("p", settings, 1), spendable.AddMinutes(-1)),
            Return("r1", "d1", 10_00), 2, theirs, null, null).Entry!.DetailsAs<ReturnDetails>()!;

        // Before, the survivor's lot of that day (its own 30 points) still waited, and the return took
        // 10 of them as the duplicate's, whose 10 had arrived spendable and stayed so.
        Assert.Equal((spendable.AddMinutes(1), 10L, 0), (transfer.HandedOverAt, transfer.Balance, transfer.Pending.Count));
        Assert.Equal((0L, 10L), (returned.PendingReversed, returned.ActiveReversed));
        Assert.Equal((40L, 0L), (survivor.Balance.Value, survivor.Lots.PendingTotal.Value));
    }

    [Fact]
    public void ASupportDebit_AfterALotExpired_TakesUnexpiredPointsFirst()
    {
        ProgramSettings settings = Expiring12();
        MemberState state = WithTwoLots(settings);

        LedgerEntry taken = AdjustmentDecision.Decide(At(state, settings, OldExpiry.AddHours(1)), new Adjustment("s1", new Points(-30), "correction"), 1).Entry!;

        // Before, it took 30 of the expired 100, which the wake was about to write off: it cost the member nothing.
        Assert.Equal([("new", 30L)], taken.DetailsAs<AdjustDetails>()!.Lots!.Select(l => (l.LotId, l.Points)));
    }

    [Fact]
    public void ACommit_WhosePointsASupportDebitTookSince_IsRefused_ThoughExpiredPointsRemain()
    {
        ProgramSettings settings = Expiring12() with { ReservationHoldSeconds = 86_400 };
        MemberState state = Enrolled();
        state.Apply(AccrualDecision.Decide(At(state, settings, Now), Purchase("old", 50_00), 1, null), 8);
        state.Apply(AccrualDecision.Decide(At(state, settings, Now.AddMonths(6)), Purchase("new", 30_00), 1, null), 8);
        DateTimeOffset later = OldExpiry.AddHours(1);
        // Made after "old" expired, so only "new" may meet it; support then takes "new".
        state.Apply(RedemptionDecision.SpendOrHold(At(state, settings, later), new Loyalty.Redemption("h1", "pen", 1), true, 2, RedemptionDecision.Stock.Secured).Entry!, 8);
        state.Apply(AdjustmentDecision.Decide(At(state, settings, later), new Adjustment("s1", new Points(-30), "correction"), 3).Entry!, 8);

        Decision commit = RedemptionDecision.End(At(state, settings, later.AddMinutes(5)), state.Lots.FindHold("h1")!, true, "h1#end", 4);

        Assert.Equal(50L, state.Balance.Value);
        Assert.Equal(LoyaltyError.FailedPrecondition, commit.Error);
        Assert.Contains("only 0 of the balance's 50 points may meet the 20 points reservation 'h1' holds", commit.Message, StringComparison.Ordinal);
        Assert.Contains("had expired when it was made", commit.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AReservation_WhenTheMaximumOfHoldsIsReachedPartlyByLapsedOnes_IsRefusedUnavailable_NamingThem()
    {
        ProgramSettings settings = Catalogue() with { ReservationHoldSeconds = Limits.ReservationHoldSecondsMin };
        MemberState state = WithPoints(60 * (Limits.OpenReservationsMax + 1));
        for (int i = 0; i < Limits.OpenReservationsMax; i++)
        {
            // The first two made early enough to have lapsed by the last decision below.
            DateTimeOffset at = i < 2 ? Now : Now.AddSeconds(Limits.ReservationHoldSecondsMin);
            state.Apply(RedemptionDecision.SpendOrHold(At(state, settings, at), new Loyalty.Redemption($"h{i}", "mug", 1), true, 2, RedemptionDecision.Stock.Secured).Entry!, 8);
        }

        DateTimeOffset later = Now.AddSeconds(Limits.ReservationHoldSecondsMin + 1);
        Decision refused = RedemptionDecision.SpendOrHold(At(state, settings, later), new Loyalty.Redemption("next", "mug", 1), true, 2, RedemptionDecision.Stock.Secured);
        Decision full = RedemptionDecision.SpendOrHold(At(state, settings, Now.AddSeconds(Limits.ReservationHoldSecondsMin - 1)), new Loyalty.Redemption("next", "mug", 1), true, 2, RedemptionDecision.Stock.Secured);

        Assert.Equal(LoyaltyError.Unavailable, refused.Error);
        Assert.Contains("2 of the member's reservations have lapsed and their end is not recorded yet", refused.Message, StringComparison.Ordinal);
        Assert.Equal(LoyaltyError.FailedPrecondition, full.Error);
        Assert.Contains($"already holds {Limits.OpenReservationsMax} open reservations", full.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Staged_OfADecisionThatWritesNothing_AnswersTheStagesSuccess_AndWithoutOneThrows()
    {
        string? answer = Decision.Nothing.Staged(out LedgerEntry? entry, (_, m) => m, () => "done");

        Assert.Equal("done", answer);
        Assert.Null(entry);
        Assert.Throws<InvalidOperationException>(() => Decision.Nothing.Staged<string>(out _, (_, m) => m));
    }

    [Fact]
    public void Detach_WithAReservationOpen_IsRefused_AfterItLetGo_AgainToTheSameSurvivorWritesNothing_ToAnotherIsRefused()
    {
        MemberState duplicate = WithPoints(100);
        MemberState reserved = WithPoints(100);
        reserved.Apply(RedemptionDecision.SpendOrHold(Decider(reserved, Catalogue()), new Loyalty.Redemption("h1", "mug", 1), true, 1, RedemptionDecision.Stock.Secured).Entry!, 8);

        Decision blocked = LifecycleDecision.Detach(Decider(reserved, Catalogue()), "s");
        Decision detached = LifecycleDecision.Detach(Decider(duplicate), "s");
        duplicate.Apply(detached.Entry!, 8);
        Decision again = LifecycleDecision.Detach(Decider(duplicate), "s");
        Decision elsewhere = LifecycleDecision.Detach(Decider(duplicate), "t");

        Assert.Equal(LoyaltyError.FailedPrecondition, blocked.Error);
        Assert.Contains("reservations that have not ended", blocked.Message, StringComparison.Ordinal);
        Assert.Equal((LedgerEntryKind.MergedAway, -100L, 100L), (detached.Entry!.Kind, detached.Entry.Points.Value, detached.Entry.DetailsAs<MergedAwayDetails>()!.Merge!.Balance));
        Assert.Equal((0L, "s"), (duplicate.Balance.Value, duplicate.MergedInto));
        Assert.True(again.Done);
        Assert.Equal((LoyaltyError.FailedPrecondition, "member 'm' was already merged into 's'"), (elsewhere.Error, elsewhere.Message));
    }

    [Fact]
    public void Detach_MovingMoreThanTheSurvivorsRoom_IsRefused_AndExactlyItsRoomIsTaken()
    {
        MemberState duplicate = WithPoints(100);
        long moved = Headroom.MagnitudeOf(LifecycleDecision.Detach(Decider(duplicate), "s").Entry!);

        Decision refused = LifecycleDecision.Detach(Decider(duplicate), "s", survivorRoom: moved - 1);
        Decision taken = LifecycleDecision.Detach(Decider(duplicate), "s", survivorRoom: moved);

        Assert.Equal(LoyaltyError.FailedPrecondition, refused.Error);
        Assert.Equal($"duplicate_member_id: merging 'm' would move {moved} points and minor units into 's', which may take only {moved - 1} more under the engine's limit of {Headroom.VolumeMax} per member; nothing was recorded", refused.Message);
        Assert.Equal(LedgerEntryKind.MergedAway, taken.Entry!.Kind);
    }

    [Fact]
    public void MergeIn_ConservesThePoints_InheritsTheReferrerWhenItHasNone_AndASecondTimeWritesNothing()
    {
        MemberState duplicate = Enrolled(referredBy: "ann");
        duplicate.Apply(AdjustmentDecision.Decide(Decider(duplicate), new Adjustment("a1", new Points(70), "welcome"), 1).Entry!, 8);
        MergeTransfer transfer = LifecycleDecision.Detach(Decider(duplicate), "s").Entry!.DetailsAs<MergedAwayDetails>()!.Merge!;
        MemberState survivor = WithPoints(30);
        Decider atSurvivor = new("p", "s", survivor, new ProgramConfig("p", Settings(), 1), Now);

        Decision merged = LifecycleDecision.MergeIn(atSurvivor, "m", transfer, "duplicate account");
        survivor.Apply(merged.Entry!, 8);
        Decision again = LifecycleDecision.MergeIn(atSurvivor with { State = survivor }, "m", transfer, "duplicate account");

        Assert.Equal((70L, true), (merged.Entry!.Points.Value, merged.Entry.DetailsAs<MergedInDetails>()!.InheritsReferrer));
        Assert.Equal((100L, "ann"), (survivor.Balance.Value, survivor.Referral.ReferredBy));
        Assert.True(again.Done);
    }

    [Fact]
    public void MergeIn_OfAReferredNewAccount_IntoACustomerWhoHadBought_TakesTheReferrer_ButNoReferralReward()
    {
        // A customer who already bought cannot be given a referrer (it comes before a first
        // purchase); a new account made with a friend's code and merged into it must not open one either.
        ProgramSettings settings = Settings() with { Referrals = new ReferralPolicy(ReferrerPoints: 100, ReferredPoints: 50, MinPurchaseMinor: 10_00) };
        MemberState duplicate = Enrolled(referredBy: "ann");
        MergeTransfer transfer = LifecycleDecision.Detach(Decider(duplicate, settings), "s").Entry!.DetailsAs<MergedAwayDetails>()!.Merge!;
        MemberState customer = Enrolled(), newcomer = Enrolled();
        customer.Apply(AccrualDecision.Decide(Decider(customer, settings), Purchase("old", 25_00), 1, null), 8);

        Decision intoCustomer = LifecycleDecision.MergeIn(Decider(customer, settings), "m", transfer, "same person");
        customer.Apply(intoCustomer.Entry!, 8);
        Decision intoNewcomer = LifecycleDecision.MergeIn(Decider(newcomer, settings), "m", transfer, "same person");
        newcomer.Apply(intoNewcomer.Entry!, 8);
        LedgerEntry customerBuys = AccrualDecision.Decide(Decider(customer, settings), Purchase("t1", 25_00), 1, null);
        LedgerEntry newcomerBuys = AccrualDecision.Decide(Decider(newcomer, settings), Purchase("t1", 25_00), 1, null);

        Assert.Equal((true, true), (intoCustomer.Entry!.DetailsAs<MergedInDetails>()!.InheritsReferrer, intoCustomer.Entry.DetailsAs<MergedInDetails>()!.InheritedAfterPurchases));
        Assert.Equal(("ann", "ann"), (customer.Referral.ReferredBy, newcomer.Referral.ReferredBy));
        Assert.Equal((25L, 0L), (customerBuys.Points.Value, customerBuys.DetailsAs<EarnDetails>()!.ReferrerReward));
        Assert.Equal((75L, 100L), (newcomerBuys.Points.Value, newcomerBuys.DetailsAs<EarnDetails>()!.ReferrerReward));
    }

    [Fact]
    public void Detach_AfterALotExpired_WritesItOffFirst_SoItsPointsPayNoneOfTheSurvivorsDebt()
    {
        ProgramSettings settings = Expiring12();
        MemberState duplicate = WithTwoLots(settings);
        DateTimeOffset later = OldExpiry.AddHours(1);
        MemberState survivor = Enrolled();
        survivor.Apply(AdjustmentDecision.Decide(At(survivor, settings, later), new Adjustment("s1", new Points(-80), "chargeback"), 1).Entry!, 8);

        Decision writeOff = LifecycleDecision.Detach(At(duplicate, settings, later), "s");
        duplicate.Apply(writeOff.Entry!, 8);
        Decision detached = LifecycleDecision.Detach(At(duplicate, settings, later), "s");
        duplicate.Apply(detached.Entry!, 8);
        MergeTransfer transfer = detached.Entry!.DetailsAs<MergedAwayDetails>()!.Merge!;
        survivor.Apply(LifecycleDecision.MergeIn(At(survivor, settings, later), "m2", transfer, "duplicate").Entry!, 8);

        // Before, the detach handed over the 100 expired points with the 50 good ones, and they paid
        // the survivor's debt of 80: a balance of 70 instead of -30.
        Assert.Equal((LedgerEntryKind.Expire, -100L), (writeOff.Entry!.Kind, writeOff.Entry.Points.Value));
        Assert.Equal((LedgerEntryKind.MergedAway, -50L), (detached.Entry.Kind, detached.Entry.Points.Value));
        Assert.Equal([("new", 50L)], transfer.Lots.Select(l => (l.LotId, l.Points)));
        Assert.Equal(-30L, survivor.Balance.Value);
    }

    [Fact]
    public void MergeIn_KeepsTheInactivityClockAGrantStartedForTheDuplicatesPoints()
    {
        ProgramSettings settings = Settings() with { Expiry = new ExpiryPolicy(ExpiryMode.None, 0, InactivityMonths: 6) };
        MemberState duplicate = Enrolled();
        DateTimeOffset granted = Now.AddMonths(8);
        duplicate.Apply(AdjustmentDecision.Decide(At(duplicate, settings, granted), new Adjustment("a1", new Points(50), "goodwill"), 1).Entry!, 8);
        MergeTransfer transfer = LifecycleDecision.Detach(At(duplicate, settings, granted.AddMonths(1)), "s").Entry!.DetailsAs<MergedAwayDetails>()!.Merge!;
        MemberState survivor = Enrolled();
        survivor.Apply(LifecycleDecision.MergeIn(new Decider("p", "s", survivor, new ProgramConfig("p", settings, 1), granted.AddMonths(1)), "m", transfer, "duplicate").Entry!, 8);

        // Before, the survivor's clock ran from the two members' last activity, months past: the
        // duplicate's goodwill points expired at the merge, dated before they were granted.
        Assert.Equal(granted, duplicate.GrantedIntoEmptyAt);
        Assert.Equal(granted.AddMonths(6), Expiring.InactivityDeadline(survivor, settings.ExpiryRules));
        Assert.Null(Expiring.Next(survivor, settings.ExpiryRules, granted.AddMonths(2)));
    }

    [Fact]
    public void MergeLimits_BeyondTheMostReferralsOneMemberMayHold_IsRefusedNamingTheCount_SharedOnesCountOnce()
    {
        MemberState survivor = Enrolled();
        survivor.Apply(ReferralDecision.Referral(Decider(survivor), "shared").Entry!, 8);
        string[] theirs = ["shared", .. Enumerable.Range(0, Limits.ReferralsPerMemberMax).Select(i => "r" + i)];

        Decision? tooMany = LifecycleDecision.MergeLimits(Decider(survivor), 0, theirs);
        Decision? fits = LifecycleDecision.MergeLimits(Decider(survivor), 0, theirs[..^1]);

        Assert.Equal(LoyaltyError.FailedPrecondition, tooMany?.Error);
        Assert.Equal($"member 'm' would have {Limits.ReferralsPerMemberMax + 1} referrals, more than the {Limits.ReferralsPerMemberMax} one member may", tooMany?.Message);
        Assert.Null(fits);
    }

    [Fact]
    public void Erase_WhileAReservationIsOpen_IsRefusedNamingIt_ButNotOncePastItsLapse_WhileAMergeStillWaitsForItsEnd()
    {
        MemberState state = WithPoints(100);
        LedgerEntry hold = RedemptionDecision.SpendOrHold(Decider(state, Catalogue()), new Loyalty.Redemption("h1", "mug", 1), reserve: true, 1, RedemptionDecision.Stock.Secured).Entry!;
        state.Apply(hold, 8);
        DateTimeOffset pastLapse = hold.DetailsAs<ReserveDetails>()!.LapsesAt!.Value.AddSeconds(1);
        var afterLapse = new Decider("p", "m", state, new ProgramConfig("p", Catalogue(), 1), pastLapse);

        Decision whileOpen = LifecycleDecision.Erase(Decider(state, Catalogue()), "asked by the member");
        Decision lapsed = LifecycleDecision.Erase(afterLapse, "asked by the member");
        Decision merge = LifecycleDecision.Detach(afterLapse, "survivor");

        Assert.Equal(LoyaltyError.FailedPrecondition, whileOpen.Error);
        Assert.Contains("reservations that have not ended (h1)", whileOpen.Message, StringComparison.Ordinal);
        Assert.Equal(LedgerEntryKind.Erase, lapsed.Entry?.Kind);
        Assert.Equal(LoyaltyError.FailedPrecondition, merge.Error);
        Assert.Contains("(h1)", merge.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Erase_ASecondTime_WritesNothing_AndAnErasedMemberTakesNoProfile()
    {
        MemberState state = Enrolled();
        state.Apply(LifecycleDecision.Erase(Decider(state), "asked by the member").Entry!, 8);

        Assert.True(LifecycleDecision.Erase(Decider(state), "again").Done);
        Decision profile = LifecycleDecision.Profile(Decider(state), ["email"], 0);
        Assert.Equal((LoyaltyError.FailedPrecondition, "member 'm' was erased"), (profile.Error, profile.Message));
    }

    [Fact]
    public void Repoint_OfALinkTheMemberDoesNotHave_WritesNothing_OfItsReferrer_RenamesIt()
    {
        MemberState state = Enrolled(referredBy: "old");

        Decision unrelated = LifecycleDecision.Repoint(Decider(state), "someone", "new");
        Decision repointed = LifecycleDecision.Repoint(Decider(state), "old", "new");
        state.Apply(repointed.Entry!, 8);

        Assert.True(unrelated.Done);
        Assert.Equal("new", state.Referral.ReferredBy);
    }

    [Fact]
    public void TradeIn_OfACategoryTheProgramDoesNotTake_IsRefused_AcceptedInspectionCreditsTheWallet_RejectedGivesNothing()
    {
        MemberState state = Enrolled();
        ProgramSettings settings = Settings() with { TradeIn = new TradeInPolicy([new TradeInRate("jacket", TradeInCondition.Good, 25_00)]) };
        Decision refused = ProgrammeDecision.TradeIn(Decider(state, settings), new TradeIn("ti0", "boots", null), 1);
        Decision submitted = ProgrammeDecision.TradeIn(Decider(state, settings), new TradeIn("ti1", "jacket", "store-1"), 1);
        state.Apply(submitted.Entry!, 8);
        OpenTradeIn open = state.TradeIns.Single();

        Decision noRate = ProgrammeDecision.Inspection(Decider(state, settings), open, TradeInCondition.Worn, "ti1#inspected");
        Decision rejected = ProgrammeDecision.Inspection(Decider(state, settings), open, TradeInCondition.Rejected, "ti1#inspected");
        Decision accepted = ProgrammeDecision.Inspection(Decider(state, settings), open, TradeInCondition.Good, "ti1#inspected");
        state.Apply(accepted.Entry!, 8);

        Assert.Equal((LoyaltyError.FailedPrecondition, "category 'boots' is not in the program's trade-in table"), (refused.Error, refused.Message));
        Assert.Equal(LoyaltyError.FailedPrecondition, noRate.Error);
        Assert.Equal((LedgerEntryKind.TradeInRejected, 0L), (rejected.Entry!.Kind, rejected.Entry.AmountMinor));
        Assert.Equal((LedgerEntryKind.TradeInAccepted, 25_00L), (accepted.Entry!.Kind, accepted.Entry.DetailsAs<TradeInAcceptedDetails>()!.WalletMinor));
        Assert.Equal(25_00, state.WalletMinor);
        Assert.Empty(state.TradeIns);
    }

    [Fact]
    public void Membership_TrialAgain_WritesNothing_CancellationOfNone_IsRefused_ASecondCancellationWritesNothing()
    {
        MemberState state = Enrolled();
        ProgramSettings settings = Settings() with { MembershipPlans = [new MembershipPlan("plus", "Plus", 9_99, 12, TrialDays: 30)] };
        Decision none = ProgrammeDecision.Cancellation(Decider(state, settings), "no longer wanted");
        Decision trial = ProgrammeDecision.Trial(Decider(state, settings), "plus");
        state.Apply(trial.Entry!, 8);

        Decision again = ProgrammeDecision.Trial(Decider(state, settings), "plus");
        Decision cancelled = ProgrammeDecision.Cancellation(Decider(state, settings), "no longer wanted");
        state.Apply(cancelled.Entry!, 8);

        Assert.Equal((LoyaltyError.FailedPrecondition, "member 'm' holds no membership to cancel"), (none.Error, none.Message));
        Assert.IsType<MembershipStartedDetails>(trial.Entry!.Details);
        Assert.True(again.Done);
        Assert.True(ProgrammeDecision.Cancellation(Decider(state, settings), "again").Done);
    }

    [Fact]
    public void Cause_NotInTheProgram_IsNotFound_TheMembersOwnAgainWritesNothing()
    {
        MemberState state = Enrolled();
        ProgramSettings settings = Settings() with { Giving = new GivingPolicy(100, [new Cause("trees", "Trees")]) };
        Decision unknown = ProgrammeDecision.Cause(Decider(state, settings), "whales");
        state.Apply(ProgrammeDecision.Cause(Decider(state, settings), "trees").Entry!, 8);

        Assert.Equal(LoyaltyError.NotFound, unknown.Error);
        Assert.Equal("trees", state.Cause);
        Assert.True(ProgrammeDecision.Cause(Decider(state, settings), "trees").Done);
        Assert.Equal(LoyaltyError.FailedPrecondition, ProgrammeDecision.Cause(Decider(state), "trees").Error);
    }

    [Fact]
    public void Flags_Unchanged_WriteNothing_Changed_NameTheFlagsFromNowOn()
    {
        MemberState state = Enrolled();
        Decision set = LifecycleDecision.Flags(Decider(state), FlagChange.ReplaceWith(["card"]));
        state.Apply(set.Entry!, 8);

        Assert.Equal(["card"], set.Entry!.DetailsAs<FlagsDetails>()!.Flags);
        Assert.True(LifecycleDecision.Flags(Decider(state), FlagChange.ReplaceWith(["card"])).Done);
    }

    [Fact]
    public void Due_ExpiryOfLots_TakesExactlyThoseLots_AndWithNothingDue_TheProgrammeWritesNothing()
    {
        MemberState state = WithPoints(100);
        var work = new DueWork(DueKind.Expire, [new LotUse("a1", 40, null)], Now);

        Decision expired = DueDecision.Of(Decider(state), work, "#end", 2);
        state.Apply(expired.Entry!, 8);

        Assert.Equal((LedgerEntryKind.Expire, -40L, "lifespan"), (expired.Entry!.Kind, expired.Entry.Points.Value, expired.Entry.Reason));
        Assert.Equal((60L, 40L), (state.Balance.Value, state.LifetimeExpired.Value));
        Assert.True(DueDecision.Programme(Decider(state)).Done);
    }

    /// <summary>A negative adjustment standing in for points spent, so the balance is below what a reward gave.</summary>
    private static LedgerEntry RedemptionFree(MemberState state, long points) =>
        AdjustmentDecision.Decide(Decider(state), new Adjustment("spent", new Points(-points), "spent"), 1).Entry!;

    private static ProgramSettings Catalogue() => Settings() with { Rewards = [new Reward("mug", "Mug", RewardKind.Product, 60, 5_00)] };

    private static MemberState WithPoints(long points)
    {
        MemberState state = Enrolled();
        state.Apply(AdjustmentDecision.Decide(Decider(state), new Adjustment("a1", new Points(points), "welcome"), 1).Entry!, 8);
        return state;
    }

    private static ProgramSettings Settings() => new("P", "USD", 2, 1);

    /// <summary>
    /// When points that became spendable at <see cref="Now"/> expire under <see cref="Expiring12"/>:
    /// as the day twelve months later ends (lot "old" of <see cref="WithTwoLots"/>).
    /// </summary>
    private static readonly DateTimeOffset OldExpiry = new(2027, 6, 2, 0, 0, 0, TimeSpan.Zero);

    private static ProgramSettings Expiring12() => Catalogue() with
    {
        Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 12),
        Rewards = [.. Catalogue().Rewards!, new Reward("pen", "Pen", RewardKind.Product, 20, 1_00)],
    };

    /// <summary>
    /// Spends <paramref name="mugs"/> mugs decided at <paramref name="decidedAt"/> on the live member
    /// but recorded a minute before the first purchase matured (a clock behind), and rebuilds the
    /// member from the two purchases and that spend.
    /// </summary>
    private static MemberState RebuiltAfterASpendRecordedBeforeMaturity(MemberState live, ProgramSettings settings, DateTimeOffset decidedAt, int mugs, LedgerEntry first, LedgerEntry second)
    {
        DateTimeOffset recorded = first.AvailableAt!.Value.AddMinutes(-1);
        LedgerEntry spent = RedemptionDecision.SpendOrHold(At(live, settings, decidedAt), new Loyalty.Redemption("r1", "mug", mugs), false, 3, RedemptionDecision.Stock.Secured).Entry!
            with { RecordedAt = recorded, OccurredAt = recorded };
        live.Apply(spent, 8);
        MemberState rebuilt = Enrolled();
        rebuilt.Apply(first, 8);
        rebuilt.Apply(second, 8);
        rebuilt.Apply(spent, 8);
        return rebuilt;
    }

    /// <summary>Two purchases of 100 points a day apart, pending 14 days, whose lots expire at the same month's end.</summary>
    private static MemberState TwoPendingPurchasesOfOneExpiry(out ProgramSettings settings, out LedgerEntry first, out LedgerEntry second)
    {
        settings = Catalogue() with { PendingDays = 14, Expiry = new ExpiryPolicy(ExpiryMode.EndOfMonth, 12) };
        MemberState state = Enrolled();
        first = AccrualDecision.Decide(At(state, settings, Now), Purchase("p1", 100_00), 1, null);
        state.Apply(first, 8);
        second = AccrualDecision.Decide(At(state, settings, Now.AddDays(1)), Purchase("p2", 100_00), 2, null);
        state.Apply(second, 8);
        return state;
    }

    /// <summary>100 points expiring at <see cref="OldExpiry"/> (lot "old"), 50 six months later (lot "new").</summary>
    private static MemberState WithTwoLots(ProgramSettings settings)
    {
        MemberState state = Enrolled();
        state.Apply(AccrualDecision.Decide(At(state, settings, Now), Purchase("old", 100_00), 1, null), 8);
        state.Apply(AccrualDecision.Decide(At(state, settings, Now.AddMonths(6)), Purchase("new", 50_00), 1, null), 8);
        return state;
    }

    private static Decider At(MemberState state, ProgramSettings settings, DateTimeOffset at) =>
        new("p", "m", state, new ProgramConfig("p", settings, 1), at);

    private static Decider Decider(MemberState state, ProgramSettings? settings = null) =>
        new("p", "m", state, new ProgramConfig("p", settings ?? Settings(), 1), Now);

    private static MemberState Enrolled(string? referredBy = null)
    {
        var state = new MemberState();
        state.Apply(new LedgerEntry("p", "m", 1, LedgerEntryKind.Enrol, Points.Zero, null, 0, null, 0, null, null, referredBy,
            Now.AddDays(-1), Now.AddDays(-1), 1, null, new EnrolDetails()), 8);
        return state;
    }

    private static Purchase Purchase(string txn, long amountMinor) =>
        new(txn, "p", "m", "store-1", new Money(amountMinor, "USD"), Now.AddHours(-1), []);

    private static PurchaseReturn Return(string txn, string original, long amountMinor) =>
        new(txn, "p", "m", original, "store-1", new Money(amountMinor, "USD"), Now, []);

    private static LedgerEntry Earned(string txn, long amountMinor) =>
        AccrualDecision.Decide(Decider(Enrolled()), Purchase(txn, amountMinor), 1, null);
}
