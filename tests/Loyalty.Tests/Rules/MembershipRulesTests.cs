using Loyalty.Grains;
using static Loyalty.Tests.Rules.RuleBuilders;

namespace Loyalty.Tests.Rules;

/// <summary>Paid membership decided purely: starts, renewals, trials, lapses, the history's bound, and the plan's earn benefits.</summary>
public sealed class MembershipRulesTests
{
    private static readonly MembershipPlan Monthly = new("prime", "Prime", 14_99, 1, TrialDays: 30, MultiplierBp: 15_000);
    private static readonly MembershipPlan Yearly = new("plus", "Plus", 99_00, 12);
    private static readonly ProgramSettings Shop = Program() with { MembershipPlans = [Monthly, Yearly] };

    [Fact]
    public void APayment_StartsATermNow_AndThenRenewsFromTheTermsEnd()
    {
        var member = new MembershipState();

        (LedgerEntryKind kind, MembershipChange change) = MembershipRules.Pay(Shop, member, Payment("p1", "prime", 14_99), Wednesday, out _)!.Value;
        Apply(member, kind, change, Wednesday);
        (LedgerEntryKind renewKind, MembershipChange renewed) = MembershipRules.Pay(Shop, member, Payment("p2", "prime", 14_99), Wednesday.AddDays(10), out _)!.Value;

        Assert.Equal((LedgerEntryKind.MembershipStarted, Wednesday.AddMonths(1)), (kind, change.TermEndsAt));
        Assert.Equal((LedgerEntryKind.MembershipRenewed, Wednesday.AddMonths(2)), (renewKind, renewed.TermEndsAt));
    }

    [Fact]
    public void Renewals_OfATermBegunOnTheMonthsLastDay_EndOnEachMonthsLastDay_AndComeBackToThe31st()
    {
        var member = new MembershipState();
        var jan31 = new DateTimeOffset(2027, 1, 31, 9, 0, 0, TimeSpan.Zero);
        var ends = new List<DateTimeOffset>();
        (LedgerEntryKind kind, MembershipChange change) = MembershipRules.Pay(Shop, member, Payment("p0", "prime", 14_99), jan31, out _)!.Value;
        Apply(member, kind, change, jan31);
        for (int i = 1; i <= 3; i++)
        {
            ends.Add(member.TermEndsAt);
            (kind, change) = MembershipRules.Pay(Shop, member, Payment("p" + i, "prime", 14_99), member.TermEndsAt.AddDays(-1), out _)!.Value;
            Apply(member, kind, change, member.TermEndsAt.AddDays(-1));
        }

        ends.Add(member.TermEndsAt);

        // Before, each renewal counted a month from the term's end: 28 February, then the 28th for good.
        Assert.Equal([new(2027, 2, 28, 9, 0, 0, TimeSpan.Zero), new(2027, 3, 31, 9, 0, 0, TimeSpan.Zero), new(2027, 4, 30, 9, 0, 0, TimeSpan.Zero), new(2027, 5, 31, 9, 0, 0, TimeSpan.Zero)], ends);
    }

    [Fact]
    public void Renewals_AfterATrial_CountWholeMonthsFromTheTrialsEnd()
    {
        var member = new MembershipState();
        var jan1 = new DateTimeOffset(2027, 1, 1, 9, 0, 0, TimeSpan.Zero);
        MembershipChange trial = MembershipRules.Trial(Shop, member, "prime", jan1, out _)!;
        Apply(member, LedgerEntryKind.MembershipStarted, trial, jan1);
        for (int i = 1; i <= 2; i++)
        {
            (LedgerEntryKind kind, MembershipChange change) = MembershipRules.Pay(Shop, member, Payment("p" + i, "prime", 14_99), member.TermEndsAt.AddDays(-1), out _)!.Value;
            Apply(member, kind, change, member.TermEndsAt.AddDays(-1));
        }

        // The 30-day trial ends on 31 January; paid months follow from there.
        Assert.Equal(new DateTimeOffset(2027, 1, 31, 9, 0, 0, TimeSpan.Zero), member.PaidFrom);
        Assert.Equal(new DateTimeOffset(2027, 3, 31, 9, 0, 0, TimeSpan.Zero), member.TermEndsAt);
    }

    public static TheoryData<string, MembershipPayment, string> Refusals => new()
    {
        { "an unknown plan", Payment("x", "gold", 14_99), "not one of the program's membership_plans" },
        { "another amount", Payment("x", "prime", 9_99), "does not match plan prime's fee" },
        { "another currency", new MembershipPayment("x", "prime", new Money(14_99, "EUR")), "does not match plan prime's fee" },
        { "another plan while one runs", Payment("x", "plus", 99_00), "holds plan prime" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void APayment_IsRefusedWithItsReason(string rule, MembershipPayment payment, string reason)
    {
        var member = new MembershipState();
        Apply(member, LedgerEntryKind.MembershipStarted, new MembershipChange("prime", Wednesday.AddMonths(1)), Wednesday);

        Assert.Null(MembershipRules.Pay(Shop, member, payment, Wednesday.AddDays(1), out var refusal));
        Assert.True(refusal?.Message.Contains(reason, StringComparison.Ordinal) == true, $"{rule}: {refusal?.Message}");
    }

    [Fact]
    public void Renewals_CannotPayMoreThanTenYearsAhead()
    {
        var member = new MembershipState();
        Apply(member, LedgerEntryKind.MembershipStarted, new MembershipChange("plus", Wednesday.AddMonths(Limits.MembershipPaidAheadMonthsMax)), Wednesday);

        Assert.Null(MembershipRules.Pay(Shop, member, Payment("x", "plus", 99_00), Wednesday, out var refusal));
        Assert.Contains("at most 120 months ahead", refusal!.Value.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ATrial_IsOncePerPlan_OnlyForPlansWithOne_AndNotWhileAPlanRuns()
    {
        var member = new MembershipState();

        MembershipChange trial = MembershipRules.Trial(Shop, member, "prime", Wednesday, out _)!;
        Assert.Null(MembershipRules.Trial(Shop, member, "plus", Wednesday, out var noTrial));
        Apply(member, LedgerEntryKind.MembershipStarted, trial, Wednesday);
        Assert.Null(MembershipRules.Trial(Shop, member, "prime", Wednesday.AddDays(60), out var used));
        Assert.Null(MembershipRules.Trial(Shop, member, "prime", Wednesday.AddDays(1), out var running));

        Assert.Equal((true, Wednesday.AddDays(30)), (trial.Trial, trial.TermEndsAt));
        Assert.Contains("has no free trial", noTrial!.Value.Message, StringComparison.Ordinal);
        Assert.Contains("already had", used!.Value.Message, StringComparison.Ordinal);
        Assert.Contains("already had", running!.Value.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ATerm_LapsesAtItsEnd_AndGivesNoBenefitsAfterIt()
    {
        var member = new MembershipState();
        Apply(member, LedgerEntryKind.MembershipStarted, new MembershipChange("prime", Wednesday.AddMonths(1)), Wednesday);
        Apply(member, LedgerEntryKind.MembershipCancelled, new MembershipChange("prime", Wednesday.AddMonths(1)), Wednesday.AddDays(3));

        Assert.Equal("prime", member.PlanAt(Wednesday.AddMonths(1).AddTicks(-1)));
        Assert.False(MembershipRules.LapseDue(member, Wednesday.AddMonths(1).AddTicks(-1)));
        Assert.True(MembershipRules.LapseDue(member, Wednesday.AddMonths(1)));
        Assert.Null(member.PlanAt(Wednesday.AddMonths(1)));
        Assert.Equal(MembershipStatus.Lapsed, member.ToView(Shop, Wednesday.AddMonths(1))!.Status);
        Apply(member, LedgerEntryKind.MembershipLapsed, new MembershipChange("prime", Wednesday.AddMonths(1)), Wednesday.AddMonths(1));
        Assert.Null(member.LapsesAt);
    }

    [Fact]
    public void TheHistory_KeepsTheNewestChangesOnly()
    {
        var member = new MembershipState();
        for (int i = 0; i < 100; i++)
        {
            Apply(member, LedgerEntryKind.MembershipRenewed, new MembershipChange("prime", Wednesday.AddMonths(i + 1)), Wednesday.AddDays(i));
        }

        Assert.Equal(Limits.MembershipHistoryMax, member.History.Count);
        Assert.Equal(Wednesday.AddMonths(100), member.History[^1].TermEndsAt);
    }

    [Fact]
    public void APlanMember_EarnsThePlansMultiplier_AndGetsTheCampaignsReservedToIt()
    {
        ProgramSettings program = Shop with { Campaigns = [Campaign("members", bonus: 20) with { Plans = ["prime"] }] };

        EarnResult member = Earning.Compute(Basket(100_00), program, Member() with { Plan = Monthly });
        EarnResult other = Earning.Compute(Basket(100_00), program, Member() with { Plan = Yearly });
        EarnResult none = Earning.Compute(Basket(100_00), program, Member());

        Assert.Equal("base=100 prime=50 members=20 total=170", Describe(member));
        Assert.Equal("base=100 total=100", Describe(other));
        Assert.Equal("base=100 total=100", Describe(none));
    }

    [Fact]
    public void ANewMembership_WaitsForTheLastOnesLapseToBeRecorded_ARenewalDoesNot()
    {
        var member = new MembershipState();
        (LedgerEntryKind kind, MembershipChange change) = MembershipRules.Pay(Shop, member, Payment("p1", "prime", 14_99), Wednesday, out _)!.Value;
        Apply(member, kind, change, Wednesday);
        DateTimeOffset ended = change.TermEndsAt.AddMinutes(1);

        var other = MembershipRules.Pay(Shop, member, Payment("p2", "plus", 99_00), ended, out var waiting);
        var renewal = MembershipRules.Pay(Shop, member, Payment("p3", "prime", 14_99), ended, out _);
        Apply(member, LedgerEntryKind.MembershipLapsed, change, change.TermEndsAt);
        var afterLapse = MembershipRules.Pay(Shop, member, Payment("p2", "plus", 99_00), ended, out _);

        // Before: plus started over prime's unrecorded lapse, which was then never written.
        Assert.Null(other);
        Assert.Equal(LoyaltyError.Unavailable, waiting!.Value.Error);
        Assert.Contains("membership of plan prime ended at", waiting.Value.Message, StringComparison.Ordinal);
        Assert.Equal(LedgerEntryKind.MembershipRenewed, renewal!.Value.Kind);
        Assert.Equal((LedgerEntryKind.MembershipStarted, "plus"), (afterLapse!.Value.Kind, afterLapse.Value.Change.PlanId));
    }

    private static MembershipPayment Payment(string id, string plan, long amountMinor) => new(id, plan, new Money(amountMinor, "USD"));

    private static void Apply(MembershipState member, LedgerEntryKind kind, MembershipChange change, DateTimeOffset at) =>
        member.Apply(new LedgerEntry("p", "m", 1, kind, Points.Zero, null, 0, null, 0, null, null, null, at, at, Details: MembershipDetails.Of(kind, change)));
}

/// <summary>The refusals of the programme settings added with the kinds of programme: each names its field.</summary>
public sealed class ProgrammeSettingsRefusalTests
{
    public static TheoryData<string, ProgramSettings, string> Cases => new()
    {
        { "a plan term of 0 months", Shop(new MembershipPlan("p", "P", 1_00, 0)), "membership_plans[0] needs term_months" },
        { "a negative fee", Shop(new MembershipPlan("p", "P", -1, 1)), "membership_plans[0].fee_minor" },
        { "a plan multiplier below x1", Shop(new MembershipPlan("p", "P", 1_00, 1, MultiplierBp: 5_000)), "membership_plans[0].multiplier_bp" },
        { "two plans with one id", Shop(new MembershipPlan("p", "P", 1_00, 1), new MembershipPlan("p", "Q", 2_00, 1)), "repeats plan p" },
        { "a campaign for an unknown plan", Shop(new MembershipPlan("p", "P", 1_00, 1)) with { Campaigns = [RuleBuilders.Campaign("c", bonus: 5) with { Plans = ["gold"] }] }, "plan 'gold'" },
        { "a reward for an unknown plan", RuleBuilders.Program() with { Rewards = [new Reward("r", "R", RewardKind.Product, 10, Sku: "R", Plans: ["gold"])] }, "plan 'gold'" },
        { "a trade-in table without rates", RuleBuilders.Program() with { TradeIn = new TradeInPolicy([]) }, "trade_in.rates must list" },
        { "a trade-in rate for REJECTED", RuleBuilders.Program() with { TradeIn = new TradeInPolicy([new TradeInRate("j", TradeInCondition.Rejected, 1)]) }, "condition must be LIKE_NEW, GOOD or WORN" },
        { "a trade-in rate repeated", RuleBuilders.Program() with { TradeIn = new TradeInPolicy([new TradeInRate("j", TradeInCondition.Good, 1), new TradeInRate("j", TradeInCondition.Good, 2)]) }, "repeats j" },
        { "a trade-in credit too large", RuleBuilders.Program() with { TradeIn = new TradeInPolicy([new TradeInRate("j", TradeInCondition.Good, Limits.TradeInCreditMinorMax + 1)]) }, "credit_minor must be" },
        { "a bonus day at x1", RuleBuilders.Program() with { BonusDays = new BonusDayPolicy(Multipliers.One, BonusDayStacking.Stack) }, "bonus_days.multiplier_bp" },
        { "a tier granting 53 bonus days", RuleBuilders.Program() with { Tiers = new TierLadder(TierBasis.Points, 365, 0, [new TierDefinition("t", 0, Multipliers.One, [], 53)]) }, "bonus_days_per_year must be 0..52" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ASetting_OutOfBounds_IsRefusedNamingItsField(string rule, ProgramSettings settings, string message)
    {
        string? error = settings.Check();

        Assert.True(error?.Contains(message, StringComparison.Ordinal) == true, $"{rule}: {error ?? "accepted"}");
    }

    private static ProgramSettings Shop(params MembershipPlan[] plans) => RuleBuilders.Program() with { MembershipPlans = plans };
}
