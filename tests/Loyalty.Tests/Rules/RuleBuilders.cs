using Loyalty.Grains;

namespace Loyalty.Tests.Rules;

/// <summary>Programs, purchases and member contexts for the rule tests.</summary>
public static class RuleBuilders
{
    /// <summary>Wednesday 25 November 2026, 10:00 UTC.</summary>
    public static readonly DateTimeOffset Wednesday = new(2026, 11, 25, 10, 0, 0, TimeSpan.Zero);

    public static ProgramSettings Program(long rate = 1, Rounding rounding = Rounding.Down) =>
        new("Shop", "USD", 2, rate, rounding);

    public static Purchase Basket(long totalMinor, params LineItem[] lines) => Basket(totalMinor, Wednesday, lines);

    public static Purchase Basket(long totalMinor, DateTimeOffset at, params LineItem[] lines) =>
        new("t1", "p", "m", "store-1", new Money(totalMinor, "USD"), at, lines);

    public static LineItem Line(string sku, long amountMinor, string category = "general") => new(sku, category, 1, amountMinor);

    public static Campaign Campaign(string id, int multiplierBp = 0, long bonus = 0, long cap = 0) =>
        new(id, id, Wednesday.AddDays(-7), Wednesday.AddDays(7), [], 0, 0, [], [], [], multiplierBp, bonus, cap, 0);

    public static EarnContext Member(string tier = "standard", int tierMultiplierBp = Multipliers.One, string[]? flags = null,
        long campaignEarned = 0, long earnedToday = 0, long earnedThisMonth = 0, DateOnly? bonusDay = null) =>
        new(new TierDefinition(tier, 0, tierMultiplierBp, []), flags ?? [], new History(campaignEarned, earnedToday, earnedThisMonth, bonusDay?.DayNumber ?? -1));

    /// <summary>A qualifying total that is the same whatever the window.</summary>
    public static IQualifying Qualifying(long total) => new FixedQualifying(total);

    private sealed record History(long Campaign, long Today, long ThisMonth, int BonusDay) : IEarnHistory
    {
        public bool IsBonusDay(int day) => day == BonusDay;

        public long CampaignEarned(string campaignId) => Campaign;

        public long EarnedOnDay(int day) => Today;

        public long EarnedInMonth(int month) => ThisMonth;
    }

    private sealed record FixedQualifying(long Total) : IQualifying
    {
        public long QualifyingAt(TierLadder ladder, DateTimeOffset at) => Total;
    }

    public static string Describe(EarnResult earn) =>
        string.Join(" ", earn.Components.Select(c => $"{c.Code}={c.Points}")) + $" total={earn.Total.Value}";
}
