namespace Loyalty.Grains;

/// <summary>
/// The kinds of programme beyond points per purchase: trade-ins handed in and inspected, paid
/// membership (payments, trials, cancellations), the cause a member gives to, personal bonus
/// days. Each is decided from the member's state and the program's table for it; resends that
/// the member's memory or the ledger answers are the grain's business, before these run.
/// </summary>
public static class ProgrammeDecision
{
    /// <summary>An item handed in for trade-in credit: it waits for inspection; refused when the program takes no such item or too many wait.</summary>
    public static Decision TradeIn(in Decider d, TradeIn tradeIn, long fingerprint)
    {
        if (d.Settings.TradeIn is not { } policy)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, $"program '{d.ProgramId}' takes no trade-ins (settings.trade_in)");
        }

        if (!policy.Takes(tradeIn.Category))
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, $"category '{tradeIn.Category}' is not in the program's trade-in table");
        }

        if (d.State.TradeIns.Count >= Limits.OpenTradeInsMax)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, $"the member already has {Limits.OpenTradeInsMax} trade-ins waiting for inspection");
        }

        return Decision.Write(d.NewEntry(LedgerEntryKind.TradeInSubmitted, Points.Zero, tradeIn.TradeInId, fingerprint) with
        {
            StoreId = tradeIn.StoreId,
            Details = new TradeInSubmittedDetails { TradeIn = new TradeInRecord(tradeIn.Category) },
        });
    }

    /// <summary>
    /// The inspection of <paramref name="open"/>: accepted at the program's credit for its category
    /// and condition (into the store-credit wallet), or rejected; refused when the table has no
    /// credit for that condition. <paramref name="key"/> makes the inspection once per trade-in.
    /// </summary>
    public static Decision Inspection(in Decider d, OpenTradeIn open, TradeInCondition condition, string key, string? storeId = null)
    {
        if (RedemptionDecision.OtherStore($"trade-in '{open.TradeInId}' was handed in", open.StoreId, storeId) is { } otherStore)
        {
            return Decision.Refuse(LoyaltyError.PermissionDenied, otherStore);
        }

        long? credit = condition == TradeInCondition.Rejected ? 0 : d.Settings.TradeIn?.CreditOf(open.Category, condition);
        if (credit is null)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, $"the program's trade-in table has no credit for {open.Category} in condition {condition}");
        }

        var record = new TradeInRecord(open.Category, condition);
        bool rejected = condition == TradeInCondition.Rejected;
        return Decision.Write(d.NewEntry(rejected ? LedgerEntryKind.TradeInRejected : LedgerEntryKind.TradeInAccepted, Points.Zero, key, (long)condition) with
        {
            Reference = open.TradeInId,
            // Where it was handed in: a resent inspection from a key of another store is refused by it.
            StoreId = open.StoreId,
            AmountMinor = credit.Value,
            Currency = d.Settings.Currency,
            Details = rejected ? new TradeInRejectedDetails { TradeIn = record } : new TradeInAcceptedDetails { TradeIn = record, WalletMinor = credit.Value },
        });
    }

    /// <summary>A membership payment: it starts the plan or renews it (<see cref="MembershipRules.Pay"/>), or is refused.</summary>
    public static Decision Payment(in Decider d, MembershipPayment payment, long fingerprint)
    {
        if (MembershipRules.Pay(d.Settings, d.State.Membership, payment, d.Now, out var refusal) is not { } decided)
        {
            return Decision.Refuse(refusal!.Value.Error, refusal.Value.Message);
        }

        return Decision.Write(d.NewEntry(decided.Kind, Points.Zero, payment.PaymentId, fingerprint) with
        {
            AmountMinor = payment.Amount.AmountMinor,
            Currency = payment.Amount.Currency,
            Details = MembershipDetails.Of(decided.Kind, decided.Change),
        });
    }

    /// <summary>A plan's free trial; nothing when that trial is already running (a resend).</summary>
    public static Decision Trial(in Decider d, string planId)
    {
        MembershipState member = d.State.Membership;
        if (member.Status == MembershipStatus.Trial && member.PlanAt(d.Now) == planId)
        {
            return Decision.Nothing;
        }

        return MembershipRules.Trial(d.Settings, member, planId, d.Now, out var refusal) is { } trial
            ? Decision.Write(d.NewEntry(LedgerEntryKind.MembershipStarted, Points.Zero, null, 0) with { Details = new MembershipStartedDetails { Membership = trial } })
            : Decision.Refuse(refusal!.Value.Error, refusal.Value.Message);
    }

    /// <summary>The membership's cancellation (it lapses when its term ends); nothing when already cancelled.</summary>
    public static Decision Cancellation(in Decider d, string reason)
    {
        MembershipState member = d.State.Membership;
        if (member.PlanAt(d.Now) is null)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, $"member '{d.MemberId}' holds no membership to cancel");
        }

        return member.Status == MembershipStatus.Cancelled
            ? Decision.Nothing
            : Decision.Write(d.NewEntry(LedgerEntryKind.MembershipCancelled, Points.Zero, null, 0) with
            {
                Reason = reason,
                Details = new MembershipCancelledDetails { Membership = new MembershipChange(member.PlanId!, member.TermEndsAt, member.Status == MembershipStatus.Trial) },
            });
    }

    /// <summary>The cause the member's purchases give a share to (null: none); nothing when it is the member's cause already.</summary>
    public static Decision Cause(in Decider d, string? causeId)
    {
        if (d.Settings.Giving is not { } giving)
        {
            return Decision.Refuse(LoyaltyError.FailedPrecondition, $"program '{d.ProgramId}' gives no share of purchases to causes (settings.giving)");
        }

        if (causeId is not null && !giving.Has(causeId))
        {
            return Decision.Refuse(LoyaltyError.NotFound,
                $"cause '{causeId}' is not one of program '{d.ProgramId}''s causes ({string.Join(", ", giving.Causes.Select(c => c.Id))})");
        }

        return d.State.Cause == causeId
            ? Decision.Nothing
            : Decision.Write(d.NewEntry(LedgerEntryKind.CauseChosen, Points.Zero, null, 0) with { Reference = causeId });
    }

    /// <summary>
    /// A personal bonus day, within what the member's tier (after any review that is due) allows
    /// this year; nothing when that day is booked already.
    /// </summary>
    public static Decision BonusDay(in Decider d, BonusDayBooking booking, long fingerprint)
    {
        ProgramSettings settings = d.Settings;
        TierLadder ladder = settings.Ladder;
        (int tier, _) = Tiering.Review(ladder.IndexOf(d.State.Tier), d.State.TierReviewAt, ladder, d.State, d.Now);
        if (BonusDayRules.Refusal(settings.BonusDays, ladder.Tiers[tier], d.State.BonusDays, booking.Day, BonusDayRules.LocalDay(d.Now, settings.Zone)) is { } refusal)
        {
            return Decision.Refuse(refusal.Error, refusal.Message);
        }

        return d.State.BonusDays.Contains(booking.Day.DayNumber)
            ? Decision.Nothing
            : Decision.Write(d.NewEntry(LedgerEntryKind.BonusDayBooked, Points.Zero, booking.BookingId, fingerprint) with
            {
                Details = new BonusDayBookedDetails { BonusDay = booking.Day.DayNumber, TierAfter = ladder.Tiers[tier].Name },
            });
    }
}
