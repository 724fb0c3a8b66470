using Loyalty.Grains;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Loyalty.Tests.Redemption;

/// <summary>Referral codes, rewards on the first qualifying purchase, clawback and refusals, through real grains on a real database.</summary>
public abstract class ReferralGrainTests(ClusterFixture fixture)
{
    private readonly string _program = "f" + Guid.NewGuid().ToString("N")[..10];
    private int _txn;

    private static ProgramSettings Shop => new("Shop", "USD", 2, 1, Referrals: new ReferralPolicy(ReferrerPoints: 500, ReferredPoints: 200, MinPurchaseMinor: 50_00));

    [Fact]
    public async Task Rewards_GoToBothSides_OnTheFirstQualifyingPurchase_NotAtSignUp()
    {
        await PutAsync(Shop);
        IMemberGrain anna = await EnrolAsync("anna");
        string code = (await anna.GetReferralCode())!;
        IMemberGrain ben = await EnrolAsync("ben", code: code.ToLowerInvariant());
        long annaAtSignUp = (await anna.Get())!.Balance.Value;

        AccrualResult small = await ben.Accrue(Buy("ben", 20_00));
        AccrualResult qualifying = await ben.Accrue(Buy("ben", 60_00, "qualify"));
        AccrualResult later = await ben.Accrue(Buy("ben", 60_00));
        MemberView annaView = (await anna.Get())!, benView = (await ben.Get())!;

        Assert.Equal(code, await anna.GetReferralCode());
        Assert.Equal(0L, annaAtSignUp);
        Assert.Equal((20L, 260L, 60L), (small.Earned.Value, qualifying.Earned.Value, later.Earned.Value));
        Assert.Contains(((EarnDetails)qualifying.Details!).Components, c => c is { Kind: ComponentKind.Referral, Code: "referral:anna", Points: 200 });
        Assert.Equal((500L, 340L), (annaView.Balance.Value, benView.Balance.Value));
        Assert.Equal(("anna", "qualify"), (benView.ReferredBy, benView.ReferralQualifiedBy));
        Assert.Equal(["ben"], annaView.Referrals);
        Assert.Equal(1, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'anna' AND kind = 13"));
        Assert.Equal(1, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'ben' AND kind = 19"));
    }

    [Fact]
    public async Task Return_OfTheQualifyingPurchase_ReversesBothRewardsOnlyWhenFull()
    {
        await PutAsync(Shop);
        IMemberGrain anna = await EnrolAsync("anna");
        IMemberGrain ben = await EnrolAsync("ben", referredBy: "anna");
        await ben.Accrue(Buy("ben", 60_00, "qualify"));

        ReturnResult half = await ben.Return(ReturnOf("ben", "qualify", 30_00));
        long annaAfterHalf = (await anna.Get())!.Balance.Value;
        ReturnResult rest = await ben.Return(ReturnOf("ben", "qualify", 30_00));
        MemberView annaView = (await anna.Get())!, benView = (await ben.Get())!;

        Assert.Equal((30L, 500L), (half.Reversed.Value, annaAfterHalf));
        Assert.Equal(230L, rest.Reversed.Value);
        Assert.True(rest.Details!.ReferralReversed);
        Assert.Equal((0L, 0L), (annaView.Balance.Value, benView.Balance.Value));
        Assert.Equal(0L, await Sql.SumPointsAsync(fixture.Storage, _program, "anna"));
    }

    [Fact]
    public async Task Return_OfAFreeLineAfterTheQualifyingPurchaseCameBackWhole_GivesNoReferralPointsBack()
    {
        await PutAsync(Shop);
        IMemberGrain anna = await EnrolAsync("anna");
        IMemberGrain ben = await EnrolAsync("ben", referredBy: "anna");
        LineItem[] lines = [new LineItem("shoes", "shoes", 1, 100_00), new LineItem("gift", "free", 1, 0)];
        await ben.Accrue(Buy("ben", 100_00, "qualify") with { LineItems = lines });
        PurchaseReturn ByLines(params ReturnLine[] returned) =>
            new($"r{Interlocked.Increment(ref _txn)}", _program, "ben", "qualify", "store-1", new Money(0, "USD"), fixture.Clock.GetUtcNow(), returned);

        // The shoes make the purchase whole (the gift cost nothing), then the gift comes back.
        ReturnResult shoes = await ben.Return(ByLines(new ReturnLine("shoes", 1, 100_00)));
        ReturnResult gift = await ben.Return(ByLines(new ReturnLine("gift", 1, 0)));
        MemberView benView = (await ben.Get())!;

        Assert.Equal((AccrualStatus.Accepted, 300L, true), (shoes.Status, shoes.Reversed.Value, shoes.Details!.ReferralReversed));
        // Before: the gift's return reversed -200 points (its entry +200), the balance did not move.
        Assert.Equal((AccrualStatus.Accepted, 0L), (gift.Status, gift.Reversed.Value));
        Assert.Equal((0L, 0L), (benView.Balance.Value, benView.Pending.Value));
        Assert.Equal(0L, await Sql.SumPointsAsync(fixture.Storage, _program, "ben"));
        Assert.Equal(0L, (await anna.Get())!.Balance.Value);
    }

    [Fact]
    public async Task Codes_AreKeptPerProgram_SoAnotherProgramHoldingTheSameCodesBlocksNobody()
    {
        await PutAsync(Shop);
        // Another program's members hold every code anna could be given, as an engine that kept
        // codes globally let them (the codes are a public hash of program and member).
        for (int salt = 0; salt < 8; salt++)
        {
            Assert.True(await fixture.Grains.GetGrain<IReferralCodeGrain>(ReferralCodes.For(_program, "anna", salt)).Claim(new ReferralOwner(_program + "-evil", "x" + salt)));
        }

        IMemberGrain anna = await EnrolAsync("anna");
        string? code = await anna.GetReferralCode();
        IMemberGrain ben = await EnrolAsync("ben", code: code);

        // Before: every salt's code was taken, and anna could never have one (UNAVAILABLE, again and again).
        Assert.Equal(ReferralCodes.For(_program, "anna", 0), code);
        Assert.Equal("anna", (await ben.Get())!.ReferredBy);
    }

    [Fact]
    public async Task ACodeIssuedWhenCodesWereGlobal_IsStillItsMembers_AndNoOtherMembersOfItsProgram()
    {
        await PutAsync(Shop);
        // As an engine that kept codes globally wrote them: anna's code under the code alone, and
        // the code that is cleo's first under the same key, held by anna too (a collision's stand-in).
        string annaCode = ReferralCodes.For(_program, "anna", 0), cleoFirst = ReferralCodes.For(_program, "cleo", 0);
        Assert.True(await fixture.Grains.GetGrain<IReferralCodeGrain>(annaCode).Claim(new ReferralOwner(_program, "anna")));
        Assert.True(await fixture.Grains.GetGrain<IReferralCodeGrain>(cleoFirst).Claim(new ReferralOwner(_program, "anna")));
        IMemberGrain anna = await EnrolAsync("anna");
        IMemberGrain cleo = await EnrolAsync("cleo");

        IMemberGrain ben = await EnrolAsync("ben", code: cleoFirst);
        string? cleoCode = await cleo.GetReferralCode();

        Assert.Equal(annaCode, await anna.GetReferralCode());
        Assert.Equal("anna", (await ben.Get())!.ReferredBy);
        Assert.Equal(ReferralCodes.For(_program, "cleo", 1), cleoCode);
    }

    [Fact]
    public async Task Refusals_NameTheProblem_AndWriteNothing()
    {
        await PutAsync(Shop);
        await fixture.Grains.GetGrain<IProgramGrain>(_program + "-other").Put(Shop);
        IMemberGrain stranger = fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program + "-other", "zoe"));
        await stranger.Enrol(new Enrolment(_program + "-other", "zoe", null));
        string otherProgramCode = (await stranger.GetReferralCode())!;
        IMemberGrain anna = await EnrolAsync("anna");
        IMemberGrain ben = await EnrolAsync("ben", referredBy: "anna");
        IMemberGrain cleo = await EnrolAsync("cleo", referredBy: "ben");
        IMemberGrain buyer = await EnrolAsync("buyer");
        await buyer.Accrue(Buy("buyer", 10_00));
        string annaCode = (await anna.GetReferralCode())!;
        long entries = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}'");

        (string Case, MemberResult Result, LoyaltyError Error, string Says)[] cases =
        [
            ("self", await anna.SetReferrer(null, annaCode), LoyaltyError.InvalidArgument, "cannot refer itself"),
            ("already referred", await ben.SetReferrer("cleo", null), LoyaltyError.AlreadyExists, "already referred by 'anna'"),
            ("cycle of two", await anna.SetReferrer("ben", null), LoyaltyError.FailedPrecondition, "cycle: anna → ben → anna"),
            ("cycle of three", await anna.SetReferrer("cleo", null), LoyaltyError.FailedPrecondition, "cycle: anna → ben → cleo → anna"),
            // As unknown as a code nobody has, in the same words: a program cannot find out which codes another has.
            ("other program", await buyer.SetReferrer(null, otherProgramCode), LoyaltyError.NotFound, $"referral code '{otherProgramCode}' is unknown"),
            ("unknown code", await buyer.SetReferrer(null, "ZZZZZZZZ"), LoyaltyError.NotFound, "unknown"),
            ("after a purchase", await buyer.SetReferrer("anna", null), LoyaltyError.FailedPrecondition, "already made a purchase"),
        ];

        foreach ((string name, MemberResult result, LoyaltyError error, string says) in cases)
        {
            Assert.True(result.Error == error && result.ErrorMessage!.Contains(says, StringComparison.Ordinal), $"{name}: {result.Error} {result.ErrorMessage}");
        }

        Assert.Equal(entries, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}'"));
        Assert.Null((await anna.Get())!.ReferredBy);
    }

    [Fact]
    public async Task Referrers_OverTheirCapForThePeriod_AreRefused_UntilThePeriodMovesOn()
    {
        await PutAsync(Shop with { Referrals = Shop.Referrals! with { CapPerPeriod = 2, PeriodDays = 30 } });
        await EnrolAsync("anna");
        await EnrolAsync("b1", referredBy: "anna");
        await EnrolAsync("b2", referredBy: "anna");

        EnrolmentResult third = await Member("b3").Enrol(new Enrolment(_program, "b3", "anna"));
        MemberView? notEnrolled = await Member("b3").Get();
        fixture.Clock.Advance(TimeSpan.FromDays(31));
        EnrolmentResult later = await Member("b3").Enrol(new Enrolment(_program, "b3", "anna"));

        Assert.Equal(LoyaltyError.FailedPrecondition, third.Error);
        Assert.Contains("has reached the program's cap of 2 referrals in 30 days", third.ErrorMessage, StringComparison.Ordinal);
        Assert.Null(notEnrolled);
        Assert.Equal(LoyaltyError.None, later.Error);
    }

    [Fact]
    public async Task SetReferrer_AfterEnrolment_LinksBothDirections_AndRewardsLater()
    {
        await PutAsync(Shop);
        IMemberGrain anna = await EnrolAsync("anna");
        IMemberGrain ben = await EnrolAsync("ben");

        MemberResult linked = await ben.SetReferrer(null, await anna.GetReferralCode());
        MemberResult again = await ben.SetReferrer("anna", null);
        await ben.Accrue(Buy("ben", 100_00));

        Assert.Equal(("anna", LoyaltyError.None), (linked.Member!.ReferredBy, again.Error));
        Assert.Equal(["ben"], (await anna.Get())!.Referrals);
        Assert.Equal(500L, (await anna.Get())!.Balance.Value);
    }

    [Fact]
    public async Task Merge_OfAReferrer_KeepsItsRewardsRecorded_SoNothingIsPaidTwice_AndAReversalSentToItReachesTheSurvivor()
    {
        await PutAsync(Shop);
        IMemberGrain rita = await EnrolAsync("rita");
        IMemberGrain sam = await EnrolAsync("sam");
        IMemberGrain ben = await EnrolAsync("ben", referredBy: "rita");
        await ben.Accrue(Buy("ben", 60_00));

        await sam.MergeFrom("rita", "duplicate");
        LoyaltyError again = await rita.SettleReferralReward("ben", 500, reverse: false);
        LoyaltyError atSurvivor = await sam.SettleReferralReward("ben", 500, reverse: false);
        long afterMerge = (await sam.Get())!.Balance.Value;

        // ben may still name rita (a member not yet repointed): the reversal of the reward she got
        // before the merge must take the 500 back from sam, who took it over with her points.
        LoyaltyError reversed = await rita.SettleReferralReward("ben", 500, reverse: true);
        LoyaltyError reversedAgain = await rita.SettleReferralReward("ben", 500, reverse: true);

        Assert.Equal((LoyaltyError.None, LoyaltyError.None, LoyaltyError.None, LoyaltyError.None), (again, atSurvivor, reversed, reversedAgain));
        Assert.Equal(500L, afterMerge);
        Assert.Equal((0L, 0L), ((await sam.Get())!.Balance.Value, (await rita.Get())!.Balance.Value));
    }

    [Fact]
    public async Task Merge_OfAReferredMember_ThenAFullReturn_ReversesTheRewardTheReferrerActuallyGave()
    {
        await PutAsync(Shop);
        IMemberGrain rita = await EnrolAsync("rita");
        IMemberGrain sam = await EnrolAsync("sam");
        IMemberGrain dora = await EnrolAsync("dora", referredBy: "rita");
        await dora.Accrue(Buy("dora", 60_00, "p1"));
        await sam.MergeFrom("dora", "duplicate");

        ReturnResult returned = await sam.Return(ReturnOf("sam", "p1", 60_00));

        Assert.True(returned.Details!.ReferralReversed);
        Assert.Equal(0L, (await rita.Get())!.Balance.Value);
        Assert.Equal(0L, (await sam.Get())!.Balance.Value);
    }

    [Fact]
    public async Task Merge_OfAReferredMemberIntoOneWithItsOwnReferrer_ThenAFullReturn_ReversesBothRewardsOfTheDuplicatesReferral()
    {
        await PutAsync(Shop);
        IMemberGrain rita = await EnrolAsync("rita");
        IMemberGrain ruth = await EnrolAsync("ruth");
        IMemberGrain sam = await EnrolAsync("sam", referredBy: "ruth");
        IMemberGrain dora = await EnrolAsync("dora", referredBy: "rita");
        await dora.Accrue(Buy("dora", 60_00, "p1"));
        await sam.MergeFrom("dora", "duplicate");
        long ritaBefore = (await rita.Get())!.Balance.Value, samBefore = (await sam.Get())!.Balance.Value;

        PurchaseReturn back = ReturnOf("sam", "p1", 60_00);
        ReturnResult returned = await sam.Return(back);
        ReturnResult resent = await sam.Return(back);
        // The survivor's own referral is untouched: its first qualifying purchase rewards ruth.
        await sam.Accrue(Buy("sam", 60_00));
        MemberView samAfter = (await sam.Get())!;
        await fixture.DeactivateAllAsync();

        Assert.Equal((500L, 260L), (ritaBefore, samBefore));
        Assert.True(returned.Details!.ReferralReversed);
        Assert.Equal(AccrualStatus.Duplicate, resent.Status);
        // Before, the full return took back dora's 200 bonus at sam, and rita kept her 500.
        Assert.Equal(0L, (await rita.Get())!.Balance.Value);
        Assert.Equal((260L, "ruth"), (samAfter.Balance.Value, samAfter.ReferredBy));
        Assert.Equal(500L, (await ruth.Get())!.Balance.Value);
        // Reloaded (from its snapshot or its ledger) and woken, the survivor owes nobody anything more:
        // it told rita once, and writes no further note.
        await sam.Wake();
        Assert.Equal(samAfter.Balance, (await sam.Get())!.Balance);
        Assert.Equal(1, await Sql.ScalarAsync(fixture.Storage,
            $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'sam' AND kind = {(int)LedgerEntryKind.ReferralSettled} AND reference = 'rita'"));
        Assert.Equal(1, await Sql.ScalarAsync(fixture.Storage,
            $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'rita' AND kind = 13 AND points < 0"));
    }

    [Fact]
    public async Task Merges_InTurn_HandOnADuplicatesReferral_SoTheLastSurvivorsFullReturnReversesIt()
    {
        await PutAsync(Shop);
        IMemberGrain rita = await EnrolAsync("rita");
        await EnrolAsync("ruth");
        await EnrolAsync("uma");
        IMemberGrain sam = await EnrolAsync("sam", referredBy: "ruth");
        IMemberGrain tom = await EnrolAsync("tom", referredBy: "uma");
        IMemberGrain dora = await EnrolAsync("dora", referredBy: "rita");
        await dora.Accrue(Buy("dora", 60_00, "p1"));
        await sam.MergeFrom("dora", "duplicate");
        await tom.MergeFrom("sam", "duplicate");

        await fixture.DeactivateAllAsync();

        ReturnResult returned = await tom.Return(ReturnOf("tom", "p1", 60_00));
        // tom's own referral is untouched: its first qualifying purchase rewards uma.
        await tom.Accrue(Buy("tom", 60_00));

        Assert.True(returned.Details!.ReferralReversed);
        Assert.Equal((0L, 260L, 500L), ((await rita.Get())!.Balance.Value, (await tom.Get())!.Balance.Value, (await Member("uma").Get())!.Balance.Value));
    }

    [Fact]
    public async Task Merge_OfAReferredMemberIntoItsOwnReferrer_ThenAFullReturn_TakesBackTheReferrersRewardThere()
    {
        (IMemberGrain rita, _) = await QualifiedReferralAsync("rita", "dora", "p1");
        await rita.MergeFrom("dora", "duplicate");
        long merged = (await rita.Get())!.Balance.Value;

        ReturnResult returned = await rita.Return(ReturnOf("rita", "p1", 60_00));

        // Before, the bonus went back with the purchase and rita kept the 500 for referring it.
        Assert.Equal(760L, merged);
        Assert.True(returned.Details!.ReferralReversed);
        Assert.Equal(0L, (await rita.Get())!.Balance.Value);
    }

    [Fact]
    public async Task AReferrerMergedIntoTheSurvivorAfterItsReferee_LosesTheRewardThereWhenThePurchaseComesBack()
    {
        await PutAsync(Shop);
        IMemberGrain rita = await EnrolAsync("rita");
        await EnrolAsync("ruth");
        IMemberGrain sam = await EnrolAsync("sam", referredBy: "ruth");
        IMemberGrain dora = await EnrolAsync("dora", referredBy: "rita");
        await dora.Accrue(Buy("dora", 60_00, "p1"));
        await sam.MergeFrom("dora", "duplicate");
        await sam.MergeFrom("rita", "duplicate");
        long merged = (await sam.Get())!.Balance.Value;

        ReturnResult returned = await sam.Return(ReturnOf("sam", "p1", 60_00));
        await fixture.DeactivateAllAsync();

        // rita's 500 came to sam with her points: the reversal, sent to rita, comes back and is taken there.
        Assert.Equal(760L, merged);
        Assert.True(returned.Details!.ReferralReversed);
        Assert.Equal(0L, (await sam.Get())!.Balance.Value);
        Assert.Equal(0L, (await rita.Get())!.Balance.Value);
    }

    [Fact]
    public async Task AReferrerMergedIntoItsReferee_LosesTheRewardThereWhenTheQualifyingPurchaseComesBack()
    {
        (IMemberGrain anna, IMemberGrain ben) = await QualifiedReferralAsync("anna", "ben", "q");
        await ben.MergeFrom("anna", "the same person");
        long merged = (await ben.Get())!.Balance.Value;

        ReturnResult returned = await ben.Return(ReturnOf("ben", "q", 60_00));

        // Before, the 500 anna got for referring ben stayed in ben's balance.
        Assert.Equal(760L, merged);
        Assert.True(returned.Details!.ReferralReversed);
        Assert.Equal((0L, 0L), ((await ben.Get())!.Balance.Value, (await anna.Get())!.Balance.Value));
    }

    [Fact]
    public async Task AReversalReachingAReferrerMidMerge_WaitsUntilTheSurvivorTookItIn_ThenTakesTheRewardBackThere()
    {
        (IMemberGrain rita, IMemberGrain sam, IMemberGrain ben) = await RewardedReferrerLetGoMidMergeAsync();

        ReturnResult returned = await ben.Return(ReturnOf("ben", "q", 60_00));
        LoyaltyError midMerge = await rita.SettleReferralReward("ben", 0, reverse: true);
        long samMidMerge = (await sam.Get())!.Balance.Value;
        MemberResult completed = await sam.MergeFrom("rita", "duplicate");
        await ben.Wake();
        LoyaltyError resent = await rita.SettleReferralReward("ben", 0, reverse: true);
        await fixture.DeactivateAllAsync();

        Assert.True(returned.Details!.ReferralReversed);
        // Before, sam recorded the reversal as 0 while rita's points were on their way, and kept the 500 they brought.
        Assert.Equal((LoyaltyError.Unavailable, 0L), (midMerge, samMidMerge));
        Assert.Equal(LoyaltyError.None, completed.Error);
        Assert.Equal(LoyaltyError.None, resent);
        Assert.Equal((0L, 0L, 0L), ((await sam.Get())!.Balance.Value, (await rita.Get())!.Balance.Value, (await ben.Get())!.Balance.Value));
        Assert.Equal(1, await Sql.ScalarAsync(fixture.Storage,
            $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'sam' AND kind = {(int)LedgerEntryKind.ReferralReward} AND points = -500"));
    }

    [Fact]
    public async Task AReversalReachingAReferrerLetGoToASurvivorErasedBeforeItTookItIn_IsSettledNotRetriedForever()
    {
        (IMemberGrain rita, IMemberGrain sam, IMemberGrain ben) = await RewardedReferrerLetGoMidMergeAsync();
        await sam.Erase("request");

        ReturnResult returned = await ben.Return(ReturnOf("ben", "q", 60_00));
        LoyaltyError again = await rita.SettleReferralReward("ben", 0, reverse: true);
        await ben.Wake();

        // sam will never take rita in: it holds none of her reward, and ben's notes are written
        // (the reward's and the reversal's), so nothing is retried.
        Assert.True(returned.Details!.ReferralReversed);
        Assert.Equal(LoyaltyError.None, again);
        Assert.Equal(2L, await CountAsync("ben", LedgerEntryKind.ReferralSettled));
    }

    [Fact]
    public async Task ALinkMade_IsConfirmedAtTheReferrerAtOnce_SoNothingIsLeftToCheck()
    {
        await PutAsync(Shop);
        await EnrolAsync("rita");
        await EnrolAsync("ben", referredBy: "rita");
        await EnrolAsync("cleo");

        MemberResult linked = await Member("cleo").SetReferrer("rita", null);

        Assert.Equal(LoyaltyError.None, linked.Error);
        Assert.Null((await LinkSteps("rita").GetLinks()).Unconfirmed);
        Assert.Equal(["ben", "cleo"], (await Member("rita").Get())!.Referrals);
        Assert.Equal((2L, 2L), (await CountAsync("rita", LedgerEntryKind.ReferralLink), await CountAsync("rita", LedgerEntryKind.ReferralConfirmed)));
        Assert.Equal(0L, await CountAsync("rita", LedgerEntryKind.ReferralWithdrawn));
    }

    [Fact]
    public async Task ALinkCheckThatFailed_DoesNotHoldBackTheCheckOfALinkMadeAfterTheFirstWasConfirmedAnotherWay()
    {
        await PutAsync(Shop);
        await EnrolAsync("rita");
        await EnrolAsync("mia");
        await EnrolAsync("ned");
        Assert.Equal(LoyaltyError.Unavailable, (await WithReferredSideFailingAsync(() => Member("mia").SetReferrer("rita", null))).Error);
        // Two hours on, rita's check of mia's link fails (the withdrawal's write fails): its next try is an hour later.
        fixture.Clock.Advance(TimeSpan.FromHours(2));
        await WithReferredSideFailingAsync(async () =>
        {
            try
            {
                await Member("rita").Wake();
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                // The wake's own writes may share the failed batch: it fails, and the scheduler
                // would wake the member again. The desk's check failed before, as this test needs.
            }

            return true;
        }, LedgerEntryKind.ReferralWithdrawn);
        Assert.Equal(["mia"], (await Member("rita").Get())!.Referrals);
        // mia's resend completes the link, and the desk confirms it at once; then ned's link is half-made.
        Assert.Equal(LoyaltyError.None, (await Member("mia").SetReferrer("rita", null)).Error);
        Assert.Equal(LoyaltyError.Unavailable, (await WithReferredSideFailingAsync(() => Member("ned").SetReferrer("rita", null))).Error);
        Assert.Equal(["mia", "ned"], (await Member("rita").Get())!.Referrals);

        // ned's link falls due a minute later, long before the failed check's next try.
        fixture.Clock.Advance(ReferralDecision.LinkCheckDelay + TimeSpan.FromSeconds(1));
        await Member("rita").Wake();

        // Before: skipped until the old check's try, an hour after the failure.
        Assert.Equal(["mia"], (await Member("rita").Get())!.Referrals);
        Assert.Equal((1L, 1L), (await CountAsync("rita", LedgerEntryKind.ReferralWithdrawn), await CountAsync("rita", LedgerEntryKind.ReferralConfirmed)));
        Assert.Equal("rita", (await Member("mia").Get())!.ReferredBy);
    }

    [Fact]
    public async Task ALinkWhoseReferredSideIsNeverWritten_IsWithdrawnByTheReferrersSchedule_FreeingItsPlaceUnderTheCap()
    {
        await PutAsync(Shop with { Referrals = Shop.Referrals! with { CapPerPeriod = 1 } });
        await EnrolAsync("rita");
        await EnrolAsync("mia");
        await EnrolAsync("ned");
        await EnrolAsync("sam");

        // mia's own entry fails every try (the ledger down for longer than the change retries):
        // rita's side, written first, stays.
        MemberResult failed = await WithReferredSideFailingAsync(() => Member("mia").SetReferrer("rita", null));
        MemberView ritaHalfLinked = (await Member("rita").Get())!;
        MemberResult overCap = await Member("ned").SetReferrer("rita", null);
        MemberResult mergeMeanwhile = await Member("sam").MergeFrom("rita", "duplicate");
        fixture.Clock.Advance(ReferralDecision.LinkCheckDelay + TimeSpan.FromSeconds(1));
        await Member("rita").Wake();
        MemberView ritaChecked = (await Member("rita").Get())!;
        MemberResult nedLinked = await Member("ned").SetReferrer("rita", null);
        await fixture.DeactivateAllAsync();

        Assert.Equal(LoyaltyError.Unavailable, failed.Error);
        Assert.Equal(["mia"], ritaHalfLinked.Referrals);
        Assert.Equal(LoyaltyError.FailedPrecondition, overCap.Error);
        Assert.Equal(LoyaltyError.Unavailable, mergeMeanwhile.Error);
        Assert.Contains("the referral of 'mia' by member 'rita' is not settled yet", mergeMeanwhile.ErrorMessage, StringComparison.Ordinal);
        Assert.Empty(ritaChecked.Referrals);
        Assert.Equal(LoyaltyError.None, nedLinked.Error);
        Assert.Equal(["ned"], (await Member("rita").Get())!.Referrals);
        Assert.Null((await Member("mia").Get())!.ReferredBy);
        Assert.Equal((1L, 1L), (await CountAsync("rita", LedgerEntryKind.ReferralWithdrawn), await CountAsync("rita", LedgerEntryKind.ReferralConfirmed)));
        // Settled, rita merges: ned's link moves to sam.
        Assert.Equal(LoyaltyError.None, (await Member("sam").MergeFrom("rita", "duplicate")).Error);
        Assert.Equal(["ned"], (await Member("sam").Get())!.Referrals);
        Assert.Equal("sam", (await Member("ned").Get())!.ReferredBy);
    }

    [Fact]
    public async Task TheScheduledCheck_WithdrawsOnlyLinksAMinuteOld_AndKeepsOneWhoseReferredSideLandedAfterAll()
    {
        await PutAsync(Shop);
        await EnrolAsync("rita");
        await EnrolAsync("mia");
        await EnrolAsync("ned");
        await EnrolAsync("ola");

        // mia's entry never lands; ola's lands, but the step fails after its commit (an answer lost):
        // the desk cannot tell, and leaves both to the check. ned's fails 40 s later.
        MemberResult mia = await WithReferredSideFailingAsync(() => Member("mia").SetReferrer("rita", null));
        Exception? ola = await Record.ExceptionAsync(() => WithReferredSideFailingAsync(() => Member("ola").SetReferrer("rita", null), step: FaultStep.Acknowledge));
        fixture.Clock.Advance(TimeSpan.FromSeconds(40));
        MemberResult ned = await WithReferredSideFailingAsync(() => Member("ned").SetReferrer("rita", null));
        IReadOnlyList<string>? before = (await LinkSteps("rita").GetLinks()).Unconfirmed;
        fixture.Clock.Advance(TimeSpan.FromSeconds(21));
        await Member("rita").Wake();
        IReadOnlyList<string>? afterFirst = (await LinkSteps("rita").GetLinks()).Unconfirmed;
        IReadOnlyList<string> listedAfterFirst = (await Member("rita").Get())!.Referrals;
        fixture.Clock.Advance(TimeSpan.FromSeconds(40));
        await Member("rita").Wake();

        Assert.Equal((LoyaltyError.Unavailable, LoyaltyError.Unavailable), (mia.Error, ned.Error));
        Assert.NotNull(ola);
        Assert.Equal(["mia", "ola", "ned"], before);
        Assert.Equal(["ned"], afterFirst);
        Assert.Equal(["ola", "ned"], listedAfterFirst);
        Assert.Null((await LinkSteps("rita").GetLinks()).Unconfirmed);
        Assert.Equal(["ola"], (await Member("rita").Get())!.Referrals);
        Assert.Equal("rita", (await Member("ola").Get())!.ReferredBy);
    }

    [Fact]
    public async Task ALinkWithdrawnWhileTheReferredSideLandedAfterAll_IsRestoredByTheRequestRepeated()
    {
        await PutAsync(Shop);
        await EnrolAsync("rita");
        await EnrolAsync("ola");
        // ola's entry lands but the answer is lost; rita's link is then withdrawn as if ola's
        // commit had come only after the check (the desk's step asked for directly).
        await Record.ExceptionAsync(() => WithReferredSideFailingAsync(() => Member("ola").SetReferrer("rita", null), step: FaultStep.Acknowledge));
        await LinkSteps("rita").SettleReferralLink("ola", stands: false, changeEnded: true);
        IReadOnlyList<string> withdrawn = (await Member("rita").Get())!.Referrals;

        MemberResult repeated = await Member("ola").SetReferrer("rita", null);

        Assert.Empty(withdrawn);
        Assert.Equal((LoyaltyError.None, "rita"), (repeated.Error, repeated.Member!.ReferredBy));
        Assert.Equal(["ola"], (await Member("rita").Get())!.Referrals);
        Assert.Null((await LinkSteps("rita").GetLinks()).Unconfirmed);
    }

    [Fact]
    public async Task AWithdrawnLinksRestore_ThatTheReferrerRefuses_IsAnsweredWithItsRefusal()
    {
        await PutAsync(Shop with { Referrals = Shop.Referrals! with { CapPerPeriod = 1 } });
        await EnrolAsync("rita");
        await EnrolAsync("ola");
        // As above: ola names rita, rita's link to her is withdrawn; then ned takes rita's one place.
        await Record.ExceptionAsync(() => WithReferredSideFailingAsync(() => Member("ola").SetReferrer("rita", null), step: FaultStep.Acknowledge));
        await LinkSteps("rita").SettleReferralLink("ola", stands: false, changeEnded: true);
        await EnrolAsync("ned", referredBy: "rita");

        MemberResult repeated = await Member("ola").SetReferrer("rita", null);

        // Before, the repeat answered success while rita did not list ola.
        Assert.Equal(LoyaltyError.FailedPrecondition, repeated.Error);
        Assert.Contains("rita", repeated.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(["ned"], (await Member("rita").Get())!.Referrals);
    }

    [Fact]
    public async Task TheLinkRequestRepeatedForAMemberMergedAway_AddsNothingAtTheReferrer()
    {
        await PutAsync(Shop);
        await EnrolAsync("rita");
        await EnrolAsync("sam");
        await EnrolAsync("dora", referredBy: "rita");
        await Member("sam").MergeFrom("dora", "same person");

        // dora's ledger still names rita; her link moved to sam, who took rita as his referrer.
        await Member("dora").SetReferrer("rita", null);

        Assert.Equal(["sam"], (await Member("rita").Get())!.Referrals);
        Assert.Null((await LinkSteps("rita").GetLinks()).Unconfirmed);
    }

    [Fact]
    public async Task AnEnrolmentResentForAMemberMergedAway_AddsNothingAtTheReferrer()
    {
        await PutAsync(Shop);
        await EnrolAsync("rita");
        await EnrolAsync("sam");
        await EnrolAsync("dora", referredBy: "rita");
        await Member("sam").MergeFrom("dora", "same person");

        // dora's ledger still names rita; her link moved to sam, who took rita as his referrer.
        EnrolmentResult resent = await Member("dora").Enrol(new Enrolment(_program, "dora", "rita"));

        Assert.Equal((LoyaltyError.None, true), (resent.Error, resent.AlreadyEnrolled));
        Assert.Equal(["sam"], (await Member("rita").Get())!.Referrals);
        Assert.Null((await LinkSteps("rita").GetLinks()).Unconfirmed);
    }

    [Fact]
    public async Task AnEnrolmentResent_AfterItsReferrerWasMergedIntoAnother_IsTheSameEnrolment()
    {
        await PutAsync(Shop);
        await EnrolAsync("rita");
        await EnrolAsync("ruth");
        await EnrolAsync("sam");
        await EnrolAsync("dora", referredBy: "rita");
        await Member("ruth").MergeFrom("rita", "same person");

        // dora's link was re-pointed at ruth, who holds rita's account now.
        EnrolmentResult resent = await Member("dora").Enrol(new Enrolment(_program, "dora", "rita"));
        EnrolmentResult other = await Member("dora").Enrol(new Enrolment(_program, "dora", "sam"));

        Assert.Equal("ruth", (await Member("dora").Get())!.ReferredBy);
        Assert.Equal((LoyaltyError.None, true), (resent.Error, resent.AlreadyEnrolled));
        Assert.Equal(LoyaltyError.AlreadyExists, other.Error);
        Assert.Equal(["dora"], (await Member("ruth").Get())!.Referrals);
    }

    [Fact]
    public async Task AReferredEnrolmentWhoseEntryIsNeverWritten_IsWithdrawnAtTheReferrer_AndAPlainEnrolmentLaterNamesNobody()
    {
        await PutAsync(Shop);
        await EnrolAsync("rita");

        EnrolmentResult failed = await WithReferredSideFailingAsync(() => Member("mia").Enrol(new Enrolment(_program, "mia", "rita")), LedgerEntryKind.Enrol);
        IReadOnlyList<string>? unconfirmed = (await LinkSteps("rita").GetLinks()).Unconfirmed;
        fixture.Clock.Advance(ReferralDecision.LinkCheckDelay + TimeSpan.FromSeconds(1));
        await Member("rita").Wake();
        await EnrolAsync("mia");

        Assert.Equal(LoyaltyError.Unavailable, failed.Error);
        Assert.Equal(["mia"], unconfirmed);
        Assert.Empty((await Member("rita").Get())!.Referrals);
        Assert.Null((await Member("mia").Get())!.ReferredBy);
        Assert.Null((await LinkSteps("rita").GetLinks()).Unconfirmed);
    }

    [Fact]
    public async Task Merge_OfAReferrerIntoItsReferee_NeverRewardsAMemberForReferringItself()
    {
        await PutAsync(Shop);
        IMemberGrain anna = await EnrolAsync("anna");
        IMemberGrain ben = await EnrolAsync("ben", referredBy: "anna");
        await ben.MergeFrom("anna", "the same person");

        await ben.Accrue(Buy("ben", 60_00));

        // The purchase's own 60 points; neither side of a referral of one person by their own other account is rewarded.
        Assert.Equal(60L, (await ben.Get())!.Balance.Value);
    }

    [Fact]
    public async Task Resends_OfALinkAfterItsReferrerClosed_AreAnsweredAsMade_AndOfAMergeAfterItsSurvivorClosed_SayWhy()
    {
        await PutAsync(Shop);
        IMemberGrain ben = await EnrolAsync("ben"), cleo = await EnrolAsync("cleo");
        IMemberGrain rita = await EnrolAsync("rita"), erin = await EnrolAsync("erin");
        IMemberGrain sam = await EnrolAsync("sam"), dora = await EnrolAsync("dora");
        Assert.Equal(LoyaltyError.None, (await ben.SetReferrer("rita", null)).Error);
        Assert.Equal(LoyaltyError.None, (await cleo.SetReferrer("erin", null)).Error);
        Assert.Equal(LoyaltyError.None, (await sam.MergeFrom("rita", "duplicate")).Error);
        Assert.Equal(LoyaltyError.None, (await erin.Erase("request 7")).Error);
        Assert.Equal(LoyaltyError.None, (await sam.MergeFrom("dora", "duplicate")).Error);
        Assert.Equal(LoyaltyError.None, (await sam.Erase("request 8")).Error);

        // Before: "already referred by 'sam'" (rita's link moved there) and "'erin' was erased",
        // though each was made. A merge resent to a survivor closed since still says why it takes
        // no changes (its points are elsewhere), as AtomicChangeTests' cut-short merges require.
        MemberResult toMerged = await ben.SetReferrer("rita", null);
        MemberResult toErased = await cleo.SetReferrer("erin", null);
        MemberResult mergeAgain = await sam.MergeFrom("dora", "duplicate");

        Assert.True(toMerged.Error == LoyaltyError.None, toMerged.ErrorMessage);
        Assert.True(toErased.Error == LoyaltyError.None, toErased.ErrorMessage);
        Assert.Equal(LoyaltyError.FailedPrecondition, mergeAgain.Error);
        Assert.Contains("'sam' was erased", mergeAgain.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(("sam", "erin"), ((await ben.Get())!.ReferredBy, (await cleo.Get())!.ReferredBy));
        // Something new is still refused for what it is.
        Assert.Equal(LoyaltyError.AlreadyExists, (await ben.SetReferrer("cleo", null)).Error);
        Assert.Contains("was erased", (await sam.MergeFrom("ben", "duplicate")).ErrorMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Return_OfTheQualifyingPurchase_WhoseCommitFails_LeavesTheReferrersRewardWhole()
    {
        await PutAsync(Shop);
        IMemberGrain anna = await EnrolAsync("anna");
        IMemberGrain ben = await EnrolAsync("ben", referredBy: "anna");
        await ben.Accrue(Buy("ben", 60_00, "qualify"));
        Assert.Equal(500L, (await anna.Get())!.Balance.Value);
        FaultInjector faults = Silo().GetRequiredService<FaultInjector>();
        faults.Arm((at, entry) => at == FaultStep.Commit && entry.ProgramId == _program && entry.Kind == LedgerEntryKind.Return);
        ReturnResult failed;
        try
        {
            failed = await ben.Return(ReturnOf("ben", "qualify", 60_00));
        }
        finally
        {
            faults.Disarm();
        }

        // The due schedule's wake settles whatever ben still owes its referrer: nothing.
        await ben.Wake();
        MemberView annaView = (await anna.Get())!, benView = (await ben.Get())!;

        Assert.Equal(LoyaltyError.Unavailable, failed.Error);
        // Before: the return's failed state told anna to give its reward back (balance 0, a reversal written).
        Assert.Equal(500L, annaView.Balance.Value);
        Assert.Equal(500L, await Sql.SumPointsAsync(fixture.Storage, _program, "anna"));
        Assert.Equal((260L, "qualify"), (benView.Balance.Value, benView.ReferralQualifiedBy));
    }

    [Fact]
    public async Task Wake_WhileAReturnOfTheQualifyingPurchaseCommits_TellsTheReferrerNothingUntilItsOutcome()
    {
        await PutAsync(Shop);
        IMemberGrain anna = await EnrolAsync("anna");
        IMemberGrain ben = await EnrolAsync("ben", referredBy: "anna");
        await ben.Accrue(Buy("ben", 60_00, "qualify"));
        using var entered = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        // The return is applied and held at its commit (on the ledger's writer), then fails there.
        FaultInjector faults = ArmHeldAtCommitThenFailed(entry => entry.Kind == LedgerEntryKind.Return, entered, release);
        ReturnResult failed;
        long annaWhileCommitting;
        try
        {
            Task<ReturnResult> returning = ben.Return(ReturnOf("ben", "qualify", 60_00));
            Assert.True(entered.Wait(TimeSpan.FromSeconds(10)));
            Task waking = ben.Wake();
            await Task.Delay(300);
            // Read at the ledger: anna's grain would wait for nothing, but a reversal told to it
            // waits for the writer held above, so the sum is read after the release too.
            annaWhileCommitting = await Sql.SumPointsAsync(fixture.Storage, _program, "anna");
            release.Set();
            failed = await returning;
            await waking;
        }
        finally
        {
            release.Set();
            faults.Disarm();
        }

        await ben.Wake();
        MemberView annaView = (await anna.Get())!;

        Assert.Equal(LoyaltyError.Unavailable, failed.Error);
        Assert.Equal(500L, annaWhileCommitting);
        Assert.Equal(500L, annaView.Balance.Value);
        Assert.Equal(500L, await Sql.SumPointsAsync(fixture.Storage, _program, "anna"));
    }

    [Fact]
    public async Task Link_AskedWhileTheMembersFirstPurchaseCommits_WaitsForIt_AndIsMadeWhenThatCommitFails()
    {
        await PutAsync(Shop);
        IMemberGrain rita = await EnrolAsync("rita");
        IMemberGrain ben = await EnrolAsync("ben");
        using var entered = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        // ben's purchase is applied and held at its commit (on the ledger's writer), then fails there.
        FaultInjector faults = ArmHeldAtCommitThenFailed(entry => entry is { MemberId: "ben", Kind: LedgerEntryKind.Earn }, entered, release);
        AccrualResult bought;
        MemberResult linked;
        try
        {
            Task<AccrualResult> buying = ben.Accrue(Buy("ben", 60_00, "first")).AsTask();
            Assert.True(entered.Wait(TimeSpan.FromSeconds(10)));
            Task<MemberResult> linking = ben.SetReferrer("rita", null);
            // Not answered on the purchase still committing ("has already made a purchase"): the
            // member's catch-up before the walk waits for it, and so does the check at the hold
            // (for a purchase that arrives during the walk, a window this test does not reach).
            await Task.Delay(300);
            bool answeredWhileCommitting = linking.IsCompleted;
            release.Set();
            bought = await buying;
            linked = await linking;
            Assert.False(answeredWhileCommitting, "the link was answered while the purchase it was refused for was still committing");
        }
        finally
        {
            release.Set();
            faults.Disarm();
        }

        Assert.Equal(LoyaltyError.Unavailable, bought.Error);
        Assert.True(linked.Error == LoyaltyError.None, linked.ErrorMessage);
        Assert.Equal("rita", (await ben.Get())!.ReferredBy);
        Assert.Equal(["ben"], (await rita.Get())!.Referrals);
        Assert.Equal(0, await CountAsync("ben", LedgerEntryKind.Earn));
        // The purchase resent now is the first, and qualifies the referral.
        AccrualResult resent = await ben.Accrue(Buy("ben", 60_00, "first"));
        Assert.Equal((AccrualStatus.Accepted, 260L), (resent.Status, resent.Earned.Value));
    }

    [Fact]
    public async Task ALinkHalfMade_WhenItsReferrerWasErased_IsNotCompletedByAResend()
    {
        await PutAsync(Shop);
        IMemberGrain erin = await EnrolAsync("erin");
        IMemberGrain ben = await EnrolAsync("ben");
        // erin's side is written (unconfirmed), ben's fails: the link is half-made.
        MemberResult failed = await WithReferredSideFailingAsync(() => ben.SetReferrer("erin", null));
        Assert.Equal(LoyaltyError.Unavailable, failed.Error);
        Assert.Equal(["ben"], (await erin.Get())!.Referrals);
        Assert.Equal(LoyaltyError.None, (await erin.Erase("request 9")).Error);

        MemberResult resent = await ben.SetReferrer("erin", null);

        Assert.Equal(LoyaltyError.FailedPrecondition, resent.Error);
        Assert.Contains("'erin' was erased", resent.ErrorMessage, StringComparison.Ordinal);
        Assert.Null((await ben.Get())!.ReferredBy);
        Assert.Equal(0, await CountAsync("ben", LedgerEntryKind.Referred));
    }

    [Fact]
    public async Task Merge_OfADuplicateMergedElsewhereAlready_IsRefusedSayingSo_NotForItsOldLinks()
    {
        await PutAsync(Shop);
        IMemberGrain sam = await EnrolAsync("sam");
        await EnrolAsync("rita", referredBy: "sam");
        await EnrolAsync("dora", referredBy: "rita");
        IMemberGrain tom = await EnrolAsync("tom");
        Assert.Equal(LoyaltyError.None, (await tom.MergeFrom("dora", "duplicate")).Error);

        // dora's old referrer chain (rita, then sam) would make sam's merge of it a cycle; but
        // dora is tom's now. Before: "would close a referral cycle".
        MemberResult refused = await sam.MergeFrom("dora", "duplicate");

        Assert.Equal(LoyaltyError.FailedPrecondition, refused.Error);
        Assert.Contains("was already merged into 'tom'", refused.ErrorMessage, StringComparison.Ordinal);
        // An erased duplicate is refused for that, at the desk, before any check of its links.
        await EnrolAsync("ida", referredBy: "rita");
        Assert.Equal(LoyaltyError.None, (await Member("ida").Erase("request 10")).Error);
        MemberResult erased = await sam.MergeFrom("ida", "duplicate");
        Assert.Equal(LoyaltyError.FailedPrecondition, erased.Error);
        Assert.Contains("member 'ida' was erased", erased.ErrorMessage, StringComparison.Ordinal);
    }

    private IMemberGrain Member(string id) => fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, id));

    /// <summary>
    /// Under <see cref="Shop"/>, <paramref name="referrer"/> and the member it referred, whose
    /// purchase <paramref name="purchase"/> of 60 USD qualified the referral (both rewarded).
    /// </summary>
    private async Task<(IMemberGrain Referrer, IMemberGrain Referred)> QualifiedReferralAsync(string referrer, string referred, string purchase)
    {
        await PutAsync(Shop);
        IMemberGrain referrerGrain = await EnrolAsync(referrer);
        IMemberGrain referredGrain = await EnrolAsync(referred, referredBy: referrer);
        await referredGrain.Accrue(Buy(referred, 60_00, purchase));
        return (referrerGrain, referredGrain);
    }

    /// <summary>
    /// rita, rewarded for referring ben (his qualifying purchase "q"), lets go to sam in a merge
    /// that stops there, as a crash would leave it; sam has not taken her in.
    /// </summary>
    private async Task<(IMemberGrain Rita, IMemberGrain Sam, IMemberGrain Ben)> RewardedReferrerLetGoMidMergeAsync()
    {
        (IMemberGrain rita, IMemberGrain ben) = await QualifiedReferralAsync("rita", "ben", "q");
        IMemberGrain sam = await EnrolAsync("sam");
        Assert.NotNull((await rita.Detach("sam", Loyalty.Grains.Headroom.VolumeMax)).Transfer);
        return (rita, sam, ben);
    }

    private IMemberLinkSteps LinkSteps(string id) => fixture.Grains.GetGrain<IMemberLinkSteps>(LoyaltyIds.MemberKey(_program, id));

    /// <summary>Runs <paramref name="change"/> with the referred member's own entry (of <paramref name="kind"/>) failing at <paramref name="step"/> each time.</summary>
    private async Task<T> WithReferredSideFailingAsync<T>(Func<Task<T>> change, LedgerEntryKind kind = LedgerEntryKind.Referred, FaultStep step = FaultStep.Commit)
    {
        FaultInjector faults = Silo().GetRequiredService<FaultInjector>();
        faults.Arm((at, entry) => at == step && entry.ProgramId == _program && entry.Kind == kind);
        try
        {
            return await change();
        }
        finally
        {
            faults.Disarm();
        }
    }

    private Task<long> CountAsync(string member, LedgerEntryKind kind) => Sql.ScalarAsync(fixture.Storage,
        $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = '{member}' AND kind = {(int)kind}");

    private IServiceProvider Silo() => fixture.SiloServices;

    /// <summary>
    /// Arms the commit of this program's <paramref name="chosen"/> entries to be held on the
    /// ledger's writer (setting <paramref name="entered"/>) until <paramref name="release"/> is
    /// set, at most 10 s, and then to fail.
    /// </summary>
    private FaultInjector ArmHeldAtCommitThenFailed(Func<LedgerEntry, bool> chosen, ManualResetEventSlim entered, ManualResetEventSlim release)
    {
        FaultInjector faults = Silo().GetRequiredService<FaultInjector>();
        faults.Arm((at, entry) =>
        {
            if (at != FaultStep.Commit || entry.ProgramId != _program || !chosen(entry))
            {
                return false;
            }

            entered.Set();
            release.Wait(TimeSpan.FromSeconds(10));
            return true;
        });
        return faults;
    }

    private Task PutAsync(ProgramSettings settings) => fixture.Grains.GetGrain<IProgramGrain>(_program).Put(settings);

    private async Task<IMemberGrain> EnrolAsync(string id, string? referredBy = null, string? code = null)
    {
        EnrolmentResult result = await Member(id).Enrol(new Enrolment(_program, id, referredBy, code));
        Assert.True(result.Error == LoyaltyError.None, result.ErrorMessage);
        return Member(id);
    }

    private Purchase Buy(string member, long amountMinor, string? txn = null) =>
        new(txn ?? $"t{Interlocked.Increment(ref _txn)}", _program, member, "store-1", new Money(amountMinor, "USD"), fixture.Clock.GetUtcNow().AddMinutes(-1), []);

    private PurchaseReturn ReturnOf(string member, string original, long amountMinor) =>
        new($"r{Interlocked.Increment(ref _txn)}", _program, member, original, "store-1", new Money(amountMinor, "USD"), fixture.Clock.GetUtcNow(), []);
}

public sealed class SqliteReferralGrainTests(SqliteClusterFixture fixture) : ReferralGrainTests(fixture), IClassFixture<SqliteClusterFixture>;

public sealed class PostgresReferralGrainTests(PostgresClusterFixture fixture) : ReferralGrainTests(fixture), IClassFixture<PostgresClusterFixture>;
