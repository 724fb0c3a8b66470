using Loyalty.Storage;
using System.Diagnostics;

namespace Loyalty.Grains;

/// <summary>
/// Referrals. The graph lives in the member grains: each member knows who referred it and whom
/// it referred. Both sides are rewarded on the referred member's first qualifying purchase: the
/// referred member's reward is a component of that purchase's earn, and the referrer's is an
/// entry in the referrer's own ledger, settled by a call that is idempotent by the referred
/// member, so it can be repeated until it lands.
/// </summary>
public sealed partial class MemberGrain
{
    /// <summary>How many codes are tried when a member's code collides with another member's.</summary>
    private const int CodeAttemptsMax = 8;


    /// <summary>How often the own write of a change holding this member is tried again while the ledger fails.</summary>
    internal const int HeldWriteRetriesMax = 3;

    /// <summary>The wait before the first retry of a held change's own write; doubled for each next one.</summary>
    private static readonly TimeSpan HeldWriteRetryDelay = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// No retry of a held change's own write starts after this long from its first try: a write that
    /// fails slowly (a store waiting for its own time-out) must not hold the member, and the desk's
    /// call, past the desk's own time limit.
    /// </summary>
    private static readonly TimeSpan HeldWriteRetriesWithin = TimeSpan.FromSeconds(2);

    /// <summary>The answer to a step of a desk older than one this member has answered since.</summary>
    private const string SupersededMessage =
        "a newer change at the program's desk read this member after this change was checked (the engine that asked for it stopped meanwhile); nothing was recorded here, retry";


    /// <inheritdoc />
    public async Task<MemberResult> SetReferrer(string? referrerId, string? referralCode)
    {
        if (await ResolveReferrerAsync(referrerId, referralCode) is not { } resolved)
        {
            return MemberResult.Reject(LoyaltyError.InvalidArgument, "set referred_by or referral_code");
        }

        if (resolved.Error is { } refused)
        {
            return refused;
        }

        // Loaded before the desk, which calls back: a member that cannot be loaded answers here.
        if (!await TryEnsureLoadedAsync())
        {
            return MemberResult.Reject(LoyaltyError.Unavailable, NotLoaded);
        }

        // A referral link touches two members: it is made at the program's desk, one at a time.
        return await CallBackAwaitedAsync(GrainFactory.GetGrain<IProgramLinksGrain>(_programId).SetReferrer(_memberId, resolved.MemberId!));
    }

    /// <inheritdoc />
    async Task<MemberResult> IMemberLinkSteps.LinkReferrer(string referrer)
    {
        long epoch = SeeDeskEpoch();
        if (LoyaltyIds.Check(referrer, "referred_by") is { } invalid)
        {
            return MemberResult.Reject(LoyaltyError.InvalidArgument, invalid);
        }

        try
        {
            // As the ledger has it: another activation of this member may have linked it meanwhile.
            await CatchUpAsync();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A failed load was logged where it failed; a failed read of the ledger's newest entry is logged here.
            if (e is not MemberUnavailableException && LoadFailed is null && _services.StorageFailures.TryTake(out long leftOut))
            {
                LogLoadFailed(_services.Logger, e, _programId, _memberId, leftOut);
            }

            return MemberResult.Reject(LoyaltyError.Unavailable, NotLoaded);
        }

        if (_state.Enrolled && _state.Referral.ReferredBy is { } current && current != referrer
            && !_state.Erased && _state.MergedInto is null && await CurrentHolderAsync(referrer) == current)
        {
            // Made already, and the referrer was merged into the member that holds its account
            // now, to which the link was moved: a resend is answered as made, not as "already referred".
            return await CommittedViewAsync() is { } view ? new MemberResult(view, LoyaltyError.None, null) : MemberResult.Reject(LoyaltyError.Unavailable, RecordedUnread);
        }

        if (_state.Enrolled && _state.Referral.ReferredBy == referrer)
        {
            // Made already. The referrer's side is asked for again (nothing when it lists this
            // member): a link withdrawn there because this member's entry landed only after the
            // check is restored, and the desk then confirms it. Not for a member merged away or
            // erased: its link moved to the survivor, or counts for nothing. A restore the referrer
            // refuses (its cap taken meanwhile, say) is the answer: the link is not whole.
            if (_state.MergedInto is null && !_state.Erased
                && await LinkSteps(referrer).AddReferral(_memberId) is { Error: not LoyaltyError.None } refused)
            {
                return refused;
            }

            return await CommittedViewAsync() is { } view ? new MemberResult(view, LoyaltyError.None, null) : MemberResult.Reject(LoyaltyError.Unavailable, RecordedUnread);
        }

        ProgramConfig? program = await _services.Programs.GetAsync(_programId);
        MemberResult? NotReferrable() =>
            program is not null && ReferralDecision.Referrable(At(program, MemberNow()), referrer) is { } refused
                ? MemberResult.Reject(refused.Error, refused.Message!)
                : null;

        // Checked before the walk below as well as at the hold: a member that may not be referred is
        // told so at once, when what refuses it is committed (else the hold's check waits for that).
        if (_inFlight == 0 && NotReferrable() is { } early)
        {
            return early;
        }

        if (_state.AwaitsOpenMerge)
        {
            // The duplicate's purchases and referrer, still to arrive, decide whether it may be referred.
            return MemberResult.Reject(LoyaltyError.Unavailable,
                $"the merge of '{_state.MergingFrom}' into member '{_memberId}' is not finished yet (it was cut short); the member's due schedule completes it: retry then");
        }

        // Outside the hold: links change only at the desk, one at a time, so the answer stands, and
        // the walk (up to 64 reads) does not hold the member's purchases.
        if (await FindCycleAsync(referrer) is { } cycle)
        {
            return MemberResult.Reject(LoyaltyError.FailedPrecondition, $"referral by '{referrer}' would close a referral cycle: {cycle}");
        }

        return await WhileHeldAsync(HoldPass.ReferralHold, NotReferrable, () => LinkBothSidesAsync(referrer, epoch));
    }

    /// <summary>
    /// Runs <paramref name="change"/>, which touches another member and then writes here, with this
    /// member's other changes held until it ends, except those <paramref name="lets"/> through;
    /// <paramref name="refusal"/> is checked first, in the same turn as the hold begins, so what it
    /// found still holds when the change writes here. Without the hold a first purchase decided
    /// while a referral link was being made turned this member's entry into a refusal ("already
    /// made a purchase") after the referrer had recorded the link: a referrer listing a member that
    /// names nobody, a slot of its referral cap taken. Purchases never pass the program's desk, so
    /// they are held here, on the member, for the few calls the change takes; the desk runs one
    /// such change at a time.
    /// </summary>
    private async Task<T> WhileHeldAsync<T>(HoldPass lets, Func<T?> refusal, Func<Task<T>> change)
        where T : class
    {
        while (true)
        {
            while (HeldBy is { } other)
            {
                // Only with two desks at once (Orleans' rare duplicate activation): one such change at a time here too.
                await other.Ended;
            }

            if (!_valid && await TryEnsureLoadedAsync())
            {
                // A commit failed meanwhile: the state was rebuilt from the ledger; judged again.
                // One that cannot be loaded now is judged as it is, as before, and the change's
                // own write answers UNAVAILABLE (an exception here would reach the desk's caller).
                continue;
            }

            if (refusal() is not { } refused)
            {
                // The hold begins in this same turn, so what the check found still holds.
                break;
            }

            if (_inFlight == 0 || !_valid)
            {
                return refused;
            }

            // Refused on a change still committing (a first purchase, say): its commit may fail,
            // and the refusal's reason with it. Decided again once it is committed or not.
            await WaitForCommitsAsync();
        }

        var hold = new TwoMemberHold(lets);
        HeldBy = hold;
        try
        {
            return await change();
        }
        finally
        {
            HeldBy = null;
            hold.End();
        }
    }

    /// <summary>
    /// The own write of a change holding this member, tried again (up to
    /// <see cref="HeldWriteRetriesMax"/> times, waiting longer each time, none starting after
    /// <see cref="HeldWriteRetriesWithin"/>) while the ledger fails: the
    /// other member's side is already written, and once the hold ends a change decided here may
    /// make this side a refusal. What is left after the retries (the ledger down for longer) is
    /// completed by asking again: the other side's step is idempotent.
    /// </summary>
    private async Task<MemberResult> HeldWriteAsync(Func<Task<MemberResult>> write, long deskEpoch = 0)
    {
        long started = Stopwatch.GetTimestamp();
        MemberResult result = await write();
        TimeSpan delay = HeldWriteRetryDelay;
        // Not for a step a newer desk has superseded: its refusal will not change, and the hold keeps the newer desk waiting.
        for (int retry = 0; retry < HeldWriteRetriesMax && result.Error == LoyaltyError.Unavailable && !Superseded(deskEpoch)
            && Stopwatch.GetElapsedTime(started) + delay < HeldWriteRetriesWithin; retry++)
        {
            // Real time, not the rules' clock: this only spaces out attempts at a failing ledger.
            await Task.Delay(delay);
            delay *= 2;
            result = await write();
        }

        return result;
    }

    /// <summary>The link once the member may be referred: the referrer's side, then this member's entry (under the step's <paramref name="epoch"/>).</summary>
    private async Task<MemberResult> LinkBothSidesAsync(string referrer, long epoch)
    {
        if (await LinkAtReferrerAsync(referrer) is { } linkRefusal)
        {
            return MemberResult.Reject(linkRefusal.Error, linkRefusal.Message);
        }

        ProgramConfig? current = null;
        return await HeldWriteAsync(() => WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                current = program;
                return ReferralDecision.Referred(At(program, now), referrer).Staged(out entry, MemberResult.Reject, () => new MemberResult(View(program), LoyaltyError.None, null));
            },
            (_, _, _) => new MemberResult(View(current), LoyaltyError.None, null),
            _ => Task.FromResult<MemberResult?>(null),
            MemberResult.Reject,
            HoldPass.Own,
            deskEpoch: epoch), epoch);
    }

    /// <inheritdoc />
    public async Task<string?> GetReferrer()
    {
        SeeDeskEpoch();
        await CatchUpAsync();
        if (!_state.Enrolled || _state.Referral.ReferredBy is not { } referrer)
        {
            return null;
        }

        // A referrer merged away while this link to it could not be re-pointed (a merge cut short)
        // stands for whoever holds its account now: the link ends there when the merge is repeated,
        // so cycle checks follow it there already. A link to a member since merged into this one
        // (a survivor referred by its duplicate) rewards nobody and leads nowhere.
        string holder = await HolderOfAsync(referrer, (await LinkSteps(referrer).GetLinks()).MergedInto) ?? referrer;
        return holder == _memberId ? null : holder;
    }

    /// <inheritdoc />
    public async Task<string?> GetReferralCode()
    {
        await SettleForReadAsync();
        if (!_state.Enrolled || _state.Erased || _state.MergedInto is not null)
        {
            return null;
        }

        var owner = new ReferralOwner(_programId, _memberId);
        for (int salt = 0; salt < CodeAttemptsMax && ReferralCode is null; salt++)
        {
            string code = ReferralCodes.For(_programId, _memberId, salt);
            if (await GrainFactory.GetGrain<IReferralCodeGrain>(ReferralCodes.Key(_programId, code)).Claim(owner))
            {
                ReferralCode = code;
            }
        }

        return ReferralCode ?? throw new InvalidOperationException($"No free referral code for {_programId}/{_memberId}.");
    }

    /// <inheritdoc />
    public async Task<LoyaltyError> SettleReferralReward(string referredMemberId, long points, bool reverse)
    {
        if (LoyaltyIds.Check(referredMemberId, "referred member id") is not null || points is < 0 or > Limits.BonusPointsMax)
        {
            return LoyaltyError.InvalidArgument;
        }

        // As committed: a merge applied and still waiting for its commit would send the reward to
        // a survivor that never takes this account in, if that commit fails.
        await SettleForReadAsync();
        if (_state.MergedInto is { } survivor && (reverse || !_state.Referral.Rewards.ContainsKey(referredMemberId)))
        {
            // The referrer was merged into another account: the reward (or its reversal) goes there,
            // unless the referred member is that account itself (nobody rewards itself). A reversal
            // goes there also when this account got the reward before the merge: the survivor took
            // it over with the points, so it must be taken back there (here it would be taken from
            // an empty, closed account, that is not at all). A reward this account already got is
            // answered here: forwarded while the merge is cut short, the survivor, not yet holding
            // it, would pay it a second time.
            // A reversal goes there also when that account is the referred member itself: it holds
            // the reward this account got for it.
            if (survivor == referredMemberId && !reverse)
            {
                return LoyaltyError.None;
            }

            // A reversal waits until the survivor has taken this account in: before (a merge cut
            // short), it would record there that nothing is due, and keep the reward the completed
            // merge brings later. The referred member's due schedule asks again. (A survivor
            // erased or merged on before it took this account in never will: it holds none of the
            // reward, and the reversal goes there as before.)
            if (reverse && _state.Referral.Rewards.ContainsKey(referredMemberId) && await LinkSteps(survivor).AwaitsMergeOf(_memberId))
            {
                return LoyaltyError.Unavailable;
            }

            return await OtherMember(survivor).SettleReferralReward(referredMemberId, points, reverse);
        }

        // '#' cannot occur in a client's transaction id: the keys cannot collide with purchases.
        string txn = "#ref:" + referredMemberId + (reverse ? ":reversed" : "");
        bool merged = _state.MergedInto is not null;
        AccrualResult result = await WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
                ReferralDecision.Reward(At(program, now), referredMemberId, txn, points, reverse).Staged(
                    out entry, (e, m) => AccrualResult.Reject(txn, e, m), () => new AccrualResult(txn, AccrualStatus.Duplicate, Points.Zero, _state.Balance, 0, LoyaltyError.None, null)),
            (entry, balance, _) => new AccrualResult(txn, AccrualStatus.Accepted, entry.Points, balance, entry.Sequence, LoyaltyError.None, null),
            _ => Task.FromResult<AccrualResult?>(new AccrualResult(txn, AccrualStatus.Duplicate, Points.Zero, _state.Balance, 0, LoyaltyError.None, null)),
            (e, m) => AccrualResult.Reject(txn, e, m),
            HoldPass.ReferralHold);
        if (result.Status == AccrualStatus.Duplicate && !merged && _state.MergedInto is not null)
        {
            // Merged away while this waited for its turn: the decision, made on the merged state,
            // wrote nothing here, so the reward (or its reversal) is the survivor's, as above.
            // Answering done would leave the referred member's note saying it was given.
            return await SettleReferralReward(referredMemberId, points, reverse);
        }

        return result.Error;
    }

    /// <summary>The referrer named by id or by code, or a refusal; null when neither is given.</summary>
    private async Task<(string? MemberId, MemberResult? Error)?> ResolveReferrerAsync(string? referrerId, string? referralCode)
    {
        if (referralCode is null)
        {
            return referrerId is null ? null
                : LoyaltyIds.Check(referrerId, "referred_by") is { } idError ? (null, MemberResult.Reject(LoyaltyError.InvalidArgument, idError))
                : (referrerId, null);
        }

        if (ReferralCodes.Normalize(referralCode, out string? codeError) is not { } code)
        {
            return (null, MemberResult.Reject(LoyaltyError.InvalidArgument, codeError!));
        }

        // Looked up in this program only: a code of another program is unknown here, and said to be
        // so in the same words, so that no program learns which codes (and members) another has.
        ReferralOwner? owner = await GrainFactory.GetGrain<IReferralCodeGrain>(ReferralCodes.Key(_programId, code)).Resolve();
        if (owner is null || owner.ProgramId != _programId)
        {
            return (null, MemberResult.Reject(LoyaltyError.NotFound, $"referral code '{code}' is unknown"));
        }

        return referrerId is not null && referrerId != owner.MemberId
            ? (null, MemberResult.Reject(LoyaltyError.InvalidArgument, "referred_by and referral_code name different members"))
            : (owner.MemberId, null);
    }

    /// <summary>The chain from <paramref name="referrer"/> up to this member when linking would close a cycle, else null.</summary>
    private async Task<string?> FindCycleAsync(string referrer)
    {
        var chain = new List<string> { referrer };
        string? at = referrer;
        for (int depth = 0; depth < Limits.ReferralChainDepthMax; depth++)
        {
            at = await ReferralChains.ReferrerAboveAsync(GrainFactory, _programId, at);
            if (at is null)
            {
                return null;
            }

            if (at != _memberId && chain.Contains(at))
            {
                // Links made before the desk existed may already loop; say so rather than "too long".
                return $"the chain above '{referrer}' already loops through '{at}'";
            }

            chain.Add(at);
            if (at == _memberId)
            {
                // Written as "who referred whom", ending with the link that would close the cycle.
                chain.Reverse();
                return string.Join(" → ", chain) + " → " + _memberId;
            }
        }

        return $"the chain above '{referrer}' is longer than {Limits.ReferralChainDepthMax}";
    }

    /// <summary>Links this member at the referrer (which enforces the referral caps); null when linked, else the referrer's own reason.</summary>
    private async Task<(LoyaltyError Error, string Message)?> LinkAtReferrerAsync(string referrer)
    {
        MemberResult linked = await LinkSteps(referrer).AddReferral(_memberId);
        return linked.Error switch
        {
            LoyaltyError.None => null,
            LoyaltyError.NotFound => (LoyaltyError.NotFound, $"referrer '{referrer}' is not enrolled in program '{_programId}'"),
            _ => (linked.Error, "the referrer refused the link: " + (linked.ErrorMessage ?? linked.Error.ToString())),
        };
    }

    /// <summary>Whether the referrer still has to hear of this member's qualifying purchase (or of its return).</summary>
    private bool ReferrerToSettle => _state.Referral.ReferredBy is not null
        && ((_state.Referral.QualifiedBy is null && !_state.ReferredByOwnAccount(_memberId)) || _state.Referral.Owed);

    /// <summary>
    /// Tells the referrer its reward, or its reversal, then records here that it did. The call is
    /// idempotent; until the record is written the member's due time stays "now", so the due
    /// scheduler repeats it after any failure, whether or not the member is active.
    /// </summary>
    /// <remarks>
    /// What is owed is read from the state as committed (<see cref="SettleForReadAsync()"/>): a
    /// return applied and still waiting for its commit says the reward is to be reversed, and a
    /// referrer told so would take its reward back for a return that may then fail.
    /// </remarks>
    private async Task<bool> SettleReferrerAsync()
    {
        if (!await SettledForReferrerAsync())
        {
            return false;
        }

        bool settled = await SettleOwnReferrerAsync();
        if (!await SettledForReferrerAsync())
        {
            return false;
        }

        if (!_state.Referral.MergedOwed)
        {
            return settled;
        }

        // Copied: each note written replaces the list's record.
        foreach (MergedReferral merged in _state.Referral.Merged.ToArray())
        {
            settled &= !merged.Owed || await SettleMergedReversalAsync(merged);
        }

        return settled;
    }

    /// <summary>
    /// <see cref="TrySettleForReadAsync"/>, warning when it fails: the change that led to a
    /// settlement is committed either way, and the due schedule asks again.
    /// </summary>
    private async Task<bool> SettledForReferrerAsync()
    {
        if (await TrySettleForReadAsync())
        {
            return true;
        }

        WarnSettlementFailed(_state.Referral.ReferredBy ?? _memberId, LoyaltyError.Unavailable);
        return false;
    }

    /// <summary>Tells this member's own referrer its reward, or its reversal (see <see cref="SettleReferrerAsync"/>).</summary>
    private async Task<bool> SettleOwnReferrerAsync()
    {
        if (_state.Referral.ReferredBy is not { } referrer || !_state.Referral.Owed)
        {
            return true;
        }

        string subject = _state.Referral.Subject ?? _memberId;
        bool reward = _state.Referral.RewardOwed > 0 && !_state.Referral.RewardSettled, reversal = _state.Referral.Reversed && !_state.Referral.ReversalSettled;
        try
        {
            IMemberGrain grain = OtherMember(referrer);
            LoyaltyError error = reward ? await CallBackAwaitedAsync(grain.SettleReferralReward(subject, _state.Referral.RewardOwed, reverse: false)) : LoyaltyError.None;
            bool rewarded = reward && error == LoyaltyError.None;
            if (error == LoyaltyError.None && reversal)
            {
                error = await CallBackAwaitedAsync(grain.SettleReferralReward(subject, 0, reverse: true));
            }

            if (RefusedForGood(error))
            {
                LogReferralRefused(_services.Logger, _programId, _memberId, referrer, error);
                return (await WriteRefusedAsync(referrer, error, rewarded, reversalRefused: !reward || rewarded)).Error == LoyaltyError.None;
            }

            if (error != LoyaltyError.None)
            {
                WarnSettlementFailed(referrer, error);
                return false;
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            WarnSettlementFailed(referrer, LoyaltyError.Unavailable);
            return false;
        }

        MemberResult settled;
        try
        {
            settled = await WriteSettledAsync(referrer, reward, reversal);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The referrer has its reward; this member's note of it is written again by the due
            // schedule (the member stays owed). The purchase that led here is committed either way.
            WarnSettlementFailed(referrer, LoyaltyError.Unavailable);
            return false;
        }

        return settled.Error == LoyaltyError.None;
    }

    /// <summary>
    /// Tells the referrer of a duplicate merged in that the purchase which rewarded it was returned
    /// here in full, then records that it did (or that it refused, for good). Idempotent at the
    /// referrer, which keys the reward by <see cref="MergedReferral.Subject"/>; retried by the due
    /// schedule until recorded.
    /// </summary>
    private async Task<bool> SettleMergedReversalAsync(MergedReferral merged)
    {
        LoyaltyError error;
        try
        {
            // The referrer may be this member (the duplicate was merged into the account that referred
            // it), or be merged into it, when the call comes back here: the grain is reentrant.
            IMemberGrain referrer = merged.Referrer == _memberId ? this : OtherMember(merged.Referrer);
            error = await CallBackAwaitedAsync(referrer.SettleReferralReward(merged.Subject, 0, reverse: true));
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            WarnSettlementFailed(merged.Referrer, LoyaltyError.Unavailable);
            return false;
        }

        bool refused = RefusedForGood(error);
        if (error != LoyaltyError.None && !refused)
        {
            WarnSettlementFailed(merged.Referrer, error);
            return false;
        }

        if (refused)
        {
            LogReferralRefused(_services.Logger, _programId, _memberId, merged.Referrer, error);
        }

        try
        {
            return (await WriteNoteAsync(d => ReferralDecision.MergedReversalSettled(d, merged.Subject, refused ? error : null))).Error == LoyaltyError.None;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            WarnSettlementFailed(merged.Referrer, LoyaltyError.Unavailable);
            return false;
        }
    }

    /// <summary>A referrer's answer that asking again would only repeat (every minute, forever): the settlement is recorded as refused.</summary>
    private static bool RefusedForGood(LoyaltyError error) =>
        error is LoyaltyError.InvalidArgument or LoyaltyError.FailedPrecondition or LoyaltyError.NotFound;

    /// <summary>Writes that the referrer was told of its reward (or its reversal).</summary>
    private Task<MemberResult> WriteSettledAsync(string referrer, bool reward, bool reversal) =>
        WriteNoteAsync(d => ReferralDecision.Settled(d, referrer, reward, reversal));

    /// <summary>Writes that the referrer refused its reward for good, so that it is not offered again.</summary>
    private Task<MemberResult> WriteRefusedAsync(string referrer, LoyaltyError error, bool rewarded, bool reversalRefused) =>
        WriteNoteAsync(d => ReferralDecision.Refused(d, referrer, error, rewarded, reversalRefused));

    /// <summary>
    /// Writes a note that moves no points and answers with no view (a settlement, a link's
    /// confirmation, a re-pointing, a merge's start or end), as <paramref name="decide"/> decides it;
    /// <paramref name="passes"/> says which holds of the member it goes through.
    /// </summary>
    private Task<MemberResult> WriteNoteAsync(Func<Decider, Decision> decide, HoldPass passes = HoldPass.None, long deskEpoch = 0) =>
        WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
                decide(At(program, now)).Staged(out entry, MemberResult.Reject, () => NoteWritten),
            (_, _, _) => NoteWritten,
            _ => Task.FromResult<MemberResult?>(null),
            MemberResult.Reject,
            passes,
            deskEpoch: deskEpoch);

    /// <summary>
    /// The desk epoch this call runs under (0 outside the desk's changes), noted as seen here:
    /// from now on, writes of steps under an older one are refused (see <see cref="DeskEpoch"/>).
    /// Called as a call arrives, before its first await.
    /// </summary>
    private long SeeDeskEpoch()
    {
        long epoch = DeskEpoch.Current(_programId);
        DeskEpochSeen = Math.Max(DeskEpochSeen, epoch);
        return epoch;
    }

    /// <summary>
    /// The fence of a step's write under <paramref name="epoch"/> (see <see cref="EntryFence"/>):
    /// the ledger leaves it out once the program's desk lock has a newer holder, which another
    /// activation of this member (or this member before it was deactivated) may have answered.
    /// </summary>
    private LockFence? DeskFence(long epoch) => epoch == 0 ? null : new LockFence(DeskEpoch.LockName(_programId), epoch);

    /// <summary>
    /// Notes the epoch of the program desk lock's latest holder, as the ledger has it (see
    /// <see cref="DeskFence"/>); false when the ledger cannot be read (the change then answers
    /// UNAVAILABLE, as when the member cannot be loaded).
    /// </summary>
    private async Task<bool> TryNoteLatestDeskEpochAsync()
    {
        try
        {
            long latest = await _services.Store.ReadLockEpochAsync(DeskEpoch.LockName(_programId), CancellationToken.None);
            DeskEpochSeen = Math.Max(DeskEpochSeen, latest);
            return true;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return false;
        }
    }

    /// <summary>Whether a write of a step under <paramref name="epoch"/> comes after a newer desk was answered here (see <see cref="DeskEpoch"/>).</summary>
    private bool Superseded(long epoch) => epoch != 0 && epoch < DeskEpochSeen;

    /// <summary>The answer of a note written, or already there.</summary>
    private static readonly MemberResult NoteWritten = new(null, LoyaltyError.None, null);

    /// <summary>Which holds of a member (see <see cref="HeldBy"/>) a write goes through.</summary>
    private enum HoldPass
    {
        /// <summary>None: the write waits for any hold to end (every change of the member unless said).</summary>
        None,

        /// <summary>
        /// A referral link's hold, which needs only what makes the member referable to stay as it
        /// was: its own referrals of others and their rewards go through (one held member's link
        /// waiting for another's could otherwise wait on each other). Not a re-pointing after a
        /// merge: it could decide on the referrer about to be written, and it is asked for after
        /// the merge's own hold has ended, so it cannot be part of such a wait.
        /// </summary>
        ReferralHold,

        /// <summary>Every hold: the held change's own write.</summary>
        Own,
    }

    /// <summary>A hold on a member's changes while a change touching another member is made here.</summary>
    private sealed class TwoMemberHold(HoldPass lets)
    {
        private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Completes when the hold ends.</summary>
        public Task Ended => _ended.Task;

        /// <summary>Whether a write that <paramref name="passes"/> goes through this hold.</summary>
        public bool Lets(HoldPass passes) => passes == HoldPass.Own || (passes != HoldPass.None && passes == lets);

        public void End() => _ended.SetResult();
    }
}
