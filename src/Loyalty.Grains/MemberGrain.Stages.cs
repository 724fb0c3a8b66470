using Loyalty.Storage;

namespace Loyalty.Grains;

/// <summary>The decisions of returns and adjustments, and the answers shared by every change.</summary>
public sealed partial class MemberGrain
{
    private ReturnResult? StageReturn(PurchaseReturn request, long fingerprint, LedgerEntry? original, LedgerEntry? redeemed,
        LedgerReturns? earlierReturns, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        string txn = request.TransactionId;
        if (Precheck(txn, fingerprint, ReturnDuplicate, (e, m) => ReturnResult.Reject(txn, e, m)) is { } early)
        {
            return early;
        }

        if (program.Settings.RefusesBackdated(request.OccurredAt, now) is { } tooOld)
        {
            return ReturnResult.Reject(txn, LoyaltyError.InvalidArgument, tooOld);
        }

        // A purchase of a duplicate account merged into this one is returned here.
        if (original is null || (original.MemberId != _memberId && !_state.MergedFrom.Contains(original.MemberId)) || original.Kind != LedgerEntryKind.Earn)
        {
            return ReturnResult.Reject(txn, LoyaltyError.NotFound,
                $"original_transaction_id '{request.OriginalTransactionId}' is not a purchase of member '{_memberId}' in program '{_programId}'");
        }

        if (request.OccurredAt < original.OccurredAt)
        {
            return ReturnResult.Reject(txn, LoyaltyError.FailedPrecondition,
                $"occurred_at {request.OccurredAt:O} is before the purchase's occurred_at {original.OccurredAt:O}; a return cannot precede its purchase");
        }

        // What was returned of it so far: kept by the member, or (once) made from the ledger's returns.
        ReturnProgress? progress = _state.Returns.Known(original.TransactionId!);
        if (progress is null)
        {
            if (_open is not null)
            {
                // Not kept, and the open group may hold a return of it the ledger read cannot
                // show: answered this way, the change waits for the group and starts again.
                return ReturnResult.Reject(txn, LoyaltyError.Unavailable, "the purchase's returns are being changed; retry");
            }

            if (earlierReturns?.Stale(_state) != false)
            {
                // Forgotten since the ledger was skipped, or the state was rebuilt or the purchase's
                // progress changed since it was read: read the ledger again.
                throw new StalePrefetchException();
            }

            progress = _state.Returns.Remember(original, earlierReturns.Returns, _state.Sequence);
        }

        // A progress with no return yet is the same as none.
        progress = progress is { Count: > 0 } ? progress : null;
        ReversalResult? reversal = Reversal.Compute(original, progress, request, out string? error);
        if (reversal is null)
        {
            return ReturnResult.Reject(txn, LoyaltyError.FailedPrecondition, error!);
        }

        // The purchase's own pending points go first; the rest comes out of the active balance,
        // where the program's policy decides what happens to points already spent.
        // A purchase paid partly in points, returned in full: the points go back to the lots they came from.
        IReadOnlyList<LotUse>? restoredLots = reversal.Full && redeemed?.Details?.Lots is { Count: > 0 } spent ? spent : null;
        long restored = restoredLots?.Sum(l => l.Points) ?? 0;
        PendingLot? pendingLot = _state.Lots.FindPending(original.TransactionId!);
        long fromPending = Math.Min(reversal.Total, pendingLot?.Points.Value ?? 0);
        long rest = reversal.Total - fromPending;
        long fromActive = program.Settings.NegativeBalance == NegativeBalancePolicy.AllowNegative
            ? rest
            : Math.Min(rest, Math.Max(0, checked(_state.Balance.Value + restored)));
        // A purchase returned in full (every line, though lines may not add up to its amount) gives back all of the rest.
        long returnedBefore = progress?.AmountReturnedMinor ?? 0;
        long returnedNow = reversal.Full ? Math.Max(0, original.AmountMinor - returnedBefore) : reversal.ReturnedAmountMinor;
        long takenBack = Reversal.TakenBack(original.Details?.GivenMinor ?? 0, original.AmountMinor, returnedBefore, returnedNow);

        // Store credit the purchase was paid with goes back to the wallet in the share of the money returned.
        long refunded = Reversal.TakenBack(-(original.Details?.WalletMinor ?? 0), original.AmountMinor, returnedBefore, returnedNow);
        var details = new EntryDetails
        {
            Components = reversal.Components,
            PendingReversed = fromPending,
            PendingAvailableAt = fromPending > 0 ? pendingLot!.Value.AvailableAt : null,
            ActiveReversed = fromActive,
            // The purchase's own lot first, so other purchases' points keep their expiry.
            Lots = fromActive > 0 ? _state.Lots.PlanDebit(fromActive, prefer: true, original.Details?.ExpiresAt) : null,
            Shortfall = rest - fromActive,
            ReturnedAmountMinor = reversal.ReturnedAmountMinor,
            Lines = reversal.Lines,
            OriginalRecordedAt = original.RecordedAt,
            EarnDay = original.Details?.EarnDay ?? 0,
            EarnMonth = original.Details?.EarnMonth ?? 0,
            ReferralReversed = reversal.Full && !_state.Referral.Reversed && original.TransactionId == _state.Referral.QualifiedBy,
            Restored = restoredLots,
            MergedPurchase = original.MemberId != _memberId,
            Cause = takenBack > 0 ? original.Details!.Cause : null,
            GivenMinor = -takenBack,
            WalletMinor = refunded,
        };
        entry = NewEntry(LedgerEntryKind.Return, new Points(checked(restored - fromPending - fromActive)), txn, fingerprint, now, program) with
        {
            StoreId = request.StoreId,
            AmountMinor = reversal.ReturnedAmountMinor,
            Currency = request.Amount.Currency,
            Reference = original.TransactionId,
            OccurredAt = request.OccurredAt,
            Details = details,
        };
        return null;
    }

    private AccrualResult? StageAdjustment(Adjustment adjustment, long fingerprint, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        string txn = adjustment.TransactionId;
        if (Precheck(txn, fingerprint, AccrualDuplicate, (e, m) => AccrualResult.Reject(txn, e, m)) is { } early)
        {
            return early;
        }

        if (program.Settings.NegativeBalance == NegativeBalancePolicy.FloorAtZero && (_state.Balance + adjustment.Points).Value < 0)
        {
            return AccrualResult.Reject(txn, LoyaltyError.FailedPrecondition,
                $"the adjustment would take the active balance ({_state.Balance.Value}) below zero, and the program floors balances at zero");
        }

        EntryDetails details = adjustment.Points.Value >= 0
            ? new EntryDetails { ExpiresAt = LotExpiry(program.Settings, now) }
            : new EntryDetails { Lots = _state.Lots.PlanDebit(-adjustment.Points.Value) };
        entry = NewEntry(LedgerEntryKind.Adjust, adjustment.Points, txn, fingerprint, now, program) with { Reason = adjustment.Reason, Details = details };
        return null;
    }

    private AccrualResult? StageFeedback(Feedback feedback, long fingerprint, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        string txn = feedback.FeedbackId;
        if (Precheck(txn, fingerprint, AccrualDuplicate, (e, m) => AccrualResult.Reject(txn, e, m)) is { } early)
        {
            return early;
        }

        var reward = new Points(program.Settings.FeedbackRewardPoints);
        var details = new EntryDetails
        {
            Score = feedback.Score,
            TierAfter = _state.Tier,
            ExpiresAt = reward.Value > 0 ? LotExpiry(program.Settings, now) : null,
        };
        entry = NewEntry(LedgerEntryKind.Feedback, reward, txn, fingerprint, now, program) with
        {
            Reason = feedback.Comment,
            Reference = feedback.Channel,
            Details = details,
        };
        return null;
    }

    /// <summary>Answers without a write: not enrolled, or a remembered transaction id.</summary>
    private T? Precheck<T>(string txn, long fingerprint, Func<string, Points, long, T> duplicate, Func<LoyaltyError, string, T> reject)
        where T : class
    {
        if (!_state.Enrolled)
        {
            return reject(LoyaltyError.NotFound, NotEnrolledMessage());
        }

        if (_state.MergedInto is not null || _state.Erased)
        {
            return reject(LoyaltyError.FailedPrecondition, Closed()!.ErrorMessage!);
        }

        // Remembered by a 64-bit hash of the id: another fingerprint under the same hash is a reuse
        // of the id (or, with odds of about 2^-60 per purchase, two ids of this member colliding).
        // It is refused here, before anything is applied: a conflicting entry must never be applied
        // in memory and left for the unique index, since later changes could build on it.
        if (_state.FindRecent(txn) is { } prior)
        {
            return prior.Fingerprint == fingerprint
                ? duplicate(txn, prior.Points, prior.Sequence)
                : reject(LoyaltyError.AlreadyExists, $"transaction_id '{txn}' was already used for a different request");
        }

        return null;
    }

    /// <summary>The answer when the ledger already holds the transaction id: the same request, or another one.</summary>
    private Task<T?> AnswerFromLedger<T>(LedgerEntry existing, string txn, long fingerprint, Func<string, Points, long, T> duplicate, Func<LoyaltyError, string, T> reject)
        where T : class
    {
        T answer = existing.MemberId == _memberId && existing.Fingerprint == fingerprint
            ? duplicate(txn, existing.Points, existing.Sequence)
            : reject(LoyaltyError.AlreadyExists, $"transaction_id '{txn}' was already used for a different request");
        return Task.FromResult<T?>(answer);
    }

    private AccrualResult AccrualDuplicate(string txn, Points points, long sequence) =>
        new(txn, AccrualStatus.Duplicate, points, _state.Balance, sequence, LoyaltyError.None, null);

    private ReturnResult ReturnDuplicate(string txn, Points points, long sequence) =>
        new(txn, AccrualStatus.Duplicate, Points.Zero - points, _state.Balance, _state.Lots.PendingTotal, sequence, null, LoyaltyError.None, null);

    /// <summary>The committed ledger entry of a transaction id, waiting first for this member's change in flight (it may be that one).</summary>
    private async Task<LedgerEntry?> FindCommittedAsync(string txn)
    {
        await WaitForCommitsAsync();
        return await _store.FindTransactionAsync(_programId, txn, CancellationToken.None);
    }

    private LedgerEntry NewEntry(LedgerEntryKind kind, Points points, string? txn, long fingerprint, DateTimeOffset now, ProgramConfig program) =>
        new(_programId, _memberId, checked(_state.Sequence + 1), kind, points, txn, fingerprint,
            null, 0, null, null, null, now, now, program.Version);

    /// <summary>The member now: pending points that became available are active, and a tier review that is due is applied to the view.</summary>
    private MemberView View(ProgramConfig? program)
    {
        DateTimeOffset now = _clock.GetUtcNow();
        _state.Lots.Mature(now);
        TierLadder ladder = program?.Settings.Ladder ?? TierLadder.Default;
        (int index, DateTimeOffset? reviewAt) = Tiering.Review(ladder.IndexOf(_state.Tier), _state.TierReviewAt, ladder, _state, now);
        TierDefinition tier = ladder.Tiers[index];
        ExpiryPolicy policy = program?.Settings.ExpiryRules ?? new ExpiryPolicy(ExpiryMode.None, 0);

        // The program's calendar day, only for a program with bonus days (finding its time zone is not free).
        DateOnly? today = program?.Settings.BonusDays is null ? null : BonusDayRules.LocalDay(now, program.Settings.Zone);
        return _state.ToView(_programId, _memberId, tier.Name, reviewAt, ((IQualifying)_state).QualifyingAt(ladder, now), tier.Perks) with
        {
            Held = _state.Lots.HeldAt(now),
            LifetimeRedeemed = _state.LifetimeRedeemed,
            LifetimeExpired = _state.LifetimeExpired,
            Expiring = Expiring.Upcoming(_state, policy),
            LastActivityAt = _state.LastActivityAt,
            ReferralQualifiedBy = _state.Referral.QualifiedBy,
            Profile = _state.HasProfile ? _profile : null,
            Erased = _state.Erased,
            MergedInto = _state.MergedInto,
            MergedFrom = [.. _state.MergedFrom],
            TierProgress = Tiering.Progress(index, reviewAt, ladder, _state, now),
            BonusDays = today is { } day ? BonusDayRules.Upcoming(_state.BonusDays, day) : null,
            BonusDaysLeft = today is { } year ? BonusDayRules.Left(tier, _state.BonusDays, year.Year) : 0,
            Cause = _state.Cause,
            GivenMinor = _state.GivenMinor,
            BirthdayGift = _state.OpenBirthdayGift(now),
            Membership = _state.Membership.ToView(program?.Settings, now),
            WalletMinor = _state.WalletMinor,
            TradeIns = _state.TradeIns.Count == 0 ? null : [.. _state.TradeIns],
        };
    }

    /// <summary>When a lot that becomes spendable at <paramref name="availableAt"/> expires under the program's policy.</summary>
    private static DateTimeOffset? LotExpiry(ProgramSettings? settings, DateTimeOffset availableAt) =>
        settings is { Expiry: { Mode: not ExpiryMode.None } policy } ? policy.ExpiresAt(availableAt, settings.Zone) : null;

    /// <summary>
    /// The change to the due schedule that an entry just applied needs: a mark when the member
    /// now has due work earlier than the schedule is known to hold, otherwise none.
    /// </summary>
    private DueChange? MarkDue(ProgramSettings? settings)
    {
        if (settings is null
            || Earliest(settings.HasExpiry || _state.Lots.Holds.Count > 0 || _state.Referral.Owed ? Expiring.NextDue(_state, settings.ExpiryRules) : null,
                ProgrammeDue(settings)) is not { } next
            || (_scheduleKnown && _scheduledDue is { } known && known <= next))
        {
            return null;
        }

        _scheduleKnown = true;
        _scheduledDue = next;
        return new DueChange(_programId, _memberId, next, Exact: false);
    }

    /// <summary>
    /// When the member's next programme work is due (a membership's lapse, a birthday), besides what <see cref="Expiring"/>
    /// schedules; null when none. Cheap for members without such work: it runs after every change.
    /// </summary>
    private DateTimeOffset? ProgrammeDue(ProgramSettings settings) =>
        _state.Erased || _state.MergedInto is not null ? null
        : Earliest(_state.Membership.LapsesAt,
            settings.Birthday is not null && _state.BirthMonth != 0
                ? BirthdayRules.Due(settings.Birthday, _state.BirthMonth, _state.BirthdayYear, _clock.GetUtcNow(), settings.Zone)
                : null);

    private static DateTimeOffset? Earliest(DateTimeOffset? a, DateTimeOffset? b) => a is null ? b : b is null || a <= b ? a : b;

    private string NotEnrolledMessage() => $"member '{_memberId}' is not enrolled in program '{_programId}'";

    /// <summary>
    /// A purchase's returns as read from the ledger, with the state they were read against: stale
    /// when the state was rebuilt since, or the purchase's kept progress changed after the read.
    /// </summary>
    private sealed record LedgerReturns(string PurchaseId, IReadOnlyList<LedgerEntry> Returns, MemberState ReadOn, long SequenceAtRead)
    {
        public bool Stale(MemberState now) =>
            !ReferenceEquals(now, ReadOn) || (now.Returns.Kept.GetValueOrDefault(PurchaseId) is { } kept && kept.Touched > SequenceAtRead);
    }

    /// <summary>Thrown by a stage whose prefetched reads are stale: the write loop runs the prefetch again.</summary>
    private sealed class StalePrefetchException : Exception;
}
