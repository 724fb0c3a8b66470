using System.Text.Json;

namespace Loyalty.Grains;

/// <summary>
/// The member lifecycle: profile fields, erasure of personal data, and the merge of a duplicate
/// account. Personal fields live outside the append-only ledger (in <c>member_profiles</c>), so
/// erasing them never touches the amounts program accounting needs.
/// </summary>
public sealed partial class MemberGrain
{

    private IReadOnlyDictionary<string, string>? _profile;

    /// <inheritdoc />
    public async Task<MemberResult> SetProfile(IReadOnlyDictionary<string, string> fields)
    {
        if (Profiles.Check(fields) is { } error)
        {
            return MemberResult.Reject(LoyaltyError.InvalidArgument, error);
        }

        if (!await TryEnsureLoadedAsync())
        {
            return MemberResult.Reject(LoyaltyError.Unavailable, NotLoaded);
        }

        if (Closed() is { } closed)
        {
            return closed;
        }

        // The ledger's note first (field names only, never values), then the personal data. An
        // erasure that commits in between is seen afterwards, and the data is deleted again.
        var copy = new SortedDictionary<string, string>(fields.ToDictionary(), StringComparer.Ordinal);
        ProgramConfig? current = null;
        MemberResult result = await WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                entry = null;
                current = program;
                if (Closed() is { } refused)
                {
                    return refused;
                }

                entry = NewEntry(LedgerEntryKind.Profile, Points.Zero, null, 0, now, program) with
                {
                    // The birthday's month only, for the due schedule; the date itself stays in the profile.
                    Details = new EntryDetails { ProfileFields = [.. copy.Keys], BirthMonth = Profiles.BirthMonthOf(copy.GetValueOrDefault(Profiles.BirthdayField)) },
                };
                return null;
            },
            (_, _, _) => new MemberResult(null, LoyaltyError.None, null),
            _ => Task.FromResult<MemberResult?>(null),
            MemberResult.Reject);
        if (result.Error != LoyaltyError.None)
        {
            return result;
        }

        await _store.WriteProfileAsync(_programId, _memberId, copy.Count == 0 ? null : JsonSerializer.Serialize(copy), _clock.GetUtcNow(), CancellationToken.None);
        if (_state.Erased)
        {
            await _store.WriteProfileAsync(_programId, _memberId, null, _clock.GetUtcNow(), CancellationToken.None);
            return Closed()!;
        }

        _profile = copy;
        return new MemberResult(View(current), LoyaltyError.None, null);
    }

    /// <inheritdoc />
    public async Task<MemberResult> Erase(string reason)
    {
        if (FreeText.Check(reason, "reason", Limits.ReasonLengthMax) is { } reasonError)
        {
            return MemberResult.Reject(LoyaltyError.InvalidArgument, reasonError);
        }

        ProgramConfig? current = null;
        MemberResult result = await WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                entry = null;
                current = program;
                if (!_state.Enrolled)
                {
                    return MemberResult.Reject(LoyaltyError.NotFound, NotEnrolledMessage());
                }

                if (_state.Erased)
                {
                    return new MemberResult(View(program), LoyaltyError.None, null);
                }

                entry = NewEntry(LedgerEntryKind.Erase, Points.Zero, null, 0, now, program) with { Reason = reason };
                return null;
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
        await _store.WriteProfileAsync(_programId, _memberId, null, _clock.GetUtcNow(), CancellationToken.None);
        foreach (string member in (IEnumerable<string>)[_memberId, .. _state.MergedFrom])
        {
            // The survivor's ledger shows the merged histories too.
            await _store.AnonymiseAsync(_programId, member, CancellationToken.None);
        }
        var owner = new ReferralOwner(_programId, _memberId);
        for (int salt = 0; salt < CodeAttemptsMax; salt++)
        {
            await GrainFactory.GetGrain<IReferralCodeGrain>(ReferralCodes.For(_programId, _memberId, salt)).Release(owner);
        }

        _profile = null;
        _referralCode = null;
        return result;
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

        if (Closed() is { } closed)
        {
            return closed;
        }

        // A merge touches two members (and their referral links): it is made at the program's desk, one at a time.
        return await GrainFactory.GetGrain<IProgramLinksGrain>(_programId).Merge(_memberId, duplicateId, reason);
    }

    /// <inheritdoc />
    async Task<MemberResult> IMemberLinkSteps.MergeDuplicate(string duplicateId, string reason)
    {
        if (!await TryEnsureLoadedAsync())
        {
            return MemberResult.Reject(LoyaltyError.Unavailable, NotLoaded);
        }

        if (Closed() is { } closed)
        {
            return closed;
        }

        MergeTransfer? transfer = null;
        if (!_state.MergedFrom.Contains(duplicateId))
        {
            if (await RefuseMergeAsync(duplicateId) is { } refused)
            {
                return refused;
            }

            // The duplicate lets go first: its points leave it before they arrive here, so they never
            // exist twice. If this member fails after that, asking again fetches the same transfer.
            (MergeTransfer? t, LoyaltyError detachError, string? message) = await ReferrerGrain(duplicateId).Detach(_memberId);
            if (t is null)
            {
                return MemberResult.Reject(detachError, message ?? $"member '{duplicateId}' could not be merged");
            }

            transfer = t;
        }

        ProgramConfig? current = null;
        MemberResult result = await WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                current = program;
                return StageMergeIn(duplicateId, transfer, reason, program, now, out entry);
            },
            (_, _, _) => new MemberResult(View(current), LoyaltyError.None, null),
            _ => Task.FromResult<MemberResult?>(null),
            MemberResult.Reject);
        if (result.Error == LoyaltyError.None)
        {
            await RepointLinksAsync(duplicateId, transfer);
        }

        return result;
    }

    /// <summary>
    /// Why the duplicate cannot be merged here, checked before it lets go so that a refusal strands
    /// nothing (the desk runs one merge at a time, so the counts cannot change before the merge is
    /// recorded); null when it can. A duplicate that already let go to this member is always taken
    /// in: refusing it then would strand its points.
    /// </summary>
    private async Task<MemberResult?> RefuseMergeAsync(string duplicateId)
    {
        MemberView? duplicate = await ReferrerGrain(duplicateId).Get();
        if (duplicate is null || duplicate.MergedInto == _memberId)
        {
            return null;
        }

        int mergesAfter = _state.MergedFrom.Count + 1 + (duplicate.MergedFrom?.Count ?? 0);
        if (mergesAfter > Limits.MergesPerMemberMax)
        {
            return MemberResult.Reject(LoyaltyError.FailedPrecondition,
                $"member '{_memberId}' would hold the histories of {mergesAfter} merged accounts, more than the {Limits.MergesPerMemberMax} one member may");
        }

        int referralsAfter = _state.Referral.Referrals.Count + duplicate.Referrals.Count(r => !_state.Referral.Referrals.Contains(r));
        return referralsAfter > Limits.ReferralsPerMemberMax
            ? MemberResult.Reject(LoyaltyError.FailedPrecondition,
                $"member '{_memberId}' would have {referralsAfter} referrals, more than the {Limits.ReferralsPerMemberMax} one member may")
            : null;
    }

    /// <inheritdoc />
    public async Task<(MergeTransfer? Transfer, LoyaltyError Error, string? Message)> Detach(string survivorId)
    {
        DetachOutcome outcome = await WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) => StageDetach(survivorId, program, now, out entry),
            (entry, _, _) => new DetachOutcome(entry.Details!.Merge, LoyaltyError.None, null),
            _ => Task.FromResult<DetachOutcome?>(null),
            (e, m) => new DetachOutcome(null, e, m));
        return (outcome.Transfer, outcome.Error, outcome.Message);
    }

    /// <inheritdoc />
    public async Task<LoyaltyError> Repoint(string fromId, string toId)
    {
        MemberResult result = await WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
            {
                entry = null;
                if (!_state.Enrolled)
                {
                    return MemberResult.Reject(LoyaltyError.NotFound, NotEnrolledMessage());
                }

                if (_state.Referral.ReferredBy != fromId && !_state.Referral.Referrals.Contains(fromId))
                {
                    return new MemberResult(null, LoyaltyError.None, null);
                }

                entry = NewEntry(LedgerEntryKind.Repointed, Points.Zero, null, 0, now, program) with
                {
                    Reference = toId,
                    Details = new EntryDetails { ReplacedMember = fromId },
                };
                return null;
            },
            (_, _, _) => new MemberResult(null, LoyaltyError.None, null),
            _ => Task.FromResult<MemberResult?>(null),
            MemberResult.Reject);
        return result.Error;
    }

    private DetachOutcome? StageDetach(string survivorId, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        if (!_state.Enrolled)
        {
            return new DetachOutcome(null, LoyaltyError.NotFound, NotEnrolledMessage());
        }

        if (_state.MergedInto is { } into)
        {
            return into == survivorId
                ? new DetachOutcome(_state.Detached, LoyaltyError.None, null)
                : new DetachOutcome(null, LoyaltyError.FailedPrecondition, $"member '{_memberId}' was already merged into '{into}'");
        }

        // A lapsed reservation still holds a stock unit until the schedule ends it, moments later.
        if (_state.Erased || _state.Lots.Holds.Count > 0)
        {
            return new DetachOutcome(null, LoyaltyError.FailedPrecondition,
                _state.Erased ? $"member '{_memberId}' was erased" : $"member '{_memberId}' has reservations that have not ended; commit or cancel them, or retry after they lapse");
        }

        // A membership and trade-ins waiting for inspection are the duplicate's own business with the
        // retailer (billing, a store's inspection): the merge waits until they end rather than drop them.
        string? plan = _state.Membership.PlanAt(now);
        if (plan is not null || _state.TradeIns.Count > 0)
        {
            return new DetachOutcome(null, LoyaltyError.FailedPrecondition, _state.TradeIns.Count > 0
                ? $"member '{_memberId}' has trade-ins waiting for inspection; inspect them first"
                : $"member '{_memberId}' holds membership plan {plan} until {_state.Membership.TermEndsAt:O}; cancel it and retry after it lapses");
        }

        TierLadder ladder = program.Settings.Ladder;
        (int tier, DateTimeOffset? reviewAt) = Tiering.Review(ladder.IndexOf(_state.Tier), _state.TierReviewAt, ladder, _state, now);
        MergeTransfer transfer = _state.TransferOf(_memberId, ladder.Tiers[tier].Name, reviewAt);
        entry = NewEntry(LedgerEntryKind.MergedAway, -(_state.Balance + _state.Lots.PendingTotal), null, 0, now, program) with
        {
            Reference = survivorId,
            Reason = "merged into " + survivorId,
            Details = new EntryDetails { Merge = transfer },
        };
        return null;
    }

    private MemberResult? StageMergeIn(string duplicateId, MergeTransfer? transfer, string reason, ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry)
    {
        entry = null;
        if (_state.MergedInto is { } into)
        {
            // Only when this member was itself merged away during the duplicate's hand-over.
            return MemberResult.Reject(LoyaltyError.FailedPrecondition,
                $"member '{_memberId}' was merged into '{into}' meanwhile; '{duplicateId}' keeps its points in its merge record: merge it into '{into}'");
        }

        if (_state.MergedFrom.Contains(duplicateId) || transfer is null)
        {
            return new MemberResult(View(program), LoyaltyError.None, null);
        }

        // The higher of the two tiers is kept, with its own review date.
        TierLadder ladder = program.Settings.Ladder;
        (int mine, DateTimeOffset? myReview) = Tiering.Review(ladder.IndexOf(_state.Tier), _state.TierReviewAt, ladder, _state, now);
        int theirs = ladder.IndexOf(transfer.Tier);
        bool takeTheirs = theirs > mine;
        long pending = transfer.Pending.Sum(p => p.Points);
        bool inheritsReferrer = _state.Referral.ReferredBy is null && transfer.ReferredBy is { } referrer && referrer != _memberId;
        entry = NewEntry(LedgerEntryKind.MergedIn, new Points(checked(transfer.Balance + pending)), null, 0, now, program) with
        {
            Reference = duplicateId,
            Reason = reason,
            Details = new EntryDetails
            {
                Merge = transfer,
                TierBefore = ladder.Tiers[mine].Name,
                TierAfter = takeTheirs ? transfer.Tier : ladder.Tiers[mine].Name,
                TierReviewAt = takeTheirs ? transfer.TierReviewAt : myReview,
                InheritsReferrer = inheritsReferrer,
            },
        };
        return null;
    }

    /// <summary>Points the duplicate's referrer and the members it referred at the survivor; idempotent, repeated by a repeated merge.</summary>
    private async Task RepointLinksAsync(string duplicateId, MergeTransfer? transfer)
    {
        MergeTransfer? moved = transfer ?? await ReferrerGrain(duplicateId).Detach(_memberId) switch { var (t, _, _) => t };
        if (moved is null)
        {
            return;
        }

        IEnumerable<string> linked = moved.Referrals;
        if (moved.ReferredBy is { } referrer && _state.Referral.ReferredBy == referrer)
        {
            linked = linked.Append(referrer);
        }

        foreach (string member in linked.Where(m => m != _memberId))
        {
            LoyaltyError error = await ReferrerGrain(member).Repoint(duplicateId, _memberId);
            if (error != LoyaltyError.None)
            {
                LogReferralLinkFailed(_programId, member, _memberId, error);
            }
        }
    }

    /// <summary>A refusal when the member takes no more changes: not enrolled, erased, or merged away.</summary>
    private MemberResult? Closed() =>
        Decider.ClosedFor(_programId, _memberId, _state) is { } closed ? MemberResult.Reject(closed.Error, closed.Message!) : null;

    /// <summary>The answer of a detach.</summary>
    private sealed record DetachOutcome(MergeTransfer? Transfer, LoyaltyError Error, string? Message);
}
