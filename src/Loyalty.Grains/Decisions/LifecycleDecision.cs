namespace Loyalty.Grains;

/// <summary>
/// The member's lifecycle: profile notes, erasure, and the two sides of a merge (the duplicate
/// letting go of everything it holds, the survivor taking it in) with the referral links that
/// follow a merged member. The desk (<see cref="ProgramLinksGrain"/>) runs one merge at a time;
/// each side's entry is decided here from that member's state alone.
/// </summary>
public static class LifecycleDecision
{
    /// <summary>The ledger's note of a profile change: the field names (never their values) and the birthday's month for the due schedule.</summary>
    public static Decision Profile(in Decider d, IReadOnlyCollection<string> fieldNames, int birthMonth) =>
        d.Closed() ?? Decision.Write(d.NewEntry(LedgerEntryKind.Profile, Points.Zero, null, 0) with
        {
            Details = new ProfileDetails { ProfileFields = [.. fieldNames], BirthMonth = birthMonth },
        });

    /// <summary>
    /// The member's flags after <paramref name="change"/>, added and removed against the flags as
    /// committed now; nothing when they stay as they are, refused beyond the most a member may hold.
    /// </summary>
    public static Decision Flags(in Decider d, FlagChange change)
    {
        if (change.ApplyTo(d.State.Flags, out string? tooMany) is not { } wanted)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, tooMany!);
        }

        return d.State.Flags.SequenceEqual(wanted)
            ? Decision.Nothing
            : Decision.Write(d.NewEntry(LedgerEntryKind.Flags, Points.Zero, null, 0) with { Details = new FlagsDetails { Flags = wanted } });
    }

    /// <summary>
    /// The erasure of the member's personal data; nothing when it is erased already. Refused
    /// while a till's reservation or a store's inspection is under way: an erased member takes
    /// no changes, so the reservation could not be committed (it would lapse under the till) nor
    /// the item handed in be graded; both end within minutes or at the store. A reservation past
    /// its lapse does not hold it up (nothing can commit it; the schedule ends it, erased or not).
    /// </summary>
    public static Decision Erase(in Decider d, string reason) =>
        !d.State.Enrolled ? Decision.Refuse(LoyaltyError.NotFound, d.NotEnrolled)
        : d.State.Erased ? Decision.Nothing
        : OpenBusiness(d, lapsedHoldsCount: false) is { } open ? Decision.Refuse(LoyaltyError.FailedPrecondition, open)
        : MergeOpen(d) is { } merging ? Decision.Refuse(LoyaltyError.Unavailable, merging)
        : Decision.Write(d.NewEntry(LedgerEntryKind.Erase, Points.Zero, null, 0) with { Reason = reason });

    /// <summary>
    /// How long after a merge was started its survivor's due schedule has the desk complete it,
    /// when it is still open: longer than a merge takes when it does not fail (it is settled at
    /// once then).
    /// </summary>
    public static readonly TimeSpan MergeCheckDelay = TimeSpan.FromMinutes(1);

    /// <summary>
    /// The survivor's intent to take in <paramref name="duplicateId"/>, written before the
    /// duplicate lets go, so that a merge cut short after that is known here and completed by the
    /// due schedule, not only when the client repeats it; its reason is kept for that completion.
    /// Nothing when this merge is the open one already; refused while another is open (the desk
    /// completes it first; it is open still only when that failed), or when this member takes no
    /// changes.
    /// </summary>
    public static Decision MergeStart(in Decider d, string duplicateId, string reason) =>
        d.Closed() is { } closed ? closed
        : d.State.MergingFrom == duplicateId ? Decision.Nothing
        : d.State.MergingFrom is { } other ? Decision.Refuse(LoyaltyError.Unavailable,
            $"the merge of '{other}' into member '{d.MemberId}' is not finished yet (it was cut short); the member's due schedule completes it, a minute after it started or later when that fails: retry then")
        : Decision.Write(d.NewEntry(LedgerEntryKind.MergeStarted, Points.Zero, null, 0) with { Reference = duplicateId, Reason = reason });

    /// <summary>
    /// The end of the open merge of <paramref name="duplicateId"/>: taken in (its links moved), or
    /// abandoned for <paramref name="abandonedBecause"/>, the duplicate's refusal to let go.
    /// Nothing when that merge is not the open one (settled already, or started before merges
    /// were recorded as started), and no abandonment once the duplicate is taken in: a refusal
    /// judged before it let go (by a desk since superseded) must not end a merge that happened.
    /// </summary>
    public static Decision MergeSettle(in Decider d, string duplicateId, string? abandonedBecause) =>
        d.State.MergingFrom != duplicateId || (abandonedBecause is not null && d.State.MergedFrom.Contains(duplicateId)) ? Decision.Nothing
        : Decision.Write(d.NewEntry(LedgerEntryKind.MergeSettled, Points.Zero, null, 0) with
        {
            Reference = duplicateId,
            Reason = abandonedBecause is null ? null
                : abandonedBecause.Length <= Limits.ReasonLengthMax ? abandonedBecause
                : abandonedBecause[..(Limits.ReasonLengthMax - 1)] + "…",
            Details = new MergeSettledDetails { Abandoned = abandonedBecause is not null },
        });

    /// <summary>
    /// Why the member cannot close (be erased or merged away) while a merge into it is open and
    /// its duplicate not yet taken in (<see cref="MemberState.AwaitsOpenMerge"/>), or null.
    /// </summary>
    private static string? MergeOpen(in Decider d) =>
        d.State.AwaitsOpenMerge
            ? $"the merge of '{d.State.MergingFrom}' into member '{d.MemberId}' is not finished yet (it was cut short); the member's due schedule completes it, a minute after it started or later when that fails: retry then"
            : null;

    /// <summary>
    /// The survivor's limits, checked before the duplicate lets go so that a refusal strands
    /// nothing: the merged histories and the referrals it would hold. Null when it may.
    /// </summary>
    public static Decision? MergeLimits(in Decider d, int duplicateMerges, IEnumerable<string> duplicateReferrals)
    {
        int mergesAfter = d.State.MergedFrom.Count + 1 + duplicateMerges;
        if (mergesAfter > Limits.MergesPerMemberMax)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"member '{d.MemberId}' would hold the histories of {mergesAfter} merged accounts, more than the {Limits.MergesPerMemberMax} one member may");
        }

        IReadOnlyList<string> mine = d.State.Referral.Referrals;
        string self = d.MemberId;
        int referralsAfter = mine.Count + duplicateReferrals.Count(r => r != self && !mine.Contains(r));
        return referralsAfter > Limits.ReferralsPerMemberMax
            ? Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"member '{d.MemberId}' would have {referralsAfter} referrals, more than the {Limits.ReferralsPerMemberMax} one member may")
            : null;
    }

    /// <summary>
    /// The duplicate's side of a merge: everything it holds (balance, pending lots, tier, links)
    /// leaves it in one entry. Nothing when it already went to <paramref name="survivorId"/> (the
    /// transfer is then <see cref="MemberState.Detached"/>); refused while it has business of its
    /// own that a merge would drop: reservations, a membership, trade-ins awaiting inspection.
    /// Points already past their expiry are written off first (an <see cref="LedgerEntryKind.Expire"/>
    /// entry is the decision then; the caller decides the detach again once it is applied): handed
    /// over, they would arrive as live points and could pay the survivor's debt or its spending.
    /// </summary>
    public static Decision Detach(in Decider d, string survivorId, long survivorRoom = Headroom.VolumeMax)
    {
        MemberState state = d.State;
        if (!state.Enrolled)
        {
            return Decision.Refuse(LoyaltyError.NotFound, d.NotEnrolled);
        }

        if (state.MergedInto is { } into)
        {
            return into == survivorId
                ? Decision.Nothing
                : Decision.Refuse(LoyaltyError.FailedPrecondition, $"member '{d.MemberId}' was already merged into '{into}'");
        }

        if (DetachBlocked(d) is { } blocked)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, blocked);
        }

        if (MergeOpen(d) is { } merging)
        {
            // Its points would move on without the open merge's: they arrive here when it completes.
            return Decision.Refuse(LoyaltyError.Unavailable, merging);
        }

        if (state.Referral.Unconfirmed is [var unsettled, ..])
        {
            // A link whose referred side may still be written would move to the survivor unchecked:
            // the desk settles it first (at once after the change that made it, or from the due schedule).
            return Decision.Refuse(LoyaltyError.Unavailable,
                $"the referral of '{unsettled}' by member '{d.MemberId}' is not settled yet (the change that made it failed half-way); the member's due schedule checks it a minute after it was made, or later when that fails: retry the merge then");
        }

        if (Expiring.Next(state, d.Settings.ExpiryRules, d.Now) is { Kind: DueKind.Expire } expired)
        {
            return DueDecision.Expire(d, expired);
        }

        TierLadder ladder = d.Settings.Ladder;
        (int tier, DateTimeOffset? reviewAt) = Tiering.Review(ladder.IndexOf(state.Tier), state.TierReviewAt, ladder, state, d.Now);
        MergeTransfer transfer = state.TransferOf(d.MemberId, ladder.Tiers[tier].Name, reviewAt) with { HandedOverAt = d.Now };
        LedgerEntry away = d.NewEntry(LedgerEntryKind.MergedAway, -(state.Balance + state.Lots.PendingTotal), null, 0) with
        {
            Reference = survivorId,
            Reason = "merged into " + survivorId,
            Details = new MergedAwayDetails { Merge = transfer, TierRecorded = state.Tier },
        };

        // The survivor's entry carries the same numbers (the points and the transfer), so it moves
        // as much as this one: the survivor must have that room before anything leaves here.
        long moved = Headroom.MagnitudeOf(away);
        return moved > survivorRoom
            ? Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"duplicate_member_id: merging '{d.MemberId}' would move {moved} points and minor units into '{survivorId}', which may take only {Math.Max(0, survivorRoom)} more under the engine's limit of {Headroom.VolumeMax} per member; nothing was recorded")
            : Decision.Write(away);
    }

    /// <summary>
    /// The survivor's side: the duplicate's points arrive, the higher of the two tiers is kept with
    /// its own review date, and its referrer is inherited when the survivor has none. Nothing when
    /// it is already in (or no transfer was handed over).
    /// </summary>
    public static Decision MergeIn(in Decider d, string duplicateId, MergeTransfer? transfer, string reason)
    {
        MemberState state = d.State;
        if (state.MergedInto is { } into)
        {
            // Only when this member was itself merged away during the duplicate's hand-over.
            return Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"member '{d.MemberId}' was merged into '{into}' meanwhile; '{duplicateId}' keeps its points in its merge record: merge it into '{into}'");
        }

        if (state.MergedFrom.Contains(duplicateId) || transfer is null)
        {
            return Decision.Nothing;
        }

        TierLadder ladder = d.Settings.Ladder;
        (int mine, DateTimeOffset? myReview) = Tiering.Review(ladder.IndexOf(state.Tier), state.TierReviewAt, ladder, state, d.Now);
        int theirs = ladder.IndexOf(transfer.Tier);
        // What both accounts earned in the window may reach a tier neither held: the merge then
        // moves the member up at once, as the purchase that crosses a threshold does.
        int held = Math.Max(mine, theirs);
        int reached = Tiering.Upgrade(held, ladder, new Together(state, transfer.Qualification), d.Now, 0);
        bool takeTheirs = theirs > mine;
        long pending = 0;
        foreach (PendingLotUse lot in transfer.Pending)
        {
            pending = checked(pending + lot.Points);
        }

        bool inherits = state.Referral.ReferredBy is null && transfer.ReferredBy is { } referrer && referrer != d.MemberId;
        return Decision.Write(d.NewEntry(LedgerEntryKind.MergedIn, new Points(checked(transfer.Balance + pending)), null, 0) with
        {
            Reference = duplicateId,
            Reason = reason,
            Details = new MergedInDetails
            {
                Merge = transfer,
                TierBefore = ladder.Tiers[mine].Name,
                DowngradedFrom = mine < ladder.IndexOf(state.Tier) ? ladder.Resolve(state.Tier) : null,
                TierAfter = reached > held ? ladder.Tiers[reached].Name : takeTheirs ? ladder.Resolve(transfer.Tier) : ladder.Tiers[mine].Name,
                TierReviewAt = reached > held ? d.Now.AddDays(ladder.WindowDays) : takeTheirs ? transfer.TierReviewAt : myReview,
                InheritsReferrer = inherits,
                InheritedAfterPurchases = inherits && state.Earnings.PurchaseCount > 0,
            },
        });
    }

    /// <summary>
    /// A member's qualifying totals with a merged duplicate's days added: each account's volume is
    /// within <see cref="Headroom.VolumeMax"/>, half of 64 bits, so their sum cannot overflow.
    /// </summary>
    private sealed class Together(MemberState state, IReadOnlyList<QualifyingDayUse>? theirs) : IQualifying
    {
        public long QualifyingAt(TierLadder ladder, DateTimeOffset at)
        {
            long total = ((IQualifying)state).QualifyingAt(ladder, at);
            (int first, int last) = EarnHistory.WindowDays(at, ladder.WindowDays);
            foreach (QualifyingDayUse day in theirs ?? [])
            {
                if (day.Day >= first && day.Day <= last)
                {
                    total = checked(total + (ladder.Basis == TierBasis.Points ? day.Points : day.Spend));
                }
            }

            return total;
        }
    }

    /// <summary>A referral link that named a merged-away member now names its survivor; nothing when this member has no link to it.</summary>
    public static Decision Repoint(in Decider d, string fromId, string toId) =>
        !d.State.Enrolled ? Decision.Refuse(LoyaltyError.NotFound, d.NotEnrolled)
        : d.State.Referral.ReferredBy != fromId && !d.State.Referral.Referrals.Contains(fromId) ? Decision.Nothing
        : Decision.Write(d.NewEntry(LedgerEntryKind.Repointed, Points.Zero, null, 0) with
        {
            Reference = toId,
            Details = new RepointedDetails { ReplacedMember = fromId },
        });

    /// <summary>
    /// Why the member cannot be merged away or erased yet, for business under way with a till or
    /// a store: reservations not ended (those past their lapse too, when
    /// <paramref name="lapsedHoldsCount"/>), trade-ins waiting for inspection. Null when none.
    /// </summary>
    private static string? OpenBusiness(in Decider d, bool lapsedHoldsCount)
    {
        DateTimeOffset now = d.Now;
        string[] holds = [.. d.State.Lots.Holds.Where(h => lapsedHoldsCount || h.LapsesAt > now).Select(h => h.ReservationId)];
        if (holds.Length > 0)
        {
            // One past its lapse (only a merge counts those) is ended by the schedule within moments.
            return $"member '{d.MemberId}' has reservations that have not ended ({Named(holds)}); commit or cancel them, or retry once they have lapsed";
        }

        return d.State.TradeIns.Count > 0
            ? $"member '{d.MemberId}' has trade-ins waiting for inspection ({Named([.. d.State.TradeIns.Select(t => t.TradeInId)])}); inspect them (as REJECTED to hand an item back) first"
            : null;
    }

    /// <summary>A few ids for a refusal's message, and how many more there are.</summary>
    private static string Named(string[] ids) =>
        string.Join(", ", ids.Take(NamedInRefusalMax)) + (ids.Length > NamedInRefusalMax ? $" and {ids.Length - NamedInRefusalMax} more" : "");

    /// <summary>How many reservation or trade-in ids a refusal names, at most.</summary>
    private const int NamedInRefusalMax = 3;

    /// <summary>Why the member cannot let go of its account now, or null.</summary>
    private static string? DetachBlocked(in Decider d)
    {
        MemberState state = d.State;
        if (state.Erased)
        {
            return $"member '{d.MemberId}' was erased";
        }

        if (OpenBusiness(d, lapsedHoldsCount: true) is { } open)
        {
            return open;
        }

        // A membership is the duplicate's own business with the retailer (billing): the merge
        // waits until it ends rather than drop it, through the days billing may still renew it
        // after its term (a renewal sent to an account merged away would be refused), and until
        // its lapse is recorded (nothing is written on an account after it is merged away).
        MembershipState membership = state.Membership;
        return membership.PlanAt(d.Now) is { } plan
            ? $"member '{d.MemberId}' holds membership plan {plan} until {membership.TermEndsAt:O}; cancel it and retry after it lapses"
            : membership.RenewableUntil > d.Now
            ? $"member '{d.MemberId}''s membership of plan {membership.PlanId} ended at {membership.TermEndsAt:O}, and billing may renew it until {membership.RenewableUntil:O}; retry after that"
            : membership.LapsesAt is not null
            ? $"member '{d.MemberId}''s membership of plan {membership.PlanId} ended at {membership.TermEndsAt:O} and its lapse is being recorded; retry in a minute"
            : null;
    }
}
