using Loyalty.Grains;
using Loyalty.Storage;
using Loyalty.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;

namespace Loyalty.Tests.Redemption;

/// <summary>Profile fields, erasure and the merge of duplicate accounts, through real grains on a real database.</summary>
public abstract class LifecycleGrainTests(ClusterFixture fixture)
{
    private readonly string _program = "l" + Guid.NewGuid().ToString("N")[..10];
    private int _txn;

    private static readonly TierLadder Ladder = new(TierBasis.Points, 365, 30,
    [
        new TierDefinition("member", 0, Multipliers.One, []),
        new TierDefinition("gold", 500, 12_500, ["lounge"]),
    ]);

    private static ProgramSettings Shop => new("Shop", "USD", 2, 1, PendingDays: 10, Tiers: Ladder, Expiry: new ExpiryPolicy(ExpiryMode.Lifespan, 12),
        Referrals: new ReferralPolicy(100, 50));

    [Fact]
    public async Task Profile_IsKeptOutsideTheLedger_AndTheLedgerNamesOnlyTheFields()
    {
        IMemberGrain anna = await SetUpAsync("anna");

        MemberResult set = await anna.SetProfile(new Dictionary<string, string> { ["name"] = "Anna Berg", ["email"] = "anna@example.com" });
        await fixture.DeactivateAllAsync();
        MemberView reloaded = (await anna.Get())!;
        List<string> details = await Sql.RowsAsync(fixture.Storage, $"SELECT details FROM ledger_entries WHERE program_id = '{_program}' AND kind = 14", r => r.GetString(0));
        MemberResult tooMany = await anna.SetProfile(Enumerable.Range(0, Limits.ProfileFieldsMax + 1).ToDictionary(i => $"f{i}", _ => "x"));
        MemberResult tooLong = await anna.SetProfile(new Dictionary<string, string> { ["note"] = new string('x', Limits.ProfileValueLengthMax + 1) });

        Assert.Equal(LoyaltyError.None, set.Error);
        Assert.Equal("anna@example.com", reloaded.Profile!["email"]);
        Assert.DoesNotContain("Anna", Assert.Single(details), StringComparison.Ordinal);
        Assert.Contains("email", details[0], StringComparison.Ordinal);
        Assert.Equal((LoyaltyError.InvalidArgument, LoyaltyError.InvalidArgument), (tooMany.Error, tooLong.Error));
        Assert.Contains("longer than", tooLong.ErrorMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Erase_RewritesTheSnapshot_SoNoneHoldsWhatTheErasureRemoved()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        await anna.SetFlags(["vegan"]);
        // Deactivated with its flags: the stored snapshot holds them.
        await fixture.DeactivateAllAsync();
        Assert.Contains("vegan", (await SnapshotAsync("anna"))!.Flags);

        MemberResult erased = await anna.Erase("request 1");
        MemberState? after = await SnapshotAsync("anna");

        Assert.Equal(LoyaltyError.None, erased.Error);
        // Before: the snapshot stayed as it was, flags and all, until 20 more entries.
        Assert.NotNull(after);
        Assert.True(after.Erased);
        Assert.Empty(after.Flags);
    }

    [Fact]
    public async Task Erase_WhoseSnapshotCannotBeWrittenAgain_IsNotAnsweredDone_AndARepeatFinishesIt()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        await anna.SetFlags(["vegan"]);
        await fixture.DeactivateAllAsync();
        FaultInjector faults = fixture.SiloServices.GetRequiredService<FaultInjector>();

        MemberResult failed;
        faults.ArmSnapshot(member => member == "anna");
        try
        {
            failed = await anna.Erase("request 1");
        }
        finally
        {
            faults.Disarm();
        }

        MemberState? stale = await SnapshotAsync("anna");
        MemberResult repeated = await anna.Erase("request 1");
        MemberState? after = await SnapshotAsync("anna");

        // Before, the erasure answered done and the stored snapshot kept the flags.
        Assert.Equal(LoyaltyError.Unavailable, failed.Error);
        Assert.Contains("repeat the erasure", failed.ErrorMessage, StringComparison.Ordinal);
        Assert.Contains("vegan", stale!.Flags);
        Assert.Equal(LoyaltyError.None, repeated.Error);
        Assert.True(after!.Erased);
        Assert.Empty(after.Flags);
    }

    [Fact]
    public async Task ASnapshotThatKeepsFailing_IsTriedOncePerSnapshotInterval_NotAfterEveryChange()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        FaultInjector faults = fixture.SiloServices.GetRequiredService<FaultInjector>();
        int tries = 0;
        faults.ArmSnapshot(member => member == "anna" && Interlocked.Increment(ref tries) > 0);
        try
        {
            for (int i = 0; i < 50; i++)
            {
                Assert.Equal(AccrualStatus.Accepted, (await anna.Accrue(Buy("anna", 1_00))).Status);
            }
        }
        finally
        {
            faults.Disarm();
        }

        MemberView view = (await anna.Get())!;

        // A snapshot every 5 entries: about 10 tries in 50 purchases. Before: once due, a copy,
        // a write and a warning after every change (46).
        Assert.InRange(tries, 8, 12);
        Assert.Equal(view.Balance.Value + view.Pending.Value, await Sql.SumPointsAsync(fixture.Storage, _program, "anna"));
    }

    private async Task<MemberState?> SnapshotAsync(string member)
    {
        var row = new Orleans.GrainState<MemberState>(new MemberState());
        IServiceProvider silo = fixture.SiloServices;
        await Microsoft.Extensions.DependencyInjection.ServiceProviderKeyedServiceExtensions.GetRequiredKeyedService<Orleans.Storage.IGrainStorage>(silo, StorageSiloBuilderExtensions.SnapshotStorageName)
            .ReadStateAsync(MemberServices.SnapshotStateName, fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, member)).GetGrainId(), row);
        return row.RecordExists ? row.State : null;
    }

    [Fact]
    public async Task Profile_ChangedManyTimesAtOnce_KeepsTheFieldsOfTheChangeTheLedgerHasLast()
    {
        IMemberGrain anna = await SetUpAsync("anna");

        // Each change names one field of its own, so the row tells which change it holds.
        MemberResult[] changes = await Task.WhenAll(Enumerable.Range(0, 30).Select(i =>
            anna.SetProfile(new Dictionary<string, string> { [$"f{i}"] = "x" })));
        List<string> notes = await Sql.RowsAsync(fixture.Storage,
            $"SELECT details FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'anna' AND kind = 14 ORDER BY seq DESC", r => r.GetString(0));
        await fixture.DeactivateAllAsync();
        MemberView reloaded = (await anna.Get())!;

        Assert.All(changes, c => Assert.Equal(LoyaltyError.None, c.Error));
        Assert.Equal(30, notes.Count);
        string held = Assert.Single(reloaded.Profile!.Keys);
        Assert.Contains($"\"{held}\"", notes[0], StringComparison.Ordinal);
    }

    [Fact]
    public async Task Erase_RemovesPersonalData_KeepsTheAmounts_AndClosesTheAccount()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        await anna.SetProfile(new Dictionary<string, string> { ["name"] = "Anna Berg" });
        await anna.SetFlags(["vegan"]);
        await anna.Accrue(Buy("anna", 120_00));
        await anna.Adjust(new Adjustment("adj-1", new Points(5), "Anna Berg called about her missing points"));
        string code = (await anna.GetReferralCode())!;
        long sumBefore = await Sql.SumPointsAsync(fixture.Storage, _program, "anna");

        MemberResult erased = await anna.Erase("GDPR request 2026-118");
        MemberResult again = await anna.Erase("GDPR request 2026-118");
        AccrualResult after = await anna.Accrue(Buy("anna", 10_00));
        long personal = await Sql.ScalarAsync(fixture.Storage,
            $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'anna' AND (reason LIKE '%Anna%' OR details LIKE '%vegan%')");
        long profiles = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM member_profiles WHERE program_id = '{_program}'");
        EnrolmentResult referred = await Member("ben").Enrol(new Enrolment(_program, "ben", null, code));

        Assert.True(erased.Member!.Erased);
        Assert.Null(erased.Member.Profile);
        Assert.Empty(erased.Member.Flags);
        Assert.Equal(LoyaltyError.None, again.Error);
        Assert.Equal(LoyaltyError.FailedPrecondition, after.Error);
        Assert.Equal((0L, 0L), (personal, profiles));
        Assert.Equal(sumBefore, await Sql.SumPointsAsync(fixture.Storage, _program, "anna"));
        Assert.Equal(LoyaltyError.NotFound, referred.Error);
    }

    [Fact]
    public async Task Erase_OfASurvivor_ErasesTheAccountsMergedIntoIt_AndTheMergesReasons()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        IMemberGrain dup = await EnrolAsync("anna2", referredBy: null);
        IMemberGrain older = await EnrolAsync("anna3", referredBy: null);
        await dup.SetProfile(new Dictionary<string, string> { ["email"] = "anna@example.com" });
        await dup.SetFlags(["vegan"]);
        await older.SetProfile(new Dictionary<string, string> { ["phone"] = "+46 70 123" });
        Assert.Equal(LoyaltyError.None, (await dup.MergeFrom("anna3", "Anna Berg, older account")).Error);
        Assert.Equal(LoyaltyError.None, (await anna.MergeFrom("anna2", "Anna Berg duplicate: same email")).Error);

        MemberResult erased = await anna.Erase("GDPR request 2026-120");
        await fixture.DeactivateAllAsync();
        MemberView dupAfter = (await dup.Get())!, olderAfter = (await older.Get())!;
        long profiles = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM member_profiles WHERE program_id = '{_program}'");
        long personal = await Sql.ScalarAsync(fixture.Storage,
            $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND (reason LIKE '%Berg%' OR details LIKE '%vegan%')");

        Assert.Equal(LoyaltyError.None, erased.Error);
        Assert.Equal((true, "anna"), (dupAfter.Erased, dupAfter.MergedInto));
        Assert.Equal((true, "anna2"), (olderAfter.Erased, olderAfter.MergedInto));
        Assert.Null(dupAfter.Profile);
        Assert.Empty(dupAfter.Flags);
        Assert.Null(olderAfter.Profile);
        Assert.Equal((0L, 0L), (profiles, personal));
    }

    [Fact]
    public async Task Merge_HandsOnTheDuplicatesBirthdayGiftAndYear_AndItsBookedBonusDays()
    {
        var entry = new TierDefinition("member", 0, Multipliers.One, [], BonusDaysPerYear: 5);
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with
        {
            Tiers = Ladder with { Tiers = [entry, Ladder.Tiers[1]] },
            Birthday = new BirthdayPolicy(50, "cake"),
            Rewards = [new Reward("cake", "Birthday cake", RewardKind.Product, 500, Sku: "CAKE")],
            BonusDays = new BonusDayPolicy(20_000, BonusDayStacking.Stack),
        });
        IMemberGrain anna = await EnrolAsync("anna", null);
        IMemberGrain dup = await EnrolAsync("anna2", null);
        DateTimeOffset now = fixture.Clock.GetUtcNow();
        await dup.SetProfile(new Dictionary<string, string> { ["birthday"] = $"{now.Month:00}-{Math.Min(now.Day, 28):00}" });
        DateTime until = DateTime.UtcNow.AddSeconds(20);
        while ((await dup.Get())!.BirthdayGift is null && DateTime.UtcNow < until)
        {
            await Task.Delay(50);
        }

        BirthdayGrant gift = (await dup.Get())!.BirthdayGift!;
        DateOnly day = DateOnly.FromDateTime(now.UtcDateTime).AddDays(3);
        Assert.Equal(LoyaltyError.None, (await dup.BookBonusDay(new BonusDayBooking("b1", day))).Error);

        Assert.Equal(LoyaltyError.None, (await anna.MergeFrom("anna2", "duplicate")).Error);
        MemberView live = (await anna.Get())!;
        await fixture.DeactivateAllAsync();
        MemberView replayed = (await anna.Get())!;

        Assert.Equal(gift, live.BirthdayGift);
        Assert.Contains(day, live.BonusDays!);
        Assert.Equal((live.BirthdayGift, string.Join(",", live.BonusDays!)), (replayed.BirthdayGift, string.Join(",", replayed.BonusDays!)));
    }

    /// <remarks>
    /// Lots keep the expiry they were given. The survivor here joined after the programme stopped
    /// expiring points, so it had nothing scheduled; the merge brings it points that still expire.
    /// </remarks>
    [Fact]
    public async Task PointsMergedIn_ThatStillCarryAnExpiry_Expire_AfterTheProgrammeStoppedExpiringPoints()
    {
        IMemberGrain dup = await SetUpAsync("anna2");
        await dup.Accrue(Buy("anna2", 100_00));
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with { Expiry = null });
        fixture.Clock.Advance(TimeSpan.FromMinutes(1));
        IMemberGrain anna = await EnrolAsync("anna", null);
        Assert.Equal(LoyaltyError.None, (await anna.MergeFrom("anna2", "duplicate")).Error);
        await fixture.DeactivateAllAsync();

        fixture.Clock.Advance(TimeSpan.FromDays(400));
        DateTime deadline = DateTime.UtcNow.AddSeconds(20);
        long expired = 0;
        while (expired == 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
            expired = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'anna' AND kind = 10");
        }

        MemberView after = (await anna.Get())!;
        Assert.Equal(1, expired);
        Assert.Equal((0L, 100L), (after.Balance.Value, after.LifetimeExpired.Value));
    }

    [Fact]
    public async Task Erase_WhileAReservationOrATradeInIsUnderWay_IsRefusedNamingIt_AndWritesNothing_ThenGoesAhead()
    {
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with
        {
            SignupBonusPoints = 100,
            Rewards = [new Reward("coffee", "Free coffee", RewardKind.Product, 30, Sku: "COFFEE")],
            TradeIn = new TradeInPolicy([new TradeInRate("jackets", TradeInCondition.Good, 30_00)]),
        });
        IMemberGrain anna = await EnrolAsync("anna", null);
        await anna.Reserve(new Loyalty.Redemption("hold-1", "coffee", 1));
        await anna.SubmitTradeIn(new TradeIn("jacket-1", "jackets", "store-1"));
        long entriesBefore = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}'");

        MemberResult whileHeld = await anna.Erase("GDPR request");
        await anna.CommitReservation("hold-1");
        MemberResult whileInspecting = await anna.Erase("GDPR request");
        long entriesRefused = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}'");
        await anna.InspectTradeIn("jacket-1", TradeInCondition.Good);
        MemberResult erased = await anna.Erase("GDPR request");

        Assert.Equal(LoyaltyError.FailedPrecondition, whileHeld.Error);
        Assert.Contains("reservations that have not ended", whileHeld.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(LoyaltyError.FailedPrecondition, whileInspecting.Error);
        Assert.Contains("trade-ins waiting for inspection", whileInspecting.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(entriesBefore + 1, entriesRefused);
        Assert.Equal(LoyaltyError.None, erased.Error);
        Assert.True(erased.Member!.Erased);
    }

    [Fact]
    public async Task ARedeemResent_AfterItsMemberForgotIt_AndWasMergedAway_IsADuplicate_AtTheDuplicateAndAtTheSurvivor()
    {
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with
        {
            SignupBonusPoints = 30,
            Rewards = [new Reward("coffee", "Free coffee", RewardKind.Product, 30, Sku: "COFFEE")],
        });
        IMemberGrain anna = await EnrolAsync("anna", null);
        IMemberGrain dup = await EnrolAsync("anna2", null);
        RedemptionResult spent = await dup.Redeem(new Loyalty.Redemption("old-redeem", "coffee", 1));
        for (int i = 0; i <= ClusterFixture.RecentTransactionsMax; i++)
        {
            Assert.Equal(AccrualStatus.Accepted, (await dup.Accrue(Buy("anna2", 1_00))).Status);
        }

        Assert.Equal(LoyaltyError.None, (await anna.MergeFrom("anna2", "duplicate sign-up")).Error);
        await anna.Redeem(new Loyalty.Redemption("spend-all", "coffee", 1));
        RedemptionResult atDuplicate = await dup.Redeem(new Loyalty.Redemption("old-redeem", "coffee", 1));
        RedemptionResult atSurvivor = await anna.Redeem(new Loyalty.Redemption("old-redeem", "coffee", 1));
        RedemptionResult otherAtSurvivor = await anna.Redeem(new Loyalty.Redemption("old-redeem", "coffee", 2));

        Assert.Equal(AccrualStatus.Accepted, spent.Status);
        Assert.Equal((AccrualStatus.Duplicate, spent.Sequence), (atDuplicate.Status, atDuplicate.Sequence));
        Assert.Equal((AccrualStatus.Duplicate, spent.Sequence), (atSurvivor.Status, atSurvivor.Sequence));
        Assert.Equal(LoyaltyError.AlreadyExists, otherAtSurvivor.Error);
    }

    [Fact]
    public async Task ChangesResent_AfterTheirMemberWasErased_WhileItStillRemembersThem_AreDuplicates()
    {
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop with
        {
            SignupBonusPoints = 30,
            Rewards = [new Reward("coffee", "Free coffee", RewardKind.Product, 30, Sku: "COFFEE")],
        });
        IMemberGrain anna = await EnrolAsync("anna", null);
        AccrualResult bought = await anna.Accrue(Buy("anna", 10_00, "bought"));
        RedemptionResult spent = await anna.Redeem(new Loyalty.Redemption("spent", "coffee", 1));
        Assert.Equal(LoyaltyError.None, (await anna.Erase("GDPR request 17")).Error);

        AccrualResult boughtAgain = await anna.Accrue(Buy("anna", 10_00, "bought"));
        RedemptionResult spentAgain = await anna.Redeem(new Loyalty.Redemption("spent", "coffee", 1));
        AccrualResult newPurchase = await anna.Accrue(Buy("anna", 10_00, "new"));

        Assert.Equal((AccrualStatus.Accepted, AccrualStatus.Accepted), (bought.Status, spent.Status));
        Assert.Equal((AccrualStatus.Duplicate, bought.Sequence), (boughtAgain.Status, boughtAgain.Sequence));
        Assert.Equal((AccrualStatus.Duplicate, spent.Sequence), (spentAgain.Status, spentAgain.Sequence));
        Assert.Equal(LoyaltyError.FailedPrecondition, newPurchase.Error);
    }

    [Fact]
    public async Task Merge_MovesPointsLotsPendingAndLinks_KeepsTheHigherTier_AndLeavesAPointer()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        IMemberGrain dup = await EnrolAsync("anna2", referredBy: null);
        IMemberGrain friend = await EnrolAsync("friend", referredBy: "anna2");
        fixture.Clock.Advance(TimeSpan.FromDays(1));
        await anna.Accrue(Buy("anna", 100_00));
        await dup.Accrue(Buy("anna2", 600_00, "dup-buy"));
        fixture.Clock.Advance(TimeSpan.FromDays(11));
        await dup.Accrue(Buy("anna2", 40_00, "dup-pending"));
        MemberView dupBefore = (await dup.Get())!;

        MemberResult merged = await anna.MergeFrom("anna2", "duplicate sign-up, ticket 881");
        MemberResult again = await anna.MergeFrom("anna2", "duplicate sign-up, ticket 881");
        MemberView dupAfter = (await dup.Get())!;
        AccrualResult refused = await dup.Accrue(Buy("anna2", 10_00));
        ReturnResult returned = await anna.Return(new PurchaseReturn("ret-dup", _program, "anna", "dup-buy", "store-1", new Money(600_00, "USD"), fixture.Clock.GetUtcNow(), []));
        await fixture.DeactivateAllAsync();
        MemberView survivor = (await anna.Get())!;

        Assert.Equal(("gold", 600L, 50L), (dupBefore.Tier, dupBefore.Balance.Value, dupBefore.Pending.Value));
        Assert.Equal((LoyaltyError.None, LoyaltyError.None), (merged.Error, again.Error));
        Assert.Equal(("gold", 700L, 50L), (merged.Member!.Tier, merged.Member.Balance.Value, merged.Member.Pending.Value));
        Assert.Equal(["friend"], merged.Member.Referrals);
        Assert.Equal(("anna", 0L), (dupAfter.MergedInto, dupAfter.Balance.Value));
        Assert.Contains("merged into 'anna'", refused.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal((AccrualStatus.Accepted, 600L), (returned.Status, returned.Reversed.Value));
        Assert.Equal("anna", (await friend.Get())!.ReferredBy);
        Assert.Equal((100L, 50L), (survivor.Balance.Value, survivor.Pending.Value));
        Assert.Equal(["anna2"], survivor.MergedFrom);
        Assert.Equal(survivor.Balance.Value + survivor.Pending.Value, await Sql.SumPointsAsync(fixture.Storage, _program, "anna"));
        Assert.Equal(0L, await Sql.SumPointsAsync(fixture.Storage, _program, "anna2"));
    }

    [Fact]
    public async Task Merge_AfterTheDuplicatesPointsExpired_WritesThemOffFirst_SoTheyPayNoneOfTheSurvivorsDebt()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        IMemberGrain dup = await EnrolAsync("anna2", referredBy: null);
        await dup.Accrue(Buy("anna2", 100_00, "dup-old"));
        fixture.Clock.Advance(TimeSpan.FromDays(200));
        await dup.Accrue(Buy("anna2", 40_00, "dup-new"));
        await anna.Adjust(new Adjustment("chargeback", new Points(-70), "chargeback of a redeemed order"));
        // Past dup-old's expiry (its 10 pending days and 12 months), months before dup-new's.
        fixture.Clock.Advance(TimeSpan.FromDays(185));

        // Merged at once, usually before the duplicate's own wake writes the expiry off.
        MemberResult merged = await anna.MergeFrom("anna2", "duplicate sign-up");
        await fixture.DeactivateAllAsync();
        MemberView survivor = (await anna.Get())!;
        List<long> expired = await Sql.RowsAsync(fixture.Storage,
            $"SELECT points FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'anna2' AND kind = {(int)LedgerEntryKind.Expire}", r => r.GetInt64(0));

        // Before, the 100 expired points travelled with the merge and paid the survivor's debt: 70 instead of -30.
        Assert.True(merged.Error == LoyaltyError.None, merged.ErrorMessage);
        Assert.Equal((-30L, -30L), (merged.Member!.Balance.Value, survivor.Balance.Value));
        Assert.Equal([-100L], expired);
        Assert.Equal(-30L, await Sql.SumPointsAsync(fixture.Storage, _program, "anna"));
        Assert.Equal(0L, await Sql.SumPointsAsync(fixture.Storage, _program, "anna2"));
    }

    [Fact]
    public async Task Merge_HandsOnTheDuplicatesShortfall_WithItsLifetimeReversed()
    {
        ProgramSettings floored = Shop with { PendingDays = 0, NegativeBalance = NegativeBalancePolicy.FloorAtZero };
        IMemberGrain anna = await SetUpAsync("anna", floored);
        IMemberGrain dup = await EnrolAsync("anna2", referredBy: null);
        await anna.Accrue(Buy("anna", 30_00));
        await dup.Accrue(Buy("anna2", 100_00, "dup-buy"));
        await dup.Adjust(new Adjustment("spent", new Points(-80), "spent at the till"));
        // The return takes back 100 points from 20: 80 are the duplicate's shortfall.
        ReturnResult returned = await dup.Return(new PurchaseReturn("dup-ret", _program, "anna2", "dup-buy", "store-1", new Money(100_00, "USD"), fixture.Clock.GetUtcNow(), []));
        MemberView dupBefore = (await dup.Get())!;

        MemberResult merged = await anna.MergeFrom("anna2", "duplicate sign-up");
        await fixture.DeactivateAllAsync();
        MemberView survivor = (await anna.Get())!;

        Assert.Equal((AccrualStatus.Accepted, 80L, 100L), (returned.Status, dupBefore.Shortfall.Value, dupBefore.LifetimeReversed.Value));
        Assert.True(merged.Error == LoyaltyError.None, merged.ErrorMessage);
        // Before: the lifetime reversed moved (100) but the shortfall stayed behind (0).
        Assert.Equal((80L, 100L), (merged.Member!.Shortfall.Value, merged.Member.LifetimeReversed.Value));
        Assert.Equal((80L, 100L, 30L), (survivor.Shortfall.Value, survivor.LifetimeReversed.Value, survivor.Balance.Value));
        Assert.Equal(30L, await Sql.SumPointsAsync(fixture.Storage, _program, "anna"));
    }

    [Fact]
    public async Task Merge_OfAReferredDuplicate_DoesNotRewardTheReferralTwice()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        IMemberGrain referrer = await EnrolAsync("rita", null);
        IMemberGrain dup = await EnrolAsync("anna2", referredBy: "rita");
        await dup.Accrue(Buy("anna2", 20_00));
        long ritaAfterFirst = (await referrer.Get())!.Balance.Value;

        await anna.MergeFrom("anna2", "duplicate");
        await anna.Accrue(Buy("anna", 20_00));
        MemberView annaView = (await anna.Get())!;

        Assert.Equal(100L, ritaAfterFirst);
        Assert.Equal(100L, (await referrer.Get())!.Balance.Value);
        Assert.Equal("rita", annaView.ReferredBy);
        Assert.DoesNotContain(annaView.Referrals, r => r == "anna");
    }

    [Fact]
    public async Task Merge_TheSurvivorsLedger_ContinuesWithTheDuplicatesHistory()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        IMemberGrain dup = await EnrolAsync("anna2", null);
        await dup.Accrue(Buy("anna2", 10_00, "old-1"));
        await dup.Accrue(Buy("anna2", 10_00, "old-2"));
        await anna.MergeFrom("anna2", "duplicate");

        var entries = new List<LedgerEntry>();
        LedgerPage page = (await anna.GetLedger(null, 2))!;
        entries.AddRange(page.Entries);
        for (int i = 0; i < 10 && page.HasMore; i++)
        {
            page = (await anna.GetLedger(page.NextBeforeSequence, 2, page.NextMember))!;
            entries.AddRange(page.Entries);
        }

        Assert.Equal(["anna", "anna", "anna"], entries.Take(3).Select(e => e.MemberId));
        // The merge's start and end frame the survivor's entry that took the duplicate in.
        Assert.Equal([LedgerEntryKind.MergeSettled, LedgerEntryKind.MergedIn, LedgerEntryKind.MergeStarted], entries.Take(3).Select(e => e.Kind));
        Assert.Equal(["old-2", "old-1"], entries.Where(e => e.Kind == LedgerEntryKind.Earn).Select(e => e.TransactionId));
        Assert.Equal(LedgerEntryKind.MergedAway, entries.First(e => e.MemberId == "anna2").Kind);
        Assert.False(page.HasMore);
    }

    [Fact]
    public async Task Merge_OfTwoAccountsThatTogetherQualify_MovesTheMemberUpAtOnce_AndReturnsOfTheDuplicatesPurchasesCountAgainstIt()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        IMemberGrain dup = await EnrolAsync("anna2", null);
        await anna.Accrue(Buy("anna", 300_00));
        await dup.Accrue(Buy("anna2", 250_00, "dup-buy"));

        MemberResult merged = await anna.MergeFrom("anna2", "duplicate sign-up");
        ReturnResult returned = await anna.Return(new PurchaseReturn("ret-dup", _program, "anna", "dup-buy", "store-1", new Money(100_00, "USD"), fixture.Clock.GetUtcNow(), []));
        MemberView live = (await anna.Get())!;
        await fixture.DeactivateAllAsync();
        MemberView reloaded = (await anna.Get())!;

        // Neither account reached gold (500) alone; the person did, so the merge moves them up and
        // holds the tier for a window from now.
        Assert.True(merged.Error == LoyaltyError.None, merged.ErrorMessage);
        Assert.Equal(("gold", 550L), (merged.Member!.Tier, merged.Member.TierQualifying));
        Assert.Equal(fixture.Clock.GetUtcNow().AddDays(365), merged.Member.TierReviewAt);
        // A return of the duplicate's purchase takes its points off the person's qualification; the tier stays held.
        Assert.Equal(AccrualStatus.Accepted, returned.Status);
        Assert.Equal(("gold", 450L), (live.Tier, live.TierQualifying));
        Assert.Equal((live.Tier, live.TierQualifying, live.TierReviewAt), (reloaded.Tier, reloaded.TierQualifying, reloaded.TierReviewAt));
    }

    [Fact]
    public async Task Merge_DoesNotWarnAgainOfPointsTheDuplicateWasWarnedAbout_ButWarnsOfTheSurvivorsOwn()
    {
        IMemberGrain anna = await SetUpAsync("anna", Shop with { Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 12, WarnDays: 30) });
        IMemberGrain dup = await EnrolAsync("anna2", null);
        await dup.Accrue(Buy("anna2", 100_00, "dup-buy"));
        fixture.Clock.Advance(TimeSpan.FromDays(5));
        await anna.Accrue(Buy("anna", 50_00, "anna-buy"));
        DateTimeOffset dupExpires = Assert.Single((await dup.Get())!.Expiring!).ExpiresAt;
        DateTimeOffset annaExpires = Assert.Single((await anna.Get())!.Expiring!).ExpiresAt;
        // 29 days before the duplicate's lot expires (within its 30 warning days), 34 or so before anna's.
        fixture.Clock.Advance(dupExpires - fixture.Clock.GetUtcNow() - TimeSpan.FromDays(29));
        await WaitForEntriesAsync("anna2", LedgerEntryKind.ExpiryWarning, 1);

        MemberResult merged = await anna.MergeFrom("anna2", "duplicate sign-up");
        // 29 days before anna's own lot expires now, still before the duplicate's.
        fixture.Clock.Advance(annaExpires - fixture.Clock.GetUtcNow() - TimeSpan.FromDays(29));
        await WaitForEntriesAsync("anna", LedgerEntryKind.ExpiryWarning, 1);
        await Task.Delay(300);
        List<string> warnings = await Sql.RowsAsync(fixture.Storage,
            $"SELECT details FROM ledger_entries WHERE program_id = '{_program}' AND member_id = 'anna' AND kind = {(int)LedgerEntryKind.ExpiryWarning}", r => r.GetString(0));

        Assert.True(merged.Error == LoyaltyError.None, merged.ErrorMessage);
        string warning = Assert.Single(warnings);
        Assert.Contains("anna-buy", warning, StringComparison.Ordinal);
        Assert.DoesNotContain("dup-buy", warning, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Merge_OfTheDuplicateThatReferredTheSurvivor_DoesNotListTheSurvivorAmongItsOwnReferrals()
    {
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(Shop);
        IMemberGrain dup = await EnrolAsync("anna2", null);
        IMemberGrain anna = await EnrolAsync("anna", referredBy: "anna2");
        IMemberGrain friend = await EnrolAsync("friend", referredBy: "anna2");

        MemberResult merged = await anna.MergeFrom("anna2", "duplicate sign-up");
        await fixture.DeactivateAllAsync();
        MemberView reloaded = (await anna.Get())!;

        Assert.True(merged.Error == LoyaltyError.None, merged.ErrorMessage);
        Assert.Equal(["friend"], merged.Member!.Referrals);
        Assert.Equal(["friend"], reloaded.Referrals);
        Assert.Equal("anna", (await friend.Get())!.ReferredBy);
    }

    [Fact]
    public async Task ChangesOfTheDuplicate_ResentToTheSurvivorAfterTheMerge_AreDuplicates_AndOtherContentUnderTheirIdsIsRefused()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        IMemberGrain dup = await EnrolAsync("anna2", null);
        Purchase bought = Buy("anna2", 100_00, "dup-buy");
        var returned = new PurchaseReturn("dup-ret", _program, "anna2", "dup-buy", "store-1", new Money(40_00, "USD"), fixture.Clock.GetUtcNow(), []);
        AccrualResult first = await dup.Accrue(bought);
        ReturnResult firstReturn = await dup.Return(returned);
        await anna.MergeFrom("anna2", "duplicate sign-up");
        long entries = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}'");

        AccrualResult boughtAgain = await anna.Accrue(bought with { MemberId = "anna" });
        ReturnResult returnedAgain = await anna.Return(returned with { MemberId = "anna" });
        AccrualResult otherPurchase = await anna.Accrue(bought with { MemberId = "anna", Amount = new Money(900_00, "USD") });
        ReturnResult otherReturn = await anna.Return(returned with { MemberId = "anna", Amount = new Money(50_00, "USD") });

        Assert.Equal((AccrualStatus.Duplicate, first.Sequence), (boughtAgain.Status, boughtAgain.Sequence));
        Assert.Equal((AccrualStatus.Duplicate, firstReturn.Sequence), (returnedAgain.Status, returnedAgain.Sequence));
        Assert.Equal((LoyaltyError.AlreadyExists, LoyaltyError.AlreadyExists), (otherPurchase.Error, otherReturn.Error));
        Assert.Equal(entries, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}'"));
    }

    [Fact]
    public async Task Merge_Refusals_WriteNothing()
    {
        IMemberGrain anna = await SetUpAsync("anna");
        long entries = await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}'");

        MemberResult self = await anna.MergeFrom("anna", "oops");
        MemberResult ghost = await anna.MergeFrom("ghost", "duplicate");
        MemberResult noReason = await anna.MergeFrom("ghost", " ");

        Assert.Equal((LoyaltyError.InvalidArgument, LoyaltyError.NotFound, LoyaltyError.InvalidArgument), (self.Error, ghost.Error, noReason.Error));
        Assert.Equal(entries, await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}'"));
    }

    private IMemberGrain Member(string id) => fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, id));

    private async Task<IMemberGrain> SetUpAsync(string id, ProgramSettings? settings = null)
    {
        await fixture.Grains.GetGrain<IProgramGrain>(_program).Put(settings ?? Shop);
        return await EnrolAsync(id, null);
    }

    private async Task WaitForEntriesAsync(string member, LedgerEntryKind kind, int count)
    {
        // The due schedule wakes members on the fake clock, polled in real time: moments, not seconds.
        DateTime deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (await Sql.ScalarAsync(fixture.Storage, $"SELECT count(*) FROM ledger_entries WHERE program_id = '{_program}' AND member_id = '{member}' AND kind = {(int)kind}") < count)
        {
            if (DateTime.UtcNow >= deadline)
            {
                List<string> kinds = await Sql.RowsAsync(fixture.Storage, $"SELECT kind || ':' || points FROM ledger_entries WHERE program_id = '{_program}' AND member_id = '{member}' ORDER BY seq", r => r.GetString(0));
                MemberView? view = await fixture.Grains.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_program, member)).Get();
                string expiring = string.Join("/", view?.Expiring?.Select(e => e.ExpiresAt.ToString("O") + " " + e.Points.Value) ?? []);
                Assert.Fail($"not {count} {kind} entries of '{member}' within 15 s; its entries: {string.Join(", ", kinds)}; expiring {expiring}; now {fixture.Clock.GetUtcNow():O}");
            }

            await Task.Delay(50);
        }
    }

    private async Task<IMemberGrain> EnrolAsync(string id, string? referredBy)
    {
        EnrolmentResult result = await Member(id).Enrol(new Enrolment(_program, id, referredBy));
        Assert.True(result.Error == LoyaltyError.None, result.ErrorMessage);
        return Member(id);
    }

    private Purchase Buy(string member, long amountMinor, string? txn = null) =>
        new(txn ?? $"t{Interlocked.Increment(ref _txn)}", _program, member, "store-1", new Money(amountMinor, "USD"), fixture.Clock.GetUtcNow().AddMinutes(-1), []);
}

public sealed class SqliteLifecycleGrainTests(SqliteClusterFixture fixture) : LifecycleGrainTests(fixture), IClassFixture<SqliteClusterFixture>;

public sealed class PostgresLifecycleGrainTests(PostgresClusterFixture fixture) : LifecycleGrainTests(fixture), IClassFixture<PostgresClusterFixture>;
