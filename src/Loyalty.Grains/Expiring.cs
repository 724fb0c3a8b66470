namespace Loyalty.Grains;

/// <summary>What a member has to do by the clock, decided from its state alone.</summary>
public enum DueKind
{
    /// <summary>A reservation lapsed: release its hold.</summary>
    Lapse,

    /// <summary>Points expire: lots past their expiry, or every lot after the inactivity deadline.</summary>
    Expire,

    /// <summary>Points expire soon: warn the member.</summary>
    Warn,
}

/// <summary>One piece of due work: which kind, and what it touches.</summary>
public sealed record DueWork(
    DueKind Kind,
    IReadOnlyList<LotUse> Lots,
    DateTimeOffset At,
    Hold? Hold = null,
    DateTimeOffset? InactivityDeadline = null,
    long InactivityPoints = 0);

/// <summary>
/// Expiry and the other work a member has at a time (pure functions of the state, the program's
/// policy and the clock). Lots are kept soonest expiry first, so the next due time is found
/// from the front of the lists, not by walking every lot.
/// </summary>
public static class Expiring
{
    /// <summary>The most expiry instants listed to a member.</summary>
    public const int UpcomingMax = 100;

    /// <summary>
    /// How long after a lot's expiry (and its warning's time) this member's wake comes, within
    /// <paramref name="spread"/>: a stable hash of the member's key, to the second. Lifespans end
    /// at a program-local midnight, so every member who earned on one day would otherwise be due
    /// at the same instant, and a backlog of a day's expiries would delay the reservations that
    /// lapse just after it. Spending never waits for the wake (expired points are not spendable),
    /// and the entry records the lot's own expiry, so only when the write-off lands moves.
    /// </summary>
    public static TimeSpan WakeLateBy(string programId, string memberId, TimeSpan spread)
    {
        long seconds = (long)spread.TotalSeconds;
        if (seconds <= 0)
        {
            return TimeSpan.Zero;
        }

        var hash = new Fingerprint();
        hash.Add(programId);
        hash.Add(memberId);
        return TimeSpan.FromSeconds((long)(unchecked((ulong)hash.Value) % (ulong)seconds));
    }

    /// <summary>
    /// The earliest time the member has due work, or null when nothing is ever due. Times that
    /// cannot act yet are pushed back to when they can: a pending lot's warning waits for the lot
    /// to become spendable; expired points that open reservations need (unexpired points no longer
    /// cover them) wait for them to end, and inactivity waits for reservations only when they hold
    /// every point (held points do not expire under a till's feet). Lots' expiries and their
    /// warnings come <paramref name="lateBy"/> later (see <see cref="WakeLateBy"/>); lapses,
    /// referral settlements and inactivity (a time of the member's own) do not.
    /// </summary>
    public static DateTimeOffset? NextDue(MemberState state, ExpiryPolicy policy, DateTimeOffset now, TimeSpan lateBy = default)
    {
        DateTimeOffset? due = null;
        DateTimeOffset? holdsEnd = null;
        if (state.Referral.AnyOwed)
        {
            // The referrer has not recorded its reward yet: due at once, so a wake retries it.
            Consider(ref due, DateTimeOffset.UnixEpoch);
        }

        IReadOnlyList<Hold> holds = state.Lots.Holds;
        long held = 0;
        for (int i = 0; i < holds.Count; i++)
        {
            Hold hold = holds[i];
            Consider(ref due, hold.LapsesAt);
            holdsEnd = Latest(holdsEnd, hold.LapsesAt);
            held = checked(held + hold.Points.Value);
        }

        // Inactivity takes every point no reservation holds, on time; it waits for the reservations
        // to end only when they hold every point.
        DateTimeOffset? inactivityWaitsFor = state.Balance.Value > held ? null : holdsEnd;

        TimeSpan warn = TimeSpan.FromDays(policy.WarnDays);
        // A lot's points expire on time, except what open reservations need of expired points.
        if (state.Lots.NextExpiry() is { } expiry)
        {
            Consider(ref due, expiry + lateBy);
        }

        bool warns = Warns(state, policy);
        if (warns && FirstUnwarned(state, now) is { ExpiresAt: { } expiresAt })
        {
            Consider(ref due, expiresAt - warn + lateBy);
        }

        IReadOnlyList<PendingLot> pending = state.Lots.Pending;
        for (int i = 0; i < pending.Count; i++)
        {
            PendingLot lot = pending[i];
            if (lot.ExpiresAt is { } pendingExpiry)
            {
                Consider(ref due, Latest(lot.AvailableAt, (warns ? pendingExpiry - warn : pendingExpiry) + lateBy)!.Value);
            }
        }

        if (policy.InactivityMonths > 0)
        {
            DateTimeOffset deadline = InactivityDeadline(state, policy);
            if (state.Lots.Spendable.Count > 0)
            {
                Consider(ref due, Latest(inactivityWaitsFor, deadline)!.Value);
                if (warns && state.InactivityWarnedFor != deadline)
                {
                    Consider(ref due, deadline - warn);
                }
            }

            if (state.Lots.Pending.Count > 0)
            {
                // Points that are pending now will be spendable by then: their member is warned
                // too (at the warning's time, or when they mature if that is later).
                Consider(ref due, Latest(state.Lots.Pending[0].AvailableAt, warns && state.InactivityWarnedFor != deadline ? deadline - warn : deadline)!.Value);
            }
        }

        return due;
    }

    /// <summary>The first piece of work due at <paramref name="now"/> (after pending lots have matured), or null.</summary>
    public static DueWork? Next(MemberState state, ExpiryPolicy policy, DateTimeOffset now)
    {
        IReadOnlyList<Hold> holds = state.Lots.Holds;
        for (int i = 0; i < holds.Count; i++)
        {
            Hold hold = holds[i];
            if (hold.LapsesAt <= now)
            {
                return new DueWork(DueKind.Lapse, [], hold.LapsesAt, hold);
            }
        }

        DateTimeOffset? deadline = policy.InactivityMonths > 0 && state.Lots.Spendable.Count > 0 && InactivityDeadline(state, policy) is var d && d <= now ? d : null;
        List<LotUse> expired = state.Lots.ExpiringAt(now);
        // Lots whose own expiry came before the inactivity deadline expire as their own first: the
        // member's wake for them comes within the schedule's spread after it, maybe after the deadline.
        int before = deadline is { } cutoff ? expired.FindIndex(l => l.ExpiresAt >= cutoff) : -1;
        List<LotUse> ownFirst = before < 0 ? expired : expired[..before];
        if (ownFirst.Count > 0)
        {
            return new DueWork(DueKind.Expire, ownFirst, ownFirst[0].ExpiresAt!.Value);
        }

        // Inactivity takes every point open reservations do not hold; held points wait for them to end.
        if (deadline is { } due)
        {
            List<LotUse> lots = state.Lots.PlanDebit(state.Balance.Value - state.Lots.HeldAt(now).Value);
            if (lots.Count > 0)
            {
                return new DueWork(DueKind.Expire, lots, due, InactivityDeadline: due);
            }
        }

        return Warns(state, policy) ? Warning(state, policy, now) : null;
    }

    /// <summary>
    /// Whether the member is warned before its points expire. An erased member is not: its points
    /// still expire (the programme's accounting), but a warning would tell the retailer's CRM about
    /// a person who asked to be forgotten, and that person can no longer spend them.
    /// </summary>
    private static bool Warns(MemberState state, ExpiryPolicy policy) => policy.WarnDays > 0 && !state.Erased;

    /// <summary>
    /// When the member's points expire for inactivity: from its newest activity, or from points
    /// granted to it when it held none (<see cref="MemberState.GrantedIntoEmptyAt"/>), the later;
    /// never sooner than the rule allows since it took effect (<see cref="ExpiryPolicy.InactivityNotBefore"/>).
    /// </summary>
    public static DateTimeOffset InactivityDeadline(MemberState state, ExpiryPolicy policy)
    {
        // Members whose snapshot predates activity tracking count from their enrolment.
        DateTimeOffset from = state.LastActivityAt == default ? state.EnrolledAt : state.LastActivityAt;
        DateTimeOffset byActivity = (state.GrantedIntoEmptyAt is { } granted && granted > from ? granted : from).AddMonths(policy.InactivityMonths);
        return policy.InactivityNotBefore is { } floor && floor > byActivity ? floor : byActivity;
    }

    /// <summary>
    /// The points the inactivity deadline would take if nothing happens before it: every lot's,
    /// pending ones included, but those whose own expiry comes first (as <see cref="Upcoming"/> counts them).
    /// </summary>
    private static long TakenAtDeadline(MemberState state, DateTimeOffset deadline)
    {
        long total = 0;
        IReadOnlyList<PointLot> spendable = state.Lots.Spendable;
        for (int i = 0; i < spendable.Count; i++)
        {
            total = spendable[i].ExpiresAt < deadline ? total : checked(total + spendable[i].Points.Value);
        }

        IReadOnlyList<PendingLot> pending = state.Lots.Pending;
        for (int i = 0; i < pending.Count; i++)
        {
            total = pending[i].ExpiresAt < deadline ? total : checked(total + pending[i].Points.Value);
        }

        return total;
    }

    /// <summary>What expires when, soonest first: lots (pending ones included) by expiry, and everything at the inactivity deadline.</summary>
    public static IReadOnlyList<UpcomingExpiry> Upcoming(MemberState state, ExpiryPolicy policy)
    {
        var byInstant = new SortedDictionary<DateTimeOffset, long>();
        long total = 0;
        IReadOnlyList<PointLot> spendable = state.Lots.Spendable;
        for (int i = 0; i < spendable.Count; i++)
        {
            PointLot lot = spendable[i];
            total = checked(total + lot.Points.Value);
            if (lot.ExpiresAt is { } at)
            {
                byInstant[at] = checked(byInstant.GetValueOrDefault(at) + lot.Points.Value);
            }
        }

        IReadOnlyList<PendingLot> pending = state.Lots.Pending;
        for (int i = 0; i < pending.Count; i++)
        {
            PendingLot lot = pending[i];
            total = checked(total + lot.Points.Value);
            if (lot.ExpiresAt is { } at)
            {
                byInstant[at] = checked(byInstant.GetValueOrDefault(at) + lot.Points.Value);
            }
        }

        var upcoming = new List<UpcomingExpiry>();
        DateTimeOffset? deadline = policy.InactivityMonths > 0 && total > 0 ? InactivityDeadline(state, policy) : null;
        foreach ((DateTimeOffset at, long points) in byInstant)
        {
            if (deadline is { } d && d <= at)
            {
                break;
            }

            upcoming.Add(new UpcomingExpiry(at, new Points(points), "lifespan"));
            total -= points;
        }

        if (deadline is { } inactive && total > 0)
        {
            upcoming.Add(new UpcomingExpiry(inactive, new Points(total), "inactivity"));
        }

        return upcoming.Count > UpcomingMax ? upcoming[..UpcomingMax] : upcoming;
    }

    private static DueWork? Warning(MemberState state, ExpiryPolicy policy, DateTimeOffset now)
    {
        TimeSpan warn = TimeSpan.FromDays(policy.WarnDays);
        var lots = new List<LotUse>();
        IReadOnlyList<PointLot> spendable = state.Lots.Spendable;
        for (int i = 0; i < spendable.Count; i++)
        {
            PointLot lot = spendable[i];
            if (lot.ExpiresAt is not { } at || at - warn > now)
            {
                break;
            }

            // Past its expiry and still here: an open reservation holds it. Too late to warn of.
            if (!lot.Warned && at > now)
            {
                lots.Add(new LotUse(lot.Id, lot.Points.Value, at));
            }
        }

        DateTimeOffset? deadline = null;
        if (policy.InactivityMonths > 0 && state.Lots.Spendable.Count > 0)
        {
            DateTimeOffset d = InactivityDeadline(state, policy);
            deadline = d - warn <= now && state.InactivityWarnedFor != d ? d : null;
        }

        return lots.Count == 0 && deadline is null
            ? null
            : new DueWork(DueKind.Warn, lots, lots.Count > 0 ? lots[0].ExpiresAt!.Value : deadline!.Value, InactivityDeadline: deadline,
                InactivityPoints: deadline is { } d2 ? TakenAtDeadline(state, d2) : 0);
    }

    /// <summary>The soonest lot not yet warned of and not yet expired at <paramref name="now"/> (as <see cref="Warning"/> finds them), or null.</summary>
    private static PointLot? FirstUnwarned(MemberState state, DateTimeOffset now)
    {
        IReadOnlyList<PointLot> spendable = state.Lots.Spendable;
        for (int i = 0; i < spendable.Count; i++)
        {
            PointLot lot = spendable[i];
            if (lot.ExpiresAt is not { } at)
            {
                return null;
            }

            if (!lot.Warned && at > now)
            {
                return lot;
            }
        }

        return null;
    }

    private static void Consider(ref DateTimeOffset? due, DateTimeOffset at)
    {
        if (due is null || at < due)
        {
            due = at;
        }
    }

    private static DateTimeOffset? Latest(DateTimeOffset? a, DateTimeOffset? b) =>
        a is null ? b : b is null ? a : a > b ? a : b;
}
