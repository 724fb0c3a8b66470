namespace Loyalty.Grains;

/// <summary>
/// A return of (part of) a purchase: the checks that refuse it, then the points it takes back,
/// component by component (<see cref="Reversal"/>), split between the purchase's pending lot and
/// the active balance under the program's negative-balance policy, with the points a purchase paid
/// partly in points gives back, its share to a cause and the store credit it refunds.
/// </summary>
public static class ReturnDecision
{
    /// <summary>
    /// The refusal of a return that cannot be of <paramref name="original"/> (not a purchase of this
    /// member or of a duplicate merged into it, dated before it, or back-dated beyond the program's
    /// limit), or null when its progress may be looked up and the return decided.
    /// </summary>
    public static Decision? Check(in Decider d, PurchaseReturn request, LedgerEntry? original)
    {
        if (d.Settings.RefusesBackdated(request.OccurredAt, d.Now) is { } tooOld)
        {
            return Decision.Refuse(LoyaltyError.InvalidArgument, tooOld);
        }

        if (original is not null && original.Kind == LedgerEntryKind.Earn && original.MemberId == d.State.MergingFrom && d.State.AwaitsOpenMerge)
        {
            // The duplicate has let go and this member has not taken it in yet: its purchases are
            // returned here once the merge completes (moments, or at its scheduled retry).
            return Decision.Refuse(LoyaltyError.Unavailable,
                $"original_transaction_id '{request.OriginalTransactionId}' is a purchase of member '{original.MemberId}', whose merge into '{d.MemberId}' is still under way; retry shortly");
        }

        // A purchase of a duplicate account merged into this one is returned here.
        if (original is null || (original.MemberId != d.MemberId && !d.State.MergedFrom.Contains(original.MemberId)) || original.Kind != LedgerEntryKind.Earn)
        {
            return Decision.Refuse(LoyaltyError.NotFound,
                $"original_transaction_id '{request.OriginalTransactionId}' is not a purchase of member '{d.MemberId}' in program '{d.ProgramId}'");
        }

        return request.OccurredAt < original.OccurredAt
            ? Decision.Refuse(LoyaltyError.FailedPrecondition,
                $"occurred_at {request.OccurredAt:O} is before the purchase's occurred_at {original.OccurredAt:O}; a return cannot precede its purchase")
            : null;
    }

    /// <summary>
    /// The return entry, or the refusal of a return that asks for more than is left of the
    /// purchase. <paramref name="progress"/> is every earlier return of <paramref name="original"/>
    /// (null for none); <paramref name="redeemed"/> is the redemption the purchase was paid with, if any.
    /// </summary>
    public static Decision Decide(in Decider d, PurchaseReturn request, long fingerprint, LedgerEntry original, LedgerEntry? redeemed, ReturnProgress? progress)
    {
        MemberState state = d.State;
        ReversalResult? reversal = Reversal.Compute(original, progress, request, out string? error);
        if (reversal is null)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, error!);
        }

        // The purchase's own pending points go first; the rest comes out of the active balance,
        // where the program's policy decides what happens to points already spent.
        // A purchase paid partly in points, returned in full: the points go back to the lots they came from.
        // Points of a lot that has expired since are not given back: they would have expired with it
        // (given back, they could pay a debt or meet a reservation before the wake wrote them off);
        // they count as expired, no longer as redeemed (the reward came back with the purchase).
        List<LotUse>? restoredLots = null;
        List<LotUse>? expiredLots = null;
        foreach (LotUse lot in reversal.Full ? redeemed?.DetailsAs<RedeemDetails>()?.Lots ?? [] : [])
        {
            (lot.ExpiresAt <= d.Now ? expiredLots ??= [] : restoredLots ??= []).Add(lot);
        }

        long restored = restoredLots?.Sum(l => l.Points) ?? 0;
        (PendingLot? pendingLot, long stillPending) = PendingOf(state, original, progress);
        long fromPending = Math.Min(reversal.Total, stillPending);
        long rest = reversal.Total - fromPending;
        long fromActive = d.Settings.NegativeBalance == NegativeBalancePolicy.AllowNegative
            ? rest
            : Math.Min(rest, Math.Max(0, checked(state.Balance.Value + restored)));
        long moneyReturned = MoneyReturned(original, progress, reversal);
        (long takenBack, long refunded) = MoneyBack(original, progress, moneyReturned);
        EarnDetails? earned = original.DetailsAs<EarnDetails>();
        var details = new ReturnDetails
        {
            Components = reversal.Components,
            PendingReversed = fromPending,
            PendingAvailableAt = fromPending > 0 ? pendingLot!.Value.AvailableAt : null,
            PendingLot = fromPending > 0 ? pendingLot!.Value.TransactionId : null,
            ActiveReversed = fromActive,
            // The purchase's own lot first, so other purchases' points keep their expiry.
            Lots = fromActive > 0 ? state.Lots.PlanTakeBack(fromActive, d.Now, prefer: true, earned?.ExpiresAt) : null,
            Shortfall = rest - fromActive,
            ReturnedAmountMinor = reversal.ReturnedAmountMinor,
            SpendReturnedMinor = moneyReturned,
            Lines = reversal.Lines,
            OriginalRecordedAt = original.RecordedAt,
            EarnDay = earned?.EarnDay ?? 0,
            EarnMonth = earned?.EarnMonth ?? 0,
            // This member's own referral, or that of a duplicate merged in (its referrer's reward
            // goes with the referred bonus the full return takes back).
            ReferralReversed = reversal.Full && state.Referral.ReversedByReturnOf(original.TransactionId!),
            Restored = restoredLots,
            ExpiredUnrestored = expiredLots,
            Full = reversal.Full,
            MergedPurchase = original.MemberId != d.MemberId,
            MergedQualifying = original.MemberId != d.MemberId && state.QualifyingFrom.Contains(original.MemberId),
            BirthdayGiftBack = reversal.Full && state.BirthdayGiftUsed
                && redeemed?.DetailsAs<RedeemDetails>() is { BirthdayGift: true, BirthdayGiftYear: > 0 and var year } && state.BirthdayGrant?.Year == year,
            Cause = takenBack > 0 ? earned!.Cause : null,
            GivenMinor = -takenBack,
            WalletMinor = refunded,
        };
        return Decision.Write(d.NewEntry(LedgerEntryKind.Return, new Points(checked(restored - fromPending - fromActive)), request.TransactionId, fingerprint) with
        {
            StoreId = request.StoreId,
            AmountMinor = reversal.ReturnedAmountMinor,
            Currency = request.Amount.Currency,
            Reference = original.TransactionId,
            OccurredAt = request.OccurredAt,
            Details = details,
        });
    }

    /// <summary>
    /// The pending lot holding what is still pending of <paramref name="original"/>'s points, and
    /// how much that is: what it earned into pending less what its earlier returns took from
    /// pending, at most what the lot holds (one day's purchases share a lot). None once its points
    /// are spendable. The lot is found as the earn's apply made it: by availability and expiry.
    /// </summary>
    private static (PendingLot? Lot, long Points) PendingOf(MemberState state, LedgerEntry original, ReturnProgress? progress)
    {
        if (original.AvailableAt is not { } availableAt || availableAt <= original.RecordedAt || original.Points.Value <= 0
            || state.Lots.FindPending(availableAt, original.DetailsAs<EarnDetails>()?.ExpiresAt) is not { } lot)
        {
            return (null, 0);
        }

        long left = Math.Max(0, original.Points.Value - (progress?.PendingReversed ?? 0));
        return (lot, Math.Min(left, lot.Points.Value));
    }

    /// <summary>
    /// The share of the purchase's money this return gives back: what it returns, or, when it
    /// completes the purchase's return (every line, though lines may not add up to its amount),
    /// all of the rest.
    /// </summary>
    private static long MoneyReturned(LedgerEntry original, ReturnProgress? progress, ReversalResult reversal) =>
        reversal.Full ? Math.Max(0, original.AmountMinor - (progress?.AmountReturnedMinor ?? 0)) : reversal.ReturnedAmountMinor;

    /// <summary>
    /// The money a return moves back, in the share of the purchase's money returned: what it gave
    /// to a cause (taken back) and the store credit it was paid with (refunded to the wallet).
    /// </summary>
    private static (long TakenBack, long Refunded) MoneyBack(LedgerEntry original, ReturnProgress? progress, long returnedNow)
    {
        long returnedBefore = progress?.AmountReturnedMinor ?? 0;
        EarnDetails? earned = original.DetailsAs<EarnDetails>();
        return (Reversal.TakenBack(earned?.GivenMinor ?? 0, original.AmountMinor, returnedBefore, returnedNow),
            Reversal.TakenBack(-(earned?.WalletMinor ?? 0), original.AmountMinor, returnedBefore, returnedNow));
    }
}
