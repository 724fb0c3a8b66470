using System.Text.Json;

namespace Loyalty.Grains;

/// <summary>
/// The member lifecycle: profile fields, erasure of personal data, and the merge of a duplicate
/// account. Personal fields live outside the append-only ledger (in <c>member_profiles</c>), so
/// erasing them never touches the amounts program accounting needs.
/// </summary>
public sealed partial class MemberGrain
{
    /// <summary>The most write-offs of expired points a detach makes before it gives up for a retry (one or two are the rule).</summary>
    internal const int DetachWriteOffsMax = 4;

    /// <summary>The most merges followed from a member merged away to the one that holds its account now.</summary>
    internal const int MergeChainFollowedMax = 64;

    private IReadOnlyDictionary<string, string>? _profile;

    /// <inheritdoc />
    public async Task<MemberResult> SetProfile(IReadOnlyDictionary<string, string> fields)
    {
        if (Profiles.Check(fields) is { } error)
        {
            return MemberResult.Reject(LoyaltyError.InvalidArgument, error);
        }

        return await InProfileTurnAsync(() => SetProfileAloneAsync(fields));
    }

    /// <summary>
    /// Runs a change of the member's personal data in its turn: one at a time, profile changes and
    /// erasures alike (a profile written while an erasure commits could otherwise land after the
    /// erasure deleted the row, and stay).
    /// </summary>
    private async Task<MemberResult> InProfileTurnAsync(Func<Task<MemberResult>> change)
    {
        SemaphoreSlim turn = ProfileChanges ??= new SemaphoreSlim(1, 1);
        await turn.WaitAsync();
        try
        {
            return await change();
        }
        finally
        {
            turn.Release();
        }
    }

    private async Task<MemberResult> SetProfileAloneAsync(IReadOnlyDictionary<string, string> fields)
    {
        if (!await TryEnsureLoadedAsync())
        {
            return MemberResult.Reject(LoyaltyError.Unavailable, NotLoaded);
        }

        if (Closed() is { } closed)
        {
            return closed;
        }

        // The ledger's note first (field names only, never values), then the personal data. An
        // erasure waits for this change to end (it takes the same turn, see Erase); one seen
        // afterwards all the same (written by another activation) has the data deleted again.
        var copy = new SortedDictionary<string, string>(fields.ToDictionary(), StringComparer.Ordinal);
        ProgramConfig? current = null;
        MemberResult result = await WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                current = program;

                // The birthday's month only, for the due schedule; the date itself stays in the profile.
                return LifecycleDecision.Profile(At(program, now), copy.Keys, Profiles.BirthMonthOf(copy.GetValueOrDefault(Profiles.BirthdayField)))
                    .Staged(out entry, MemberResult.Reject);
            },
            (_, _, _) => new MemberResult(null, LoyaltyError.None, null),
            _ => Task.FromResult<MemberResult?>(null),
            MemberResult.Reject);
        if (result.Error != LoyaltyError.None)
        {
            return result;
        }

        await _services.Store.WriteProfileAsync(_programId, _memberId, copy.Count == 0 ? null : JsonSerializer.Serialize(copy), _services.Clock.GetUtcNow(), CancellationToken.None);
        // The view as committed, not the state as it is: other changes may have been applied while
        // the profile was written, and not be committed yet. An erasure committed by then is seen below.
        _profile = copy;
        MemberView? view = await CommittedViewAsync(current);
        if (_state.Erased)
        {
            _profile = null;
            await _services.Store.WriteProfileAsync(_programId, _memberId, null, _services.Clock.GetUtcNow(), CancellationToken.None);
            return Closed()!;
        }

        return view is null ? MemberResult.Reject(LoyaltyError.Unavailable, RecordedUnread) : new MemberResult(view, LoyaltyError.None, null);
    }

    /// <inheritdoc />
    public async Task<MemberResult> Erase(string reason)
    {
        if (FreeText.Check(reason, "reason", Limits.ReasonLengthMax) is { } reasonError)
        {
            return MemberResult.Reject(LoyaltyError.InvalidArgument, reasonError);
        }

        return await InProfileTurnAsync(() => EraseAloneAsync(reason));
    }

    private async Task<MemberResult> EraseAloneAsync(string reason)
    {
        if (await TryEnsureLoadedAsync() && _state.AwaitsOpenMerge)
        {
            // An erasure does not wait for the due schedule: the open merge it would be refused for is completed now, if it can be.
            await DeskCheckAsync(() => GrainFactory.GetGrain<IProgramLinksGrain>(_programId).CompleteMerge(_memberId));
        }

        ProgramConfig? current = null;
        MemberResult result = await WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                current = program;
                return LifecycleDecision.Erase(At(program, now), reason).Staged(out entry, MemberResult.Reject, () => new MemberResult(View(program), LoyaltyError.None, null));
            },
            (_, _, _) => new MemberResult(View(current), LoyaltyError.None, null),
            _ => Task.FromResult<MemberResult?>(null),
            MemberResult.Reject);
        if (result.Error != LoyaltyError.None)
        {
            return result;
        }

        // The member is marked erased durably first; the clean-up is idempotent, and a repeated
        // request repeats it, so a failure half-way is repaired by asking again.
        await _services.Store.WriteProfileAsync(_programId, _memberId, null, _services.Clock.GetUtcNow(), CancellationToken.None);
        foreach (string member in (IEnumerable<string>)[_memberId, .. _state.MergedFrom])
        {
            // The survivor's ledger shows the merged histories too.
            await _services.Store.AnonymiseAsync(_programId, member, CancellationToken.None);
        }
        var owner = new ReferralOwner(_programId, _memberId);
        for (int salt = 0; salt < CodeAttemptsMax; salt++)
        {
            await GrainFactory.GetGrain<IReferralCodeGrain>(ReferralCodes.Key(_programId, ReferralCodes.For(_programId, _memberId, salt))).Release(owner);
        }

        _profile = null;
        ReferralCode = null;
        if (!await RewriteSnapshotAsync())
        {
            return MemberResult.Reject(LoyaltyError.Unavailable,
                $"member '{_memberId}' is erased, but its stored snapshot could not be written again without the erased data yet; repeat the erasure to finish");
        }

        // The accounts merged into this one were the same person's, and keep what it gave them
        // (profile, flags, cause, birth month): each is erased too, with an entry (and event) of its
        // own. The list holds every account merged in, through earlier merges too.
        foreach (string duplicate in _state.MergedFrom)
        {
            if ((await OtherMember(duplicate).Erase(reason)) is { Error: not LoyaltyError.None } failed)
            {
                return failed;
            }
        }

        return result;
    }

    /// <summary>How many times an erasure tries to write the member's snapshot again before it answers that it could not.</summary>
    private const int SnapshotRewriteAttemptsMax = 5;

    /// <summary>How long the erasure's rewrite waits after a failed attempt, times the attempts made.</summary>
    private static readonly TimeSpan SnapshotRewriteBackoff = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// Writes the snapshot again from the erased state: the stored one may hold what the erasure
    /// took out of the state (flags, the chosen cause, the birth month, a merge's reason), and a
    /// member that changes little after its erasure would not replace it for a long time. False
    /// when no attempt wrote it (a change in flight each time, a conflict, the store failing): the
    /// erasure is then not answered as done.
    /// </summary>
    private async Task<bool> RewriteSnapshotAsync()
    {
        for (int attempt = 0; attempt < SnapshotRewriteAttemptsMax; attempt++)
        {
            try
            {
                await SettleForReadAsync();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // The member cannot be settled now (a reload failed): the erasure is answered as not finished.
                return false;
            }

            if (_snapshotWrite is { } running)
            {
                // One copied before the erasure was applied may still be on its way: this one lands after it.
                await running;
            }

            if (_valid && _inFlight == 0 && !_snapshotting && await StartSnapshotWrite())
            {
                return true;
            }

            if (attempt + 1 < SnapshotRewriteAttemptsMax)
            {
                await Task.Delay(SnapshotRewriteBackoff * (attempt + 1));
            }
        }

        return false;
    }

    /// <inheritdoc />
    public async Task<MemberResult> MergeFrom(string duplicateId, string reason)
    {
        string? error = LoyaltyIds.Check(duplicateId, "duplicate_member_id")
            ?? (duplicateId == _memberId ? "a member cannot be merged into itself" : null)
            ?? FreeText.Check(reason, "reason", Limits.ReasonLengthMax);
        if (error is not null)
        {
            return MemberResult.Reject(LoyaltyError.InvalidArgument, error);
        }

        if (!await TryEnsureLoadedAsync())
        {
            return MemberResult.Reject(LoyaltyError.Unavailable, NotLoaded);
        }

        // A merge recorded before this member closed goes to the desk all the same: its links may be owed.
        if (Closed() is { } closed && !_state.MergedFrom.Contains(duplicateId))
        {
            return closed;
        }

        // A merge touches two members (and their referral links): it is made at the program's desk, one at a time.
        return await CallBackAwaitedAsync(GrainFactory.GetGrain<IProgramLinksGrain>(_programId).Merge(_memberId, duplicateId, reason));
    }

    /// <inheritdoc />
    async Task<MemberResult> IMemberLinkSteps.MergeDuplicate(string duplicateId, string reason)
    {
        long epoch = SeeDeskEpoch();
        if (duplicateId == _memberId)
        {
            // Also refused by MergeFrom; here because the desk's completion of a cut-short merge comes this way too.
            return MemberResult.Reject(LoyaltyError.InvalidArgument, "a member cannot be merged into itself");
        }

        if (!await TryEnsureLoadedAsync())
        {
            return MemberResult.Reject(LoyaltyError.Unavailable, NotLoaded);
        }

        if (Closed() is { } closed)
        {
            // A merge recorded here and cut short before its links moved, then this member was
            // erased or merged on: the duplicate's links still go to whoever holds the account now.
            if (_state.MergedFrom.Contains(duplicateId)
                && (await HolderOfAsync(_memberId, _state.MergedInto) is not { } holder || !await RepointLinksAsync(duplicateId, null, holder)))
            {
                return LinksNotMoved(duplicateId);
            }

            if (_state.MergedFrom.Contains(duplicateId))
            {
                // Taken in before this member closed, its links moved now: the merge is over (the
                // answer still says why this account takes no changes: its points are elsewhere).
                await SettleMergeAsync(duplicateId, null, HoldPass.None);
            }

            return closed;
        }

        if (!_state.MergedFrom.Contains(duplicateId) && await RefuseMergeAsync(duplicateId) is { } refused)
        {
            // A merge started and cut short whose duplicate can no longer be taken in ends here.
            await SettleMergeAsync(duplicateId, refused, HoldPass.None);
            return refused;
        }

        TakenIn taken = await WhileHeldAsync(
            HoldPass.None,
            () => Closed() is { } closedMeanwhile ? new TakenIn(null, closedMeanwhile) : null,
            () => TakeInAsync(duplicateId, reason, epoch));
        if (taken.Result.Error == LoyaltyError.None && !await RepointLinksAsync(duplicateId, taken.Transfer, _memberId))
        {
            return LinksNotMoved(duplicateId);
        }

        if (taken.Result.Error == LoyaltyError.None)
        {
            // The merge is over. Answered as done even when this note fails: the due schedule has
            // the desk complete the merge again (every step of it is done already) and write it.
            await SettleMergeAsync(duplicateId, null, HoldPass.None);
        }

        return taken.Result;
    }

    /// <inheritdoc />
    async Task IMemberLinkSteps.AbandonMerge(string duplicateId, string why)
    {
        long epoch = SeeDeskEpoch();
        if (await TryEnsureLoadedAsync() && _state.AwaitsOpenMerge && _state.MergingFrom == duplicateId)
        {
            await SettleMergeAsync(duplicateId, MemberResult.Reject(LoyaltyError.FailedPrecondition, why), HoldPass.None, epoch);
        }
    }

    /// <summary>
    /// Ends the open merge of <paramref name="duplicateId"/> (see <see cref="MemberState.MergingFrom"/>):
    /// taken in when <paramref name="refused"/> is null, abandoned when the duplicate refused for
    /// good (an UNAVAILABLE leaves it open, for the due schedule to try again). A failure here is
    /// left to the due schedule too, which completes the merge again and writes the note. An
    /// abandonment the desk asked for is written under its <paramref name="deskEpoch"/>.
    /// </summary>
    private async Task SettleMergeAsync(string duplicateId, MemberResult? refused, HoldPass passes, long deskEpoch = 0)
    {
        if (_state.MergingFrom != duplicateId || refused?.Error is LoyaltyError.Unavailable or LoyaltyError.None)
        {
            return;
        }

        string? because = refused is null ? null : refused.ErrorMessage ?? refused.Error.ToString();
        try
        {
            // Abandoned only when the duplicate's ledger shows it never let go here: its refusal may
            // come from an activation that has not seen its own hand-over (Orleans may run two).
            if (refused is not null && (await LinkSteps(duplicateId).GetLinks()).MergedInto == _memberId)
            {
                return;
            }

            await WriteNoteAsync(d => LifecycleDecision.MergeSettle(d, duplicateId, because), passes, deskEpoch);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Left open: see above.
        }
    }

    /// <summary>
    /// The merge's two writes, with this member's other changes held (see <see cref="WhileHeldAsync"/>):
    /// the duplicate lets go first, so that its points never exist twice, and only if this member
    /// has room for them; then they arrive here. If this member fails after the duplicate let go,
    /// asking again fetches the same transfer.
    /// </summary>
    private async Task<TakenIn> TakeInAsync(string duplicateId, string reason, long deskEpoch)
    {
        MergeTransfer? transfer = null;
        if (!_state.MergedFrom.Contains(duplicateId))
        {
            // Room for the transfer, and for this merge's two notes.
            long room = Headroom.Room(_state) - MergeNotesRoom;
            if (_state.MergingFrom != duplicateId && await OtherMember(duplicateId).CheckDetach(_memberId, room) is ({ } checkError and not LoyaltyError.None, var why))
            {
                // Refused for the duplicate's reasons before anything is written here.
                return new TakenIn(null, MemberResult.Reject(checkError, why ?? $"member '{duplicateId}' could not be merged"));
            }

            // The intent first: once the duplicate has let go, this member knows the merge is open
            // whatever happens next, and its due schedule completes it (see MemberState.MergingFrom).
            // Under the desk's epoch, as is the duplicate's letting go: once it has let go, the
            // merge is completed whatever desk asks, so the writes after it are not refused.
            MemberResult started = await WriteNoteAsync(d => LifecycleDecision.MergeStart(d, duplicateId, reason), HoldPass.Own, deskEpoch);
            if (started.Error != LoyaltyError.None)
            {
                return new TakenIn(null, started);
            }

            // Nothing of this member decides while the merge runs, so this room is still there when
            // the transfer arrives.
            (MergeTransfer? t, LoyaltyError detachError, string? message) = await OtherMember(duplicateId).Detach(_memberId, room);
            if (t is null)
            {
                MemberResult refused = MemberResult.Reject(detachError, message ?? $"member '{duplicateId}' could not be merged");
                await SettleMergeAsync(duplicateId, refused, HoldPass.Own);
                return new TakenIn(null, refused);
            }

            transfer = t;
        }

        // The duplicate's tier may be named under a newer program than this silo's copy (a rename
        // moments ago): then it is read fresh, so that the merge does not take it for the entry tier.
        await _services.Programs.GetKnowingAsync(_programId, transfer?.Tier);

        // A merge completed later (by the due schedule, or a repeat) keeps the reason it was asked for with.
        string asked = _state.MergingFrom == duplicateId && _state.MergingReason is { } kept ? kept : reason;
        ProgramConfig? current = null;
        MemberResult result = await HeldWriteAsync(() => WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                current = program;
                return LifecycleDecision.MergeIn(At(program, now), duplicateId, transfer, asked)
                    .Staged(out entry, MemberResult.Reject, () => new MemberResult(View(program), LoyaltyError.None, null));
            },
            (_, _, _) => new MemberResult(View(current), LoyaltyError.None, null),
            _ => Task.FromResult<MemberResult?>(null),
            MemberResult.Reject,
            HoldPass.Own));
        return new TakenIn(transfer, result);
    }

    /// <summary>
    /// Why the duplicate cannot be merged here, checked before it lets go so that a refusal strands
    /// nothing (the desk runs one merge at a time, so the counts cannot change before the merge is
    /// recorded); null when it can. A duplicate that already let go to this member is always taken
    /// in: refusing it then would strand its points.
    /// </summary>
    private async Task<MemberResult?> RefuseMergeAsync(string duplicateId)
    {
        MemberView? duplicate = await OtherMember(duplicateId).Get();
        if (duplicate is null || duplicate.MergedInto == _memberId)
        {
            return null;
        }

        // Decided on this member as committed: a referral applied here and still committing, which
        // may fail, must not abandon the merge for good.
        ProgramConfig? program = await _services.Programs.GetAsync(_programId);
        if (!await TrySettleForReadAsync())
        {
            // Left open (an UNAVAILABLE refusal), for the due schedule to complete.
            return MemberResult.Reject(LoyaltyError.Unavailable, NotLoaded);
        }

        return program is not null
            && LifecycleDecision.MergeLimits(At(program, MemberNow()), duplicate.MergedFrom?.Count ?? 0, duplicate.Referrals) is { } refused
            ? MemberResult.Reject(refused.Error, refused.Message!)
            : null;
    }

    /// <inheritdoc />
    public async Task<(MergeTransfer? Transfer, LoyaltyError Error, string? Message)> Detach(string survivorId, long survivorRoom)
    {
        long epoch = SeeDeskEpoch();
        if (survivorId == _memberId)
        {
            return (null, LoyaltyError.InvalidArgument, "a member cannot be merged into itself");
        }

        // Each pass writes either the detach or a write-off of points that expired before it; a
        // lot can expire between two passes, so the detach is decided again after each write-off.
        for (int pass = 1; ; pass++)
        {
            DetachOutcome outcome = await WriteAsync(
                prefetch: null,
                (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
                    LifecycleDecision.Detach(At(program, now), survivorId, survivorRoom)
                        .Staged(out entry, (e, m) => new DetachOutcome(null, e, m), () => new DetachOutcome(_state.Detached, LoyaltyError.None, null)),
                (entry, _, _) => entry.Kind == LedgerEntryKind.Expire ? DetachOutcome.Again
                    : new DetachOutcome(entry.DetailsAs<MergedAwayDetails>()!.Merge, LoyaltyError.None, null),
                _ => Task.FromResult<DetachOutcome?>(null),
                (e, m) => new DetachOutcome(null, e, m),
                deskEpoch: epoch);
            if (!ReferenceEquals(outcome, DetachOutcome.Again))
            {
                return (outcome.Transfer, outcome.Error, outcome.Message);
            }

            if (pass == DetachWriteOffsMax)
            {
                return (null, LoyaltyError.Unavailable, $"member '{_memberId}' had points expire {pass} times while it was being merged; their expiry is recorded, the merge is not: retry");
            }
        }
    }

    /// <inheritdoc />
    public async Task<(LoyaltyError Error, string? Message)> CheckDetach(string survivorId, long survivorRoom)
    {
        SeeDeskEpoch();
        if (!await TryEnsureLoadedAsync())
        {
            return (LoyaltyError.Unavailable, NotLoaded);
        }

        // The program first: the check is decided on the member as caught up, with no await between.
        if (await _services.Programs.GetAsync(_programId) is not { } program)
        {
            return (LoyaltyError.NotFound, $"program '{_programId}' not found");
        }

        await CatchUpAsync();
        // A write-off of expired points is a step of the detach, not a refusal.
        Decision decision = LifecycleDecision.Detach(At(program, MemberNow()), survivorId, survivorRoom);
        return decision.Refused ? (decision.Error, decision.Message) : (LoyaltyError.None, null);
    }

    /// <summary>The survivor's room a merge keeps for its own two notes (<see cref="LedgerEntryKind.MergeStarted"/> and <see cref="LedgerEntryKind.MergeSettled"/>).</summary>
    private const long MergeNotesRoom = 2;

    /// <inheritdoc />
    public async Task<LoyaltyError> Repoint(string fromId, string toId)
    {
        return (await WriteNoteAsync(d => LifecycleDecision.Repoint(d, fromId, toId))).Error;
    }

    /// <summary>
    /// The member that holds <paramref name="memberId"/>'s account now: itself, or (merged away
    /// into <paramref name="mergedInto"/>) the last survivor of the chain of merges that took it in;
    /// null when the chain is longer than can be followed. Merges made at the desk cannot form a
    /// loop (a member merged away takes no merge), so the chain ends.
    /// </summary>
    private async Task<string?> HolderOfAsync(string memberId, string? mergedInto)
    {
        string holder = memberId;
        string? next = mergedInto;
        for (int hop = 0; next is not null; hop++)
        {
            if (hop == MergeChainFollowedMax)
            {
                return null;
            }

            holder = next;
            next = (await LinkSteps(next).GetLinks()).MergedInto;
        }

        return holder;
    }

    /// <summary>
    /// Points the duplicate's referrer and the members it referred at <paramref name="holder"/> (the
    /// survivor, or who holds its account now); idempotent, repeated by a repeated merge. False
    /// when a linked member could not be changed now (it answered UNAVAILABLE): the merge answers
    /// so, and its repetition finishes the links. The referrer's list is moved when the holder is
    /// referred by it (inherited from the duplicate, or handed on by a later merge).
    /// </summary>
    private async Task<bool> RepointLinksAsync(string duplicateId, MergeTransfer? transfer, string holder)
    {
        // Repeated, the detach answers the transfer it recorded whatever the room: nothing moves.
        MergeTransfer? moved = transfer;
        if (moved is null)
        {
            (moved, LoyaltyError detached, _) = await OtherMember(duplicateId).Detach(_memberId, Headroom.VolumeMax);
            if (moved is null)
            {
                return detached != LoyaltyError.Unavailable;
            }
        }

        IEnumerable<string> linked = moved.Referrals;
        if (moved.ReferredBy is { } referrer
            && (holder == _memberId ? _state.Referral.ReferredBy : (await LinkSteps(holder).GetLinks()).ReferredBy) == referrer)
        {
            linked = linked.Append(referrer);
        }

        bool done = true;
        // (A survivor the duplicate referred keeps that link, naming the duplicate; nobody is rewarded for it.)
        foreach (string member in linked.Where(m => m != _memberId && m != holder))
        {
            LoyaltyError error = await OtherMember(member).Repoint(duplicateId, holder);
            if (error != LoyaltyError.None)
            {
                // A merge can be repeated at will: within the silo's budget of such lines.
                if (_services.Warnings.TryTake(out long leftOut))
                {
                    LogReferralLinkFailed(_services.Logger, _programId, member, duplicateId, holder, error, leftOut);
                }

                done &= error != LoyaltyError.Unavailable;
            }
        }

        return done;
    }

    /// <summary>The answer of a merge recorded whose referral links could not all be moved yet.</summary>
    private MemberResult LinksNotMoved(string duplicateId) => MemberResult.Reject(LoyaltyError.Unavailable,
        $"'{duplicateId}' was merged into '{_memberId}', but not every referral link naming it could be moved yet; repeat the merge to finish");

    /// <summary>A refusal when the member takes no more changes: not enrolled, erased, or merged away.</summary>
    private MemberResult? Closed() =>
        Decider.ClosedFor(_programId, _memberId, _state) is { } closed ? MemberResult.Reject(closed.Error, closed.Message!) : null;

    /// <summary>The answer of a detach.</summary>
    private sealed record DetachOutcome(MergeTransfer? Transfer, LoyaltyError Error, string? Message)
    {
        /// <summary>Points past their expiry were written off: decide the detach again.</summary>
        public static readonly DetachOutcome Again = new(null, LoyaltyError.None, null);
    }

    /// <summary>How a merge's writes went: the transfer taken in (null when none moved) and the answer.</summary>
    private sealed record TakenIn(MergeTransfer? Transfer, MemberResult Result);
}
