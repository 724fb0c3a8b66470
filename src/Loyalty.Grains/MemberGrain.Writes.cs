using System.Runtime.CompilerServices;
using Loyalty.Storage;
using System.Text.Json;

namespace Loyalty.Grains;

/// <summary>Purchases, returns, adjustments and flags: every change that follows the program's rules.</summary>
public sealed partial class MemberGrain
{
    // Not "nothing was recorded": a connection lost during COMMIT leaves the outcome to the
    // server. The member reloads from the ledger before its next change, so a resend is answered
    // from what the ledger holds, whichever way the commit went.
    private const string NotCommitted = "the ledger did not confirm the commit; send it again: a change the ledger kept is answered as a duplicate, never made twice";
    private const string NotLoaded = "member state could not be loaded; nothing was recorded, retry";

    /// <summary>The suffix of the redemption a purchase carries; '#' cannot occur in a client's id.</summary>
    private const string BasketRedeemSuffix = "#redeem";

    /// <summary>
    /// Decides one change without awaiting: either an answer without a write (a refusal, a
    /// remembered resend) or the ledger entry to apply and commit.
    /// </summary>
    private delegate T? Stage<T>(ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
        where T : class;

    /// <summary>
    /// A stage that may also decide an entry that commits with, and just before, its own (the
    /// redemption a purchase carries): both or neither.
    /// </summary>
    private delegate T? PairStage<T>(ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry, out LedgerEntry? before)
        where T : class;

    /// <inheritdoc />
    public ValueTask<AccrualResult> Accrue(Purchase purchase)
    {
        string txn = purchase.TransactionId;
        string? error = purchase.Check(_services.Clock.GetUtcNow()) ?? CheckRouting(purchase.ProgramId, purchase.MemberId);
        if (error is not null)
        {
            return ValueTask.FromResult(AccrualResult.Reject(txn, LoyaltyError.InvalidArgument, error));
        }

        long fingerprint = purchase.ComputeFingerprint();
        if (purchase.RedeemRewardId is { } reward)
        {
            return new ValueTask<AccrualResult>(AccrueWithRedemptionAsync(purchase, new Redemption(txn + BasketRedeemSuffix, reward, purchase.RedeemQuantity, purchase.StoreId), fingerprint));
        }

        // The hot path: one object carries the purchase through the write loop (no closures),
        // whose pooled state machine answers Orleans directly (it awaits the answer once).
        ValueTask<AccrualResult> write = WriteCoreAsync(new PurchaseWrite(this, purchase, fingerprint));

        // Only a referred member's purchases take the longer path (once, until the referrer is settled),
        // and a purchase that will decide after a referral link under way (which may refer it).
        return ReferrerToSettle || HeldBy is not null ? new ValueTask<AccrualResult>(ThenSettleReferrerAsync(write.AsTask())) : write;
    }

    /// <summary>A purchase paid partly in points: the reward's stock first when it has any, then both entries in one commit.</summary>
    private async Task<AccrualResult> AccrueWithRedemptionAsync(Purchase purchase, Redemption redemption, long fingerprint)
    {
        var stock = new StockTake();
        LedgerEntry? redeemed = null;
        AccrualResult result = await WriteCoreAsync(new LambdaWrite<AccrualResult>(
            prefetch: () => TakeStockAsync(redemption, reserve: false, stock),
            null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry, out LedgerEntry? before) =>
            {
                AccrualResult? answer = StageAccrual(purchase, fingerprint, (redemption, stock), program, now, out entry, out before);
                redeemed = before;
                return answer;
            },
            (entry, balance, pending) => new AccrualResult(entry.TransactionId!, AccrualStatus.Accepted, entry.Points, balance, entry.Sequence, LoyaltyError.None, null,
                entry.Details, entry.AvailableAt, entry.ProgramVersion, redeemed is null ? Points.Zero : -redeemed.Points, redeemed?.DetailsAs<RedeemDetails>()?.Lots, pending),
            existing => AnswerFromLedger(existing, purchase.TransactionId, fingerprint, AccrualDuplicate, (e, m) => AccrualResult.Reject(purchase.TransactionId, e, m),
                fingerprintAs: PurchaseFingerprintAs(purchase)),
            (e, m) => AccrualResult.Reject(purchase.TransactionId, e, m),
            resendId: purchase.TransactionId));
        if (stock.Taken && WroteNothing(result.Status, result.Error, result.ErrorMessage))
        {
            await AbandonStockAsync(redemption);
        }

        if (ReferrerToSettle && _state.Referral.QualifiedBy is not null)
        {
            await SettleReferrerAsync();
        }

        return result;
    }

    private async Task<T> ThenSettleReferrerAsync<T>(Task<T> write)
    {
        T result = await write;
        if ((ReferrerToSettle && _state.Referral.QualifiedBy is not null) || _state.Referral.MergedOwed)
        {
            await SettleReferrerAsync();
        }

        return result;
    }

    /// <inheritdoc />
    public Task<ReturnResult> Return(PurchaseReturn purchaseReturn)
    {
        string txn = purchaseReturn.TransactionId;
        string? error = purchaseReturn.Check(_services.Clock.GetUtcNow()) ?? CheckRouting(purchaseReturn.ProgramId, purchaseReturn.MemberId);
        if (error is not null)
        {
            return Task.FromResult(ReturnResult.Reject(txn, LoyaltyError.InvalidArgument, error));
        }

        long fingerprint = purchaseReturn.ComputeFingerprint();
        LedgerEntry? original = null, redeemed = null, resent = null;
        LedgerReturns? earlierReturns = null;
        Task<ReturnResult> write = WriteAsync(
            prefetch: async () =>
            {
                // A resend is answered as the return was: its entry holds what it reversed and how (one read, on resends only).
                resent = _state.FindRecent(txn) is not null ? await FindCommittedAsync(txn) : null;
                original = await FindCommittedAsync(purchaseReturn.OriginalTransactionId);
                redeemed = (original?.Details as EarnDetails)?.RewardId is null ? null
                    : await _services.Store.FindTransactionAsync(_programId, original.TransactionId + BasketRedeemSuffix, CancellationToken.None);

                // The purchase's earlier returns, unless the member holds all of them (noting the
                // state they were read against, so that the stage can tell a stale read). Noted
                // with nothing in flight, so every entry up to the sequence noted is committed and
                // the read shows it; one applied later has a later sequence (ReturnBook.ChangedSince).
                earlierReturns = null;
                if (original is { Kind: LedgerEntryKind.Earn, TransactionId: { } purchaseId } && _state.Returns.Known(purchaseId) is null)
                {
                    while (_inFlight > 0)
                    {
                        await WaitForCommitsAsync();
                    }

                    (MemberState readOn, long sequence) = (_state, _state.Sequence);
                    earlierReturns = new LedgerReturns(purchaseId, await _services.Store.ReadReturnsOfAsync(_programId, purchaseId, CancellationToken.None), readOn, sequence);
                }
            },
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) => StageReturn(purchaseReturn, fingerprint, original, redeemed, earlierReturns, resent, program, now, out entry),
            (entry, balance, pending) => new ReturnResult(txn, AccrualStatus.Accepted, ReversedOf(entry.DetailsAs<ReturnDetails>()!),
                balance, pending, entry.Sequence, entry.DetailsAs<ReturnDetails>(), LoyaltyError.None, null),
            existing => AnswerFromLedger(existing, txn, fingerprint, (t, p, s) => ReturnDuplicate(t, p, s, existing), (e, m) => ReturnResult.Reject(txn, e, m),
                fingerprintAs: m => (purchaseReturn with { MemberId = m }).ComputeFingerprint()),
            (e, m) => ReturnResult.Reject(txn, e, m),
            resendId: txn);
        return FinishReturnAsync(_state.Referral.ReferredBy is null && _state.Referral.Merged.Count == 0 ? write : ThenSettleReferrerAsync(write), () => (original, redeemed));
    }

    /// <summary>The points a return took back: from the purchase's pending lot and from the balance.</summary>
    private static Points ReversedOf(ReturnDetails details) => new(checked(details.PendingReversed + details.ActiveReversed));

    /// <summary>
    /// A full return of a purchase paid partly in points also gives the reward's units back to its
    /// stock, when they were taken from it (as the basket's redemption recorded; by the catalogue of
    /// now for redemptions recorded before that was kept).
    /// </summary>
    private async Task<ReturnResult> FinishReturnAsync(Task<ReturnResult> write, Func<(LedgerEntry? Original, LedgerEntry? Redeemed)> read)
    {
        ReturnResult result = await write;
        (LedgerEntry? original, LedgerEntry? redeemed) = read();
        if (result.Status == AccrualStatus.Accepted && result.Details is { Full: true } && original?.Details is EarnDetails { RewardId: { } reward } bought)
        {
            // After the return's commit: a crash before this call leaves the unit taken (never sold twice).
            Func<IRewardStockGrain, Task> giveBack = stock => stock.Return(original.TransactionId + BasketRedeemSuffix, bought.Quantity, original.RecordedAt);
            // False: no unit was taken, so none goes back.
            switch (redeemed?.DetailsAs<RedeemDetails>()?.StockTaken)
            {
                case true:
                    await TellStockAsync(reward, giveBack);
                    break;
                case null:
                    await TellStockedAsync(reward, giveBack);
                    break;
            }
        }

        return result;
    }

    /// <inheritdoc />
    public Task<AccrualResult> Adjust(Adjustment adjustment)
    {
        string txn = adjustment.TransactionId;
        if (adjustment.Check() is { } error)
        {
            return Task.FromResult(AccrualResult.Reject(txn, LoyaltyError.InvalidArgument, error));
        }

        long fingerprint = adjustment.ComputeFingerprint();
        return WriteAccrualAsync(txn, fingerprint,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) => StageAdjustment(adjustment, fingerprint, program, now, out entry));
    }

    /// <inheritdoc />
    public Task<AccrualResult> RecordFeedback(Feedback feedback)
    {
        string txn = feedback.FeedbackId;
        if (feedback.Check() is { } error)
        {
            return Task.FromResult(AccrualResult.Reject(txn, LoyaltyError.InvalidArgument, error));
        }

        long fingerprint = feedback.ComputeFingerprint();
        return WriteAccrualAsync(txn, fingerprint,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) => StageFeedback(feedback, fingerprint, program, now, out entry));
    }

    /// <inheritdoc />
    public Task<MemberResult> SetFlags(IReadOnlyList<string> flags) => ChangeFlags(FlagChange.ReplaceWith(flags));

    /// <inheritdoc />
    public Task<MemberResult> ChangeFlags(FlagChange change)
    {
        if (change.Check() is { } error)
        {
            return Task.FromResult(MemberResult.Reject(LoyaltyError.InvalidArgument, error));
        }

        return WriteOpenAsync(
            (program, now) => LifecycleDecision.Flags(At(program, now), change),
            program => new MemberResult(View(program), LoyaltyError.None, null),
            (program, _) => new MemberResult(View(program), LoyaltyError.None, null),
            MemberResult.Reject);
    }

    /// <inheritdoc />
    public async Task<MemberView?> Get()
    {
        await SettleForReadAsync();
        if (!_state.Enrolled)
        {
            return null;
        }

        if (_state.HasProfile && _profile is null
            && await _services.Store.ReadProfileAsync(_programId, _memberId, CancellationToken.None) is { } json)
        {
            // Kept only when no profile change or erasure landed during the read: the row read may be older.
            if (_profile is null && !_state.Erased)
            {
                _profile = JsonSerializer.Deserialize<Dictionary<string, string>>(json);
            }
        }

        ProgramConfig? program = await _services.Programs.GetAsync(_programId);

        // The awaits above let other changes start: settle again, then answer without an await.
        await SettleForReadAsync();
        if (program is not null)
        {
            program = await KnowingTierAfterAwaitsAsync(program);
        }

        return _state.Enrolled ? View(program) : null;
    }

    /// <inheritdoc />
    async Task<MemberView?> IMemberLinkSteps.GetCommitted()
    {
        SeeDeskEpoch();
        await CatchUpAsync();
        return await Get();
    }

    /// <inheritdoc />
    async Task<MemberLinks> IMemberLinkSteps.GetLinks()
    {
        SeeDeskEpoch();
        await CatchUpAsync();
        return !_state.Enrolled ? MemberLinks.None
            : new MemberLinks(_state.Referral.ReferredBy, _state.MergedInto, _state.Referral.Unconfirmed is { Count: > 0 } unconfirmed ? [.. unconfirmed] : null, _state.MergingFrom);
    }

    /// <inheritdoc />
    async Task<MemberResult> IMemberLinkSteps.SettleReferralLink(string referredMemberId, bool stands, bool changeEnded)
    {
        long epoch = SeeDeskEpoch();
        if (LoyaltyIds.Check(referredMemberId, "referred member id") is { } invalid)
        {
            return MemberResult.Reject(LoyaltyError.InvalidArgument, invalid);
        }

        return await WriteNoteAsync(d => ReferralDecision.LinkSettled(d, referredMemberId, stands, changeEnded), HoldPass.ReferralHold, epoch);
    }

    /// <inheritdoc />
    async Task<bool> IMemberLinkSteps.AwaitsMergeOf(string duplicateId)
    {
        SeeDeskEpoch();
        await CatchUpAsync();
        return _state.Enrolled && !_state.Erased && _state.MergedInto is null && !_state.MergedFrom.Contains(duplicateId);
    }

    /// <summary>The write of a change answered by an <see cref="AccrualResult"/>: an adjustment or feedback.</summary>
    private Task<AccrualResult> WriteAccrualAsync(string txn, long fingerprint, Stage<AccrualResult> stage) =>
        WriteCoreAsync(new StagedAccrualWrite(this, txn, fingerprint, stage)).AsTask();

    /// <summary>
    /// One change's part in the write loop: how it fetches what it needs, decides, and answers.
    /// The loop itself (<see cref="WriteCoreAsync"/>) is the same for every change.
    /// </summary>
    private abstract class Write<T>
        where T : class
    {
        /// <summary>Reads, with awaits, what the decision needs (before the decision, which has none); null when nothing.</summary>
        public virtual Task? PrefetchAsync() => null;

        /// <summary>Decides the change (see <see cref="Stage{T}"/>): an answer, or the entry (and the one committed just before it, if any).</summary>
        public abstract T? Stage(ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry, out LedgerEntry? before);

        /// <summary>The answer once <paramref name="entry"/> is committed, given the balance and pending points it left.</summary>
        public abstract T Committed(LedgerEntry entry, Points balance, Points pending);

        /// <summary>The answer when the ledger already holds the change's transaction id; null to try again.</summary>
        public abstract Task<T?> FromLedger(LedgerEntry existing);

        /// <summary>A refusal.</summary>
        public abstract T Reject(LoyaltyError error, string message);

        /// <summary>
        /// The request id to look for in the ledger before a refusal the member's state decided
        /// (see <see cref="RefusedOnState"/>) is given; null for changes whose refusals stand. A
        /// resend of a change accepted long ago (the member no longer remembers its id) must be
        /// answered as what it was, not judged again on today's state: a purchase paid with store
        /// credit since spent would otherwise be refused, and the till would take the payment a
        /// second time.
        /// </summary>
        public virtual string? ResendId => null;

        /// <summary>Which holds of the member this write goes through (see <see cref="HeldBy"/>).</summary>
        public HoldPass Passes { get; init; }

        /// <summary>Whether this change has read its program fresh for a tier name its silo's copy did not know.</summary>
        public bool ProgramReadFresh { get; set; }

        /// <summary>The desk epoch of the step this write is part of (see <see cref="DeskEpoch"/>); 0 for none (every purchase).</summary>
        public virtual long Epoch => 0;
    }

    /// <summary>A change given as functions: every change but purchases without a redemption, adjustments and feedback.</summary>
    private sealed class LambdaWrite<T>(
        Func<Task>? prefetch,
        Stage<T>? stage,
        PairStage<T>? pairStage,
        Func<LedgerEntry, Points, Points, T> committed,
        Func<LedgerEntry, Task<T?>> fromLedger,
        Func<LoyaltyError, string, T> reject,
        string? resendId = null,
        long epoch = 0) : Write<T>
        where T : class
    {
        public override long Epoch => epoch;

        public override Task? PrefetchAsync() => prefetch?.Invoke();

        public override T? Stage(ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry, out LedgerEntry? before)
        {
            before = null;
            return stage is not null ? stage(program, now, out entry) : pairStage!(program, now, out entry, out before);
        }

        public override T Committed(LedgerEntry entry, Points balance, Points pending) => committed(entry, balance, pending);

        public override Task<T?> FromLedger(LedgerEntry existing) => fromLedger(existing);

        public override T Reject(LoyaltyError error, string message) => reject(error, message);

        public override string? ResendId => resendId;
    }

    /// <summary>A change of one entry answered by an <see cref="AccrualResult"/>, under its transaction id.</summary>
    private abstract class AccrualWrite(MemberGrain grain, string txn, long fingerprint) : Write<AccrualResult>
    {
        protected MemberGrain Grain => grain;

        protected long Fingerprint => fingerprint;

        public override AccrualResult Committed(LedgerEntry entry, Points balance, Points pending) =>
            new(txn, AccrualStatus.Accepted, entry.Points, balance, entry.Sequence, LoyaltyError.None, null, entry.Details, entry.AvailableAt, entry.ProgramVersion, Pending: pending);

        public override Task<AccrualResult?> FromLedger(LedgerEntry existing) =>
            grain.AnswerFromLedger(existing, txn, fingerprint, grain.AccrualDuplicate, Reject, fingerprintAs: FingerprintAs);

        /// <summary>The request's fingerprint had it named another member (a merged duplicate); null when the request names none.</summary>
        protected virtual Func<string, long>? FingerprintAs => null;

        public override AccrualResult Reject(LoyaltyError error, string message) => AccrualResult.Reject(txn, error, message);

        public override string? ResendId => txn;
    }

    /// <summary>
    /// Whether an answer is a refusal that rests on the member's state or on the time (so that a
    /// resend of a change accepted long ago may have been refused for what it spent itself, or as
    /// back-dated by now, or for counters grown since; see <see cref="Write{T}.ResendId"/>).
    /// Refusals of the request's own fields, and resends the member remembers, were answered
    /// before the decision.
    /// </summary>
    private static bool RefusedOnState<T>(T answer) =>
        answer is IChangeOutcome { Status: AccrualStatus.Rejected, Error: LoyaltyError.FailedPrecondition or LoyaltyError.NotFound or LoyaltyError.InvalidArgument };

    /// <summary>A purchase's fingerprint as if it named another member (for <see cref="AnswerFromLedger"/>); made only on a ledger hit.</summary>
    private static Func<string, long> PurchaseFingerprintAs(Purchase purchase) => member => (purchase with { MemberId = member }).ComputeFingerprint();

    /// <summary>A purchase without a redemption: the hot path.</summary>
    private sealed class PurchaseWrite(MemberGrain grain, Purchase purchase, long fingerprint) : AccrualWrite(grain, purchase.TransactionId, fingerprint)
    {
        public override AccrualResult? Stage(ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry, out LedgerEntry? before) =>
            Grain.StageAccrual(purchase, Fingerprint, null, program, now, out entry, out before);

        protected override Func<string, long> FingerprintAs => PurchaseFingerprintAs(purchase);
    }

    /// <summary>An adjustment or feedback, decided by its stage.</summary>
    private sealed class StagedAccrualWrite(MemberGrain grain, string txn, long fingerprint, Stage<AccrualResult> stage) : AccrualWrite(grain, txn, fingerprint)
    {
        public override AccrualResult? Stage(ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry, out LedgerEntry? before)
        {
            before = null;
            return stage(program, now, out entry);
        }
    }

    /// <summary>
    /// The write loop every change shares: load, read the program, fetch what the change needs,
    /// then decide and apply without an await, commit, and answer. A collision reloads the state
    /// and asks the ledger whether the transaction id is already taken; a failure keeps nothing.
    /// </summary>
    private Task<T> WriteAsync<T>(
        Func<Task>? prefetch,
        Stage<T> stage,
        Func<LedgerEntry, Points, Points, T> committed,
        Func<LedgerEntry, Task<T?>> fromLedger,
        Func<LoyaltyError, string, T> reject,
        HoldPass passes = HoldPass.None,
        string? resendId = null,
        long deskEpoch = 0)
        where T : class =>
        WriteCoreAsync(new LambdaWrite<T>(prefetch, stage, null, committed, fromLedger, reject, resendId, deskEpoch) { Passes = passes }).AsTask();

    /// <summary>
    /// The write loop every change shares (see <see cref="WriteAsync{T}"/>). Its state machine
    /// comes from a pool (it is the hot path's largest object); so its value task is awaited
    /// once, or turned into a task at once.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<T> WriteCoreAsync<T>(Write<T> change)
        where T : class
    {
        for (int attempt = 0, pass = 0; attempt < AttemptsMax && pass < PassesMax; attempt++, pass++)
        {
            (ProgramConfig? program, T? refused) = await WaitForTurnAsync(change);
            if (program is null)
            {
                return refused!;
            }

            // No await between the turn and the decision: a change released with a group decides
            // in the same turn, so that it can join the next group (see CommitAsync).
            await WaitToDecideAsync();
            Decided<T> decided = DecideAndApply(change, program);
            if (decided.Answer is { } answer)
            {
                // A member with no entry has no older change to be resent (a flood of purchases for
                // members never enrolled costs no second read). The await is of the same type as the
                // collision's below, so the pooled state machine gains no field for it.
                return _state.Sequence > 0 && change.ResendId is { } id && RefusedOnState(answer) && await AsResentAsync(change, id) is { } resent
                    ? resent
                    : answer;
            }

            if (decided.Entry is not { } entry)
            {
                // Not this change's own collision: decide again, after what it waits for (if anything).
                if (decided.WaitFirst is { } wait)
                {
                    await wait;
                }

                attempt--;
                continue;
            }

            CommitOutcome outcome;
            if (CommitsAlone)
            {
                // CommitAsync's usual case, inline (keep the two alike): one state machine the less per purchase.
                Task<bool> append = BeginAlone(entry, program.Settings, decided.Before, change.Epoch);
                bool? written = null;
                try
                {
                    written = await append;
                }
                catch (LedgerUnavailableException)
                {
                    // Not recorded: the outcome is Failed.
                }
                finally
                {
                    outcome = EndAlone(entry, decided.Before, written);
                }
            }
            else
            {
                outcome = await CommitInGroupAsync(entry, program.Settings, decided.Before, change.Epoch);
            }

            switch (outcome)
            {
                case CommitOutcome.Committed:
                    AtFault(FaultStep.Acknowledge, entry, decided.Before);
                    return change.Committed(entry, decided.Balance, decided.Pending);
                case CommitOutcome.Failed:
                    return change.Reject(LoyaltyError.Unavailable, NotCommitted);
                case CommitOutcome.GroupConflict:
                    // Another change of the group may be the one refused: this does not count as
                    // this change's own collision unless the ledger shows its id taken (below).
                    attempt--;
                    break;
            }

            if (await AnswerAfterCollisionAsync(change, entry) is { } resolved)
            {
                return resolved;
            }
        }

        return change.Reject(LoyaltyError.Unavailable, "the member is being changed concurrently; retry");
    }

    /// <summary>
    /// What a change awaits before its turn to decide: the member loaded, its program, and what
    /// the change fetches. The program, or the refusal when the member or its program cannot be
    /// had. Its state machine comes from a pool when one of these waits does not complete at once.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<(ProgramConfig? Program, T? Refused)> WaitForTurnAsync<T>(Write<T> change)
        where T : class
    {
        if (!await TryEnsureLoadedAsync())
        {
            return (null, change.Reject(LoyaltyError.Unavailable, NotLoaded));
        }

        if (await _services.Programs.GetAsync(_programId) is not { } program)
        {
            return (null, change.Reject(LoyaltyError.NotFound, $"program '{_programId}' not found"));
        }

        if (change.PrefetchAsync() is { } prefetch)
        {
            await prefetch;
        }

        return (program, null);
    }

    /// <summary>
    /// What the write loop does next with a change, once it has had its turn to decide: answer
    /// it (<see cref="Answer"/>), commit what it applied (<see cref="Entry"/>, with
    /// <see cref="Before"/>, leaving <see cref="Balance"/> and <see cref="Pending"/>), or decide
    /// again, after <see cref="WaitFirst"/> when set.
    /// </summary>
    private readonly record struct Decided<T>(T? Answer, Task? WaitFirst, LedgerEntry? Entry, LedgerEntry? Before, Points Balance, Points Pending)
        where T : class;

    /// <summary>
    /// Decides a change and applies it, without an await: every check, overflow included, comes
    /// first, then what cannot fail. A change that another one holds up (a two-member change under
    /// way, an invalid state, a stale prefetch) decides again; an answer without a write waits
    /// for the open group's outcome first, since it may rest on that group's changes.
    /// </summary>
    private Decided<T> DecideAndApply<T>(Write<T> change, ProgramConfig program)
        where T : class
    {
        if (HeldBy is { } hold && !hold.Lets(change.Passes))
        {
            // A change touching another member is under way (see WhileHeldAsync): decide after its
            // outcome, so that nothing decided here slips between the other member's side and this one's.
            return new Decided<T>(null, hold.Ended, null, null, default, default);
        }

        if (!_valid)
        {
            // Another change's commit failed or collided while this one waited: reload and decide again.
            return default;
        }

        if (!change.ProgramReadFresh && _state.Enrolled && !program.Settings.Ladder.Knows(_state.Tier))
        {
            // A tier name this silo's copy of the program does not know was written under a newer
            // one (a tier renamed moments ago on another silo): decided on the old copy, the member
            // would be read as holding the entry tier, and that would be written. Checked here,
            // with no await before the decision; read fresh once per change (a name the program
            // no longer knows at all is read as the entry tier, as before).
            change.ProgramReadFresh = true;
            return new Decided<T>(null, _services.Programs.GetFreshAsync(_programId).AsTask(), null, null, default, default);
        }

        DateTimeOffset now = MemberNow();
        _state.Lots.Mature(now);
        LedgerEntry? entry = null, before = null;
        string? overflow;
        T? answer;
        ReturnSeed = null;
        try
        {
            overflow = Decide(change, program, now, ref entry, ref before, out answer);
        }
        catch (StalePrefetchException)
        {
            // Nothing was decided: fetch again and decide again.
            return default;
        }

        ReturnProgress? returnSeed = ReturnSeed;
        ReturnSeed = null;

        (LoyaltyError Error, string Message)? refused = entry is null ? null : Headroom.Refuse(_state, before ?? entry, before is null ? null : entry);
        if (entry is null || refused is not null)
        {
            if (_open is { } group)
            {
                // An answer without a write is given on committed state only, and this one may
                // rest on the open group's changes: decide again once they have settled.
                return new Decided<T>(null, group.Outcome.Task, null, null, default, default);
            }

            answer = overflow is not null ? change.Reject(LoyaltyError.InvalidArgument, overflow)
                : refused is { } no ? change.Reject(no.Error, no.Message)
                : answer ?? throw new InvalidOperationException("A stage must answer or stage an entry.");
            return new Decided<T>(answer, null, null, null, default, default);
        }

        if (Superseded(change.Epoch))
        {
            // Only what would be written: an answer from what is recorded already (a resent step) stands.
            return new Decided<T>(change.Reject(LoyaltyError.Unavailable, SupersededMessage), null, null, null, default, default);
        }

        ApplyDecided(entry, before, returnSeed);
        return new Decided<T>(null, null, entry, before, _state.Balance, _state.Lots.PendingTotal);
    }

    /// <summary>
    /// The answer to a change refused on the member's state when the ledger holds its id as the
    /// member's own entry (see <see cref="Write{T}.ResendId"/>); null to give the
    /// refusal. Another member's entry under the id leaves the refusal as it is: a member merged
    /// away says where to go, and a request sent there meanwhile is the survivor's, not a resend here.
    /// </summary>
    private async Task<T?> AsResentAsync<T>(Write<T> change, string id)
        where T : class
    {
        if (await FindOlderAsync(id) is not { } older || !IsOwn(older))
        {
            return null;
        }

        // The answer reads the member (its balance): as committed, not with a change applied
        // during the read and still waiting for its commit. When that cannot be had, it says the
        // ledger holds the id, not that nothing was recorded.
        return await TrySettleForReadAsync() ? await change.FromLedger(older) : change.Reject(LoyaltyError.Unavailable, HeldUnread);
    }

    /// <summary>
    /// After a collision: the database already holds this transaction id (an older resend, or
    /// another member's) or another activation wrote this sequence. Asks the ledger, after the
    /// state is reloaded, and answers from what it holds; null to decide again.
    /// </summary>
    private async Task<T?> AnswerAfterCollisionAsync<T>(Write<T> change, LedgerEntry entry)
        where T : class
    {
        if (!await TryEnsureLoadedAsync())
        {
            return change.Reject(LoyaltyError.Unavailable, NotLoaded);
        }

        // A desk's step may have been left out of the batch for a newer desk that another
        // activation of this member answered: with the latest epoch noted, it is refused as
        // superseded when decided again.
        if (change.Epoch != 0 && !await TryNoteLatestDeskEpochAsync())
        {
            return change.Reject(LoyaltyError.Unavailable, NotLoaded);
        }

        if (entry.TransactionId is null || await _services.Store.FindTransactionAsync(_programId, entry.TransactionId, CancellationToken.None) is not { } existing)
        {
            return null;
        }

        // As a resend's (see AsResentAsync): the answer reads the member as committed.
        return await TrySettleForReadAsync() ? await change.FromLedger(existing) : change.Reject(LoyaltyError.Unavailable, HeldUnread);
    }

    /// <summary>
    /// Runs a stage: a pure decision over the state. Its checked arithmetic (earn rates times a
    /// large basket, say) may overflow; that is a refusal of the request, returned here as its
    /// message, and nothing has changed.
    /// </summary>
    private static string? Decide<T>(Write<T> change, ProgramConfig program, DateTimeOffset now,
        ref LedgerEntry? entry, ref LedgerEntry? before, out T? answer)
        where T : class
    {
        try
        {
            answer = change.Stage(program, now, out entry, out before);
            return null;
        }
        catch (OverflowException)
        {
            (answer, entry, before) = (null, null, null);
            return "amount_minor or points: the change's amounts overflow 64-bit arithmetic under the program's rules; nothing was recorded";
        }
    }

    private AccrualResult? StageAccrual(
        Purchase purchase, long fingerprint, (Redemption Request, StockTake Stock)? redemption, ProgramConfig program, DateTimeOffset now,
        out LedgerEntry? entry, out LedgerEntry? before)
    {
        entry = null;
        before = null;
        string txn = purchase.TransactionId;
        if (Precheck(txn, fingerprint, out Remembered prior) is { } early)
        {
            return early.Error == LoyaltyError.None ? AccrualDuplicate(txn, prior.Points, prior.Sequence) : AccrualResult.Reject(txn, early.Error, early.Message);
        }

        Decider decider = At(program, now);
        if (AccrualDecision.Check(decider, purchase) is { } refused)
        {
            return AccrualResult.Reject(txn, refused.Error, refused.Message!);
        }

        if (redemption is { } r)
        {
            if (StageSpendOrHold(r.Request, reserve: false, fingerprint, r.Stock, ended: null, program, now, out before) is { } notRedeemed)
            {
                return AccrualResult.Reject(txn, notRedeemed.Error, $"the purchase's redemption: {notRedeemed.ErrorMessage}");
            }

            before = before! with { Reference = txn };
        }
        else
        {
            // A review due and not recorded yet is written first, in the purchase's commit (a
            // basket's redemption takes that place: its earn records the review, as it did before).
            before = DueDecision.ReviewBefore(decider);
        }

        entry = AccrualDecision.Decide(decider, purchase, fingerprint, before);
        return null;
    }
}
