using Loyalty.Storage;

namespace Loyalty.Grains;

/// <summary>The stages of returns, adjustments and feedback (their decisions are in <see cref="ReturnDecision"/> and its neighbours), and the answers shared by every change.</summary>
public sealed partial class MemberGrain
{
    private ReturnResult? StageReturn(PurchaseReturn request, long fingerprint, LedgerEntry? original, LedgerEntry? redeemed,
        LedgerReturns? earlierReturns, LedgerEntry? resent, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        string txn = request.TransactionId;
        if (Precheck(txn, fingerprint, (t, p, s) => ReturnDuplicate(t, p, s, resent), (e, m) => ReturnResult.Reject(txn, e, m)) is { } early)
        {
            return early;
        }

        Decider decider = At(program, now);
        if (ReturnDecision.Check(decider, request, original) is { } refused)
        {
            return ReturnResult.Reject(txn, refused.Error, refused.Message!);
        }

        // What was returned of it so far: kept by the member, or (once) made from the ledger's returns.
        LedgerEntry purchase = original!;
        ReturnProgress? progress = _state.Returns.Known(purchase.TransactionId!);
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

            // Made from the ledger, and kept only if this return is applied: a refusal leaves the book as it was.
            progress = ReturnSeed = ReturnProgress.Of(purchase, earlierReturns.Returns);
        }

        // A progress with no return yet is the same as none.
        return ReturnDecision.Decide(decider, request, fingerprint, purchase, redeemed, progress is { Count: > 0 } ? progress : null)
            .Staged(out entry, (e, m) => ReturnResult.Reject(txn, e, m));
    }

    private AccrualResult? StageAdjustment(Adjustment adjustment, long fingerprint, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        string txn = adjustment.TransactionId;
        if (Precheck(txn, fingerprint, AccrualDuplicate, (e, m) => AccrualResult.Reject(txn, e, m)) is { } early)
        {
            return early;
        }

        return AdjustmentDecision.Decide(At(program, now), adjustment, fingerprint)
            .Staged(out entry, (e, m) => AccrualResult.Reject(txn, e, m));
    }

    private AccrualResult? StageFeedback(Feedback feedback, long fingerprint, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        string txn = feedback.FeedbackId;
        if (Precheck(txn, fingerprint, AccrualDuplicate, (e, m) => AccrualResult.Reject(txn, e, m)) is { } early)
        {
            return early;
        }

        return FeedbackDecision.Decide(At(program, now), feedback, fingerprint)
            .Staged(out entry, (e, m) => AccrualResult.Reject(txn, e, m));
    }

    /// <summary>Answers without a write: not enrolled, or a remembered transaction id.</summary>
    private T? Precheck<T>(string txn, long fingerprint, Func<string, Points, long, T> duplicate, Func<LoyaltyError, string, T> reject)
        where T : class =>
        Precheck(txn, fingerprint, out Remembered prior) switch
        {
            null => null,
            { Error: LoyaltyError.None } => duplicate(txn, prior.Points, prior.Sequence),
            { } refused => reject(refused.Error, refused.Message),
        };

    /// <summary>
    /// Whether a change is answered without a write, and how: null to go on; an error of
    /// <see cref="LoyaltyError.None"/> for a resend of a remembered change (<paramref name="prior"/>);
    /// else the refusal. Nothing is allocated on the way on.
    /// </summary>
    private (LoyaltyError Error, string Message)? Precheck(string txn, long fingerprint, out Remembered prior)
    {
        prior = default;
        if (!_state.Enrolled)
        {
            return (LoyaltyError.NotFound, NotEnrolledMessage());
        }

        // Remembered by a 64-bit hash of the id: another fingerprint under the same hash is a reuse
        // of the id (or, with odds of about 2^-60 per purchase, two ids of this member colliding).
        // It is refused here, before anything is applied: a conflicting entry must never be applied
        // in memory and left for the unique index, since later changes could build on it.
        // Before the closed account's refusal: a till resending a change recorded before the
        // erasure or merge is told it was recorded, as it is for one the member no longer remembers.
        if (_state.FindRecent(txn) is { } remembered)
        {
            prior = remembered;
            return remembered.Fingerprint == fingerprint
                ? (LoyaltyError.None, "")
                : (LoyaltyError.AlreadyExists, $"transaction_id '{txn}' was already used for a different request");
        }

        if (_state.MergedInto is not null || _state.Erased)
        {
            return (LoyaltyError.FailedPrecondition, Closed()!.ErrorMessage!);
        }

        return null;
    }

    /// <summary>
    /// The answer when the ledger already holds the transaction id: the same request (the member's
    /// own entry, of <paramref name="kind"/> when given, with the same fingerprint), or another one.
    /// An entry of a duplicate merged into this member was fingerprinted with the duplicate's id:
    /// a request that names a member has it compared as if it named the duplicate
    /// (<paramref name="fingerprintAs"/>), so that a till told of the merge and resending to the
    /// survivor hears its change was recorded, not that the id was used for another.
    /// </summary>
    private Task<T?> AnswerFromLedger<T>(LedgerEntry existing, string txn, long fingerprint, Func<string, Points, long, T> duplicate, Func<LoyaltyError, string, T> reject,
        LedgerEntryKind? kind = null, Func<string, long>? fingerprintAs = null)
        where T : class
    {
        if (existing.MemberId != _memberId && fingerprintAs is not null && IsOwn(existing))
        {
            fingerprint = fingerprintAs(existing.MemberId);
        }

        T answer = IsOwn(existing) && existing.Fingerprint == fingerprint && (kind is null || existing.Kind == kind)
            ? duplicate(txn, existing.Points, existing.Sequence)
            : reject(LoyaltyError.AlreadyExists, $"transaction_id '{txn}' was already used for a different request");
        return Task.FromResult<T?>(answer);
    }

    private AccrualResult AccrualDuplicate(string txn, Points points, long sequence) =>
        new(txn, AccrualStatus.Duplicate, points, _state.Balance, sequence, LoyaltyError.None, null);

    /// <summary>
    /// A resent return, answered as the first answer was from its entry (<paramref name="recorded"/>)
    /// when read: the points it reversed (not its net move, which counts points a return of a basket
    /// paid in points gave back) and its breakdown.
    /// </summary>
    private ReturnResult ReturnDuplicate(string txn, Points points, long sequence, LedgerEntry? recorded) =>
        recorded is { Kind: LedgerEntryKind.Return, Details: ReturnDetails details } && IsOwn(recorded) && recorded.Sequence == sequence
            ? new(txn, AccrualStatus.Duplicate, ReversedOf(details), _state.Balance, _state.Lots.PendingTotal, sequence, details, LoyaltyError.None, null)
            : new(txn, AccrualStatus.Duplicate, Points.Zero - points, _state.Balance, _state.Lots.PendingTotal, sequence, null, LoyaltyError.None, null);

    /// <summary>The committed ledger entry of a transaction id, waiting first for this member's change in flight (it may be that one).</summary>
    private async Task<LedgerEntry?> FindCommittedAsync(string txn)
    {
        await WaitForCommitsAsync();
        return await _services.Store.FindTransactionAsync(_programId, txn, CancellationToken.None);
    }

    private LedgerEntry NewEntry(LedgerEntryKind kind, Points points, string? txn, long fingerprint, DateTimeOffset now, ProgramConfig program) =>
        At(program, now).NewEntry(kind, points, txn, fingerprint);

    /// <summary>What a decision reads now: this member's committed state, <paramref name="program"/> and <paramref name="now"/>.</summary>
    private Decider At(ProgramConfig program, DateTimeOffset now) => new(_programId, _memberId, _state, program, now);

    /// <summary>
    /// <paramref name="program"/>, or the program read fresh once more when the member's tier name
    /// is one it does not know: the awaits since it was read (a settle, a reload, another change
    /// committing a tier named under a newer copy) may have changed the name. Settles again after
    /// the read; a view answers without an await after this.
    /// </summary>
    private async ValueTask<ProgramConfig> KnowingTierAfterAwaitsAsync(ProgramConfig program)
    {
        if (!_state.Enrolled || program.Settings.Ladder.Knows(_state.Tier))
        {
            return program;
        }

        // Settled after the read whatever it found: the read let other changes start.
        ProgramConfig? fresh = await _services.Programs.GetFreshAsync(_programId);
        await SettleForReadAsync();
        return fresh ?? program;
    }

    /// <summary>
    /// The member's view as committed, for an answer given after awaits: while this request
    /// awaited, other changes may have been applied and be waiting for their commit, which may
    /// fail. Settles (see <see cref="TrySettleForReadAsync"/>) after the program is read (unless
    /// <paramref name="known"/>), and answers with no await after that. Null when the member cannot
    /// be read as committed now: the change it answers is recorded already, and the caller says so
    /// (<see cref="RecordedUnread"/>) rather than answer from a state that may hold failed changes.
    /// </summary>
    private async Task<MemberView?> CommittedViewAsync(ProgramConfig? known = null)
    {
        ProgramConfig? program = known ?? await _services.Programs.GetAsync(_programId);
        if (!await TrySettleForReadAsync())
        {
            return null;
        }

        try
        {
            if (program is not null)
            {
                program = await KnowingTierAfterAwaitsAsync(program);
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Without a program that knows the member's tier, the view would show the entry tier.
            return null;
        }

        return View(program);
    }

    /// <summary>The member now: pending points that became available are active, and a tier review that is due is applied to the view.</summary>
    private MemberView View(ProgramConfig? program)
    {
        DateTimeOffset now = MemberNow();
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
            SpendableNow = _state.AvailableAt(now),
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

    /// <summary>
    /// The change to the due schedule that an entry just applied needs: a mark when the member
    /// now has due work earlier than the schedule is known to hold, otherwise none.
    /// </summary>
    private DueChange? MarkDue(ProgramSettings? settings)
    {
        if (settings is null)
        {
            return null;
        }

        DateTimeOffset now = MemberNow();
        if (Earliest(Earliest(settings.HasExpiry || _state.Lots.Holds.Count > 0 || _state.Referral.AnyOwed || _state.Lots.AnyExpires()
                ? Expiring.NextDue(_state, settings.ExpiryRules, now, WakeLateBy) : null,
                ProgrammeDue(settings, now)), DeskDue(now)) is not { } next
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
    private DateTimeOffset? ProgrammeDue(ProgramSettings settings, DateTimeOffset now) =>
        _state.MergedInto is not null ? _state.Membership.LapsesAt
        : Earliest(Earliest(_state.Membership.LapsesAt, TierReviewWake(settings.Ladder, now)),
            settings.Birthday is not null && _state.BirthMonth != 0
                ? BirthdayWake(BirthdayRules.Due(settings.Birthday, _state.BirthMonth, _state.BirthdayYear, now, settings.Zone), now)
                : null);

    /// <summary>
    /// When the schedule wakes the member for its tier review (<see cref="DueDecision.TierReviewDue"/>):
    /// at once for a downgrade already owed, else at the member's place in the spread of wakes after
    /// the review, as for expiry.
    /// </summary>
    private DateTimeOffset? TierReviewWake(TierLadder ladder, DateTimeOffset now) =>
        DueDecision.TierReviewDue(_state, ladder, now) is not { } due ? null : due > now ? due + WakeLateBy : due;

    /// <summary>
    /// When the schedule wakes the member for a birthday due at <paramref name="due"/>: this
    /// member's place in the spread of wakes after it (see <see cref="Expiring.WakeLateBy"/>),
    /// since every member born in a month is due at the same local midnight; at once when it is
    /// due already (a birthday entered during its month). A change of the member's after the due
    /// time marks the member due at once (see <see cref="MarkDue"/>), so an active member is not
    /// kept waiting for its place in the spread: its wake comes within the schedule's poll.
    /// </summary>
    private DateTimeOffset? BirthdayWake(DateTimeOffset? due, DateTimeOffset now) =>
        due is { } at && at > now ? at + WakeLateBy : due;

    private static DateTimeOffset? Earliest(DateTimeOffset? a, DateTimeOffset? b) => a is null ? b : b is null || a <= b ? a : b;

    private string NotEnrolledMessage() => Decider.NotEnrolledIn(_programId, _memberId);

    /// <summary>
    /// A purchase's returns as read from the ledger, with the state they were read against: stale
    /// when the state was rebuilt since, or the purchase's kept progress changed after the read,
    /// or some progress changed after the read was forgotten since (it may have been this purchase's).
    /// </summary>
    private sealed record LedgerReturns(string PurchaseId, IReadOnlyList<LedgerEntry> Returns, MemberState ReadOn, long SequenceAtRead)
    {
        public bool Stale(MemberState now) => !ReferenceEquals(now, ReadOn) || now.Returns.ChangedSince(PurchaseId, SequenceAtRead);
    }

    /// <summary>Thrown by a stage whose prefetched reads are stale: the write loop runs the prefetch again.</summary>
    private sealed class StalePrefetchException : Exception;
}
