namespace Loyalty.Tests.Rules;

/// <summary>Expiry dates from a program's policy, and the refusals of expiry and referral policies and catalogues.</summary>
public sealed class ExpiryRulesTests
{
    [Theory]
    // Good through the day the lifespan ends on: 15 March 2027, all of it.
    [InlineData(ExpiryMode.Lifespan, 12, "UTC", "2026-03-15T10:00:00Z", "2027-03-16T00:00:00Z")]
    [InlineData(ExpiryMode.Lifespan, 12, "UTC", "2026-03-15T00:00:00Z", "2027-03-16T00:00:00Z")]
    // 02:30 UTC on 15 March is still the 14th in New York (EDT, UTC-4): good through the local 14th.
    [InlineData(ExpiryMode.Lifespan, 12, "America/New_York", "2026-03-15T02:30:00Z", "2027-03-15T04:00:00Z")]
    // 18:00 and 21:00 on 30 January in New York (the second already the 31st in UTC): a month on
    // the local calendar is 28 February for both, good through it.
    [InlineData(ExpiryMode.Lifespan, 1, "America/New_York", "2027-01-30T23:00:00Z", "2027-03-01T05:00:00Z")]
    [InlineData(ExpiryMode.Lifespan, 1, "America/New_York", "2027-01-31T02:00:00Z", "2027-03-01T05:00:00Z")]
    // 23:30 on 9 November in Berlin (CET); six months on is 9 May, in summer time (CEST, UTC+2).
    [InlineData(ExpiryMode.Lifespan, 6, "Europe/Berlin", "2026-11-09T22:30:00Z", "2027-05-09T22:00:00Z")]
    [InlineData(ExpiryMode.EndOfMonth, 12, "UTC", "2026-03-15T10:00:00Z", "2027-04-01T00:00:00Z")]
    [InlineData(ExpiryMode.EndOfYear, 12, "UTC", "2026-03-15T10:00:00Z", "2028-01-01T00:00:00Z")]
    // The month ends at local midnight: 1 April 2027 00:00 in New York (EDT, UTC-4).
    [InlineData(ExpiryMode.EndOfMonth, 12, "America/New_York", "2026-03-15T10:00:00Z", "2027-04-01T04:00:00Z")]
    // 31 Dec 23:30 in New York is already 1 January in UTC: the local year decides.
    [InlineData(ExpiryMode.EndOfYear, 1, "America/New_York", "2026-12-01T04:30:00Z", "2027-01-01T05:00:00Z")]
    public void ExpiresAt_FollowsTheModeInTheProgramsTimeZone(ExpiryMode mode, int months, string zone, string availableAt, string expected)
    {
        var policy = new ExpiryPolicy(mode, months);

        DateTimeOffset? expiresAt = policy.ExpiresAt(DateTimeOffset.Parse(availableAt, System.Globalization.CultureInfo.InvariantCulture), TimeZoneInfo.FindSystemTimeZoneById(zone));

        Assert.Equal(DateTimeOffset.Parse(expected, System.Globalization.CultureInfo.InvariantCulture), expiresAt);
    }

    [Fact]
    public void Lifespan_PointsEarnedOnOneLocalDay_ShareAnExpiry_SoAMemberHoldsAtMostOneLotPerDay()
    {
        var policy = new ExpiryPolicy(ExpiryMode.Lifespan, 12);
        TimeZoneInfo zone = TimeZoneInfo.FindSystemTimeZoneById("Europe/Berlin");
        var firstOfDay = new DateTimeOffset(2026, 7, 1, 0, 0, 1, TimeSpan.FromHours(2));

        HashSet<DateTimeOffset?> expiries = [.. Enumerable.Range(0, 24 * 60).Select(m => policy.ExpiresAt(firstOfDay.AddMinutes(m), zone))];
        DateTimeOffset? nextDay = policy.ExpiresAt(firstOfDay.AddDays(1), zone);

        Assert.Equal([new DateTimeOffset(2027, 7, 2, 0, 0, 0, TimeSpan.FromHours(2))], expiries);
        Assert.Equal(new DateTimeOffset(2027, 7, 3, 0, 0, 0, TimeSpan.FromHours(2)), nextDay);
    }

    [Fact]
    public void ExpiresAt_ModeNone_IsNever() =>
        Assert.Null(new ExpiryPolicy(ExpiryMode.None, 0, InactivityMonths: 6).ExpiresAt(RuleBuilders.Wednesday, TimeZoneInfo.Utc));

    [Theory]
    [InlineData(ExpiryMode.Lifespan, 0, 0, 0, "expiry.lifespan_months")]
    [InlineData(ExpiryMode.None, 12, 0, 0, "expiry.lifespan_months")]
    [InlineData(ExpiryMode.Lifespan, 121, 0, 0, "expiry.lifespan_months")]
    [InlineData(ExpiryMode.Lifespan, 12, -1, 0, "expiry.inactivity_months")]
    [InlineData(ExpiryMode.Lifespan, 12, 0, 366, "expiry.warn_days")]
    [InlineData((ExpiryMode)9, 12, 0, 0, "expiry.mode")]
    [InlineData(ExpiryMode.Lifespan, 1, 0, 28, "expiry.warn_days (28) must be shorter than the 1 month(s)")]
    [InlineData(ExpiryMode.Lifespan, 12, 2, 56, "expiry.warn_days (56) must be shorter than the 2 month(s)")]
    [InlineData(ExpiryMode.None, 0, 1, 30, "expiry.warn_days (30)")]
    public void Settings_WithABadExpiryPolicy_AreRefusedNamingTheField(ExpiryMode mode, int lifespan, int inactivity, int warn, string field)
    {
        ProgramSettings settings = RuleBuilders.Program() with { Expiry = new ExpiryPolicy(mode, lifespan, inactivity, warn) };

        Assert.StartsWith(field, settings.Check(), StringComparison.Ordinal);
    }

    [Fact]
    public void Settings_WhosePendingPointsOutlastTheInactivityDeadline_AreRefused_ButAShorterWaitIsNot()
    {
        ProgramSettings inactive = RuleBuilders.Program() with { Expiry = new ExpiryPolicy(ExpiryMode.None, 0, InactivityMonths: 1) };

        Assert.StartsWith("pending_days (28) must be shorter than expiry.inactivity_months", (inactive with { PendingDays = 28 }).Check(), StringComparison.Ordinal);
        Assert.Null((inactive with { PendingDays = 27 }).Check());
        Assert.Null((RuleBuilders.Program() with { Expiry = new ExpiryPolicy(ExpiryMode.Lifespan, 1, WarnDays: 27) }).Check());
    }

    public static TheoryData<Reward, string> BadRewards => new()
    {
        { new Reward("", "x", RewardKind.Product, 10, Sku: "S"), "rewards[0].id" },
        { new Reward("r", "", RewardKind.Product, 10, Sku: "S"), "rewards[0].name" },
        { new Reward("r", "x", RewardKind.Product, 0, Sku: "S"), "rewards[0].points_price" },
        { new Reward("r", "x", RewardKind.Discount, 10), "rewards[0].value_minor" },
        { new Reward("r", "x", RewardKind.Product, 10), "rewards[0].sku" },
        { new Reward("r", "x", RewardKind.Product, 10, ValueMinor: -500, Sku: "S"), "rewards[0].value_minor" },
        { new Reward("r", "x", RewardKind.Product, 10, ValueMinor: Limits.PurchaseAmountMinorMax + 1, Sku: "S"), "rewards[0].value_minor" },
        { new Reward("r", "x", RewardKind.Donation, 10), "rewards[0].cause" },
        { new Reward("r", "x", (RewardKind)7, 10), "rewards[0].kind" },
        { new Reward("r", "x", RewardKind.Product, 10, Sku: "S", Stock: -1), "rewards[0].stock" },
        { new Reward("r", "x", RewardKind.Product, 10, Sku: "S", AvailableFrom: RuleBuilders.Wednesday, AvailableUntil: RuleBuilders.Wednesday), "rewards[0] needs" },
    };

    [Theory]
    [MemberData(nameof(BadRewards))]
    public void Settings_WithABadReward_AreRefusedNamingTheField(Reward reward, string field)
    {
        ProgramSettings settings = RuleBuilders.Program() with { Rewards = [reward] };

        Assert.StartsWith(field, settings.Check(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(-1, 0, 0, 0, 30, "referrals.referrer_points")]
    [InlineData(0, Limits.BonusPointsMax + 1, 0, 0, 30, "referrals.referrer_points")]
    [InlineData(10, 10, -1, 0, 30, "referrals.min_purchase_minor")]
    [InlineData(10, 10, 0, -1, 30, "referrals.cap_per_period")]
    [InlineData(10, 10, 0, Limits.ReferralsPerMemberMax + 1, 30, "referrals.cap_per_period")]
    [InlineData(10, 10, 0, 5, 0, "referrals.period_days")]
    [InlineData(10, 10, 0, 5, Limits.ReferralPeriodDaysMax + 1, "referrals.period_days")]
    public void Settings_WithABadReferralPolicy_AreRefusedNamingTheField(long referrer, long referred, long minPurchase, int cap, int days, string field)
    {
        ProgramSettings settings = RuleBuilders.Program() with { Referrals = new ReferralPolicy(referrer, referred, minPurchase, cap, days) };

        Assert.StartsWith(field, settings.Check(), StringComparison.Ordinal);
    }

    [Fact]
    public void Settings_WithMoreRewardsThanTheLimit_AreRefused()
    {
        ProgramSettings settings = RuleBuilders.Program() with
        {
            Rewards = [.. Enumerable.Range(0, Limits.RewardsMax + 1).Select(i => new Reward($"r{i}", "Reward", RewardKind.Product, 10, Sku: "S"))],
        };

        Assert.StartsWith("rewards has more than", settings.Check(), StringComparison.Ordinal);
    }

    [Fact]
    public void Settings_RepeatingARewardOrHoldingTooLong_AreRefused()
    {
        var coffee = new Reward("coffee", "Coffee", RewardKind.Product, 30, Sku: "C");

        Assert.StartsWith("rewards[1] repeats", (RuleBuilders.Program() with { Rewards = [coffee, coffee] }).Check(), StringComparison.Ordinal);
        Assert.StartsWith("reservation_hold_seconds", (RuleBuilders.Program() with { ReservationHoldSeconds = 5 }).Check(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(-5, 0)]
    [InlineData(1_800, 1_800)]
    [InlineData(Loyalty.Grains.ScheduleOptions.ExpirySpreadSecondsMax + 1, Loyalty.Grains.ScheduleOptions.ExpirySpreadSecondsMax)]
    public void TheExpirySpread_IsKeptWithinZeroAndItsMaximum(int setting, int seconds)
    {
        Assert.Equal(TimeSpan.FromSeconds(seconds), new Loyalty.Grains.ScheduleOptions { ExpirySpreadSeconds = setting }.ExpirySpread);
    }
}
