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
    /// sequence is checked too: a member's ledger is contiguous, so a gap is a bug and throws.
    /// </summary>
    public static (LoyaltyError Error, string Message)? Refuse(MemberState state, LedgerEntry first, LedgerEntry? second = null)
    {
        if (first.Sequence != state.Sequence + 1 || (second is not null && second.Sequence != first.Sequence + 1))
        {
            throw new InvalidOperationException(
                $"Entries {first.Sequence}{(second is null ? "" : "," + second.Sequence)} do not follow the member's sequence {state.Sequence}.");
        }

        long magnitude = second is null ? MagnitudeOf(first) : Add(MagnitudeOf(first), MagnitudeOf(second));
        LedgerEntry named = second ?? first;
        if (magnitude > VolumeMax)
        {
            return (LoyaltyError.InvalidArgument,
                $"{FieldOf(named)} is too large: the change would move {Describe(magnitude)} points and minor units, more than the engine's limit of {VolumeMax} per member; nothing was recorded");
        }

        if (magnitude > VolumeMax - state.Volume)
        {
            return (LoyaltyError.FailedPrecondition,
                $"{FieldOf(named)}: the change would move {magnitude} points and minor units, and member '{first.MemberId}' has already moved {state.Volume} of the engine's limit of {VolumeMax}; nothing was recorded");
        }

        return null;
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

    private static long MagnitudeOf(EntryDetails details)
    {
        long sum = 0;
        foreach (BreakdownComponent c in details.Components)
        {
            sum = Add(sum, c.Points);
        }

        sum = Add(Add(Add(sum, details.PendingReversed), details.ActiveReversed), details.Shortfall);
        sum = Add(Add(Add(sum, details.ReturnedAmountMinor), details.HeldPoints), details.ReferrerReward);
        sum = Add(Add(Add(sum, details.Quantity), details.GivenMinor), details.WalletMinor);
        foreach (SkuAmount line in details.Lines ?? [])
        {
            sum = Add(Add(sum, line.AmountMinor), line.Quantity);
        }

        sum = Add(Add(sum, MagnitudeOf(details.Lots)), MagnitudeOf(details.Restored));
        return details.Merge is { } transfer ? Add(sum, MagnitudeOf(transfer)) : sum;
    }

    private static long MagnitudeOf(IReadOnlyList<LotUse>? lots)
    {
        long sum = 0;
        foreach (LotUse lot in lots ?? [])
        {
            sum = Add(sum, lot.Points);
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

        sum = Add(Add(Add(Add(sum, t.LifetimeEarned), t.LifetimeRedeemed), t.LifetimeExpired), t.LifetimeReversed);
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
