namespace Loyalty;

/// <summary>How an earned lot's expiry date is set.</summary>
public enum ExpiryMode
{
    /// <summary>Points never expire by age (an inactivity rule may still apply).</summary>
    None = 0,

    /// <summary>
    /// A fixed lifespan: the lot is good through the program-local day that falls that many months
    /// after it became spendable. Points earned on one day share a lot, so a member holds at most
    /// one lot per day of the lifespan however often it buys.
    /// </summary>
    Lifespan = 1,

    /// <summary>At the end of the program-local month in which the lifespan ends.</summary>
    EndOfMonth = 2,

    /// <summary>At the end of the program-local year in which the lifespan ends.</summary>
    EndOfYear = 3,
}

/// <summary>
/// A program's expiry policy. Every earned lot gets its expiry when it is earned, from the
/// policy of that moment; a later change of policy applies to later lots only.
/// </summary>
/// <param name="Mode">How a lot's expiry follows from when it became spendable.</param>
/// <param name="LifespanMonths">The lifespan of a lot, in months.</param>
/// <param name="InactivityMonths">Months without activity after which every point expires; 0 for none.</param>
/// <param name="WarnDays">How many days before points expire the member is warned; 0 for no warning.</param>
/// <param name="InactivityNotBefore">
/// The earliest instant any member's points expire for inactivity under the rule as it stands
/// (set by the engine when a change adds the rule to a program or shortens it: the change's time
/// and <see cref="WarnDays"/> after it; null otherwise), so a member long idle is warned first
/// rather than losing its points the moment the rule arrives.
/// </param>
[GenerateSerializer, Immutable]
public sealed record ExpiryPolicy(
    [property: Id(0)] ExpiryMode Mode,
    [property: Id(1)] int LifespanMonths,
    [property: Id(2)] int InactivityMonths = 0,
    [property: Id(3)] int WarnDays = 0,
    [property: Id(4)] DateTimeOffset? InactivityNotBefore = null)
{
    /// <summary>
    /// This policy as put by a change of <paramref name="before"/> at <paramref name="now"/>:
    /// <see cref="InactivityNotBefore"/> is the warning days after now when the change adds an
    /// inactivity rule or shortens it (members' deadlines come sooner), never sooner than it was;
    /// kept as it was when the change leaves the rule as long or longer (a deadline announced does
    /// not come sooner because the warning days were shortened since); null without a rule.
    /// </summary>
    public ExpiryPolicy Following(ExpiryPolicy? before, DateTimeOffset now)
    {
        DateTimeOffset? kept = before is { InactivityMonths: > 0 } ? before.InactivityNotBefore : null;
        DateTimeOffset stamped = now.AddDays(WarnDays);
        return this with
        {
            InactivityNotBefore = InactivityMonths <= 0 ? null
                : before is not { InactivityMonths: > 0 } || InactivityMonths < before.InactivityMonths ? (kept > stamped ? kept : stamped)
                : kept,
        };
    }

    /// <summary>When a lot that becomes spendable at <paramref name="availableAt"/> expires; null when it does not.</summary>
    public DateTimeOffset? ExpiresAt(DateTimeOffset availableAt, TimeZoneInfo zone)
    {
        if (Mode == ExpiryMode.None)
        {
            return null;
        }

        // The lot is good through the local day (or the last local day of the month, or of the
        // year) its lifespan ends in, and expires as the next one begins. The months are counted
        // on the local calendar: counted in UTC, points earned one local evening would end on two
        // different local days when the UTC date has already turned (or across a change of
        // daylight saving time).
        DateTime local = TimeZoneInfo.ConvertTime(availableAt, zone).DateTime.AddMonths(LifespanMonths);
        DateTime next = Mode switch
        {
            ExpiryMode.Lifespan => local.Date.AddDays(1),
            ExpiryMode.EndOfMonth => new DateTime(local.Year, local.Month, 1).AddMonths(1),
            _ => new DateTime(local.Year + 1, 1, 1),
        };
        return LocalDay.Begins(next, zone);
    }

    /// <summary>Returns null when the policy is valid, otherwise a message naming the field.</summary>
    public string? Check()
    {
        if (!Enum.IsDefined(Mode))
        {
            return "expiry.mode must be NONE, LIFESPAN, END_OF_MONTH or END_OF_YEAR";
        }

        if (Mode == ExpiryMode.None ? LifespanMonths != 0 : LifespanMonths is < 1 or > Limits.ExpiryMonthsMax)
        {
            return $"expiry.lifespan_months must be 1..{Limits.ExpiryMonthsMax} (0 with mode NONE)";
        }

        if (InactivityMonths is < 0 or > Limits.ExpiryMonthsMax)
        {
            return $"expiry.inactivity_months must be 0..{Limits.ExpiryMonthsMax}";
        }

        if (WarnDays is < 0 or > Limits.ExpiryWarnDaysMax)
        {
            return $"expiry.warn_days must be 0..{Limits.ExpiryWarnDaysMax}";
        }

        // A warning as long as the shortest time points live would warn of every point as it is
        // earned, and again with each purchase that joins a lot already warned of.
        int shortestMonths = Mode == ExpiryMode.None ? InactivityMonths
            : InactivityMonths == 0 ? LifespanMonths : Math.Min(LifespanMonths, InactivityMonths);
        return WarnDays > 0 && shortestMonths > 0 && WarnDays >= shortestMonths * ShortestMonthDays
            ? $"expiry.warn_days ({WarnDays}) must be shorter than the {shortestMonths} month(s) points live ({shortestMonths * ShortestMonthDays} days at the least)"
            : null;
    }

    /// <summary>The fewest days a month has: how long a policy's months are at the least.</summary>
    public const int ShortestMonthDays = 28;
}

/// <summary>Points that expire at one instant (pending ones included), as the member sees them.</summary>
[GenerateSerializer, Immutable]
public sealed record UpcomingExpiry(
    [property: Id(0)] DateTimeOffset ExpiresAt,
    [property: Id(1)] Points Points,
    [property: Id(2)] string Reason);

/// <summary>One lot's part in a change: points taken from it (spent, reversed, expired), warned or restored.</summary>
[GenerateSerializer, Immutable]
public sealed record LotUse(
    [property: Id(0)] string LotId,
    [property: Id(1)] long Points,
    [property: Id(2)] DateTimeOffset? ExpiresAt);

/// <summary>Days on a program's local calendar.</summary>
public static class LocalDay
{
    /// <summary>
    /// The instant the local day that begins at <paramref name="midnight"/> (a local date at
    /// 00:00) begins, in UTC. Some zones skip midnight when daylight saving starts; the day then
    /// begins an hour later. Others pass midnight twice when it ends; the day begins at the
    /// first (the offset of the time that was still in force then, the larger one).
    /// </summary>
    public static DateTimeOffset Begins(DateTime midnight, TimeZoneInfo zone)
    {
        DateTime next = midnight;
        while (zone.IsInvalidTime(next))
        {
            next = next.AddHours(1);
        }

        TimeSpan offset = zone.IsAmbiguousTime(next) ? zone.GetAmbiguousTimeOffsets(next).Max() : zone.GetUtcOffset(next);
        return new DateTimeOffset(next, offset).ToUniversalTime();
    }
}
