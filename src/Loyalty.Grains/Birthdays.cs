namespace Loyalty.Grains;

/// <summary>
/// When a member's birthday is due, decided purely from its birth month, the newest year it was
/// rewarded and the program's calendar: once a year, at the start of the birthday month
/// (program-local), or at once when the month has begun and this year is not rewarded yet.
/// </summary>
public static class BirthdayRules
{
    /// <summary>When the next birthday reward is due; null when the member has no birthday or the program no birthday rewards.</summary>
    public static DateTimeOffset? Due(BirthdayPolicy? policy, int birthMonth, int rewardedYear, DateTimeOffset now, TimeZoneInfo zone)
    {
        if (policy is null || birthMonth is < 1 or > 12)
        {
            return null;
        }

        int year = TimeZoneInfo.ConvertTime(now, zone).Year;
        return rewardedYear < year && now < MonthStart(year, birthMonth + 1, zone)
            ? MonthStart(year, birthMonth, zone)
            : MonthStart(Math.Max(year, rewardedYear) + 1, birthMonth, zone);
    }

    /// <summary>The grant due at <paramref name="now"/> (this year's, inside the birthday month), or null when none is due.</summary>
    public static BirthdayGrant? Grant(BirthdayPolicy? policy, int birthMonth, int rewardedYear, DateTimeOffset now, TimeZoneInfo zone)
    {
        if (Due(policy, birthMonth, rewardedYear, now, zone) is not { } due || due > now)
        {
            return null;
        }

        int year = TimeZoneInfo.ConvertTime(now, zone).Year;
        return new BirthdayGrant(year, policy!.GiftRewardId, MonthStart(year, birthMonth + 1, zone));
    }

    /// <summary>Midnight (program-local) on the first of the month; month 13 is January of the next year.</summary>
    private static DateTimeOffset MonthStart(int year, int month, TimeZoneInfo zone)
    {
        var local = month > 12 ? new DateTime(year + 1, 1, 1) : new DateTime(year, month, 1);
        return new DateTimeOffset(local, zone.GetUtcOffset(local));
    }
}
