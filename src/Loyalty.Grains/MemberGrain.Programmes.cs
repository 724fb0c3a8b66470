namespace Loyalty.Grains;

/// <summary>The kinds of programme beyond points per purchase: paid membership, trade-in credit, personal bonus days, giving back.</summary>
public sealed partial class MemberGrain
{
    /// <summary>The suffix of the transaction id of a trade-in's inspection: once per trade-in, on any silo.</summary>
    private const string InspectedSuffix = "#inspected";

    /// <inheritdoc />
    public Task<TradeInResult> SubmitTradeIn(TradeIn tradeIn)
    {
        string id = tradeIn.TradeInId;
        if (tradeIn.Check() is { } error)
        {
            return Task.FromResult(TradeInResult.Reject(id, LoyaltyError.InvalidArgument, error));
        }

        long fingerprint = tradeIn.ComputeFingerprint();
        LedgerEntry? older = null;
        LedgerEntry? inspected = null;
        return WriteAsync(
            prefetch: async () =>
            {
                older = await FindOlderAsync(id);
                inspected = await FindInspectionOfResentAsync(id, older);
            },
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                entry = null;
                if ((Precheck(id, fingerprint, (_, _, sequence) => SubmittedAnswer(id, tradeIn.Category, inspected, sequence), (e, m) => TradeInResult.Reject(id, e, m))
                    ?? AnswerOlder(older, id, fingerprint, sequence => SubmittedAnswer(id, tradeIn.Category, inspected, sequence), (e, m) => TradeInResult.Reject(id, e, m))) is { } early)
                {
                    return early;
                }

                return ProgrammeDecision.TradeIn(At(program, now), tradeIn, fingerprint).Staged(out entry, (e, m) => TradeInResult.Reject(id, e, m));
            },
            (entry, _, _) => TradeInAnswer(id, tradeIn.Category, AccrualStatus.Accepted, entry.Sequence),
            existing => ResentTradeInFromLedgerAsync(existing, tradeIn, fingerprint),
            (e, m) => TradeInResult.Reject(id, e, m));
    }

    /// <summary>
    /// The inspection of a trade-in whose submission is resent and no longer waits (one indexed
    /// read, on resends only): the answer then says how it was graded, not that it is pending.
    /// </summary>
    private async Task<LedgerEntry?> FindInspectionOfResentAsync(string tradeInId, LedgerEntry? older) =>
        (_state.FindRecent(tradeInId) is not null || older is not null) && !_state.TradeIns.Any(t => t.TradeInId == tradeInId)
            ? await FindCommittedAsync(tradeInId + InspectedSuffix) : null;

    /// <summary>A resent submission found in the ledger only (its id raced another node's, or the member forgot it).</summary>
    private async Task<TradeInResult?> ResentTradeInFromLedgerAsync(LedgerEntry existing, TradeIn tradeIn, long fingerprint)
    {
        string id = tradeIn.TradeInId;
        LedgerEntry? inspected = await FindInspectionOfResentAsync(id, existing);
        if (!await TrySettleForReadAsync())
        {
            return TradeInResult.Reject(id, LoyaltyError.Unavailable, HeldUnread);
        }

        return await AnswerFromLedger(existing, id, fingerprint, (_, _, sequence) => SubmittedAnswer(id, tradeIn.Category, inspected, sequence), (e, m) => TradeInResult.Reject(id, e, m));
    }

    /// <summary>A resent submission's answer: pending while it waits, else its inspection's outcome (under the submission's sequence).</summary>
    private TradeInResult SubmittedAnswer(string tradeInId, string category, LedgerEntry? inspected, long sequence) =>
        inspected is not null && IsOwn(inspected) && !_state.TradeIns.Any(t => t.TradeInId == tradeInId)
            ? TradeInAnswer(tradeInId, inspected, AccrualStatus.Duplicate) with { Sequence = sequence }
            : TradeInAnswer(tradeInId, category, AccrualStatus.Duplicate, sequence);

    /// <inheritdoc />
    public Task<TradeInResult> InspectTradeIn(string tradeInId, TradeInCondition condition, string? storeId = null)
    {
        if ((LoyaltyIds.Check(tradeInId, "trade_in_id") ?? (Enum.IsDefined(condition) ? null : "condition must be LIKE_NEW, GOOD, WORN or REJECTED")) is { } error)
        {
            return Task.FromResult(TradeInResult.Reject(tradeInId, LoyaltyError.InvalidArgument, error));
        }

        string key = tradeInId + InspectedSuffix;
        long fingerprint = (long)condition;
        LedgerEntry? inspected = null;
        return WriteAsync(
            prefetch: async () => inspected = _state.TradeIns.Any(t => t.TradeInId == tradeInId) ? null : await FindCommittedAsync(key),
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) => StageInspection(tradeInId, condition, storeId, inspected, program, now, out entry),
            (entry, _, _) => TradeInAnswer(tradeInId, entry, AccrualStatus.Accepted),
            existing => Task.FromResult<TradeInResult?>(InspectedAnswer(tradeInId, condition, existing, storeId)),
            (e, m) => TradeInResult.Reject(tradeInId, e, m));
    }

    private TradeInResult? StageInspection(string tradeInId, TradeInCondition condition, string? storeId, LedgerEntry? inspected, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        if (Closed() is { } closed)
        {
            return TradeInResult.Reject(tradeInId, closed.Error, closed.ErrorMessage!);
        }

        if (_state.TradeIns.FirstOrDefault(t => t.TradeInId == tradeInId) is not { } open)
        {
            return inspected is not null && IsOwn(inspected) ? InspectedAnswer(tradeInId, condition, inspected, storeId)
                : TradeInResult.Reject(tradeInId, LoyaltyError.NotFound, $"member '{_memberId}' has no trade-in '{tradeInId}' waiting for inspection");
        }

        return ProgrammeDecision.Inspection(At(program, now), open, condition, tradeInId + InspectedSuffix, storeId).Staged(out entry, (e, m) => TradeInResult.Reject(tradeInId, e, m));
    }

    /// <summary>
    /// The answer when the trade-in was inspected before: the same grade again is a duplicate,
    /// another one a conflict; to a key restricted to other stores than the one it was handed in
    /// at, or to any key restricted to stores when it was handed in without one, neither.
    /// </summary>
    private TradeInResult InspectedAnswer(string tradeInId, TradeInCondition condition, LedgerEntry inspected, string? storeId) =>
        RedemptionDecision.OtherStore($"trade-in '{tradeInId}' was handed in", inspected.StoreId, storeId) is { } otherStore
            ? TradeInResult.Reject(tradeInId, LoyaltyError.PermissionDenied, otherStore)
        : inspected.Fingerprint == (long)condition
            ? TradeInAnswer(tradeInId, inspected, AccrualStatus.Duplicate)
            : TradeInResult.Reject(tradeInId, LoyaltyError.FailedPrecondition, $"trade-in '{tradeInId}' was already inspected as {(TradeInCondition)inspected.Fingerprint}");

    private TradeInResult TradeInAnswer(string tradeInId, string category, AccrualStatus status, long sequence) =>
        new(tradeInId, TradeInStatus.Pending, category, null, 0, _state.WalletMinor, status, sequence, LoyaltyError.None, null);

    private TradeInResult TradeInAnswer(string tradeInId, LedgerEntry inspected, AccrualStatus status) =>
        new(tradeInId, inspected.Kind == LedgerEntryKind.TradeInAccepted ? TradeInStatus.Accepted : TradeInStatus.Rejected,
            (inspected.Details as TradeInDetails)?.TradeIn?.Category ?? "", (inspected.Details as TradeInDetails)?.TradeIn?.Condition, inspected.AmountMinor, _state.WalletMinor, status, inspected.Sequence, LoyaltyError.None, null);

    /// <inheritdoc />
    public Task<MembershipResult> ConfirmMembershipPayment(MembershipPayment payment)
    {
        if (payment.Check() is { } error)
        {
            return Task.FromResult(MembershipResult.Reject(LoyaltyError.InvalidArgument, error));
        }

        long fingerprint = payment.ComputeFingerprint();
        return AfterDueLapseAsync(() => PayAsync(payment, fingerprint));
    }

    private Task<MembershipResult> PayAsync(MembershipPayment payment, long fingerprint)
    {
        ProgramConfig? current = null;
        LedgerEntry? older = null;
        return WriteAsync(
            prefetch: async () => older = await FindOlderAsync(payment.PaymentId),
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                entry = null;
                current = program;
                if ((Precheck(payment.PaymentId, fingerprint, (_, _, sequence) => MembershipAnswer(program, AccrualStatus.Duplicate, sequence), MembershipResult.Reject)
                    ?? AnswerOlder(older, payment.PaymentId, fingerprint, sequence => MembershipAnswer(program, AccrualStatus.Duplicate, sequence), MembershipResult.Reject)) is { } early)
                {
                    return early;
                }

                return ProgrammeDecision.Payment(At(program, now), payment, fingerprint).Staged(out entry, MembershipResult.Reject);
            },
            (entry, _, _) => MembershipAnswer(current, AccrualStatus.Accepted, entry.Sequence),
            existing => AnswerFromLedger(existing, payment.PaymentId, fingerprint, (_, _, sequence) => MembershipAnswer(current, AccrualStatus.Duplicate, sequence), MembershipResult.Reject),
            MembershipResult.Reject);
    }

    /// <inheritdoc />
    public Task<MembershipResult> StartMembershipTrial(string planId)
    {
        if (LoyaltyIds.Check(planId, "plan_id", Limits.CodeLengthMax) is { } error)
        {
            return Task.FromResult(MembershipResult.Reject(LoyaltyError.InvalidArgument, error));
        }

        return AfterDueLapseAsync(() => WriteMembershipAsync((program, now) => ProgrammeDecision.Trial(At(program, now), planId)));
    }

    /// <summary>
    /// Runs a change that may start a membership. Refused because the last membership's lapse is
    /// still to be written (its term has ended and the member's wake has not come yet, see
    /// <see cref="MembershipRules.LapseDue"/>), it writes the lapse first (see
    /// <see cref="AfterOwedDueWorkAsync"/>): the lapse is never skipped.
    /// </summary>
    private Task<MembershipResult> AfterDueLapseAsync(Func<Task<MembershipResult>> change) =>
        AfterOwedDueWorkAsync(change, static r => r.Error, () => MembershipRules.LapseDue(_state.Membership, MemberNow()), StageLapse, stepsMax: 1);

    private DueOutcome? StageLapse(ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        return DueDecision.Lapse(At(program, now)) is { } lapse ? lapse.Staged(out entry, (e, _) => new DueOutcome(null, e)) : DueOutcome.Nothing;
    }

    /// <inheritdoc />
    public Task<MembershipResult> CancelMembership(string reason)
    {
        if (FreeText.Check(reason, "reason", Limits.ReasonLengthMax) is { } error)
        {
            return Task.FromResult(MembershipResult.Reject(LoyaltyError.InvalidArgument, error));
        }

        return WriteMembershipAsync((program, now) => ProgrammeDecision.Cancellation(At(program, now), reason));
    }

    /// <summary>A membership change decided by <paramref name="decide"/> on an open account; a change already made is answered as a duplicate.</summary>
    private Task<MembershipResult> WriteMembershipAsync(Func<ProgramConfig, DateTimeOffset, Decision> decide) =>
        WriteOpenAsync(decide, program => MembershipAnswer(program, AccrualStatus.Duplicate, 0), (program, entry) => MembershipAnswer(program, AccrualStatus.Accepted, entry.Sequence), MembershipResult.Reject);

    /// <summary>
    /// A change of an open account (enrolled, neither erased nor merged away) decided by
    /// <paramref name="decide"/>; <paramref name="done"/> answers a decision that writes nothing.
    /// </summary>
    private Task<T> WriteOpenAsync<T>(Func<ProgramConfig, DateTimeOffset, Decision> decide, Func<ProgramConfig, T> done, Func<ProgramConfig?, LedgerEntry, T> committed, Func<LoyaltyError, string, T> reject)
        where T : class
    {
        ProgramConfig? current = null;
        return WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                entry = null;
                current = program;
                if (Closed() is { } closed)
                {
                    return reject(closed.Error, closed.ErrorMessage!);
                }

                return decide(program, now).Staged(out entry, reject, () => done(program));
            },
            (entry, _, _) => committed(current, entry),
            _ => Task.FromResult<T?>(null),
            reject);
    }

    private MembershipResult MembershipAnswer(ProgramConfig? program, AccrualStatus status, long sequence) =>
        new(_state.Membership.ToView(program?.Settings, MemberNow()), status, sequence, LoyaltyError.None, null);

    /// <inheritdoc />
    public Task<MemberResult> ChooseCause(string? causeId)
    {
        if (causeId is not null && LoyaltyIds.Check(causeId, "cause_id", Limits.CodeLengthMax) is { } error)
        {
            return Task.FromResult(MemberResult.Reject(LoyaltyError.InvalidArgument, error));
        }

        return WriteOpenAsync(
            (program, now) => ProgrammeDecision.Cause(At(program, now), causeId),
            program => new MemberResult(View(program), LoyaltyError.None, null),
            (program, _) => new MemberResult(View(program), LoyaltyError.None, null),
            MemberResult.Reject);
    }

    /// <inheritdoc />
    public Task<BonusDayResult> BookBonusDay(BonusDayBooking booking)
    {
        if (booking.Check() is { } error)
        {
            return Task.FromResult(BonusDayResult.Reject(LoyaltyError.InvalidArgument, error));
        }

        long fingerprint = booking.ComputeFingerprint();
        ProgramConfig? current = null;
        LedgerEntry? older = null;
        return WriteAsync(
            prefetch: async () => older = await FindOlderAsync(booking.BookingId),
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                current = program;
                entry = null;
                return AnswerOlder(older, booking.BookingId, fingerprint, sequence => BonusDayAnswer(booking.Day, alreadyBooked: true, sequence, program), BonusDayResult.Reject)
                    ?? StageBonusDay(booking, fingerprint, program, now, out entry);
            },
            (entry, _, _) => BonusDayAnswer(booking.Day, alreadyBooked: false, entry.Sequence, current!),
            existing => IsOwn(existing) && existing.Fingerprint == fingerprint
                ? Task.FromResult<BonusDayResult?>(BonusDayAnswer(booking.Day, alreadyBooked: true, existing.Sequence, current))
                : Task.FromResult<BonusDayResult?>(BonusDayResult.Reject(LoyaltyError.AlreadyExists, $"booking_id '{booking.BookingId}' was already used for a different request")),
            BonusDayResult.Reject);
    }

    private BonusDayResult? StageBonusDay(BonusDayBooking booking, long fingerprint, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        string txn = booking.BookingId;
        if (Precheck(txn, fingerprint, (_, _, sequence) => BonusDayAnswer(booking.Day, alreadyBooked: true, sequence, program), BonusDayResult.Reject) is { } early)
        {
            return early;
        }

        return ProgrammeDecision.BonusDay(At(program, now), booking, fingerprint)
            .Staged(out entry, BonusDayResult.Reject, () => BonusDayAnswer(booking.Day, alreadyBooked: true, 0, program));
    }

    /// <summary>
    /// A request id this member's memory of recent transactions no longer holds, as the ledger has
    /// it (null when never used). Looked up before deciding, so that a resend of an old request is
    /// answered as what it was instead of judged again under today's state (a payment's plan since
    /// changed, a year's bonus days since used up).
    /// </summary>
    private async Task<LedgerEntry?> FindOlderAsync(string id) => _state.FindRecent(id) is null ? await FindCommittedAsync(id) : null;

    /// <summary>The answer to a request whose id the ledger already holds: the same request again, or a reuse of the id.</summary>
    private T? AnswerOlder<T>(LedgerEntry? older, string id, long fingerprint, Func<long, T> duplicate, Func<LoyaltyError, string, T> reject)
        where T : class =>
        older is null ? null
        : IsOwn(older) && older.Fingerprint == fingerprint ? duplicate(older.Sequence)
        : reject(LoyaltyError.AlreadyExists, $"'{id}' was already used for a different request");

    private BonusDayResult BonusDayAnswer(DateOnly day, bool alreadyBooked, long sequence, ProgramConfig? program)
    {
        ProgramSettings? settings = program?.Settings;
        DateOnly today = BonusDayRules.LocalDay(MemberNow(), settings?.Zone ?? TimeZoneInfo.Utc);
        TierLadder ladder = settings?.Ladder ?? TierLadder.Default;
        (int tier, _) = Tiering.Review(ladder.IndexOf(_state.Tier), _state.TierReviewAt, ladder, _state, MemberNow());
        return new BonusDayResult(day, alreadyBooked, BonusDayRules.Left(ladder.Tiers[tier], _state.BonusDays, day.Year),
            BonusDayRules.Upcoming(_state.BonusDays, today), sequence, LoyaltyError.None, null);
    }
}
