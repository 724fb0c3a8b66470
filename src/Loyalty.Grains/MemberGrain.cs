using Loyalty.Storage;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Concurrency;
using Orleans.Serialization;
using Orleans.Runtime;
using Orleans.Storage;

namespace Loyalty.Grains;

/// <summary>
/// One member. Every change is decided on committed state and applied in memory before the first
/// await, then its ledger entry joins the silo's group commit and the call answers once the
/// commit is durable. The grain is reentrant, so reads and other members' calls are not held up,
/// but one member has one commit group in flight at a time: changes that arrive meanwhile wait,
/// then decide on top of each other and commit together, all or nothing (see <see cref="CommitAsync"/>).
/// When a commit fails or collides, the in-memory state is marked invalid and the next call
/// reloads it from storage (snapshot plus the ledger after it), once the member's in-flight
/// commits have settled: an acknowledged change is never lost, an unacknowledged one never kept.
/// </summary>
[Reentrant]
public sealed partial class MemberGrain : Grain, IMemberGrain, IMemberLinkSteps
{
    /// <summary>How often one request re-runs after a collision of its own before it gives up.</summary>
    private const int AttemptsMax = 3;

    /// <summary>
    /// How often one request may find the member being rebuilt after other changes' failures
    /// before it gives up (each pass waits for those changes, so this bounds a pathological case only).
    /// </summary>
    private const int PassesMax = 1_000;

    private readonly MemberServices _services;
    /// <summary>The version of the member's snapshot row, as the store last read or wrote it; null for none yet.</summary>
    private string? _snapshotEtag;
    private string _programId = "";
    private string _memberId = "";
    private MemberState _state = new();
    private bool _valid;
    private Task? _loading;
    private bool _loadedOnce;
    /// <summary>Commit groups in flight: 0 or 1 (open, or sent to the ledger).</summary>
    private int _inFlight;
    private TaskCompletionSource? _drained;
    /// <summary>The enrolment of this member under way, if any (see <see cref="EnrolInTurnAsync"/>).</summary>
    private Task? _enrolling;
    /// <summary>The commit group that changes may still join (see <see cref="CommitAsync"/>).</summary>
    private CommitGroup? _open;
    /// <summary>Changes waiting in <see cref="WaitToDecideAsync"/> for the group in flight.</summary>
    private int _waiting;
    private int _appliedSinceSnapshot;
    private bool _snapshotting;
    /// <summary>
    /// A snapshot write begun between calls and not finished yet; a load waits for it, so that
    /// the version it reads is not overtaken by the write's (see <see cref="LoadAsync"/>).
    /// </summary>
    private Task? _snapshotWrite;
    /// <summary>
    /// What this activation knows of its row in the due schedule: when known, the row holds
    /// <see cref="_scheduledDue"/> or an earlier time (early is safe, late is not). Unknown after
    /// a load, so the first change with due work marks the schedule once.
    /// </summary>
    private bool _scheduleKnown;
    private DateTimeOffset? _scheduledDue;

    /// <summary>Creates the grain; Orleans supplies the engine's shared services.</summary>
    public MemberGrain(MemberServices services) => _services = services;

    private enum CommitOutcome
    {
        Committed,
        Conflict,
        Failed,

        /// <summary>A group of several changes collided: maybe on this change, maybe on another.</summary>
        GroupConflict,
    }

    /// <summary>
    /// The most entries a commit group takes; later changes wait for the next group. It bounds the
    /// ledger batch a busy member can make, and what one collision sends back to decide again.
    /// </summary>
    internal const int GroupEntriesMax = 256;

    /// <inheritdoc />
    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        (string programId, _memberId) = LoyaltyIds.SplitMemberKey(this.GetPrimaryKeyString());
        _programId = _services.ProgramIds.Share(programId);

        // A member that cannot be loaded stays activated, answering from its failure for a
        // while (see EnsureLoadedAsync): a failed activation would be made again, with a full
        // load, by the very next call.
        await TryEnsureLoadedAsync();
    }

    /// <inheritdoc />
    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        if (_valid && _inFlight == 0 && _appliedSinceSnapshot >= Math.Max(1, _services.Options.SnapshotOnDeactivateMinEntries) && !_snapshotting)
        {
            await WriteSnapshotAsync();
        }
    }

    /// <inheritdoc />
    public async Task<EnrolmentResult> Enrol(Enrolment enrolment)
    {
        string? error = CheckRouting(enrolment.ProgramId, enrolment.MemberId)
            ?? (enrolment.ReferredBy is null ? null : LoyaltyIds.Check(enrolment.ReferredBy, "referred_by"));
        if (error is not null)
        {
            return EnrolmentResult.Reject(LoyaltyError.InvalidArgument, error);
        }

        if (enrolment.ReferralCode is not null)
        {
            (string? MemberId, MemberResult? Error)? resolved = await ResolveReferrerAsync(enrolment.ReferredBy, enrolment.ReferralCode);
            if (resolved?.Error is { } refused)
            {
                return EnrolmentResult.Reject(refused.Error, refused.ErrorMessage!);
            }

            enrolment = enrolment with { ReferredBy = resolved?.MemberId, ReferralCode = null };
        }

        if (enrolment.ReferredBy == _memberId)
        {
            return EnrolmentResult.Reject(LoyaltyError.InvalidArgument, "a member cannot refer itself");
        }

        // A referral link touches two members: it is made at the program's desk, one at a time.
        // A plain enrolment does not pass the desk (bulk enrolment must not queue behind one grain
        // per program); it takes its turn with the referred ones here, at the member. One that
        // passes it is loaded first, since the desk calls back.
        if (enrolment.ReferredBy is null)
        {
            return await EnrolInTurnAsync(enrolment, deskEpoch: 0);
        }

        return await TryEnsureLoadedAsync()
            ? await CallBackAwaitedAsync(GrainFactory.GetGrain<IProgramLinksGrain>(_programId).Enrol(enrolment))
            : EnrolmentResult.Reject(LoyaltyError.Unavailable, NotLoaded);
    }

    /// <inheritdoc />
    Task<EnrolmentResult> IMemberLinkSteps.EnrolReferred(Enrolment enrolment)
    {
        long epoch = SeeDeskEpoch();
        return CheckRouting(enrolment.ProgramId, enrolment.MemberId) is { } misrouted
            ? Task.FromResult(EnrolmentResult.Reject(LoyaltyError.InvalidArgument, misrouted))
            : EnrolInTurnAsync(enrolment, epoch);
    }

    /// <summary>
    /// Runs one enrolment of this member at a time. A referred enrolment links the member at its
    /// referrer before it writes its own entry; a plain enrolment that ran in between would
    /// enrol the member with no referrer and leave the referrer holding a link (counted against
    /// its caps) that nothing removes. In turn, the later one finds the member enrolled and is
    /// answered as a repeat (or refused as different), and the referrer is linked only when the
    /// member names it.
    /// </summary>
    private async Task<EnrolmentResult> EnrolInTurnAsync(Enrolment enrolment, long deskEpoch)
    {
        while (_enrolling is { } running)
        {
            await running;
        }

        var turn = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _enrolling = turn.Task;
        try
        {
            return await EnrolCoreAsync(enrolment, deskEpoch);
        }
        finally
        {
            _enrolling = null;
            turn.SetResult();
        }
    }

    /// <summary>The enrolment, once any referral code is resolved: the referrer's link first, then the member's entry (under the desk's <paramref name="deskEpoch"/>).</summary>
    private async Task<EnrolmentResult> EnrolCoreAsync(Enrolment enrolment, long deskEpoch)
    {
        bool linked = false;
        for (int attempt = 0, pass = 0; attempt < AttemptsMax && pass < PassesMax; attempt++, pass++)
        {
            if (await CheckEnrolmentPreconditionsAsync(enrolment) is { } refused)
            {
                return refused;
            }

            ProgramConfig? program = await _services.Programs.GetAsync(_programId);
            await WaitForCommitsAsync();
            if (!_valid)
            {
                attempt--;
                continue;
            }

            if (_state.Enrolled)
            {
                return await AnswerRepeatedEnrolmentAsync(enrolment.ReferredBy);
            }

            if (enrolment.ReferredBy is { } referrer && !linked)
            {
                // The referrer first: it enforces the referral cap, and a link without an enrolment is harmless.
                if (await LinkAtReferrerAsync(referrer) is { } refusal)
                {
                    return EnrolmentResult.Reject(refusal.Error, refusal.Message);
                }

                linked = true;
                attempt--;
                continue;
            }

            if (Superseded(deskEpoch))
            {
                return EnrolmentResult.Reject(LoyaltyError.Unavailable, SupersededMessage);
            }

            LedgerEntry entry = EnrolEntry(enrolment, program);
            if (Headroom.Refuse(_state, entry) is { } tooLarge)
            {
                return EnrolmentResult.Reject(tooLarge.Error, tooLarge.Message);
            }

            ApplyDecided(entry, null);
            switch (await CommitAsync(entry, program?.Settings, deskEpoch: deskEpoch))
            {
                case CommitOutcome.Committed:
                    AtFault(FaultStep.Acknowledge, entry, null);
                    return new EnrolmentResult(View(program), false, LoyaltyError.None, null);
                case CommitOutcome.Failed:
                    return EnrolmentResult.Reject(LoyaltyError.Unavailable, NotCommitted);
                case CommitOutcome.Conflict or CommitOutcome.GroupConflict when deskEpoch != 0:
                    // Perhaps left out of the batch for a newer desk (see AnswerAfterCollisionAsync).
                    if (!await TryNoteLatestDeskEpochAsync())
                    {
                        return EnrolmentResult.Reject(LoyaltyError.Unavailable, NotLoaded);
                    }

                    break;
            }
        }

        return EnrolmentResult.Reject(LoyaltyError.Unavailable, "the member is being changed concurrently; retry");
    }

    /// <inheritdoc />
    async Task<MemberResult> IMemberLinkSteps.AddReferral(string referredMemberId)
    {
        long epoch = SeeDeskEpoch();
        string? invalid = LoyaltyIds.Check(referredMemberId, "referred member id")
            ?? (referredMemberId == _memberId ? "a member cannot refer itself" : null);
        if (invalid is not null)
        {
            return MemberResult.Reject(LoyaltyError.InvalidArgument, invalid);
        }

        MemberResult linked = new(null, LoyaltyError.None, null);
        return await WriteAsync(
            prefetch: null,
            (ProgramConfig program, DateTimeOffset now, out LedgerEntry? entry) =>
                ReferralDecision.Referral(At(program, now), referredMemberId).Staged(out entry, MemberResult.Reject, () => linked),
            (_, _, _) => linked,
            _ => Task.FromResult<MemberResult?>(null),
            MemberResult.Reject,
            HoldPass.ReferralHold,
            deskEpoch: epoch);
    }

    /// <inheritdoc />
    public async Task<LedgerPage?> GetLedger(long? beforeSequence, int pageSize, string? fromMember = null)
    {
        await SettleForReadAsync();
        if (!_state.Enrolled)
        {
            return null;
        }

        // This member's history, then that of each duplicate merged into it: the history moved with the points.
        List<string> histories = [_memberId, .. _state.MergedFrom];
        int at = fromMember is null ? 0 : histories.IndexOf(fromMember);
        if (at < 0)
        {
            return new LedgerPage([], null);
        }

        int size = Math.Clamp(pageSize, 1, Limits.LedgerPageSizeMax);
        IReadOnlyList<LedgerEntry> rows = await _services.Store.ReadPageAsync(_programId, histories[at], beforeSequence ?? long.MaxValue, size + 1, CancellationToken.None);
        if (rows.Count > size)
        {
            LedgerEntry[] page = [.. rows.Take(size)];
            return new LedgerPage(page, page[^1].Sequence, at == 0 ? null : histories[at]);
        }

        return new LedgerPage(rows, null, at + 1 < histories.Count ? histories[at + 1] : null);
    }

    private string? CheckRouting(string programId, string memberId) =>
        programId == _programId && memberId == _memberId ? null : "the request was routed to another member";

    private async Task<EnrolmentResult?> CheckEnrolmentPreconditionsAsync(Enrolment enrolment)
    {
        if (!await TryEnsureLoadedAsync())
        {
            return EnrolmentResult.Reject(LoyaltyError.Unavailable, "member state could not be loaded; nothing was recorded, retry");
        }

        if (await _services.Programs.GetAsync(_programId) is null)
        {
            return EnrolmentResult.Reject(LoyaltyError.NotFound, $"program '{_programId}' not found");
        }

        if (enrolment.ReferredBy is not null && !_state.Enrolled
            && await OtherMember(enrolment.ReferredBy).Get() is null)
        {
            return EnrolmentResult.Reject(LoyaltyError.NotFound, $"referred_by member '{enrolment.ReferredBy}' is not enrolled in program '{_programId}'");
        }

        return null;
    }


    /// <summary>How far a member's time may run ahead of the engine's clock (see <see cref="MemberNow"/>).</summary>
    internal static readonly TimeSpan MemberTimeAheadMax = TimeSpan.FromMinutes(5);

    /// <summary>
    /// The member's time, which its decisions and views use: the engine's clock, but never before
    /// the latest instant the member's pending points were matured to. A member decided on a silo
    /// whose clock is ahead (or before the clock stepped back), then on one behind, would
    /// otherwise record entries at times earlier than a maturing its state already went through;
    /// replayed at those times, a credit would pay a debt that, live, a matured lot had paid, and
    /// the member rebuilt from its ledger would differ from the one that decided. It runs at most
    /// <see cref="MemberTimeAheadMax"/> ahead of the clock: a node whose clock was far ahead must
    /// not move the member's dates (pending, expiry, backdating limits) for good; such a gap is
    /// logged. (Snapshots written before the field existed read as "no maturing yet": the clock.)
    /// </summary>
    private DateTimeOffset MemberNow()
    {
        DateTimeOffset now = _services.Clock.GetUtcNow(), matured = _state.Lots.MaturedThrough;
        if (matured <= now)
        {
            return now;
        }

        DateTimeOffset ceiling = now + MemberTimeAheadMax;
        if (matured <= ceiling)
        {
            return matured;
        }

        // Once per activation: the member stays past the cap until the clock catches up.
        if (!TimeAheadLogged && _services.Warnings.TryTake(out long leftOut))
        {
            TimeAheadLogged = true;
            LogMemberTimeAhead(_services.Logger, _programId, _memberId, matured, now, MemberTimeAheadMax, leftOut);
        }

        return ceiling;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId}: its pending points were matured to {MaturedThrough:O}, further ahead of this node's clock ({Now:O}) than {AheadMax}; its time is held that far ahead ({LeftOut} such lines left out since the last)")]
    private static partial void LogMemberTimeAhead(ILogger logger, string programId, string memberId, DateTimeOffset maturedThrough, DateTimeOffset now, TimeSpan aheadMax, long leftOut);

    private LedgerEntry EnrolEntry(Enrolment enrolment, ProgramConfig? program)
    {
        DateTimeOffset now = MemberNow();
        ProgramSettings? settings = program?.Settings;
        Points bonus = new(settings?.SignupBonusPoints ?? 0);
        var details = new EnrolDetails
        {
            Components = bonus.Value > 0 ? [new BreakdownComponent(ComponentKind.Signup, "signup", bonus.Value)] : [],
            TierAfter = settings?.Ladder.Tiers[0].Name ?? MemberState.DefaultTier,
            ExpiresAt = bonus.Value > 0 ? Decider.LotExpiry(settings, now) : null,
        };
        return new LedgerEntry(
            _programId, _memberId, checked(_state.Sequence + 1), LedgerEntryKind.Enrol, bonus, null, 0,
            null, 0, null, null, enrolment.ReferredBy, now, now, program?.Version ?? 0, null, details);
    }

    private async Task<EnrolmentResult> AnswerRepeatedEnrolmentAsync(string? referredBy)
    {
        // The referrer named may have been merged into another since, and this member's link
        // re-pointed at the account that holds it now: the same enrolment, resent.
        string? recorded = _state.Referral.ReferredBy;
        if (recorded != referredBy
            && (referredBy is null || recorded is null || await CurrentHolderAsync(referredBy) is not { } named || named != await CurrentHolderAsync(recorded)))
        {
            return EnrolmentResult.Reject(LoyaltyError.AlreadyExists, $"member '{_memberId}' is already enrolled with different details");
        }

        // A resend also repairs the referrer's side if the first attempt stopped before it. Not
        // for a member merged away or erased: its link moved to the survivor, or counts for nothing.
        if (_state.MergedInto is null && !_state.Erased)
        {
            await LinkReferrerAsync(recorded);
        }

        return await CommittedViewAsync() is { } view ? new EnrolmentResult(view, true, LoyaltyError.None, null) : EnrolmentResult.Reject(LoyaltyError.Unavailable, RecordedUnread);
    }

    /// <summary>The member that holds <paramref name="memberId"/>'s account now (see <see cref="HolderOfAsync"/>).</summary>
    private async Task<string?> CurrentHolderAsync(string memberId) =>
        await HolderOfAsync(memberId, (await LinkSteps(memberId).GetLinks()).MergedInto);

    private async Task LinkReferrerAsync(string? referredBy)
    {
        if (referredBy is null)
        {
            return;
        }

        MemberResult linked = await LinkSteps(referredBy).AddReferral(_memberId);
        if (linked.Error != LoyaltyError.None)
        {
            WarnReferralLinkFailed(_memberId, referredBy, linked.Error);
        }
    }

    /// <summary>Another member of this program (a referrer, a duplicate, a survivor).</summary>
    private IMemberGrain OtherMember(string memberId) =>
        GrainFactory.GetGrain<IMemberGrain>(LoyaltyIds.MemberKey(_programId, memberId));

    private IMemberLinkSteps LinkSteps(string memberId) =>
        GrainFactory.GetGrain<IMemberLinkSteps>(LoyaltyIds.MemberKey(_programId, memberId));

    /// <summary>
    /// Applies decided entries (admitted by <see cref="Headroom.Refuse"/>) to the live state, a
    /// return with the progress of its purchase it was decided on (see <see cref="ReturnSeed"/>). The
    /// state is marked invalid while they apply: apply cannot fail by design, but if it ever threw,
    /// the next call would rebuild the member from its ledger instead of keeping half a change,
    /// and no snapshot is written from an invalid state.
    /// </summary>
    private void ApplyDecided(LedgerEntry entry, LedgerEntry? before, ReturnProgress? returnSeed = null)
    {
        _valid = false;
        if (before is not null)
        {
            _state.Apply(before, _services.Options.RecentTransactionsMax);
        }

        _state.Apply(entry, _services.Options.RecentTransactionsMax, returnSeed);
        if (entry.Kind == LedgerEntryKind.Enrol)
        {
            _state.Prepare(_services.Options.RecentTransactionsMax);
        }

        _state.AssertInvariants(entry);
        if (_services.Faults.Armed)
        {
            AtFault(FaultStep.Apply, entry, before);
        }

        _valid = true;
    }

    /// <summary>The fault-injection seam at a step of the grain, for both entries of a pair.</summary>
    private void AtFault(FaultStep step, LedgerEntry entry, LedgerEntry? before)
    {
        if (before is not null)
        {
            _services.Faults.At(step, before);
        }

        _services.Faults.At(step, entry);
    }

    /// <summary>
    /// Commits an applied change (an entry, or a pair that carries <paramref name="before"/>)
    /// and answers how it went. Anything but a clean insert invalidates the in-memory state,
    /// which already holds the change; changes waiting for it are released only after this
    /// bookkeeping, so a resend decides on the settled state.
    /// <para>
    /// One member's changes form commit groups, so that a member who is sent many changes at
    /// once is not held to one change per commit. A change that finds no group in flight opens
    /// one. When others are waiting for the previous group (they were released with it), it
    /// yields once to the activation's queue first, and each of them that writes decides on top
    /// of it and joins. Then the group is sealed and goes to the ledger as one all-or-nothing
    /// unit (<see cref="LedgerCommitQueue.AppendGroupAsync"/>): a change is never durable
    /// without the changes it was decided on, and if one entry is refused, none is written and
    /// every change of the group decides again on the reloaded state. With nobody waiting (the
    /// usual case) the change commits alone and nothing is allocated for the group: see
    /// <see cref="CommitsAlone"/>, which the write loop uses to await the ledger itself.
    /// </para>
    /// </summary>
    private async Task<CommitOutcome> CommitAsync(LedgerEntry entry, ProgramSettings? settings, LedgerEntry? before = null, long deskEpoch = 0)
    {
        if (CommitsAlone)
        {
            // The same steps as the write loop's own (WriteCoreAsync): keep the two alike.
            Task<bool> append = BeginAlone(entry, settings, before, deskEpoch);
            bool? written = null;
            CommitOutcome outcome;
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
                outcome = EndAlone(entry, before, written);
            }

            return outcome;
        }

        return await CommitInGroupAsync(entry, settings, before, deskEpoch);
    }

    /// <summary>
    /// Whether a change commits alone now: no group is open to join and no change waits to join
    /// one. Then <see cref="BeginAlone"/> sends it to the ledger, the caller awaits the answer
    /// itself (a failure of the ledger is <see cref="LedgerUnavailableException"/>; that or any
    /// other exception is no answer), and <see cref="EndAlone"/> settles it on every path. The
    /// write loop does this inline, so that a purchase costs one state machine, one continuation
    /// and one delegate the less: about 4 % of what it allocated.
    /// </summary>
    private bool CommitsAlone => _open is null && _waiting == 0;

    /// <summary>Sends a change that commits alone to the ledger (see <see cref="CommitsAlone"/>), fenced by the desk's epoch when a step's.</summary>
    private Task<bool> BeginAlone(LedgerEntry entry, ProgramSettings? settings, LedgerEntry? before, long deskEpoch)
    {
        _appliedSinceSnapshot += before is null ? 1 : 2;
        _inFlight++;
        try
        {
            // Inside the try: a failure here too settles the change as not written (the state is rebuilt).
            DueChange? due = MarkDueFor(settings, entry, before);
            LockFence? fence = DeskFence(deskEpoch);
            return before is null ? _services.Ledger.AppendAsync(entry, due, fence) : _services.Ledger.AppendGroupAsync([before, entry], due, fence);
        }
        catch (LedgerUnavailableException e)
        {
            // Answered as a failed batch is: the caller's wait throws it.
            return Task.FromException<bool>(e);
        }
        catch
        {
            Settle(before ?? entry, CommitOutcome.Failed);
            throw;
        }
    }

    /// <summary>The due mark for the state a change leaves (<see cref="MarkDue"/>), with the fault-injection seam after it.</summary>
    private DueChange? MarkDueFor(ProgramSettings? settings, LedgerEntry entry, LedgerEntry? before)
    {
        DueChange? due = MarkDue(settings);
        if (_services.Faults.Armed)
        {
            AtFault(FaultStep.Schedule, entry, before);
        }

        return due;
    }

    /// <summary>
    /// Settles a change that committed alone, from the ledger's answer: true written, false
    /// refused (a collision), null none (it failed, or the wait threw).
    /// </summary>
    private CommitOutcome EndAlone(LedgerEntry entry, LedgerEntry? before, bool? written)
    {
        CommitOutcome outcome = written switch
        {
            true => CommitOutcome.Committed,
            false => CommitOutcome.Conflict,
            null => CommitOutcome.Failed,
        };
        Settle(before ?? entry, outcome);
        if (outcome == CommitOutcome.Committed)
        {
            MaybeSnapshot();
        }

        return outcome;
    }

    /// <summary>Commits a change that does not commit alone: it joins the open group, or opens one for the changes waiting (see <see cref="CommitAsync"/>).</summary>
    private async Task<CommitOutcome> CommitInGroupAsync(LedgerEntry entry, ProgramSettings? settings, LedgerEntry? before, long deskEpoch)
    {
        _appliedSinceSnapshot += before is null ? 1 : 2;

        // The due mark is made for the state this change leaves (a group keeps the earliest).
        DueChange? due;
        try
        {
            due = MarkDueFor(settings, entry, before);
        }
        catch
        {
            // The change is applied but will not be queued: the state is rebuilt before anything
            // decides on it (a group in flight commits without it).
            _valid = false;
            throw;
        }

        if (_open is { } joined)
        {
            joined.Add(before, entry, due, deskEpoch);
            return await joined.Outcome.Task;
        }

        // Not alone (CommitsAlone): changes wait for the group in flight, so this one opens the
        // next group and yields once for them to decide on top of it and join.
        _inFlight++;
        var group = new CommitGroup();
        CommitOutcome outcome = CommitOutcome.Failed;
        try
        {
            _open = group;
            group.Add(before, entry, due, deskEpoch);
            await Task.Yield();
            _open = null;
            GrainMetrics.GroupEntries.Record(group.Entries.Count);
            bool written = await _services.Ledger.AppendGroupAsync(group.Entries, group.Due, DeskFence(group.DeskEpoch));
            outcome = written ? CommitOutcome.Committed
                : group.Changes > 1 ? CommitOutcome.GroupConflict
                : CommitOutcome.Conflict;
        }
        catch (LedgerUnavailableException)
        {
            // Not recorded; the outcome stays Failed.
        }
        finally
        {
            // On every path, an unexpected exception included: the member's next change waits for
            // this group to settle, and an unconfirmed change must not stay in memory.
            if (ReferenceEquals(_open, group))
            {
                _open = null;
            }

            // The group's other changes resume first, ahead of the changes waiting for the next
            // group: they answer from the state their group left (before a next change applies),
            // and one that must decide again does so before a next group opens.
            group.Outcome.SetResult(outcome);
            Settle(group.Entries[0], outcome);
        }

        if (outcome == CommitOutcome.Committed)
        {
            MaybeSnapshot();
        }

        return outcome;
    }

    /// <summary>The bookkeeping after a commit: invalidate unless committed, and release the changes waiting for it.</summary>
    private void Settle(LedgerEntry first, CommitOutcome outcome)
    {
        if (outcome != CommitOutcome.Committed)
        {
            _valid = false;
            if (outcome == CommitOutcome.Failed)
            {
                UnknownOutcomeAt = System.Diagnostics.Stopwatch.GetTimestamp();
            }

            if (_services.Warnings.TryTake(out long leftOut))
            {
                LogCommitNotApplied(_services.Logger, _programId, _memberId, first.Sequence, outcome, leftOut);
            }
        }

        _inFlight--;
        if (_inFlight == 0 && _drained is { } drained)
        {
            _drained = null;
            drained.SetResult();
        }
    }

    /// <summary>
    /// Returns once none of this member's changes waits for its commit. A change is decided on
    /// committed state only, or inside the group it commits with: a change decided on top of one
    /// that the ledger then refuses (a resend of an id older than the grain remembers) would
    /// otherwise commit after it, leaving a gap in the member's sequence and, for a redemption,
    /// points spent that were never credited. Members' changes share the silo's group commit.
    /// </summary>
    private async Task WaitForCommitsAsync()
    {
        while (_inFlight > 0)
        {
            await Drained();
        }
    }

    /// <summary>Completes when the member has no commit group in flight any more (see <see cref="Settle"/>).</summary>
    private Task Drained() => (_drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;

    /// <summary>
    /// Like <see cref="WaitForCommitsAsync"/>, but returns at once while a commit group is open
    /// and has room (<see cref="GroupEntriesMax"/>): a change may then decide on top of it and
    /// join it (see <see cref="CommitAsync"/>).
    /// </summary>
    private async Task WaitToDecideAsync()
    {
        while (_inFlight > 0 && (_open is null || _open.Entries.Count >= GroupEntriesMax))
        {
            _waiting++;
            try
            {
                await Drained();
            }
            finally
            {
                _waiting--;
            }
        }
    }

    /// <summary>One member's changes decided on top of each other and committed as one unit.</summary>
    private sealed class CommitGroup
    {
        public List<LedgerEntry> Entries { get; } = new(4);

        /// <summary>How the group's commit went, for every change in it.</summary>
        public TaskCompletionSource<CommitOutcome> Outcome { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>The changes in the group (a change is one entry, or a pair).</summary>
        public int Changes { get; private set; }

        /// <summary>The group's mark on the due schedule: the latest a change made, which is the earliest time.</summary>
        public DueChange? Due { get; private set; }

        /// <summary>The oldest desk epoch of the group's steps (0 when none): the group is written all or nothing, so under the strictest fence.</summary>
        public long DeskEpoch { get; private set; }

        public void Add(LedgerEntry? before, LedgerEntry entry, DueChange? due, long deskEpoch)
        {
            DeskEpoch = deskEpoch == 0 ? DeskEpoch : DeskEpoch == 0 ? deskEpoch : Math.Min(DeskEpoch, deskEpoch);
            if (before is not null)
            {
                Entries.Add(before);
            }

            Entries.Add(entry);
            Changes++;
            Due = due ?? Due;
        }
    }

    /// <summary>
    /// Returns, without awaiting afterwards, once the state holds only committed changes: loaded,
    /// valid and with no change waiting for its commit. A read answers from here, so nobody sees a
    /// balance whose ledger entry is not durable yet (and could still be taken back by a failed
    /// commit), and a ledger page read after a member's answer includes every change it showed.
    /// </summary>
    /// <remarks>
    /// For <see cref="UnknownOutcomeWindow"/> after a commit whose outcome was unknown (a COMMIT
    /// whose connection dropped), the entry may land after the state was reloaded without it: a
    /// read then also asks the ledger for its newest entry, and reloads when it has one more.
    /// </remarks>
    private Task SettleForReadAsync() => SettleForReadAsync(askLedger: false);

    /// <summary>
    /// <see cref="SettleForReadAsync()"/>; with <paramref name="askLedger"/> (or within
    /// <see cref="UnknownOutcomeWindow"/>), once settled it reads the ledger's newest entry, once,
    /// and reloads when the ledger holds one this activation has not applied.
    /// </summary>
    private async Task SettleForReadAsync(bool askLedger)
    {
        bool asked = false;
        while (true)
        {
            await EnsureLoadedAsync();
            await WaitForCommitsAsync();
            if (!_valid || _inFlight > 0)
            {
                continue;
            }

            if (asked || !(askLedger || UnknownOutcomeAt is { } unknownAt && System.Diagnostics.Stopwatch.GetElapsedTime(unknownAt) <= UnknownOutcomeWindow))
            {
                return;
            }

            asked = true;
            IReadOnlyList<LedgerEntry> newest = await _services.Store.ReadPageAsync(_programId, _memberId, long.MaxValue, 1, CancellationToken.None);
            if (newest.Count > 0 && newest[0].Sequence > _state.Sequence && _inFlight == 0)
            {
                _valid = false;
            }
        }
    }

    /// <summary>
    /// <see cref="SettleForReadAsync()"/>; false when it failed and the state may hold changes the
    /// ledger does not (the member could not be loaded again after a failed commit): for an answer
    /// to a change whose outcome is known already (a resend found in the ledger, a profile
    /// written), which then says so (<see cref="RecordedUnread"/>, <see cref="HeldUnread"/>), not
    /// that nothing was recorded. A failed read of the ledger's newest entry with the state valid and nothing in flight
    /// leaves it as committed as this activation knows: true.
    /// </summary>
    private async Task<bool> TrySettleForReadAsync()
    {
        try
        {
            await SettleForReadAsync();
            return true;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A failed load was logged where it failed.
            return _valid && _inFlight == 0;
        }
    }

    /// <summary>The answer to a change that is recorded, when the member cannot be read to answer with it.</summary>
    private const string RecordedUnread = "the change is recorded; the member cannot be read now to answer with it: send it again";

    /// <summary>
    /// The answer to a request whose transaction id the ledger holds already, when the member
    /// cannot be read to answer from it: a resend of it, or another request under the same id,
    /// which asking again tells apart.
    /// </summary>
    private const string HeldUnread = "the ledger holds this transaction id already; the member cannot be read now to answer from it: send it again";

    /// <summary>
    /// How long after a commit whose outcome was unknown the member's reads look for its entry in
    /// the ledger (see <see cref="SettleForReadAsync(bool)"/>): a COMMIT the server received ends within
    /// its own write's time, far less than this.
    /// </summary>
    internal static readonly TimeSpan UnknownOutcomeWindow = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Like <see cref="SettleForReadAsync()"/>, and also reloads the state when the ledger holds
    /// entries this activation has not applied: another activation of this member wrote them
    /// (Orleans may run two for a while during membership changes). One indexed read of the newest
    /// entry; used by the checks of changes that touch two members, which must see every member
    /// as the ledger has it, not as a stale activation remembers it.
    /// </summary>
    private Task CatchUpAsync() => SettleForReadAsync(askLedger: true);

    private void MaybeSnapshot()
    {
        if (_valid && _inFlight == 0 && !_snapshotting && _appliedSinceSnapshot >= _services.Options.SnapshotEveryEntries)
        {
            _ = StartSnapshotWrite();
        }
    }

    /// <summary>Starts a snapshot write registered as the one under way, so that a reload, or another write, waits for it.</summary>
    private Task<bool> StartSnapshotWrite()
    {
        Task<bool> write = WriteSnapshotAsync();
        _snapshotWrite = write.IsCompleted ? null : write;
        return write;
    }

    /// <summary>Writes the state as a snapshot; whether it was written. Never throws: the ledger stays the source of truth.</summary>
    private async Task<bool> WriteSnapshotAsync()
    {
        _snapshotting = true;
        int covered = _appliedSinceSnapshot;
        try
        {
            _services.Faults.AtSnapshot(_memberId);
            MemberState copy = _services.Copier.Copy(_state);
            copy.Format = MemberState.CurrentFormat;
            // The written copy is not kept: between writes the grain holds one state, not two.
            var row = new GrainState<MemberState>(copy, _snapshotEtag) { RecordExists = _snapshotEtag is not null };
            await _services.Snapshots.WriteStateAsync(MemberServices.SnapshotStateName, this.GetGrainId(), row);
            _snapshotEtag = row.ETag;
            _appliedSinceSnapshot -= covered;
            return true;
        }
        catch (InconsistentStateException e)
        {
            // Another activation wrote this member: ours is stale and must reload.
            _valid = false;
            LogSnapshotConflict(_services.Logger, e, _programId, _memberId);
            return false;
        }
        catch (Exception e)
        {
            // Tried again only after as many more entries: a snapshot that fails for good (a
            // store down, a state it cannot take) must not cost a copy and a write per change.
            _appliedSinceSnapshot -= covered;
            if (_services.StorageFailures.TryTake(out long leftOut))
            {
                LogSnapshotFailed(_services.Logger, e, _programId, _memberId, leftOut);
            }

            return false;
        }
        finally
        {
            _snapshotting = false;
            _snapshotWrite = null;
        }
    }

    private async Task<bool> TryEnsureLoadedAsync()
    {
        try
        {
            await EnsureLoadedAsync();
            return true;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Logged where the load failed, once per attempt.
            return false;
        }
    }

    /// <summary>
    /// How long, in real time, a member whose load failed answers from that failure. A load reads
    /// the snapshot and replays the ledger after it; a member that cannot be loaded (an entry this
    /// version cannot read, written by a newer one during an upgrade; the database away) would
    /// otherwise repeat that, and its log line, for every call a client retries. Then the
    /// activation ends, and the next call loads the member afresh, on whichever silo it is placed.
    /// </summary>
    internal static readonly TimeSpan LoadRetryDelay = TimeSpan.FromSeconds(1);

    /// <summary>This member's calls out that may call it back (see <see cref="CallBackAwaitedAsync"/>).</summary>
    private int _awaitingCallBack;

    /// <summary>
    /// Awaits a call out that may call this member back, counted: the program's desk (merges and
    /// referral links), or a referrer told of a reward (merged into this member, it passes the
    /// request back here). The activation must not end meanwhile: a deactivating member takes no
    /// calls, and the caller (the desk serves one request at a time) would wait for Orleans'
    /// response timeout.
    /// </summary>
    private async Task<T> CallBackAwaitedAsync<T>(Task<T> call)
    {
        _awaitingCallBack++;
        try
        {
            return await call;
        }
        finally
        {
            _awaitingCallBack--;
        }
    }

    /// <summary>
    /// Ends the activation once its load has failed for <see cref="LoadRetryDelay"/>, so that the
    /// next call loads the member afresh, on whichever silo it is placed (an upgraded one, when
    /// this one cannot read the member's newest entries). Only when the member is quiet: a
    /// deactivating member takes no calls, and one of its changes may be waiting for another
    /// member or the program's desk, which call it back (a merge, a referral link). Until then,
    /// a call after the delay loads it again in place.
    /// </summary>
    private Task EndAfterFailedLoadAsync(CancellationToken cancellationToken)
    {
        if (_valid || LoadFailed is null)
        {
            // Loaded since (a member invalid now only because a commit failed reloads at its next call).
            EndAfterFailure?.Dispose();
            EndAfterFailure = null;
        }
        else if (_inFlight == 0 && _loading is null && HeldBy is null && _awaitingCallBack == 0)
        {
            DeactivateOnIdle();
        }
        else
        {
            EndAfterFailure?.Change(LoadRetryDelay, Timeout.InfiniteTimeSpan);
        }

        return Task.CompletedTask;
    }

    private async Task EnsureLoadedAsync()
    {
        while (!_valid)
        {
            if (_loading is null && LoadFailed is { } failed && System.Diagnostics.Stopwatch.GetElapsedTime(failed.At) < LoadRetryDelay)
            {
                throw new MemberUnavailableException($"Member {_programId}/{_memberId} could not be loaded: {failed.Error.GetType().Name}: {failed.Error.Message}");
            }

            _loading ??= LoadAsync();
            Task loading = _loading;
            try
            {
                await loading;
                LoadFailed = null;
            }
            catch (Exception e) when (ReferenceEquals(_loading, loading) && e is not OutOfMemoryException)
            {
                // The first of the load's waiters to see it fail notes and logs it; the others rethrow.
                LoadFailed = (e, System.Diagnostics.Stopwatch.GetTimestamp());
                GrainMetrics.LoadFailures.Add(1, new KeyValuePair<string, object?>("program", _programId));
                if (_services.StorageFailures.TryTake(out long leftOut))
                {
                    LogLoadFailed(_services.Logger, e, _programId, _memberId, leftOut);
                }

                if (EndAfterFailure is { } pending)
                {
                    pending.Change(LoadRetryDelay, Timeout.InfiniteTimeSpan);
                }
                else
                {
                    EndAfterFailure = this.RegisterGrainTimer(EndAfterFailedLoadAsync, new GrainTimerCreationOptions(LoadRetryDelay, Timeout.InfiniteTimeSpan));
                }

                throw;
            }
            finally
            {
                if (ReferenceEquals(_loading, loading))
                {
                    _loading = null;
                }
            }
        }
    }

    /// <summary>Rebuilds the state from the snapshot and the ledger after it, once in-flight commits settle.</summary>
    private async Task LoadAsync()
    {
        while (_inFlight > 0)
        {
            await Drained();
        }

        // A snapshot write under way would end after the read below and leave its version (and
        // its count of entries covered) over the load's: a stale version, and the next write
        // would collide with the row for nothing. The write never throws.
        while (_snapshotWrite is { } write)
        {
            await write;
        }

        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        var row = new GrainState<MemberState>(MemberState.Placeholder);
        await _services.Snapshots.ReadStateAsync(MemberServices.SnapshotStateName, this.GetGrainId(), row);
        _snapshotEtag = row.ETag;
        _scheduleKnown = false;
        // A snapshot of another format is not read: the ledger alone rebuilds the member.
        // The state read is taken over, not copied, so the grain holds one state, not two.
        MemberState state = row.State is { Format: MemberState.CurrentFormat } read && !ReferenceEquals(read, MemberState.Placeholder)
            ? read
            : new MemberState();
        bool fromSnapshot = state.Sequence > 0;
        var replayed = new Replayed();
        string? diverged = fromSnapshot ? await ReplayOverSnapshotAsync(state, replayed) : null;
        if (!fromSnapshot || diverged is not null)
        {
            if (diverged is not null)
            {
                // A snapshot that does not agree with the entries after it is not trusted: the
                // ledger alone rebuilds the member, and the next snapshot replaces the row.
                LogSnapshotDiverged(_services.Logger, _programId, _memberId, diverged);
                state = new MemberState();
                replayed = new Replayed();
            }

            await ReplayAfterAsync(state, replayed);
            // The lots are checked once per load, not after each entry replayed (a ledger written
            // by an older version may pass through states today's rules would not make). A member
            // whose ledger rebuilds them wrong is not served: it fails to load, visibly, rather
            // than failing every later change.
            state.Lots.AssertInvariants(state.Sequence);
        }

        // A stored row that gave nothing (another format, or unreadable) would be read and replayed
        // past on every load, and a member that changes little might not replace it for a long time.
        bool rowUnused = row.RecordExists && !fromSnapshot && replayed.Entries > 0;
        state.Returns.Trim();
        if (state.Enrolled)
        {
            state.Prepare(_services.Options.RecentTransactionsMax);
            state.Unlist(_memberId);
        }

        _state = state;
        // A snapshot found wrong or not used is replaced after the next change (or on deactivation),
        // not left for the next load.
        int entries = (int)Math.Min(replayed.Entries, int.MaxValue);
        _appliedSinceSnapshot = diverged is null && !rowUnused ? entries : Math.Max(entries, _services.Options.SnapshotEveryEntries);
        _valid = true;
        if (!_loadedOnce)
        {
            // The cost of a cold member: from the snapshot's read to the state rebuilt from it
            // and the ledger after it.
            _loadedOnce = true;
            GrainMetrics.ColdLoadDuration.Record(System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId}: entry {Sequence} not committed ({Outcome}); state will reload ({LeftOut} such lines left out since the last)")]
    private static partial void LogCommitNotApplied(ILogger logger, string programId, string memberId, long sequence, CommitOutcome outcome, long leftOut);

    /// <summary>
    /// The entries a member's ledger holds after its state are read this many at a time when the
    /// member is loaded: a member's ledger may be millions of entries long (a shop's guest account),
    /// and a load, after an upgrade that sets every snapshot aside, replays it from the start.
    /// </summary>
    internal const int LoadPageEntries = 1_000;

    /// <summary>How far a load's replay went: the entries applied, the page being applied, and whether it is applying (not reading).</summary>
    private sealed class Replayed
    {
        public long Entries { get; set; }

        public IReadOnlyList<LedgerEntry> Page { get; set; } = [];

        public bool Applying { get; set; }
    }

    /// <summary>
    /// Applies the member's entries after <paramref name="state"/>'s sequence to it, in order, a
    /// page of <see cref="LoadPageEntries"/> at a time, so that a load holds one page of entries,
    /// not the member's whole ledger. An entry that does not follow the state throws (see
    /// <see cref="MemberState.Apply"/>), so a page read again cannot be applied twice.
    /// </summary>
    private async Task ReplayAfterAsync(MemberState state, Replayed replayed)
    {
        while (true)
        {
            replayed.Page = await _services.Store.ReadAfterAsync(_programId, _memberId, state.Sequence, LoadPageEntries, CancellationToken.None);
            replayed.Applying = true;
            foreach (LedgerEntry entry in replayed.Page)
            {
                state.Apply(entry, _services.Options.RecentTransactionsMax);
            }

            replayed.Applying = false;
            replayed.Entries += replayed.Page.Count;
            if (replayed.Page.Count < LoadPageEntries)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Applies the entries after a snapshot to it and checks its lots: null when they agree, else
    /// why not (the state is then half-made and dropped). An entry of a kind this version does not
    /// know is not the snapshot's fault: it propagates, as the ledger's replay would fail on it too.
    /// </summary>
    private async Task<string?> ReplayOverSnapshotAsync(MemberState state, Replayed replayed)
    {
        try
        {
            await ReplayAfterAsync(state, replayed);
            replayed.Applying = true;
            state.Lots.AssertInvariants(state.Sequence);
            return null;
        }
        catch (Exception e) when (e is InvalidOperationException or ArithmeticException && replayed.Applying && replayed.Page.All(entry => Enum.IsDefined(entry.Kind)))
        {
            return e.Message;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId}: the snapshot and the entries after it disagree ({Diverged}); the snapshot is set aside and the ledger alone rebuilds the member")]
    private static partial void LogSnapshotDiverged(ILogger logger, string programId, string memberId, string diverged);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId}: snapshot conflict; state will reload")]
    private static partial void LogSnapshotConflict(ILogger logger, Exception exception, string programId, string memberId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId}: snapshot write failed ({LeftOut} such lines left out since the last)")]
    private static partial void LogSnapshotFailed(ILogger logger, Exception exception, string programId, string memberId, long leftOut);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId}: the stock of reward {RewardId} could not be told how a request ended; it settles the claim against the ledger itself")]
    private static partial void LogStockNotTold(ILogger logger, Exception exception, string programId, string memberId, string rewardId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId}: the stock of reward {RewardId} could not be asked for units; the redemption is refused as not secured, and a claim taken without its answer is settled by the stock itself")]
    private static partial void LogStockNotTaken(ILogger logger, Exception exception, string programId, string memberId, string rewardId);

    [LoggerMessage(Level = LogLevel.Error, Message = "Member {ProgramId}/{MemberId}: state could not be loaded ({LeftOut} such lines left out since the last)")]
    private static partial void LogLoadFailed(ILogger logger, Exception exception, string programId, string memberId, long leftOut);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId}: referrer {ReferrerId} refused its reward ({Error}); it is not offered again")]
    private static partial void LogReferralRefused(ILogger logger, string programId, string memberId, string referrerId, LoyaltyError error);

    /// <summary>
    /// Logs that <paramref name="memberId"/>'s link to <paramref name="referrerId"/> failed, within
    /// the silo's budget: for an enrolment, which a till may repeat at will. The links a merge
    /// repoints and the rewards the due work settles log every failure (nothing else records them).
    /// </summary>
    private void WarnReferralLinkFailed(string memberId, string referrerId, LoyaltyError error)
    {
        if (_services.Warnings.TryTake(out long leftOut))
        {
            LogEnrolmentNotLinked(_services.Logger, _programId, memberId, referrerId, error, leftOut);
        }
    }

    /// <summary>Logs that settling with <paramref name="referrerId"/> failed, within the silo's budget of such lines.</summary>
    private void WarnSettlementFailed(string referrerId, LoyaltyError error)
    {
        if (_services.SettlementWarnings.TryTake(out long leftOut))
        {
            LogSettlementFailed(_services.Logger, _programId, _memberId, referrerId, error, leftOut);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId}: referral settlement with {ReferrerId} failed ({Error}); it is tried again ({LeftOut} such lines left out since the last)")]
    private static partial void LogSettlementFailed(ILogger logger, string programId, string memberId, string referrerId, LoyaltyError error, long leftOut);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId}: its referral link naming {DuplicateId}, merged away, not re-pointed at {HolderId} ({Error}) ({LeftOut} such lines left out since the last)")]
    private static partial void LogReferralLinkFailed(ILogger logger, string programId, string memberId, string duplicateId, string holderId, LoyaltyError error, long leftOut);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Member {ProgramId}/{MemberId}: enrolment's referrer {ReferrerId} not linked ({Error}) ({LeftOut} such lines left out since the last)")]
    private static partial void LogEnrolmentNotLinked(ILogger logger, string programId, string memberId, string referrerId, LoyaltyError error, long leftOut);
}
