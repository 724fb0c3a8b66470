namespace Loyalty.Grains;

/// <summary>The qualifying total of a member: what its tier is judged on.</summary>
public interface IQualifying
{
    /// <summary>The qualifying total (points or spend, as the ladder says) of the ladder's window ending at <paramref name="at"/>.</summary>
    long QualifyingAt(TierLadder ladder, DateTimeOffset at);
}

/// <summary>
/// Tier moves. Up: on the event that brings the qualifying total of the rolling window to a
/// higher threshold, straight to the highest tier reached; the tier is then held for one window.
/// Down: only at a review, <see cref="TierLadder.GraceDays"/> after the held window ends, and at
/// most one tier per review; a member who still qualifies keeps the tier for another window.
/// </summary>
public static class Tiering
{
    /// <summary>Bounds the reviews one call may catch up on (a member idle for years).</summary>
    private const int ReviewStepsMax = 10_000;

    /// <summary>The tier index and next review after every review due by <paramref name="now"/>.</summary>
    /// <param name="index">The member's tier index now.</param>
    /// <param name="reviewAt">When the member's tier is next reviewed; null for the entry tier.</param>
    /// <param name="ladder">The program's ladder.</param>
    /// <param name="member">The member's qualifying totals.</param>
    /// <param name="now">The time of the event.</param>
    public static (int Index, DateTimeOffset? ReviewAt) Review(int index, DateTimeOffset? reviewAt, TierLadder ladder, IQualifying member, DateTimeOffset now)
    {
        for (int step = 0; step < ReviewStepsMax && index > 0 && reviewAt is { } due; step++)
        {
            DateTimeOffset at = due.AddDays(ladder.GraceDays);
            if (at > now)
            {
                break;
            }

            if (member.QualifyingAt(ladder, at) < ladder.Tiers[index].Threshold)
            {
                index--;
            }

            reviewAt = due.AddDays(ladder.WindowDays);
        }

        return index == 0 ? (0, null) : (index, reviewAt);
    }

    /// <summary>
    /// The tier after an event adding <paramref name="adding"/> to the window ending
    /// <paramref name="now"/>: the highest tier reached, never below <paramref name="index"/>. The
    /// window is only summed when there is a tier above to reach.
    /// </summary>
    public static int Upgrade(int index, TierLadder ladder, IQualifying member, DateTimeOffset now, long adding)
    {
        if (index >= ladder.Tiers.Count - 1)
        {
            return index;
        }

        return Math.Max(index, Reached(ladder, checked(member.QualifyingAt(ladder, now) + adding)));
    }

    /// <summary>The highest tier whose threshold <paramref name="qualifying"/> reaches.</summary>
    public static int Reached(TierLadder ladder, long qualifying)
    {
        int index = 0;
        for (int i = 1; i < ladder.Tiers.Count; i++)
        {
            if (qualifying >= ladder.Tiers[i].Threshold)
            {
                index = i;
            }
        }

        return index;
    }

    /// <summary>
    /// Where the member stands on the ladder at <paramref name="now"/>: what the window still needs
    /// to reach the next tier, and what it needs by the next review to keep the tier held (counting
    /// only what will still lie in the window then). Null for a one-tier ladder.
    /// </summary>
    /// <param name="index">The tier index after any review due by <paramref name="now"/>.</param>
    /// <param name="reviewAt">The next review's window end (the review itself is grace days later); null in the entry tier.</param>
    /// <param name="ladder">The program's ladder.</param>
    /// <param name="member">The member's qualifying totals.</param>
    /// <param name="now">The time of the question.</param>
    public static TierProgress? Progress(int index, DateTimeOffset? reviewAt, TierLadder ladder, IQualifying member, DateTimeOffset now)
    {
        if (ladder.Tiers.Count < 2)
        {
            return null;
        }

        long qualifying = member.QualifyingAt(ladder, now);
        TierDefinition? next = index + 1 < ladder.Tiers.Count ? ladder.Tiers[index + 1] : null;
        long toNext = next is null ? 0 : Math.Max(0, checked(next.Threshold - qualifying));
        DateTimeOffset? keepBy = index > 0 && reviewAt is { } due ? due.AddDays(ladder.GraceDays) : null;
        long toKeep = keepBy is { } review ? Math.Max(0, checked(ladder.Tiers[index].Threshold - member.QualifyingAt(ladder, review))) : 0;
        return new TierProgress(ladder.Basis, next?.Name, next?.Threshold ?? 0, toNext, keepBy, toKeep);
    }
}
