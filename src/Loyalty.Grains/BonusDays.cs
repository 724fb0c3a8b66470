namespace Loyalty.Grains;

/// <summary>
/// The personal bonus days a member booked, as program-local day numbers in ascending order. Only
/// bookings change it, and a booking is never in the past, so days more than
/// <see cref="KeptDays"/> before the newest booking can never matter again and are dropped: the
/// list stays bounded (at most <see cref="Limits.BonusDaysPerYearMax"/> a year over about eleven years).
/// </summary>
[GenerateSerializer]
public sealed class BookedBonusDays
{
    /// <summary>
    /// Days kept before the newest booking: it may lie a year ahead, and a purchase may be dated as
    /// far back as a program allows, so a booked day is kept while any purchase could fall on it.
    /// </summary>
    public const int KeptDays = Limits.BonusDayBookAheadDaysMax + Limits.BackdateDaysMax;

    [Id(0)] private List<int>? _days;

    /// <summary>The booked days, ascending.</summary>
    public IReadOnlyList<int> Days => (IReadOnlyList<int>?)_days ?? [];

    /// <summary>Whether the day is booked.</summary>
    public bool Contains(int day) => _days is not null && _days.BinarySearch(day) >= 0;

    /// <summary>Days booked in the calendar year <paramref name="year"/>.</summary>
    public int CountIn(int year)
    {
        int from = new DateOnly(year, 1, 1).DayNumber, to = new DateOnly(year, 12, 31).DayNumber, count = 0;
        foreach (int day in Days)
        {
            count += day >= from && day <= to ? 1 : 0;
        }

        return count;
    }

    /// <summary>Books the day (a repeat changes nothing) and drops days too old to matter.</summary>
    public void Book(int day)
    {
        _days ??= [];
        int at = _days.BinarySearch(day);
        if (at < 0)
        {
            _days.Insert(~at, day);
        }

        _days.RemoveAll(d => d < _days[^1] - KeptDays);
    }
}

/// <summary>The booking of a personal bonus day, decided purely: the day to write, or why not.</summary>
public static class BonusDayRules
{
    /// <summary>
    /// Why <paramref name="day"/> cannot be booked by a member in <paramref name="tier"/> holding
    /// <paramref name="booked"/> on program-local day <paramref name="today"/>; null when it can
    /// (or is booked already, which the caller answers without a write).
    /// </summary>
    public static (LoyaltyError Error, string Message)? Refusal(BonusDayPolicy? policy, TierDefinition tier, BookedBonusDays booked, DateOnly day, DateOnly today)
    {
        if (policy is null)
        {
            return (LoyaltyError.FailedPrecondition, "the program has no personal bonus days (settings.bonus_days)");
        }

        if (booked.Contains(day.DayNumber))
        {
            return null;
        }

        if (day < today || day.DayNumber > today.DayNumber + Limits.BonusDayBookAheadDaysMax)
        {
            return (LoyaltyError.InvalidArgument,
                $"day {day:yyyy-MM-dd} must be from today ({today:yyyy-MM-dd}, program-local) to {Limits.BonusDayBookAheadDaysMax} days ahead");
        }

        int used = booked.CountIn(day.Year);
        return used >= tier.BonusDaysPerYear
            ? (LoyaltyError.FailedPrecondition, tier.BonusDaysPerYear == 0
                ? $"tier {tier.Name} grants no personal bonus days"
                : $"all {tier.BonusDaysPerYear} bonus days of {day.Year} that tier {tier.Name} grants are booked")
            : null;
    }

    /// <summary>Days left in <paramref name="year"/> for a member in <paramref name="tier"/>.</summary>
    public static int Left(TierDefinition tier, BookedBonusDays booked, int year) => Math.Max(0, tier.BonusDaysPerYear - booked.CountIn(year));

    /// <summary>The booked days from <paramref name="today"/> on.</summary>
    public static IReadOnlyList<DateOnly> Upcoming(BookedBonusDays booked, DateOnly today) =>
        [.. booked.Days.Where(d => d >= today.DayNumber).Select(DateOnly.FromDayNumber)];

    /// <summary>The program-local calendar day of an instant.</summary>
    public static DateOnly LocalDay(DateTimeOffset at, TimeZoneInfo zone) => DateOnly.FromDateTime(TimeZoneInfo.ConvertTime(at, zone).DateTime);
}
