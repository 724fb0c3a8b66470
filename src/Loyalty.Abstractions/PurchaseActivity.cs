namespace Loyalty;

/// <summary>
/// Where a purchase stands among its member's purchases, for the reports' active members, repeat
/// customers and first-time sales: the member's first purchase ever, and its first or second in
/// the UTC day, ISO week, month and year it was recorded in. The member grain decides the flags
/// from two small numbers it keeps (<see cref="Advance"/>), and the earn entry carries them, so
/// the reports count each member once per period without remembering members.
/// </summary>
public static class PurchaseActivity
{
    /// <summary>The member's first purchase ever.</summary>
    public const int FirstEver = 1;

    /// <summary>The calendar periods a purchase is counted in, finest first.</summary>
    public enum Period
    {
        /// <summary>A UTC day.</summary>
        Day = 0,

        /// <summary>An ISO week, from Monday.</summary>
        Week = 1,

        /// <summary>A calendar month.</summary>
        Month = 2,

        /// <summary>A calendar year.</summary>
        Year = 3,
    }

    /// <summary>Every kind of period, finest first.</summary>
    public static IReadOnlyList<Period> Periods => AllPeriods;

    // Walked here as an array: every purchase's decision and apply loop over it, and a foreach
    // over the read-only list would allocate an enumerator each time.
    private static readonly Period[] AllPeriods = Enum.GetValues<Period>();

    /// <summary>The flag of the member's first purchase in a period of this kind.</summary>
    public static int FirstIn(Period period) => 2 << (int)period;

    /// <summary>The flag of the member's second purchase in a period of this kind.</summary>
    public static int SecondIn(Period period) => 32 << (int)period;

    /// <summary>
    /// The flags of a purchase recorded on <paramref name="day"/> (a UTC day number) by a member
    /// whose last purchase was on <paramref name="lastDay"/> with <paramref name="counts"/>
    /// purchases (2 bits per period, at most 2) in that day's periods.
    /// </summary>
    public static int Flags(int lastDay, int counts, long purchaseCount, int day)
    {
        int flags = purchaseCount == 0 ? FirstEver : 0;
        int next = Next(lastDay, counts, purchaseCount, day);
        foreach (Period period in AllPeriods)
        {
            int count = CountIn(next, period);
            int before = purchaseCount > 0 && Key(lastDay, period) == Key(day, period) ? CountIn(counts, period) : 0;
            if (count == 1 && before == 0)
            {
                flags |= FirstIn(period);
            }
            else if (count == 2 && before == 1)
            {
                flags |= SecondIn(period);
            }
        }

        return flags;
    }

    /// <summary>The member's counts after a purchase on <paramref name="day"/> (see <see cref="Flags"/>).</summary>
    public static int Advance(int lastDay, int counts, long purchaseCount, int day) => Next(lastDay, counts, purchaseCount, day);

    /// <summary>How many purchases (at most 2) <paramref name="counts"/> holds for a period.</summary>
    public static int CountIn(int counts, Period period) => (counts >> (2 * (int)period)) & 3;

    /// <summary>A number naming the period of this kind that holds <paramref name="day"/>.</summary>
    public static int Key(int day, Period period)
    {
        DateOnly date = DateOnly.FromDayNumber(day);
        return period switch
        {
            Period.Day => day,
            // DayNumber 0 is a Monday: whole weeks from it are ISO weeks.
            Period.Week => day / 7,
            Period.Month => (date.Year * 12) + date.Month - 1,
            _ => date.Year,
        };
    }

    private static int Next(int lastDay, int counts, long purchaseCount, int day)
    {
        int next = 0;
        foreach (Period period in AllPeriods)
        {
            int count = purchaseCount > 0 && Key(lastDay, period) == Key(day, period) ? Math.Min(CountIn(counts, period) + 1, 2) : 1;
            next |= count << (2 * (int)period);
        }

        return next;
    }
}
