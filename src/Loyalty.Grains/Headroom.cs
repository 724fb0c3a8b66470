namespace Loyalty.Grains;

/// <summary>
/// Why applying a decided entry cannot overflow. Every counter a member keeps (balance, lots,
/// pending points, lifetime totals, cap and qualification buckets, return progress) changes, per
/// entry applied, by at most that entry's <em>magnitude</em>: the sum of the absolute values of
/// every number the entry carries. So each counter is bounded in absolute value by the member's
/// <see cref="MemberState.Volume"/>, the sum of the magnitudes applied so far. The decision admits
/// an entry only while that sum stays within <see cref="VolumeMax"/>, half of 64 bits, which
/// leaves room for the sum of any two counters too; apply then adds without any check that could
/// fire. A refusal here is decided before anything changes and uses no sequence number.
/// </summary>
public static class Headroom
{
    /// <summary>The most a member may move in its lifetime, in points and minor units together (2^62 - 1).</summary>
    public const long VolumeMax = long.MaxValue / 2;

    /// <summary>
    /// The magnitude of an entry: |points| + |amount| + every amount in its details. Saturates at
    /// <see cref="long.MaxValue"/> instead of overflowing, so an absurd entry is measured, not thrown on.
    /// </summary>
    public static long MagnitudeOf(LedgerEntry entry)
    {
        long sum = 1; // the entry itself: purchase counts grow by one per entry
        sum = Add(sum, entry.Points.Value);
        sum = Add(sum, entry.AmountMinor);
        return entry.Details is { } details ? Add(sum, MagnitudeOf(details)) : sum;
    }

    /// <summary>
    /// Why the member cannot take <paramref name="first"/> (and <paramref name="second"/>, decided
    /// with it), or null when applying them to <paramref name="state"/> cannot overflow. The
    /// sequence is checked too: a member's ledger is contiguous, so a gap is a bug and throws; so are
    /// details that are not the record of their entry's kind.
    /// </summary>
    public static (LoyaltyError Error, string Message)? Refuse(MemberState state, LedgerEntry first, LedgerEntry? second = null)
    {
        if (first.Sequence != state.Sequence + 1 || (second is not null && second.Sequence != first.Sequence + 1))
        {
            throw new InvalidOperationException(
                $"Entries {first.Sequence}{(second is null ? "" : "," + second.Sequence)} do not follow the member's sequence {state.Sequence}.");
        }

        // A decider that gives an entry another kind's record is a bug: caught here, before anything is applied or written.
        AssertDetailsFit(first);
        if (second is not null)
        {
            AssertDetailsFit(second);
        }

        long magnitude = second is null ? MagnitudeOf(first) : Add(MagnitudeOf(first), MagnitudeOf(second));
        LedgerEntry named = second ?? first;
        if (magnitude > VolumeMax)
        {
            return (LoyaltyError.InvalidArgument,
                $"{FieldOf(named)} is too large: the change would move {Describe(magnitude)} points and minor units, more than the engine's limit of {VolumeMax} per member; nothing was recorded");
        }

        long reserved = Reserved(state, first, second);
        if (magnitude > VolumeMax - state.Volume - reserved)
        {
            return (LoyaltyError.FailedPrecondition,
                $"{FieldOf(named)}: the change would move {magnitude} points and minor units, and member '{first.MemberId}' has already moved {state.Volume} of the engine's limit of {VolumeMax}"
                + (reserved > 0 ? $" and keeps {reserved} for the notes it owes its referrer" : "") + "; nothing was recorded");
        }

        return null;
    }

    /// <summary>
    /// The room a referred member keeps for the notes it owes its referrer: that the reward was
    /// given (the reward's size, plus one) and that it was reversed (one). Every other change
    /// leaves it, so that such a note is never refused for want of room; a refused note would
    /// leave the reward owed and offered again for ever.
    /// </summary>
    public const long SettlementRoom = 2 + Limits.BonusPointsMax;

    /// <summary>
    /// How much more a member may take in under the limit whatever it becomes meanwhile: the
    /// room for a merge's transfer, checked at the duplicate before it lets go. It always keeps
    /// <see cref="SettlementRoom"/>, since the merge may make the survivor a referred member.
    /// </summary>
    public static long Room(MemberState state) => VolumeMax - state.Volume - SettlementRoom;

    /// <summary>
    /// The room entries must leave: <see cref="SettlementRoom"/> when the member is referred, or
    /// becomes so by one of them, unless they are the settlement note itself.
    /// </summary>
    private static long Reserved(MemberState state, LedgerEntry first, LedgerEntry? second) =>
        first.Kind == LedgerEntryKind.ReferralSettled ? 0
        : state.Referral.ReferredBy is not null || MakesReferred(first) || (second is not null && MakesReferred(second)) ? SettlementRoom
        : 0;

    private static bool MakesReferred(LedgerEntry entry) => entry.Kind switch
    {
        LedgerEntryKind.Enrol => entry.Reference is not null,
        LedgerEntryKind.Referred => true,
        LedgerEntryKind.MergedIn => entry.DetailsAs<MergedInDetails>()?.InheritsReferrer == true,
        _ => false,
    };

    private static void AssertDetailsFit(LedgerEntry entry)
    {
        if (!EntryDetails.Fits(entry.Kind, entry.Details))
        {
            throw new InvalidOperationException($"Entry {entry.Sequence} is a {entry.Kind} with details of type {entry.Details!.GetType().Name}.");
        }
    }

    /// <summary>The request field whose value the entry's amounts come from, for refusals.</summary>
    private static string FieldOf(LedgerEntry entry) => entry.Kind switch
    {
        LedgerEntryKind.Earn => "amount_minor (the purchase's points)",
        LedgerEntryKind.Return => "amount_minor (the return's points)",
        LedgerEntryKind.Adjust => "points",
        LedgerEntryKind.MergedIn or LedgerEntryKind.MergedAway => "duplicate_member_id (the duplicate's totals)",
        LedgerEntryKind.Enrol => "the program's signup_bonus_points",
        LedgerEntryKind.ReferralReward => "the program's referral reward",
        LedgerEntryKind.Feedback => "the program's feedback_reward_points",
        _ => "the change",
    };

    private static string Describe(long magnitude) => magnitude == long.MaxValue ? "more than 2^63" : magnitude.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// The sum of the magnitudes of every number the details carry that a member's counters grow
    /// by, by kind. It counts into the member's volume, so it stays as it was when the details
    /// were one record (the same numbers, nothing added), and old snapshots agree with replay.
    /// </summary>
    private static long MagnitudeOf(EntryDetails details) => details switch
    {
        EarnDetails d => Add(Add(Add(Add(Add(MagnitudeOf(d.Components), MagnitudeOf(d.Lines)), d.ReferrerReward), d.Quantity), d.GivenMinor), d.WalletMinor),
        ReturnDetails d => Add(Add(Add(Add(Add(Add(Add(Add(Add(Add(MagnitudeOf(d.Components), MagnitudeOf(d.Lines)), d.PendingReversed), d.ActiveReversed), d.Shortfall),
            d.ReturnedAmountMinor), d.GivenMinor), d.WalletMinor), MagnitudeOf(d.Lots)), MagnitudeOf(d.Restored)), MagnitudeOf(d.ExpiredUnrestored)),
        EnrolDetails d => MagnitudeOf(d.Components),
        RedeemDetails d => Add(Add(MagnitudeOf(d.Lots), d.Quantity), d.HeldPoints),
        ReserveDetails d => Add(d.HeldPoints, d.Quantity),
        ReservationEndDetails d => Add(d.HeldPoints, d.Quantity),
        ReferralRewardDetails d => Add(MagnitudeOf(d.Lots), d.Shortfall),
        ReferralSettledDetails d => Add(0, d.ReferrerReward),
        TradeInAcceptedDetails d => Add(0, d.WalletMinor),
        MergedAwayDetails { Merge: { } transfer } => MagnitudeOf(transfer),
        MergedInDetails { Merge: { } transfer } => MagnitudeOf(transfer),
        ILotsTaken d => MagnitudeOf(d.Lots),
        _ => 0,
    };

    // The lists are walked by index: every purchase's apply comes here, and a foreach over an
    // IReadOnlyList would allocate an enumerator per list.
    private static long MagnitudeOf(IReadOnlyList<BreakdownComponent> components)
    {
        long sum = 0;
        for (int i = 0; i < components.Count; i++)
        {
            sum = Add(sum, components[i].Points);
        }

        return sum;
    }

    private static long MagnitudeOf(IReadOnlyList<SkuAmount>? lines)
    {
        long sum = 0;
        for (int i = 0; i < lines?.Count; i++)
        {
            sum = Add(Add(sum, lines[i].AmountMinor), lines[i].Quantity);
        }

        return sum;
    }

    private static long MagnitudeOf(IReadOnlyList<LotUse>? lots)
    {
        long sum = 0;
        for (int i = 0; i < lots?.Count; i++)
        {
            sum = Add(sum, lots[i].Points);
        }

        return sum;
    }

    /// <summary>Everything a merge hands over: the survivor's counters grow by at most this.</summary>
    private static long MagnitudeOf(MergeTransfer t)
    {
        long sum = Add(Add(Add(Add(t.Balance, MagnitudeOf(t.Lots)), t.PurchaseCount), t.GivenMinor), t.WalletMinor);
        foreach (PendingLotUse lot in t.Pending)
        {
            sum = Add(sum, lot.Points);
        }

        sum = Add(Add(Add(Add(Add(sum, t.LifetimeEarned), t.LifetimeRedeemed), t.LifetimeExpired), t.LifetimeReversed), t.Shortfall);
        foreach (QualifyingDayUse day in t.Qualification ?? [])
        {
            // The survivor's qualifying days grow by these (none in merges recorded before they were handed on).
            sum = Add(Add(sum, day.Points), day.Spend);
        }

        foreach (ReturnedSoFar r in t.Returns)
        {
            sum = Add(sum, r.AmountReturnedMinor);
            foreach (long amount in r.SkuReturnedMinor.Values)
            {
                sum = Add(sum, amount);
            }

            foreach (long quantity in r.SkuReturnedQuantity?.Values ?? (IEnumerable<long>)[])
            {
                sum = Add(sum, quantity);
            }

            foreach (long points in r.Reversed)
            {
                sum = Add(sum, points);
            }
        }

        foreach (long points in t.ReferralRewards?.Values ?? (IEnumerable<long>)[])
        {
            sum = Add(sum, points);
        }

        return Add(sum, t.Referral?.RewardOwed ?? 0);
    }

    /// <summary>sum + |value|, saturating at <see cref="long.MaxValue"/>; sum is never negative.</summary>
    private static long Add(long sum, long value)
    {
        long magnitude = value == long.MinValue ? long.MaxValue : Math.Abs(value);
        return magnitude > long.MaxValue - sum ? long.MaxValue : sum + magnitude;
    }
}
