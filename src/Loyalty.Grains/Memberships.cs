namespace Loyalty.Grains;

/// <summary>
/// A member's paid membership, changed only by membership entries: the plan, its status and
/// term, the plans whose free trial was used, and a bounded history of changes.
/// </summary>
[GenerateSerializer]
public sealed class MembershipState
{
    /// <summary>The plan of the newest membership; null before the first.</summary>
    [Id(0)] public string? PlanId { get; private set; }

    /// <summary>The status as the newest entry left it (a term past its end lapses with the next due work).</summary>
    [Id(1)] public MembershipStatus Status { get; private set; }

    /// <summary>When the newest membership began.</summary>
    [Id(2)] public DateTimeOffset StartedAt { get; private set; }

    /// <summary>When its term (or trial) ends.</summary>
    [Id(3)] public DateTimeOffset TermEndsAt { get; private set; }

    [Id(4)] private List<string>? _trialsUsed;

    [Id(5)] private List<MembershipStep>? _history;

    /// <summary>
    /// When the newest membership's paid time began (its start, or its trial's end): paid terms
    /// are whole months from here, so a term begun on the 31st ends on each month's last day
    /// rather than drifting to the 28th for good after February.
    /// </summary>
    [Id(6)] public DateTimeOffset PaidFrom { get; private set; }

    /// <summary>Plans whose free trial the member has had.</summary>
    public IReadOnlyList<string> TrialsUsed => (IReadOnlyList<string>?)_trialsUsed ?? [];

    /// <summary>The newest changes, oldest first, at most <see cref="Limits.MembershipHistoryMax"/>.</summary>
    public IReadOnlyList<MembershipStep> History => (IReadOnlyList<MembershipStep>?)_history ?? [];

    /// <summary>Whether the membership gives its benefits (trial, active or cancelled, before the term's end).</summary>
    public bool IsCurrent => Status is MembershipStatus.Trial or MembershipStatus.Active or MembershipStatus.Cancelled;

    /// <summary>The plan whose benefits the member has at <paramref name="now"/>; null when none.</summary>
    public string? PlanAt(DateTimeOffset now) => IsCurrent && now < TermEndsAt ? PlanId : null;

    /// <summary>
    /// The plan whose benefits a purchase made at <paramref name="occurredAt"/> and recorded at
    /// <paramref name="now"/> earns: the newest membership's plan, if the purchase was made while
    /// it ran (after it began, and before its term ended unless it runs still). Bonus days and
    /// campaigns go by the purchase's time too: a till's purchase sent late (offline, back-dated)
    /// from before the member paid does not earn the plan's benefits, and one from the last day of
    /// a term that has lapsed since does. A till's clock may run behind the engine's by as much as
    /// it may run ahead (<see cref="Limits.PurchaseFutureSkewMax"/>): a purchase rung up just
    /// after paying at the till counts.
    /// </summary>
    public string? PlanForPurchase(DateTimeOffset occurredAt, DateTimeOffset now) =>
        PlanId is { } plan && occurredAt + Limits.PurchaseFutureSkewMax >= StartedAt && (PlanAt(now) is not null || occurredAt < TermEndsAt) ? plan : null;

    /// <summary>
    /// Whether the newest membership was cancelled before its term ended (still cancelled, or
    /// lapsed right after its cancellation; the history always keeps its newest steps).
    /// </summary>
    public bool EndedCancelled =>
        Status == MembershipStatus.Cancelled
        || (Status == MembershipStatus.Lapsed && History is [.., { Kind: LedgerEntryKind.MembershipCancelled }, { Kind: LedgerEntryKind.MembershipLapsed }]);

    /// <summary>
    /// What the newest payment of the newest membership was, in minor units, when that membership
    /// is of <paramref name="planId"/>; null when it had none (a trial not paid for yet) or the
    /// history kept holds none. A renewal may be paid at this price after the plan's fee changed
    /// (see <see cref="MembershipRules.Pay"/>). Payments of an earlier membership do not count: a
    /// new membership (a trial's included) pays the fee of its own time.
    /// </summary>
    public long? LastPaidMinor(string planId)
    {
        if (PlanId != planId)
        {
            return null;
        }

        IReadOnlyList<MembershipStep> history = History;
        for (int i = history.Count - 1; i >= 0; i--)
        {
            switch (history[i])
            {
                case { Kind: LedgerEntryKind.MembershipRenewed, AmountMinor: > 0 } renewal:
                    return renewal.AmountMinor;
                case { Kind: LedgerEntryKind.MembershipStarted } start:
                    return start.AmountMinor > 0 ? start.AmountMinor : null;
            }
        }

        return null;
    }

    /// <summary>
    /// Until when billing may still renew the newest membership after its term ended (see
    /// <see cref="Limits.MembershipRenewalGraceDays"/>); null when it cannot (none, or cancelled).
    /// </summary>
    public DateTimeOffset? RenewableUntil => PlanId is not null && !EndedCancelled ? TermEndsAt.AddDays(Limits.MembershipRenewalGraceDays) : null;

    /// <summary>When the membership lapses unless renewed; null when it is not current.</summary>
    public DateTimeOffset? LapsesAt => IsCurrent ? TermEndsAt : null;

    /// <summary>Counts the trials a member merged into this one had as this member's own.</summary>
    public void AdoptTrials(IReadOnlyList<string> trials)
    {
        foreach (string plan in trials)
        {
            if (!TrialsUsed.Contains(plan))
            {
                (_trialsUsed ??= []).Add(plan);
            }
        }
    }

    /// <summary>Applies a membership entry.</summary>
    public void Apply(LedgerEntry entry)
    {
        MembershipChange change = (entry.Details as MembershipDetails)?.Membership ?? throw new InvalidOperationException($"Membership entry {entry.Sequence} has no change.");
        switch (entry.Kind)
        {
            case LedgerEntryKind.MembershipStarted:
                (PlanId, StartedAt, TermEndsAt) = (change.PlanId, entry.RecordedAt, change.TermEndsAt);
                PaidFrom = change.Trial ? change.TermEndsAt : entry.RecordedAt;
                Status = change.Trial ? MembershipStatus.Trial : MembershipStatus.Active;
                if (change.Trial && !TrialsUsed.Contains(change.PlanId))
                {
                    (_trialsUsed ??= []).Add(change.PlanId);
                }

                break;
            case LedgerEntryKind.MembershipRenewed:
                (TermEndsAt, Status) = (change.TermEndsAt, MembershipStatus.Active);
                break;
            case LedgerEntryKind.MembershipCancelled:
                Status = MembershipStatus.Cancelled;
                break;
            case LedgerEntryKind.MembershipLapsed:
                Status = MembershipStatus.Lapsed;
                break;
            default:
                throw new InvalidOperationException($"Entry {entry.Sequence} of kind {entry.Kind} is not a membership entry.");
        }

        _history ??= [];
        _history.Add(new MembershipStep(entry.Kind, change.PlanId, entry.RecordedAt, change.TermEndsAt, entry.TransactionId, entry.AmountMinor));
        if (_history.Count > Limits.MembershipHistoryMax)
        {
            _history.RemoveAt(0);
        }
    }

    /// <summary>The membership as queries see it at <paramref name="now"/> (a term that ended shows as lapsed); null before the first.</summary>
    public MembershipView? ToView(ProgramSettings? settings, DateTimeOffset now)
    {
        if (PlanId is null)
        {
            return null;
        }

        MembershipPlan? plan = settings?.FindPlan(PlanId);
        MembershipStatus status = IsCurrent && now >= TermEndsAt ? MembershipStatus.Lapsed : Status;
        bool benefits = status != MembershipStatus.Lapsed && plan is not null;
        return new MembershipView(PlanId, status, StartedAt, TermEndsAt, benefits && plan!.EarlyAccess, benefits ? plan!.PerkList : [],
            benefits ? plan!.MultiplierBp : Multipliers.One, [.. History]);
    }
}

/// <summary>Membership changes, decided purely: the entry's kind and change, or a refusal naming its reason.</summary>
public static class MembershipRules
{
    /// <summary>What a confirmed payment does: starts a membership, or renews the current one by a term.</summary>
    public static (LedgerEntryKind Kind, MembershipChange Change)? Pay(ProgramSettings settings, MembershipState member, MembershipPayment payment, DateTimeOffset now, out (LoyaltyError Error, string Message)? refusal)
    {
        refusal = null;
        if (settings.FindPlan(payment.PlanId) is not { } plan)
        {
            refusal = (LoyaltyError.NotFound, $"plan_id '{payment.PlanId}' is not one of the program's membership_plans");
            return null;
        }

        string? current = member.PlanAt(now);
        bool renews = current is null ? RenewsAfterItsEnd(member, plan, now) : current == plan.Id;
        // A renewal may be paid at the price the member has been paying: billing that keeps a
        // subscriber's price after the fee changed (or charged before the change and confirmed
        // after it) must not make a paying member lapse. A new membership pays the fee of now.
        long? kept = renews ? member.LastPaidMinor(plan.Id) : null;
        if (payment.Amount.Currency != settings.Currency || (payment.Amount.AmountMinor != plan.FeeMinor && payment.Amount.AmountMinor != kept))
        {
            refusal = (LoyaltyError.FailedPrecondition,
                $"the payment ({payment.Amount.AmountMinor} {payment.Amount.Currency}) does not match plan {plan.Id}'s fee ({plan.FeeMinor} {settings.Currency})"
                + (kept is { } price && price != plan.FeeMinor ? $" nor the price the member's membership was last paid at ({price} {settings.Currency})" : ""));
            return null;
        }

        if (current is null)
        {
            if (!renews && LapseBeingRecorded(member, now) is { } lapsing)
            {
                refusal = (LoyaltyError.Unavailable, lapsing);
                return null;
            }

            return renews
                ? (LedgerEntryKind.MembershipRenewed, new MembershipChange(plan.Id, Extended(member, plan.TermMonths)))
                : (LedgerEntryKind.MembershipStarted, new MembershipChange(plan.Id, now.AddMonths(plan.TermMonths)));
        }

        if (current != plan.Id)
        {
            refusal = (LoyaltyError.FailedPrecondition,
                $"the member holds plan {current} until {member.TermEndsAt:O}; a payment for plan {plan.Id} can start only after it ends");
            return null;
        }

        // A paid term follows the term (or trial) already running.
        DateTimeOffset end = Extended(member, plan.TermMonths);
        if (end > now.AddMonths(Limits.MembershipPaidAheadMonthsMax))
        {
            refusal = (LoyaltyError.FailedPrecondition, $"the membership is already paid until {member.TermEndsAt:O}; at most {Limits.MembershipPaidAheadMonthsMax} months ahead");
            return null;
        }

        return (LedgerEntryKind.MembershipRenewed, new MembershipChange(plan.Id, end));
    }

    /// <summary>
    /// Whether a payment for <paramref name="plan"/> renews a membership (or trial) of that plan
    /// whose term ended within <see cref="Limits.MembershipRenewalGraceDays"/> (lapsed, or its lapse
    /// not written yet): the next term follows on from the one that ended, when it ends after now.
    /// Not one the member cancelled: billing charges no renewal at its end, so a payment after it is
    /// a new membership, from now.
    /// </summary>
    private static bool RenewsAfterItsEnd(MembershipState member, MembershipPlan plan, DateTimeOffset now) =>
        member.PlanId == plan.Id && member.PaidFrom != default && now >= member.TermEndsAt && now < member.RenewableUntil
        && Extended(member, plan.TermMonths) > now;

    /// <summary>
    /// The end of the member's term after <paramref name="months"/> more: counted from when its paid
    /// time began when the term is a whole number of months from then (a renewal of a term begun on
    /// the 31st ends on the 31st again, or the month's last day), else from the term's end.
    /// </summary>
    public static DateTimeOffset Extended(MembershipState member, int months)
    {
        DateTimeOffset from = member.PaidFrom;
        DateTimeOffset end = member.TermEndsAt;
        int paid = checked(((end.Year - from.Year) * 12) + end.Month - from.Month);
        return from != default && paid >= 0 && from.AddMonths(paid) == end ? from.AddMonths(checked(paid + months)) : end.AddMonths(months);
    }

    /// <summary>A free trial of the plan; refused when the plan has none, the member had it, or holds a plan now.</summary>
    public static MembershipChange? Trial(ProgramSettings settings, MembershipState member, string planId, DateTimeOffset now, out (LoyaltyError Error, string Message)? refusal)
    {
        MembershipPlan? plan = settings.FindPlan(planId);
        refusal = plan is null ? (LoyaltyError.NotFound, $"plan_id '{planId}' is not one of the program's membership_plans")
            : plan.TrialDays == 0 ? (LoyaltyError.FailedPrecondition, $"plan {planId} has no free trial")
            : member.TrialsUsed.Contains(planId) ? (LoyaltyError.FailedPrecondition, $"the member already had plan {planId}'s free trial")
            : member.PlanAt(now) is { } current ? (LoyaltyError.FailedPrecondition, $"the member holds plan {current} until {member.TermEndsAt:O}")
            : LapseBeingRecorded(member, now) is { } lapsing ? (LoyaltyError.Unavailable, lapsing)
            : null;
        return refusal is null ? new MembershipChange(planId, now.AddDays(plan!.TrialDays), Trial: true) : null;
    }

    /// <summary>Whether the membership's term has ended at <paramref name="now"/> and its lapse is to be recorded.</summary>
    public static bool LapseDue(MembershipState member, DateTimeOffset now) => member.LapsesAt is { } at && at <= now;

    /// <summary>
    /// Why a new membership (or trial) cannot start yet: the last one's term has ended and its lapse
    /// waits for the member's wake (moments after the term's end). Started over it, the lapse would
    /// never be written: billing, reports and events would not hear that the first one ended.
    /// </summary>
    private static string? LapseBeingRecorded(MembershipState member, DateTimeOffset now) =>
        LapseDue(member, now)
            ? $"the member's membership of plan {member.PlanId} ended at {member.TermEndsAt:O} and its lapse is being recorded; nothing was written, retry in a minute"
            : null;
}
