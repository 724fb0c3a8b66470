using Loyalty.Grains;
using static Loyalty.Tests.Rules.RuleBuilders;

namespace Loyalty.Tests.Rules;

/// <summary>Personal bonus days: how they earn beside campaigns, when a booking is refused, and how long bookings are kept.</summary>
public sealed class BonusDayRulesTests
{
    private static readonly DateOnly Day = DateOnly.FromDateTime(Wednesday.UtcDateTime);

    public static TheoryData<string, ProgramSettings, EarnContext, string> Cases => new()
    {
        { "no bonus days in the program", Program(), Member(bonusDay: Day), "base=100 total=100" },
        { "a day the member did not book", WithDays(BonusDayStacking.Stack), Member(bonusDay: Day.AddDays(1)), "base=100 total=100" },
        { "a booked day doubles the basket", WithDays(BonusDayStacking.Stack), Member(bonusDay: Day), "base=100 2026-11-25=100 total=200" },
        {
            "stacking: on top of a double-points campaign",
            WithDays(BonusDayStacking.Stack) with { Campaigns = [Campaign("dbl", 20_000)] }, Member(bonusDay: Day), "base=100 dbl=100 2026-11-25=100 total=300"
        },
        {
            "the larger applies: a triple-points campaign beats the day",
            WithDays(BonusDayStacking.Larger) with { Campaigns = [Campaign("tpl", 30_000)] }, Member(bonusDay: Day), "base=100 tpl=200 total=300"
        },
        {
            "the larger applies: the day beats a campaign's x1.5 and its 20 points together",
            WithDays(BonusDayStacking.Larger) with { Campaigns = [Campaign("small", 15_000, bonus: 20)] }, Member(bonusDay: Day), "base=100 2026-11-25=100 total=200"
        },
        {
            "the larger applies: a tie keeps the campaign",
            WithDays(BonusDayStacking.Larger) with { Campaigns = [Campaign("dbl", 20_000)] }, Member(bonusDay: Day), "base=100 dbl=100 total=200"
        },
        {
            "the daily cap still trims a bonus day, bonuses first",
            WithDays(BonusDayStacking.Stack) with { DailyEarnCapPoints = 150 }, Member(bonusDay: Day), "base=100 2026-11-25=50 total=150"
        },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void BonusDay_Earns(string rule, ProgramSettings program, EarnContext member, string expected)
    {
        EarnResult earn = Earning.Compute(Basket(100_00), program, member);

        Assert.True(expected == Describe(earn), $"{rule}: expected {expected}, got {Describe(earn)}");
    }

    [Fact]
    public void BonusDay_UnderLarger_ReplacingACampaign_DropsItsCapAndCappedPoints()
    {
        ProgramSettings program = WithDays(BonusDayStacking.Larger) with { Campaigns = [Campaign("capped", 15_000, cap: 10)] };

        EarnResult earn = Earning.Compute(Basket(100_00), program, Member(bonusDay: Day));

        Assert.Equal("base=100 2026-11-25=100 total=200", Describe(earn));
        Assert.Empty(earn.CapsHit);
        Assert.Equal(0, earn.CappedPoints);
    }

    public static TheoryData<string, BonusDayPolicy?, int, int[], DateOnly, string?> Bookings => new()
    {
        { "a free day within the allowance", Policy, 2, [], Day.AddDays(3), null },
        { "today", Policy, 1, [], Day, null },
        { "a day booked already is no refusal (answered without a write)", Policy, 1, [Day.AddDays(3).DayNumber], Day.AddDays(3), null },
        { "the program has no bonus days", null, 2, [], Day, "no personal bonus days" },
        { "yesterday", Policy, 2, [], Day.AddDays(-1), "from today" },
        { "more than 366 days ahead", Policy, 2, [], Day.AddDays(367), "366 days ahead" },
        { "the tier grants none", Policy, 0, [], Day, "grants no personal bonus days" },
        { "the year's allowance is used", Policy, 1, [Day.AddDays(1).DayNumber], Day.AddDays(2), "all 1 bonus days of 2026" },
        { "next year's allowance is its own", Policy, 1, [Day.AddDays(1).DayNumber], new DateOnly(2027, 1, 5), null },
    };

    [Theory]
    [MemberData(nameof(Bookings))]
    public void Booking_IsRefusedWithItsReason(string rule, BonusDayPolicy? policy, int perYear, int[] booked, DateOnly day, string? refusal)
    {
        var days = new BookedBonusDays();
        foreach (int d in booked)
        {
            days.Book(d);
        }

        (LoyaltyError Error, string Message)? refused = BonusDayRules.Refusal(policy, new TierDefinition("t", 0, Multipliers.One, [], perYear), days, day, Day);

        Assert.True(refusal is null ? refused is null : refused?.Message.Contains(refusal, StringComparison.Ordinal) == true, $"{rule}: {refused?.Message ?? "accepted"}");
    }

    [Fact]
    public void BookedDays_AreBounded_OldDaysLeaveAsNewOnesAreBooked()
    {
        var days = new BookedBonusDays();
        int first = Day.DayNumber;

        for (int year = 0; year < 20; year++)
        {
            for (int i = 0; i < Limits.BonusDaysPerYearMax; i++)
            {
                days.Book(first + (year * 365) + (i * 7));
            }
        }

        Assert.InRange(days.Days.Count, 1, ((BookedBonusDays.KeptDays / 365) + 2) * Limits.BonusDaysPerYearMax);
        Assert.True(days.Days[0] >= days.Days[^1] - BookedBonusDays.KeptDays);
        Assert.Equal(days.Days.Order(), days.Days);
    }

    private static readonly BonusDayPolicy Policy = new(20_000, BonusDayStacking.Stack);

    private static ProgramSettings WithDays(BonusDayStacking stacking) => Program() with { BonusDays = new BonusDayPolicy(20_000, stacking) };
}
