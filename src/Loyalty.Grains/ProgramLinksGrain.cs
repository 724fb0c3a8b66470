using Loyalty.Storage;

namespace Loyalty.Grains;

/// <summary>
/// The desk through which every change that touches two members of a program passes: referral
/// links (at enrolment and later) and merges. It is an ordinary, non-reentrant grain, one per
/// program, and Orleans keeps one activation of it in the cluster, so these changes run one at
/// a time whichever silo their members live on. A check made on one member (is there a cycle
/// above the referrer? is the survivor still open?) and the writes on the others can then never
/// interleave with an opposite request: two members cannot refer each other, and two opposite
/// merges cannot both detach their duplicates.
/// </summary>
/// <remarks>
/// Why a desk and not locks on members: a lock per member would need an order, timeouts and a
/// durable owner to survive a crash; the desk needs none, because the state stays where it was,
/// in the members' ledgers, and every step it takes is idempotent. A change cut short by a crash
/// is completed by repeating it, or by the members' due schedules: a referral link not known to
/// be written at both ends is checked, and a merge the survivor recorded as started
/// (<see cref="MemberLinks.MergingFrom"/>) is completed, a minute later (longer after each failure). A merge left
/// half-done is also completed here before any later merge of either member. Such changes
/// are rare next to purchases, which never pass here, so one at a time per program costs little.
/// <para>
/// Orleans keeps one activation "for the most part": during membership changes, or with a node
/// that sees a different membership, two may run for a while. So each change also holds the
/// program's lock in the database (<see cref="ILedgerStore.LockAsync"/>), and reads every member
/// as the ledger has it: two desks then still make their changes one after the other, each
/// seeing the other's.
/// </para>
/// <para>
/// The lock is held for as long as a member's step runs: the calls to the steps wait up to
/// <see cref="Limits.TwoMemberStepTimeout"/>, not Orleans' 30 s, since a call that gave up would
/// release the lock while its step went on, and let an opposite request pass the check it made.
/// A desk whose engine dies releases the lock all the same, with its step still running on
/// another engine: so each change runs under the lock's epoch (<see cref="DeskEpoch"/>), and a
/// member refuses the writes of a step older than a desk it has already answered.
/// </para>
/// </remarks>
public sealed class ProgramLinksGrain(ILedgerStore store) : Grain, IProgramLinksGrain
{
    /// <inheritdoc />
    public Task<EnrolmentResult> Enrol(Enrolment enrolment) => AtDeskAsync(async () =>
    {
        EnrolmentResult result = await Steps(enrolment.MemberId).EnrolReferred(enrolment);
        if (enrolment.ReferredBy is { } referrer && result.Error != LoyaltyError.Unavailable)
        {
            await TrySettleLinkAsync(referrer, enrolment.MemberId, changeEnded: true);
        }

        return result;
    });

    /// <inheritdoc />
    public Task<MemberResult> SetReferrer(string memberId, string referrerId) => AtDeskAsync(async () =>
    {
        // A merge into the member started and cut short ends first: the purchases it brings decide
        // whether the member may still be referred, and the referrer it may bring whether it has
        // one (while it cannot end, the member refuses the link). A merge into the referrer needs
        // no completion: the cycle check follows the referrer it will bring (ReferralChains).
        await TryCompleteOpenMergeAsync(memberId);
        MemberResult result = await Steps(memberId).LinkReferrer(referrerId);
        if (result.Error != LoyaltyError.Unavailable)
        {
            await TrySettleLinkAsync(referrerId, memberId, changeEnded: true);
        }

        return result;
    });

    /// <inheritdoc />
    public Task<LoyaltyError> CheckReferralLinks(string referrerId) => AtDeskAsync(async () =>
    {
        LoyaltyError failed = LoyaltyError.None;
        foreach (string referred in (await Steps(referrerId).GetLinks()).Unconfirmed ?? [])
        {
            // One referred member that cannot be read now does not hold up the others' checks.
            LoyaltyError error = await TrySettleLinkAsync(referrerId, referred, changeEnded: false);
            failed = error == LoyaltyError.None ? failed : error;
        }

        return failed;
    });

    /// <summary>
    /// <see cref="SettleLinkAsync"/>, with a call that throws answered UNAVAILABLE: the link stays
    /// unconfirmed, and the referrer's due schedule has it checked again. After a change, it is
    /// called once the change answered anything but UNAVAILABLE: the referred member's side is then
    /// written, or will never be by that change (after UNAVAILABLE a commit's outcome may still be
    /// open, and the check a minute later, <see cref="CheckReferralLinks"/>, settles it); the
    /// change's own answer stands whatever this one is.
    /// </summary>
    private async Task<LoyaltyError> TrySettleLinkAsync(string referrerId, string referredId, bool changeEnded)
    {
        try
        {
            return await SettleLinkAsync(referrerId, referredId, changeEnded);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return LoyaltyError.Unavailable;
        }
    }

    /// <summary>
    /// The referrer's unconfirmed link to <paramref name="referredId"/> stands when the referred
    /// member's ledger names the referrer (or a member merged into it, whose link a merge's
    /// re-pointing moves there), and is withdrawn otherwise. Called with the program's lock held,
    /// so no change that could still write the referred side is running; see
    /// <see cref="IMemberLinkSteps.SettleReferralLink"/> for <paramref name="changeEnded"/>.
    /// </summary>
    private async Task<LoyaltyError> SettleLinkAsync(string referrerId, string referredId, bool changeEnded)
    {
        bool stands = await Member(referredId).GetReferrer() == referrerId;
        return (await Steps(referrerId).SettleReferralLink(referredId, stands, changeEnded)).Error;
    }

    /// <inheritdoc />
    public Task<LoyaltyError> CompleteMerge(string survivorId) => AtDeskAsync(() => CompleteOpenMergeAsync(survivorId));

    /// <summary><see cref="CompleteOpenMergeAsync"/>, with a call that throws answered UNAVAILABLE.</summary>
    private async Task<LoyaltyError> TryCompleteOpenMergeAsync(string survivorId)
    {
        try
        {
            return await CompleteOpenMergeAsync(survivorId);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return LoyaltyError.Unavailable;
        }
    }

    /// <summary>
    /// Completes the merge into <paramref name="survivorId"/> that was started and is still open
    /// (see <see cref="MemberLinks.MergingFrom"/>): the survivor takes the duplicate in, or
    /// abandons the merge when the duplicate refuses for good. None once no merge is open there.
    /// </summary>
    private async Task<LoyaltyError> CompleteOpenMergeAsync(string survivorId)
    {
        if ((await Steps(survivorId).GetLinks()).MergingFrom is not { } duplicate)
        {
            return LoyaltyError.None;
        }

        // Checked again while the duplicate has not let go: since the merge was checked, links
        // may have been made that its re-pointing would close into a cycle (the survivor linked
        // under a member the duplicate referred). Such a merge is abandoned, naming the cycle.
        MemberView? held = await Steps(duplicate).GetCommitted();
        if (held?.MergedInto != survivorId && await MergeCycleAsync(survivorId, duplicate, held) is { } why)
        {
            await Steps(survivorId).AbandonMerge(duplicate, $"merging '{duplicate}' into '{survivorId}' {why}");
            return (await Steps(survivorId).GetLinks()).MergingFrom is null ? LoyaltyError.None : LoyaltyError.Unavailable;
        }

        await Steps(survivorId).MergeDuplicate(duplicate, $"completes the merge of '{duplicate}' into '{survivorId}'");
        return (await Steps(survivorId).GetLinks()).MergingFrom is null ? LoyaltyError.None : LoyaltyError.Unavailable;
    }

    /// <inheritdoc />
    public Task<MemberResult> Merge(string survivorId, string duplicateId, string reason) => AtDeskAsync(async () =>
    {
        // Merges started and cut short, into either member, end first: one open at a time each.
        // One that cannot end now is refused by the steps below, naming it.
        await TryCompleteOpenMergeAsync(survivorId);
        await TryCompleteOpenMergeAsync(duplicateId);
        await CompletePendingMergeAsync(survivorId, (await Steps(survivorId).GetLinks()).MergedInto);
        MemberView? duplicate = await Steps(duplicateId).GetCommitted();
        if (duplicate?.MergedInto == survivorId)
        {
            // This merge made before, or cut short: finished (once) and answered again as it was, not checked again.
            return await Steps(survivorId).MergeDuplicate(duplicateId, reason);
        }

        if (duplicate?.MergedInto is { } elsewhere)
        {
            // Refused for what it is, before checks that would read the closed account's old links.
            await CompletePendingMergeAsync(duplicateId, elsewhere);
            return MemberResult.Reject(LoyaltyError.FailedPrecondition, $"member '{duplicateId}' was already merged into '{elsewhere}'");
        }

        if (duplicate?.Erased == true)
        {
            return MemberResult.Reject(LoyaltyError.FailedPrecondition, $"member '{duplicateId}' was erased");
        }

        if (await MergeCycleAsync(survivorId, duplicateId, duplicate) is { } why)
        {
            return MemberResult.Reject(LoyaltyError.FailedPrecondition, $"merging '{duplicateId}' into '{survivorId}' {why}");
        }

        return await Steps(survivorId).MergeDuplicate(duplicateId, reason);
    });

    /// <summary>
    /// When <paramref name="memberId"/> was detached into <paramref name="survivor"/> (its ledger's
    /// <c>merged_into</c>), finishes that merge if it was cut short; the survivor answers at once
    /// when it already took the member in.
    /// </summary>
    private async Task CompletePendingMergeAsync(string memberId, string? survivor)
    {
        if (survivor is not null)
        {
            await Steps(survivor).MergeDuplicate(memberId, $"completes the merge of '{memberId}' into '{survivor}'");
        }
    }

    /// <summary>
    /// Why the merge would leave the referral graph unsound, or null: the cycle it would close, or a
    /// chain above the survivor too long to follow. After the merge the survivor keeps its referrer
    /// (or takes the duplicate's), and whoever the duplicate referred is re-pointed at the survivor:
    /// a cycle forms when the chain above the survivor's referrer, read with that re-pointing,
    /// comes back to the survivor. A chain not followed to its end is refused as a link is (a cycle
    /// could lie beyond it), rather than taken as having none.
    /// </summary>
    private async Task<string?> MergeCycleAsync(string survivorId, string duplicateId, MemberView? duplicate)
    {
        // The survivor takes over the duplicate's referrer only when its ledger names none (a link
        // that now leads back to itself, through a merge, still counts as one).
        string? referrer = await Member(survivorId).GetReferrer();
        if ((await Steps(survivorId).GetLinks()).ReferredBy is null
            && await Member(duplicateId).GetReferrer() is { } inherited && inherited != survivorId)
        {
            referrer = inherited;
        }
        else if (referrer is not null && duplicate?.Referrals.Count is null or 0)
        {
            // The survivor keeps its referrer and nobody is re-pointed: the chain above it stays as it is.
            return null;
        }

        // A survivor referred by the duplicate itself keeps that link (nobody is rewarded for it).
        if (referrer is null || referrer == duplicateId)
        {
            return null;
        }

        var chain = new List<string> { survivorId };
        string? at = referrer;
        for (int depth = 0; depth < Limits.ReferralChainDepthMax && at is not null; depth++)
        {
            if (at != survivorId && chain.Contains(at))
            {
                // Links made before the desk existed may already loop; say so rather than "too long".
                return $"cannot be checked for a referral cycle: the chain above '{survivorId}' already loops through '{at}'";
            }

            chain.Add(at);
            if (at == survivorId)
            {
                return "would close a referral cycle: " + string.Join(" ← ", chain);
            }

            string? above = await ReferralChains.ReferrerAboveAsync(GrainFactory, this.GetPrimaryKeyString(), at);
            at = above == duplicateId ? survivorId : above;
        }

        return at is null ? null : $"cannot be checked for a referral cycle: the referral chain above '{survivorId}' is longer than {Limits.ReferralChainDepthMax}";
    }

    /// <summary>
    /// Runs <paramref name="change"/> holding the program's lock for changes touching two members,
    /// across engines, under the hold's epoch (<see cref="DeskEpoch"/>). The epoch is entered here,
    /// in the flow the change runs in (a value set in an awaited method does not come back to its
    /// caller), so every step the change calls carries it.
    /// </summary>
    private async Task<T> AtDeskAsync<T>(Func<Task<T>> change)
    {
        string programId = this.GetPrimaryKeyString();
        await using HeldLock held = await store.LockAsync(DeskEpoch.LockName(programId), CancellationToken.None);
        DeskEpoch.Enter(programId, held.Epoch);
        return await change();
    }

    private IMemberLinkSteps Steps(string memberId) =>
        GrainFactory.GetGrain<IMemberLinkSteps>(LoyaltyIds.MemberKey(this.GetPrimaryKeyString(), memberId));

    private IMemberGrain Member(string memberId) =>
        GrainFactory.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(this.GetPrimaryKeyString(), memberId));
}
