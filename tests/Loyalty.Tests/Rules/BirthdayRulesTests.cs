using Loyalty.Grains;

namespace Loyalty.Tests.Rules;

/// <summary>When a birthday is due and what it grants; which profile birthdays are accepted.</summary>
public sealed class BirthdayRulesTests
{
    private static readonly BirthdayPolicy Policy = new(100, "cake");
    private static readonly TimeZoneInfo NewYork = TimeZoneInfo.FindSystemTimeZoneById("America/New_York");

    public static TheoryData<string, int, int, DateTimeOffset, DateTimeOffset?> DueCases => new()
    {
        { "before this year's month: its start", 12, 0, At(2026, 11, 30), At(2026, 12, 1) },
        { "inside the month, not rewarded: at once (its start, in the past)", 12, 0, At(2026, 12, 20), At(2026, 12, 1) },
        { "inside the month, rewarded: next year's", 12, 2026, At(2026, 12, 20), At(2027, 12, 1) },
        { "after this year's month: next year's", 3, 0, At(2026, 11, 30), At(2027, 3, 1) },
        { "rewarded this year already, month ahead: next year's", 12, 2026, At(2026, 11, 1), At(2027, 12, 1) },
        { "no birthday", 0, 0, At(2026, 11, 30), null },
    };

    [Theory]
    [MemberData(nameof(DueCases))]
    public void TheBirthday_IsDueAtTheStartOfItsMonth_OnceAYear(string rule, int month, int rewardedYear, DateTimeOffset now, DateTimeOffset? due)
    {
        Assert.True(due == BirthdayRules.Due(Policy, month, rewardedYear, now, TimeZoneInfo.Utc), $"{rule}: {BirthdayRules.Due(Policy, month, rewardedYear, now, TimeZoneInfo.Utc):O}");
    }

    [Fact]
    public void AChangeOfTimeZone_MovesMembersDue_WhenTheProgramRewardsBirthdays_AndOnlyThen()
    {
        var shop = new ProgramSettings("Shop", "USD", 2, 1);
        ProgramSettings withBirthdays = shop with { Birthday = Policy };

        // The birth month begins at the program's local midnight: another zone moves every member's wake.
        Assert.True(ProgramGrain.DueChanged(withBirthdays, withBirthdays with { TimeZone = "America/New_York" }));
        Assert.False(ProgramGrain.DueChanged(shop, shop with { TimeZone = "America/New_York" }));
        Assert.False(ProgramGrain.DueChanged(withBirthdays, withBirthdays with { Name = "Renamed" }));
    }

    [Fact]
    public void TheMonth_BeginsAtProgramLocalMidnight_AndTheGiftLastsToItsEnd()
    {
        DateTimeOffset justBefore = new(2026, 12, 1, 4, 59, 0, TimeSpan.Zero);

        Assert.Equal(new DateTimeOffset(2026, 12, 1, 5, 0, 0, TimeSpan.Zero), BirthdayRules.Due(Policy, 12, 0, justBefore, NewYork));
        Assert.Null(BirthdayRules.Grant(Policy, 12, 0, justBefore, NewYork));
        BirthdayGrant grant = BirthdayRules.Grant(Policy, 12, 0, justBefore.AddMinutes(1), NewYork)!;
        Assert.Equal((2026, "cake", new DateTimeOffset(2027, 1, 1, 5, 0, 0, TimeSpan.Zero)), (grant.Year, grant.GiftRewardId, grant.GiftUntil));
        Assert.Null(BirthdayRules.Grant(Policy, 12, 2026, justBefore.AddDays(3), NewYork));
        Assert.Null(BirthdayRules.Grant(null, 12, 0, justBefore.AddDays(3), NewYork));
    }

    [Theory]
    [InlineData("1990-12-15", 12)]
    [InlineData("12-15", 12)]
    [InlineData("02-29", 2)]
    [InlineData("2000-02-29", 2)]
    [InlineData("2001-02-29", 0)]
    [InlineData("13-01", 0)]
    [InlineData("15 Dec", 0)]
    [InlineData("", 0)]
    public void AProfileBirthday_IsYYYYMMDDOrMMDD(string birthday, int month)
    {
        Assert.Equal(month, Profiles.BirthMonthOf(birthday));
        Assert.Equal(month == 0, Profiles.Check(new Dictionary<string, string> { [Profiles.BirthdayField] = birthday }) is not null);
    }

    [Fact]
    public void APolicy_ThatGivesNothing_OrNamesAMissingReward_IsRefused()
    {
        ProgramSettings program = new("Shop", "USD", 2, 1, Rewards: [new Reward("cake", "Cake", RewardKind.Product, 200, Sku: "CAKE")]);

        Assert.Contains("gives nothing", (program with { Birthday = new BirthdayPolicy(0) }).Check(), StringComparison.Ordinal);
        Assert.Contains("gift_reward_id 'pie'", (program with { Birthday = new BirthdayPolicy(0, "pie") }).Check(), StringComparison.Ordinal);
        Assert.Contains("bonus_points", (program with { Birthday = new BirthdayPolicy(-1) }).Check(), StringComparison.Ordinal);
        Assert.Null((program with { Birthday = Policy }).Check());
    }

    private static DateTimeOffset At(int year, int month, int day) => new(year, month, day, 0, 0, 0, TimeSpan.Zero);
}
