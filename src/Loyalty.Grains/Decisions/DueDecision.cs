namespace Loyalty.Grains;

/// <summary>
/// The work that falls due for a member without a request: a reservation's lapse, points expiring
/// (by their lot's date or the member's inactivity) and the warning before, a membership's lapse
/// at its term's end, a birthday's gift. <see cref="Expiring"/> finds what is due; these make its
/// entry. One piece at a time: the scheduler wakes the member again for the next.
/// </summary>
public static class DueDecision
{
    /// <summary>
    /// The entry of <paramref name="work"/>. A lapse is its reservation's end, keyed as any end of
    /// it is (the reservation id and <paramref name="endSuffix"/>, <paramref name="endFingerprint"/>),
    /// so a commit or cancel that raced it is answered from the ledger.
    /// </summary>
    public static Decision Of(in Decider d, DueWork work, string endSuffix, long endFingerprint) => work.Kind switch
    {
        DueKind.Lapse => Decision.Write(d.NewEntry(LedgerEntryKind.ReservationEnd, Points.Zero, work.Hold!.ReservationId + endSuffix, endFingerprint) with
        {
            Reference = work.Hold.ReservationId,
            OccurredAt = work.At,
            Details = new ReservationEndDetails
            {
                RewardId = work.Hold.RewardId, Quantity = work.Hold.Quantity, HeldPoints = work.Hold.Points.Value, EndedAs = ReservationState.Lapsed,
            },
        }),
        DueKind.Expire => Expire(d, work),
        _ => Decision.Write(d.NewEntry(LedgerEntryKind.ExpiryWarning, Points.Zero, null, 0) with
        {
            Reason = "expiring soon",
            Details = new ExpiryWarningDetails { Lots = work.Lots, InactivityDeadline = work.InactivityDeadline, InactivityPoints = work.InactivityPoints },
        }),
    };

    /// <summary>The write-off of the points <paramref name="work"/> (of kind <see cref="DueKind.Expire"/>) names.</summary>
    public static Decision Expire(in Decider d, DueWork work) =>
        Decision.Write(d.NewEntry(LedgerEntryKind.Expire, new Points(-work.Lots.Sum(l => l.Points)), null, 0) with
        {
            Reason = work.InactivityDeadline is null ? "lifespan" : "inactivity",
            OccurredAt = work.At,
            Details = new ExpireDetails { Lots = work.Lots, InactivityDeadline = work.InactivityDeadline },
        });

    /// <summary>The programme's own due work (a tier review, a membership's lapse, then a birthday); nothing when none is due.</summary>
    public static Decision Programme(in Decider d)
    {
        ProgramSettings settings = d.Settings;
        if (TierReview(d) is { } review)
        {
            return review;
        }

        if (Lapse(d) is { } lapse)
        {
            return lapse;
        }

        if (BirthdayRules.Grant(settings.Birthday, d.State.BirthMonth, d.State.BirthdayYear, d.Now, settings.Zone) is not { } grant)
        {
            return Decision.Nothing;
        }

        var points = new Points(settings.Birthday!.BonusPoints);
        return Decision.Write(d.NewEntry(LedgerEntryKind.Birthday, points, null, 0) with
        {
            Reason = "birthday " + grant.Year.ToString(System.Globalization.CultureInfo.InvariantCulture),
            Details = new BirthdayDetails { Birthday = grant, ExpiresAt = points.Value > 0 ? Decider.LotExpiry(settings, d.Now) : null },
        });
    }

    /// <summary>
    /// The membership's lapse, when its term has ended and the lapse is not recorded yet; null
    /// otherwise. A closed account's lapse is recorded too (an erased member's; one merged away by
    /// an earlier version before its lapse was written): billing, reports and the member's history
    /// would otherwise show a membership running for good.
    /// </summary>
    public static Decision? Lapse(in Decider d)
    {
        MembershipState membership = d.State.Membership;
        return MembershipRules.LapseDue(membership, d.Now)
            ? Decision.Write(d.NewEntry(LedgerEntryKind.MembershipLapsed, Points.Zero, null, 0) with
            {
                OccurredAt = membership.TermEndsAt,
                Details = new MembershipLapsedDetails { Membership = new MembershipChange(membership.PlanId!, membership.TermEndsAt) },
            })
            : null;
    }

    /// <summary>
    /// Every tier review due by now, as one entry: the downgrade, or the tier kept for another
    /// window (before and after the same tier, with the next review's date). A review kept is
    /// recorded too: left unrecorded, every later decision would judge it again, on the
    /// qualifying days and the ladder of its own time (a return of a purchase in the reviewed
    /// window, thresholds raised since), and could take the tier away mid-window. Null when no
    /// review is due.
    /// </summary>
    public static Decision? TierReview(in Decider d)
    {
        TierLadder ladder = d.Settings.Ladder;
        return Reviewed(d.State, ladder, d.Now) is { } review && IsDue(review, d.State)
            ? Decision.Write(d.NewEntry(LedgerEntryKind.TierReviewed, Points.Zero, null, 0) with
            {
                Details = new TierReviewedDetails { TierBefore = ladder.Tiers[review.Recorded].Name, TierAfter = ladder.Tiers[review.Index].Name, TierReviewAt = review.ReviewAt },
            })
            : null;
    }

    /// <summary>
    /// The entry of the tier review due by now and not recorded yet (as <see cref="TierReview"/>
    /// writes it), for a purchase to write just before its own: the member's wake for it comes in
    /// the spread of wakes after the review, and a purchase first would otherwise record the
    /// review in its earn, with no entry or event of its own. Null when none is due: a lookup of the
    /// tier's name and one comparison while the review is ahead (this runs for every purchase of a
    /// member above the entry tier; nothing is allocated unless a review is due).
    /// </summary>
    public static LedgerEntry? ReviewBefore(in Decider d) =>
        TierReviewDue(d.State, d.Settings.Ladder, d.Now) is { } due && due <= d.Now ? TierReview(d)?.Entry : null;

    /// <summary>
    /// When <see cref="TierReview"/> next has work: now when a review is due already (one the
    /// member's entries have not recorded), else when the next review falls (its window's end and
    /// the grace after it); null at the entry tier. One comparison while the review is ahead: it
    /// runs after every change of a member above the entry tier.
    /// </summary>
    public static DateTimeOffset? TierReviewDue(MemberState state, TierLadder ladder, DateTimeOffset now) =>
        Reviewed(state, ladder, now) is not { } review ? null
        : IsDue(review, state) ? now
        : review.ReviewAt?.AddDays(ladder.GraceDays);

    /// <summary>
    /// Whether reviews due by now change what the member's entries recorded: its tier, or when it
    /// is next reviewed. A member recorded in the entry tier (or in a name the ladder no longer
    /// has) has no review to record, whatever date its entries hold.
    /// </summary>
    private static bool IsDue((int Recorded, int Index, DateTimeOffset? ReviewAt) review, MemberState state) =>
        review.Index < review.Recorded || (review.Recorded > 0 && review.ReviewAt != state.TierReviewAt);

    /// <summary>The tier the member's entries recorded, and where every review due by now leaves it; null at the entry tier.</summary>
    private static (int Recorded, int Index, DateTimeOffset? ReviewAt)? Reviewed(MemberState state, TierLadder ladder, DateTimeOffset now)
    {
        if (state.TierReviewAt is null)
        {
            return null;
        }

        int recorded = ladder.IndexOf(state.Tier);
        (int index, DateTimeOffset? reviewAt) = Tiering.Review(recorded, state.TierReviewAt, ladder, state, now);
        return (recorded, index, reviewAt);
    }
}
